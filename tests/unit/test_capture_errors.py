"""Errors raised in the capture process keep their class, message, hint and exit code."""

from __future__ import annotations

import pickle

from cdc.errors import PositionLostError, RowError, SourceUnavailableError
from cdc.runtime.capture import ErrorReport


def _round_trip(exc: BaseException) -> BaseException:
    return pickle.loads(pickle.dumps(ErrorReport.of(exc))).to_exception()  # noqa: S301 - our own bytes


def test_a_row_error_arrives_as_a_row_error_with_its_exit_code() -> None:
    err = _round_trip(RowError("docs", {"id": 7}, "amount", "NaN does not fit decimal(10,2)"))
    assert isinstance(err, RowError)
    assert err.exit_code == 4 and not err.retriable
    assert "stream 'docs'" in str(err) and "'amount'" in str(err)
    assert err.hint is not None and "dead_letter" in err.hint


def test_retriable_and_fatal_classes_survive() -> None:
    assert _round_trip(SourceUnavailableError("db down")).retriable
    lost = _round_trip(PositionLostError("slot gone", hint="re-snapshot"))
    assert isinstance(lost, PositionLostError) and lost.exit_code == 5 and lost.hint == "re-snapshot"


def test_an_unexpected_error_keeps_its_traceback() -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        err = _round_trip(exc)
    assert isinstance(err, RuntimeError)
    assert "KeyError" in str(err) and "test_an_unexpected_error_keeps_its_traceback" in str(err)
