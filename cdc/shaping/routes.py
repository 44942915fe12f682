"""Value-based routing: a stream's topic may name fields, ``orders.{region}``, filled per event.

``{field}`` (a field of the key or value schema) is replaced by the event's value of that field
as published (after column policies, so a hashed field never routes on its raw value). Braces
are never part of a Kafka topic name, so a template is unambiguous; ``${...}`` stays the config
loader's environment substitution. Schemas of a routed stream are registered once, under the
template without its braces (``orders.region-key``/``-value``); records carry the schema id, so
consumers of every routed topic decode them as usual.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cdc.config.model import AppConfig, FileOutput
from cdc.errors import RowError, SchemaError
from cdc.plugin import ChangeEvent

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOPIC_PART = re.compile(r"^[A-Za-z0-9._-]+$")


def is_routed(topic: str) -> bool:
    """True when a topic is a template naming fields."""
    return "{" in topic or "}" in topic


def base_name(topic: str) -> str:
    """The template without braces: the stem of its subjects and default dead-letter topic."""
    return topic.replace("{", "").replace("}", "")


class TopicRoute:
    """Renders one stream's topic template from an event's values."""

    def __init__(
        self,
        stream: str,
        template: str,
        key_schema: Mapping[str, Any],
        row_schema: Mapping[str, Any],
        field_map: Mapping[str, str],
    ) -> None:
        self.stream = stream
        self.template = template
        names = _PLACEHOLDER.findall(template)
        known = {f["name"] for f in key_schema["fields"]} | {f["name"] for f in row_schema["fields"]}
        problems = [f"{{{n}}} is not a field name" for n in names if not _FIELD.match(n)]
        problems += [
            f"{{{n}}} names no field of the key or value schema"
            for n in names
            if _FIELD.match(n) and n not in known
        ]
        rest = _PLACEHOLDER.sub("", template)
        if "{" in rest or "}" in rest:
            problems.append("unbalanced braces")
        elif not names:
            problems.append("no {field} placeholder")
        if problems:
            raise SchemaError(f"stream {stream!r} topic {template!r}: " + "; ".join(problems))
        self._parts = _PLACEHOLDER.split(template)  # literal, field, literal, field, ..., literal
        self._columns = {n: field_map.get(n, n) for n in names}

    def __call__(self, event: ChangeEvent) -> str:
        """The event's topic; RowError when a value is unknown, null or not legal in a topic name."""
        row = event.after if event.after is not None else event.before
        out = []
        for i, part in enumerate(self._parts):
            if i % 2 == 0:
                out.append(part)
                continue
            column = self._columns[part]
            if row is not None and column in row:
                value = row[column]
            elif column in event.key:
                value = event.key[column]
            else:
                raise RowError(
                    self.stream, event.key, part,
                    "cannot route this delete: its row is unknown (route on a key field, or capture "
                    "old rows, e.g. REPLICA IDENTITY FULL)",
                )  # fmt: skip
            text = "" if value is None else str(value)
            if not _TOPIC_PART.match(text):
                raise RowError(
                    self.stream, event.key, part,
                    f"value {value!r} cannot be part of a topic name (letters, digits, '.', '_', '-')",
                )  # fmt: skip
            out.append(text)
        return "".join(out)


def routing_problems(app: AppConfig, stream: str, key_set: bool) -> list[str]:
    """Start-up problems of a routed stream with what it is combined with."""
    problems = []
    if isinstance(app.output, FileOutput):
        problems.append(f"stream {stream!r}: a routed topic needs output.kind: kafka")
    if key_set:
        problems.append(
            f"stream {stream!r}: a routed topic cannot be combined with this source's key-set delete "
            "detection (it reads one topic back)"
        )
    return problems
