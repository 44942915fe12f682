"""The DBLog watermark state machine shared by the log sources (cdc.watermarks), on fakes."""

from __future__ import annotations

from typing import Any

import pytest

from cdc.errors import SourceConfigError
from cdc.watermarks import (
    CLOSE,
    EXECUTE,
    OPEN,
    WatermarkSnapshot,
    interrupted_snapshot_state,
    requested_streams,
)


class FakeTable:
    """Rows by key, a log of written signals, and changes made between the two watermarks."""

    def __init__(self, n: int) -> None:
        self.rows = {i: {"id": i, "v": f"old {i}"} for i in range(1, n + 1)}
        self.signals: list[tuple[str, str]] = []

    def write(self, kind: str, window: str) -> None:
        self.signals.append((kind, window))

    def read(self, stream: str, after: list[Any] | None, limit: int) -> list[dict[str, Any]]:
        keys = sorted(k for k in self.rows if after is None or k > after[0])[:limit]
        return [dict(self.rows[k]) for k in keys]


def machine(table: FakeTable, size: int = 3) -> WatermarkSnapshot:
    return WatermarkSnapshot(table.write, table.read, size, {"docs": ("id",)})


def test_a_change_inside_the_window_supersedes_the_chunk_row_and_progress_moves_on() -> None:
    table = FakeTable(5)
    inc = machine(table)
    assert inc.on_signal(EXECUTE, '{"streams": ["docs"]}') is None
    inc.open_next_window()
    (open_kind, window), (close_kind, _) = table.signals
    assert (open_kind, close_kind) == (OPEN, CLOSE)
    inc.on_change("docs", (1,))  # before the low watermark arrives: not in the window
    assert inc.on_signal(OPEN, window) is None
    inc.on_change("docs", (2,))  # inside: newer than the chunk's copy
    chunk = inc.on_signal(CLOSE, window)
    assert chunk is not None and [r["id"] for r in chunk.rows] == [1, 3]
    assert chunk.state_before == {"queue": [], "current": "docs", "after": None}
    assert chunk.state_after == {"queue": [], "current": "docs", "after": [3]}
    inc.open_next_window()
    second = table.signals[2][1]  # OPEN and CLOSE of the first window, then of the second
    assert inc.on_signal(OPEN, second) is None
    last = inc.on_signal(CLOSE, second)
    assert last is not None and [r["id"] for r in last.rows] == [4, 5]
    inc.open_next_window()  # the table is exhausted
    assert not inc.busy and inc.state() is None


def test_watermarks_of_another_window_are_ignored_and_state_restores() -> None:
    table = FakeTable(5)
    inc = machine(table)
    inc.restore({"queue": [], "current": "docs", "after": [3], "unknown": 1})
    inc.open_next_window()
    assert inc.on_signal(CLOSE, "a window of a dead process") is None
    window = table.signals[0][1]
    inc.on_signal(OPEN, window)
    chunk = inc.on_signal(CLOSE, window)
    assert chunk is not None and [r["id"] for r in chunk.rows] == [4, 5]


def test_an_interrupted_initial_snapshot_continues_after_its_last_committed_key() -> None:
    streams = {"a": "s.a", "b": "s.b", "c": "s.c"}
    state = interrupted_snapshot_state({"relation": "s.b", "after": [7], "done": ["s.a"]}, streams)
    assert state == {"queue": ["c"], "current": "b", "after": [7]}
    assert interrupted_snapshot_state(None, streams) == {
        "queue": ["a", "b", "c"],
        "current": None,
        "after": None,
    }
    # the binlog source's first checkpoint: nothing read yet
    checkpoint = {"relation": None, "after": None, "done": []}
    assert interrupted_snapshot_state(checkpoint, streams)["queue"] == ["a", "b", "c"]


def test_a_snapshot_request_names_what_is_wrong() -> None:
    known = ["a", "b"]
    assert requested_streams(EXECUTE, {"streams": []}, known, "s.t", "x") == ["a", "b"]
    assert requested_streams(EXECUTE, {"streams": ["b"]}, known, "s.t", "x") == ["b"]
    with pytest.raises(SourceConfigError, match="need a signal table") as err:
        requested_streams(EXECUTE, {}, known, None, "public.cdc_signals")
    assert "public.cdc_signals" in (err.value.hint or "")
    with pytest.raises(SourceConfigError, match="unknown signal 'pause'"):
        requested_streams("pause", {}, known, "s.t", "x")
    with pytest.raises(SourceConfigError, match=r"unknown streams \['c'\]"):
        requested_streams(EXECUTE, {"streams": ["c"]}, known, "s.t", "x")
