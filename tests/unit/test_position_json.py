"""The position header and envelope field: orjson's compact JSON, as a fresh bytes object."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import orjson
import pytest

from cdc.plugin import ChangeEvent, Op
from cdc.schemas.eventify import position_bytes, position_text


@pytest.mark.parametrize(
    "offset",
    [
        {"ts": dt.datetime(2024, 1, 1, 1, 2, 3, 456), "id": 123456, "polls": 1},
        {"ts": dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "id": "k-ü", "polls": 0},
        {"lsn": 123456789, "txn_order": 3, "amount": Decimal("1.50")},  # Decimal: default=str
        {"id": None, "gtid": "0-1-42"},
    ],
)
def test_positions_are_orjsons_bytes_and_text(offset: dict[str, object]) -> None:
    event = ChangeEvent("s", Op.CREATE, {"id": 1}, {"id": 1}, "part-1", offset)
    expected = orjson.dumps({"partition": "part-1", "offset": offset}, default=str)
    found = position_bytes(event)
    assert found == expected and type(found) is bytes
    assert position_text(event) == expected.decode()
