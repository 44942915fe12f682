"""Position-only checkpoints (Op.CHECKPOINT): a log source makes a position durable before its
first row, and the pipeline treats one as delivered at once without producing anything."""

from __future__ import annotations

import threading
import time

from cdc.logsource import ReaderThread
from cdc.plugin import ChangeEvent, Op
from cdc.runtime.acks import AckTracker
from cdc.runtime.pipeline import Pipeline


class Reader(ReaderThread):
    def __init__(self) -> None:
        self.dsn = ""
        self._init_reader(1000)


def test_checkpoint_waits_for_its_acknowledgement() -> None:
    reader = Reader()
    offset = {"phase": "snapshot", "start": "0-1-5", "relation": None}
    done: list[bool] = []
    thread = threading.Thread(target=lambda: done.append(reader._checkpoint("binlog", offset)))
    thread.start()
    events = reader.poll(2)
    assert [(e.op, e.partition, e.offset) for e in events] == [(Op.CHECKPOINT, "binlog", offset)]
    time.sleep(0.3)
    assert not done, "went on before the position was committed"
    reader.acknowledge({"binlog": {"phase": "snapshot", "start": "0-1-4", "relation": None}})
    time.sleep(0.3)
    assert not done, "another position is not this one"
    reader.acknowledge({"binlog": dict(offset)})  # as it comes back from the capture process
    thread.join(2)
    assert done == [True]


def test_checkpoint_gives_up_when_stopping() -> None:
    reader = Reader()
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(reader._checkpoint("binlog", {"x": 1})))
    thread.start()
    reader.poll(2)
    reader._stop.set()
    thread.join(2)
    assert result == [False]


def test_a_checkpoint_commits_with_the_delivered_prefix() -> None:
    """What the pipeline does with one: delivered the moment it is sent, in sequence order."""
    tracker = AckTracker()
    row = ChangeEvent("s", Op.READ, {"id": 1}, {"id": 1}, "p", {"n": 1})
    point = ChangeEvent("", Op.CHECKPOINT, {}, None, "p", {"n": 2})
    first, second = tracker.add(row.partition, row.offset), tracker.add(point.partition, point.offset)
    pipeline = Pipeline.__new__(Pipeline)  # _send of a checkpoint touches the tracker only
    pipeline.tracker = tracker
    pipeline._send(point, second)
    assert tracker.take_committable() == {}, "a checkpoint never jumps an undelivered row"
    tracker.delivered(first)
    assert tracker.take_committable() == {"p": {"n": 2}}
