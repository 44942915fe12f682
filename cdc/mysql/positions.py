"""Binlog positions: where a transaction starts, and which events a resume must drop.

An event's offset is ``{"phase": "stream", "start": S, "txn": T, "i": N}``:

- ``T`` identifies its transaction: the GTID (``domain-server-seq`` on MariaDB, ``uuid:n`` on
  MySQL) or, when positions are kept by file, ``file:position`` of the transaction's first event;
- ``S`` is where streaming must restart to receive that transaction again: the GTID state just
  BEFORE it (MariaDB: one ``domain-server-seq`` per domain; MySQL: the executed GTID set), or
  ``file:position`` (the same as ``T``) in file mode;
- ``N`` is the event's index inside the transaction.

So a position is saved only as "transaction boundary + index": after a kill -9 in the middle of
a large transaction, the stream restarts at ``S``, the transaction arrives again, and its events
at or below ``N`` are dropped. A transaction already applied to the tracked state (a library
reconnect replaying from its first position) is dropped whole.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

from pymysqlreplication.gtid import Gtid, GtidSet


@dataclass(frozen=True, slots=True)
class Resume:
    """The last committed event: its transaction and index."""

    txn: str
    index: int

    def drops(self, txn: str, index: int) -> bool:
        """True for a replayed event at or below the committed one."""
        return txn == self.txn and index <= self.index


class PositionTracker(abc.ABC):
    """Follows the position transaction by transaction (the reader thread only)."""

    @abc.abstractmethod
    def start(self) -> str:
        """The restart position of the transaction being read (or the next one)."""

    @abc.abstractmethod
    def applied(self, txn: str) -> bool:
        """True when ``txn`` is already behind the tracked position (a replay)."""

    @abc.abstractmethod
    def commit(self, txn: str) -> None:
        """``txn`` ended: the restart position moves past it."""


class MariadbGtids(PositionTracker):
    """MariaDB GTID state: the last ``domain-server-seq`` per replication domain."""

    def __init__(self, state: str) -> None:
        self._last: dict[int, tuple[int, int]] = {}
        self._text: str | None = None  # start(), until the next commit (asked once per transaction)
        # the last GTID parsed (applied() then commit() see the same transaction's)
        self._parsed: tuple[str, tuple[int, int, int]] = ("", (0, 0, 0))
        for part in filter(None, (p.strip() for p in state.split(","))):
            domain, server, seq = parse_mariadb_gtid(part)
            self._last[domain] = (server, seq)

    def start(self) -> str:
        if self._text is None:
            if len(self._last) == 1:  # the usual single domain: no sort, no generator
                ((d, (s, n)),) = self._last.items()
                self._text = f"{d}-{s}-{n}"
            else:
                self._text = ",".join(f"{d}-{s}-{n}" for d, (s, n) in sorted(self._last.items()))
        return self._text

    def _parse(self, txn: str) -> tuple[int, int, int]:
        if self._parsed[0] != txn or not txn:
            self._parsed = (txn, parse_mariadb_gtid(txn))
        return self._parsed[1]

    def known(self, txn: str, domain: int, server: int, seq: int) -> None:
        """``txn`` is the GTID ``domain-server-seq`` of these numbers (a GTID event's own fields):
        the next applied() and commit() of it need not parse the text."""
        self._parsed = (txn, (domain, server, seq))

    def applied(self, txn: str) -> bool:
        domain, _, seq = self._parse(txn)
        last = self._last.get(domain)
        return last is not None and seq <= last[1]

    def commit(self, txn: str) -> None:
        domain, server, seq = self._parse(txn)
        self._last[domain] = (server, seq)
        self._text = None

    def distance(self, older: MariadbGtids) -> int:
        """Transactions this state is ahead of ``older`` (summed over domains)."""
        return sum(max(0, seq - older._last.get(d, (0, 0))[1]) for d, (_, seq) in self._last.items())


def parse_mariadb_gtid(text: str) -> tuple[int, int, int]:
    """``"0-1-42"`` -> ``(0, 1, 42)``."""
    parts = text.split("-")
    if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit() and parts[2].isdigit()):
        raise ValueError(f"not a MariaDB GTID (domain-server-seq): {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


class MysqlGtids(PositionTracker):
    """MySQL executed GTID set (``uuid:1-100,uuid2:1-7``)."""

    def __init__(self, state: str) -> None:
        self._set = GtidSet(state.replace("\n", "") or None)

    def start(self) -> str:
        return str(self._set)

    def applied(self, txn: str) -> bool:
        return Gtid(txn) in self._set

    def commit(self, txn: str) -> None:
        self._set = self._set + Gtid(txn)


class FilePositions(PositionTracker):
    """Binlog file and position of the next transaction's first event (GTIDs off)."""

    def __init__(self, file: str, pos: int) -> None:
        self._next = (file, pos)

    def start(self) -> str:
        return f"{self._next[0]}:{self._next[1]}"

    def applied(self, txn: str) -> bool:
        file, pos = split_file_pos(txn)
        return (file, pos) < self._next

    def commit(self, txn: str) -> None:
        """Nothing to do: :meth:`next_at` records where the following transaction begins."""

    def next_at(self, file: str, pos: int) -> None:
        """The position right after a transaction's last event (or a rotation to a new file).

        Never moves backwards: a replay (a reconnect that starts earlier) must not make already
        emitted transactions look new."""
        self._next = max(self._next, (file, pos))


def split_file_pos(text: str) -> tuple[str, int]:
    """``"mysql-bin.000003:1234"`` -> ``("mysql-bin.000003", 1234)``."""
    file, _, pos = text.rpartition(":")
    if not file or not pos.isdigit():
        raise ValueError(f"not a binlog file position (file:pos): {text!r}")
    return file, int(pos)


def resume_of(offset: dict[str, Any] | None) -> Resume | None:
    """The committed event of a stored stream offset."""
    if not offset or offset.get("phase") != "stream":
        return None
    return Resume(str(offset["txn"]), int(offset["i"]))
