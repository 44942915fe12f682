"""Keep secrets out of logs and error messages."""

from __future__ import annotations

import re

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")
_KV_PASSWORD = re.compile(
    r"(?i)\b(password|passwd|pwd|sasl\.password|ssl\.key\.password)\s*=\s*('[^']*'|\S+)"
)


def mask_dsn(text: str) -> str:
    """Replace passwords in URLs (``scheme://user:secret@host``) and ``password=...`` pairs by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _KV_PASSWORD.sub(lambda m: f"{m.group(1)}=***", text)
