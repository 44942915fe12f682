"""Change events cross the capture process's pipe pickled: every field must survive."""

from __future__ import annotations

import dataclasses
import datetime as dt
import pickle
from decimal import Decimal

import pytest

from cdc.plugin import ChangeEvent, EncodedValue, Op, TransactionEnd


def every_field_set(op: Op) -> ChangeEvent:
    """An event whose every field differs from its default."""
    return ChangeEvent(
        stream="orders",
        op=op,
        key={"id": 7},
        after={"id": 7, "total": Decimal("1.50"), "at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)},
        partition="slot",
        offset={"lsn": 123, "txn_order": 2},
        before={"id": 7, "total": Decimal("1.00")},
        ts_ms=1_700_000_000_000,
        txid="42",
        source={"table": "orders"},
        encoded_value=EncodedValue(b"\x02", "orders-value", 3),
        headers=[("h", b"v")],
        txn_order=2,
        txn_end=TransactionEnd("42", {"lsn": 124}, 1_700_000_000_001, {"orders": 2}),
    )


@pytest.mark.parametrize("op", list(Op))
def test_an_event_round_trips_through_pickle_with_every_field(op: Op) -> None:
    event = every_field_set(op)
    defaults = ChangeEvent("s", Op.READ, {}, None, "p", None)
    for f in dataclasses.fields(ChangeEvent):  # the fixture really sets every field
        assert getattr(event, f.name) != getattr(defaults, f.name) or f.name in ("op",), f.name
    copy = pickle.loads(pickle.dumps(event, protocol=pickle.HIGHEST_PROTOCOL))  # noqa: S301 - our own bytes
    assert copy == event
    assert copy.op is op
    assert [type(getattr(copy, f.name)) for f in dataclasses.fields(ChangeEvent)] == [
        type(getattr(event, f.name)) for f in dataclasses.fields(ChangeEvent)
    ]
