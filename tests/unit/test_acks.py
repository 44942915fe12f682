"""The delivered-prefix rule: never commit past an undelivered event."""

from __future__ import annotations

from cdc.runtime.acks import AckTracker


def test_only_the_delivered_prefix_is_committable() -> None:
    t = AckTracker()
    seqs = [t.add("a", {"n": i}) for i in range(5)]
    t.delivered(seqs[1])
    t.delivered(seqs[2])
    assert t.take_committable() == {}  # event 0 outstanding
    t.delivered(seqs[0])
    assert t.take_committable() == {"a": {"n": 2}}
    assert t.in_flight == 2


def test_last_offset_per_partition_within_the_prefix() -> None:
    t = AckTracker()
    s = [t.add("a", {"n": 1}), t.add("b", {"n": 1}), t.add("a", {"n": 2}), t.add("b", {"n": 2})]
    for q in s[:3]:
        t.delivered(q)
    assert t.take_committable() == {"a": {"n": 2}, "b": {"n": 1}}


def test_a_failure_freezes_the_prefix() -> None:
    t = AckTracker()
    s = [t.add("a", {"n": i}) for i in range(3)]
    t.failed(s[0], "broker said no")
    t.delivered(s[1])
    t.delivered(s[2])
    assert t.take_committable() == {}
    assert t.failure is not None and "broker said no" in t.failure


def test_a_marker_holds_the_prefix_back_without_an_offset() -> None:
    """Transaction metadata: the last event of a transaction is a marker and its offset rides on
    END, so the offset commits only once END is delivered too."""
    t = AckTracker()
    begin = t.add_marker()
    first = t.add("a", {"n": 1})
    last_event = t.add_marker()
    end = t.add("a", {"n": 2})
    for seq in (begin, first, last_event):
        t.delivered(seq)
    assert t.take_committable() == {"a": {"n": 1}}
    t.delivered(end)
    assert t.take_committable() == {"a": {"n": 2}}
    assert t.in_flight == 0


def test_an_event_without_an_offset_holds_the_prefix_and_commits_none() -> None:
    """The capture process sends a record's offset only if it is its batch's last of its
    partition: the others hold the prefix back and leave the partition's committed offset alone."""
    t = AckTracker()
    first = t.add("a", None)
    carried = t.add("a", {"n": 2})
    other = t.add("b", None)
    t.delivered(first)
    assert t.take_committable() == {}
    t.delivered(other)
    assert t.take_committable() == {}  # "carried" is outstanding
    t.delivered(carried)
    assert t.take_committable() == {"a": {"n": 2}}
    assert t.in_flight == 0
