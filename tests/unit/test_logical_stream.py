"""The replication read loop's protocol chores and the confirm tracker (no server needed)."""

from __future__ import annotations

import struct
import threading
from typing import Any

from cdc.pg import pgoutput as po
from cdc.pg.confirm import ConfirmTracker
from cdc.pg.logical import run_stream
from cdc.pg.replication import Keepalive, XLogData


def _begin(final_lsn: int, xid: int) -> bytes:
    return b"B" + struct.pack(">qqI", final_lsn, 0, xid)


def _commit(commit_lsn: int, end_lsn: int) -> bytes:
    return b"C" + struct.pack(">bqqq", 0, commit_lsn, end_lsn, 0)


class FakeReplication:
    """Serves scripted frames; ``None`` in the script is an empty socket at that moment."""

    def __init__(self, script: list[Any], log: list[Any], stop: threading.Event) -> None:
        self.script = list(script)
        self.log = log
        self.stop = stop

    def start(self, slot: str, lsn: str, options: Any) -> None:
        self.log.append("start")

    def read(self, timeout: float) -> Any:
        if not self.script:
            self.stop.set()
            return None
        frame = self.script.pop(0)
        if isinstance(frame, bytes):
            return XLogData(0, 0, memoryview(frame))
        return frame

    def send_status(self, flushed: int, *, reply: bool = False) -> None:
        self.log.append(("status", flushed))


def _run(script: list[Any]) -> list[Any]:
    log: list[Any] = []
    stop = threading.Event()
    tracker = ConfirmTracker()

    def handle(msg: po.Message, frame: XLogData) -> None:
        log.append(type(msg).__name__)
        if isinstance(msg, po.Commit):
            tracker.commit(msg.commit_lsn, msg.end_lsn, 1)

    run_stream(
        FakeReplication(script, log, stop), "slot", {}, tracker, handle, stop,  # type: ignore[arg-type]
        status_interval=3600, queue_empty=lambda: True, on_idle=lambda: log.append("idle"),
    )  # fmt: skip
    return log


def test_batches_are_handed_over_when_the_socket_runs_dry_not_per_transaction() -> None:
    txn1 = [_begin(100, 1), _commit(100, 108)]
    txn2 = [_begin(200, 2), _commit(200, 208)]
    log = _run([*txn1, *txn2, None, None])
    # Two transactions back to back: no hand-off between them, one as soon as nothing more waits.
    assert log[:6] == ["start", "Begin", "Commit", "Begin", "Commit", "idle"]


def test_a_keepalive_is_preceded_by_a_hand_off() -> None:
    # Two keepalives right behind a transaction, with no empty read between: the batch must be
    # handed over before the tracker may judge "everything delivered" and confirm past it.
    log = _run([_begin(100, 1), _commit(100, 108), Keepalive(500, False), Keepalive(600, True)])
    first_keepalive_idle = log.index("idle", log.index("Commit"))
    assert first_keepalive_idle == log.index("Commit") + 1
    statuses = [entry for entry in log if isinstance(entry, tuple)]
    assert statuses, "a keepalive asking for a reply must be answered"
    assert log.index("idle", log.index("Commit")) < log.index(statuses[0])


def test_confirm_tracker_confirms_end_lsns_in_commit_order() -> None:
    t = ConfirmTracker()
    for commit, end, count in ((100, 108, 2), (200, 208, 1), (300, 308, 3)):
        t.begin()
        t.commit(commit, end, count)
    t.acknowledge(100, 0)  # half of the first transaction: nothing confirmable
    assert t.confirmable(queue_empty=False) == 0
    t.acknowledge(200, 0)  # the first two complete
    assert t.flushed == 208
    t.acknowledge(300, 1)  # the third is not complete
    assert t.flushed == 208
    t.acknowledge(300, 2)
    assert t.flushed == 308


def test_idle_keepalive_is_confirmed_only_when_everything_emitted_is_acknowledged() -> None:
    t = ConfirmTracker()
    t.begin()
    t.commit(100, 108, 1)
    t.emitted(100, 0)
    t.keepalive(500)
    assert t.confirmable(queue_empty=True) == 0  # the event is not acknowledged yet
    t.acknowledge(100, 0)
    assert t.confirmable(queue_empty=False) == 108  # events still queued: only the end LSN
    assert t.confirmable(queue_empty=True) == 500
