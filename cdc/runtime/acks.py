"""Delivery tracking: which source offsets are safe to commit.

Events get a sequence number in the order the source emitted them. Delivery reports arrive in
any order; only the longest prefix of delivered events is committable, and for each source
partition the committable offset is that of the prefix's last event from it. A failed delivery
freezes the prefix, so the gap is never skipped.
"""

from __future__ import annotations

from cdc.plugin import Offset, Offsets


class AckTracker:
    """Tracks in-flight events and yields the offsets of the delivered prefix."""

    __slots__ = ("_delivered", "_entries", "_next_commit", "_next_seq", "failure")

    def __init__(self) -> None:
        self._entries: dict[int, tuple[str, Offset | None]] = {}
        self._delivered: set[int] = set()
        self._next_seq = 0
        self._next_commit = 0
        self.failure: str | None = None

    def add(self, partition: str, offset: Offset | None) -> int:
        """Register an event about to be sent; returns its sequence number. ``offset`` None: a
        later event of the same partition carries the offset this one would have (the capture
        process sends one per partition and batch), so this one only holds the prefix back."""
        seq = self._next_seq
        self._entries[seq] = (partition, offset)
        self._next_seq = seq + 1
        return seq

    def add_marker(self) -> int:
        """Register a record that carries no source offset (transaction metadata; an event whose
        offset a later record carries): it only holds the committable prefix back until delivered."""
        return self.add("", None)

    def delivered(self, seq: int) -> None:
        self._delivered.add(seq)

    def failed(self, seq: int, reason: str) -> None:
        if self.failure is None:
            self.failure = f"event #{seq}: {reason}"

    @property
    def in_flight(self) -> int:
        return self._next_seq - self._next_commit

    def take_committable(self) -> Offsets:
        """Pop the delivered prefix; return the last offset per partition within it."""
        out: Offsets = {}
        seq = self._next_commit
        entries, delivered = self._entries, self._delivered
        while seq in delivered:
            delivered.discard(seq)
            partition, offset = entries.pop(seq)
            if offset is not None:
                out[partition] = offset
            seq += 1
        self._next_commit = seq
        return out
