"""Exact JSON encoding of values kept in offsets (timestamps, ids, LSNs).

Sources may put datetimes, dates, decimals and UUIDs into offsets as they are; the stores write
them with :func:`encode` as the ``default`` hook, tagged, and sources read them back with
:func:`decode`, so a resumed ``WHERE ts > :last`` sees exactly the value the driver returned.
Encoding happens only when offsets are stored, never per event.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from typing import Any


def encode(value: Any) -> Any:
    """``json.dumps(..., default=encode)`` hook: tag the values JSON has no type for."""
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


def dumps(offsets: Any) -> str:
    """Offsets as compact JSON text with tagged values."""
    return json.dumps(offsets, separators=(",", ":"), default=encode)
