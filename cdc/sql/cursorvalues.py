"""Exact JSON encoding of cursor values (timestamps, ids) kept in offsets.

Offsets are JSON; a cursor value must come back as the same Python value the driver returned,
or a resumed ``WHERE ts > :last`` could skip or repeat rows.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any


def encode(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str | float):
        return value
    if isinstance(value, dt.datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    if isinstance(value, uuid.UUID):
        return {"uuid": str(value)}
    raise TypeError(f"cannot keep a {type(value).__name__} as a cursor value")


def decode(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    ((tag, text),) = value.items()
    if tag == "datetime":
        return dt.datetime.fromisoformat(text)
    if tag == "date":
        return dt.date.fromisoformat(text)
    if tag == "decimal":
        return decimal.Decimal(text)
    if tag == "uuid":
        return uuid.UUID(text)
    raise ValueError(f"unknown cursor value tag {tag!r}")
