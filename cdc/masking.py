"""Keep secrets out of logs and error messages."""

from __future__ import annotations

import re

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")
# Keys whose values are secrets, in the spellings of libpq, librdkafka and the registry client.
_SECRET_KEYS = r"password|passwd|pwd|sasl\.password|ssl\.key\.password|basic\.auth\.user\.info|sasl\.oauthbearer\.client\.secret"  # noqa: S105 - key names, not a secret
# key=value (libpq conninfo, librdkafka strings): a quoted value may hold spaces.
_KV_PASSWORD = re.compile(rf"(?i)\b({_SECRET_KEYS})\s*=\s*('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)")
# 'key': 'value' (the repr of a dict of client settings) and "key": "value" (JSON).
_DICT_PASSWORD = re.compile(
    rf"(?i)(['\"])({_SECRET_KEYS})\1(\s*:\s*)('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")"
)


def mask_dsn(text: str) -> str:
    """Replace secrets by ``***``: passwords in URLs (``scheme://user:secret@host``), ``password=...``
    pairs (quoted values included) and secret keys in dict reprs or JSON (``'sasl.password': '...'``,
    ``basic.auth.user.info``)."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    text = _KV_PASSWORD.sub(lambda m: f"{m.group(1)}=***", text)
    return _DICT_PASSWORD.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(1)}{m.group(3)}'***'", text)
