"""A transaction's end crosses the capture process's pipe pickled with its last event."""

from __future__ import annotations

import dataclasses
import pickle

from cdc.plugin import TransactionEnd


def test_a_transaction_end_round_trips_with_every_field() -> None:
    end = TransactionEnd(
        "42", {"lsn": 1234, "file": "b.000001"}, 1_700_000_000_001, {"orders": 2, "items": 5}
    )
    copy = pickle.loads(pickle.dumps(end, protocol=pickle.HIGHEST_PROTOCOL))  # noqa: S301 - our own bytes
    assert copy == end
    assert [getattr(copy, f.name) for f in dataclasses.fields(TransactionEnd)] == [
        getattr(end, f.name) for f in dataclasses.fields(TransactionEnd)
    ]
    # __reduce__ names every field: a field added to the class must be added there too
    assert len(end.__reduce__()[1]) == len(dataclasses.fields(TransactionEnd))
