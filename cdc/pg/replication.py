"""A logical replication client over the streaming replication protocol (psycopg 3, libpq level).

Why libpq level: psycopg's high-level cursors use the extended query protocol, which a walsender
does not speak, and have no COPY_BOTH support. Replication commands therefore go through
``pgconn.exec_`` / ``send_query`` (the simple query protocol, no bound parameters: identifiers are
quoted with ``psycopg.sql``), and frames are read with non-blocking ``get_copy_data`` plus
``select`` on the socket, so the GIL is released while waiting.

Frames (PostgreSQL docs, "Streaming Replication Protocol"): ``w`` XLogData
(start LSN, WAL end, send time, payload), ``k`` primary keepalive (WAL end, send time, reply
requested); we answer with ``r`` standby status updates (written, flushed, applied, time, reply).
"""

from __future__ import annotations

import select
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq, sql

from cdc.errors import PositionLostError, SourceConfigError, SourceUnavailableError
from cdc.masking import mask_dsn

# The walsender formats values with its session's settings; fixed so text values parse exactly.
from cdc.pg.types import SESSION_OPTIONS
from cdc.sql.engines import auth_error, is_auth_failure

_XLOGDATA = struct.Struct("!QQQ")
_KEEPALIVE = struct.Struct("!QQB")
_STATUS = struct.Struct("!cQQQQB")
PG_EPOCH_OFFSET_US = 946_684_800_000_000  # 2000-01-01 - 1970-01-01 in microseconds


@dataclass(slots=True)  # not frozen: one per frame; a frozen __init__ costs 4x
class XLogData:
    start: int
    wal_end: int
    payload: memoryview


@dataclass(slots=True)  # not frozen: one per frame; a frozen __init__ costs 4x
class Keepalive:
    wal_end: int
    reply_requested: bool


@dataclass(frozen=True, slots=True)
class CreatedSlot:
    name: str
    consistent_point: str
    snapshot_name: str | None


def now_pg_us() -> int:
    return int(time.time() * 1_000_000) - PG_EPOCH_OFFSET_US


def _connect(dsn: str, **kwargs: Any) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, autocommit=True, options=SESSION_OPTIONS, connect_timeout=10, **kwargs)
    except psycopg.OperationalError as exc:
        if is_auth_failure(exc):
            raise auth_error("replication connection", exc) from None
        text = mask_dsn(str(exc))
        if "permission denied" in text or "must be superuser or replication role" in text:
            raise SourceConfigError(
                f"replication connection refused: {text}",
                hint="ALTER ROLE <user> WITH REPLICATION; and allow 'replication' connections in pg_hba.conf",
            ) from None
        raise SourceUnavailableError(f"cannot connect to PostgreSQL: {text}") from None


class ReplicationConnection:
    """One walsender connection: slot commands, then a single logical replication stream."""

    def __init__(self, dsn: str) -> None:
        self.conn = _connect(dsn, replication="database")
        self.pg = self.conn.pgconn
        self._streaming = False

    def _command(self, command: sql.Composable) -> pq.abc.PGresult:
        text = command.as_bytes(self.conn)
        result = self.pg.exec_(text)
        if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            message = (result.error_message or b"").decode(errors="replace").strip()
            raise SourceConfigError(f"replication command failed: {message}")
        return result

    def create_slot(self, name: str, *, export_snapshot: bool, temporary: bool = False) -> CreatedSlot:
        """CREATE_REPLICATION_SLOT ... LOGICAL pgoutput; with EXPORT_SNAPSHOT the snapshot lives
        only until the next command on this connection, so keep it idle until readers imported it."""
        parts = [sql.SQL("CREATE_REPLICATION_SLOT"), sql.Identifier(name)]
        if temporary:
            parts.append(sql.SQL("TEMPORARY"))
        parts.append(sql.SQL("LOGICAL pgoutput"))
        parts.append(sql.SQL("EXPORT_SNAPSHOT" if export_snapshot else "NOEXPORT_SNAPSHOT"))
        result = self._command(sql.SQL(" ").join(parts))
        values = [result.get_value(0, i) for i in range(result.nfields)]
        snapshot = values[2].decode() if values[2] else None
        return CreatedSlot(name, (values[1] or b"").decode(), snapshot)

    def start(self, slot: str, start_lsn: str, options: Mapping[str, str]) -> None:
        """START_REPLICATION SLOT ... LOGICAL lsn (options); switches the connection to COPY_BOTH."""
        opts = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in options.items()
        )
        command = sql.SQL("START_REPLICATION SLOT {} LOGICAL {} ({})").format(
            sql.Identifier(slot), sql.SQL(start_lsn), opts
        )
        self.pg.send_query(command.as_bytes(self.conn))
        result = self.pg.get_result()
        if result is None or result.status != pq.ExecStatus.COPY_BOTH:
            message = ((result.error_message if result else b"") or b"").decode(errors="replace").strip()
            if "does not exist" in message:
                raise PositionLostError(
                    f"replication slot {slot!r} does not exist: {message}",
                    hint="the stored position cannot be served; re-snapshot: drop the stored offsets "
                    "(new connector name) and start again with snapshot_mode: initial",
                )
            if "is active for PID" in message:
                raise SourceUnavailableError(
                    f"replication slot {slot!r} is in use by another connection ({message}); "
                    "another instance holds it - retrying until it is free"
                )
            if "can no longer be used" in message or "invalidated" in message:
                raise PositionLostError(
                    f"replication slot {slot!r} was invalidated: {message}",
                    hint="WAL it needed was removed (max_slot_wal_keep_size); drop the slot and re-snapshot",
                )
            raise SourceConfigError(f"START_REPLICATION failed: {message}")
        self.pg.nonblocking = 1
        self._streaming = True

    def read(self, timeout: float) -> XLogData | Keepalive | None:
        """The next frame, or None when nothing arrived within ``timeout`` seconds."""
        deadline = None  # taken only when the frame must be waited for: most reads find one buffered
        pg = self.pg
        while True:
            try:
                n, data = pg.get_copy_data(1)
            except psycopg.OperationalError as exc:
                raise SourceUnavailableError(f"replication stream broke: {mask_dsn(str(exc))}") from None
            if n > 0:
                # bytes or a memoryview (psycopg's C and Python libpq wrappers differ): both index
                # to an int and slice without a copy of the frame, which the decoder makes once.
                kind = data[0]
                if kind == 0x77:  # 'w'
                    start, wal_end, _ = _XLOGDATA.unpack_from(data, 1)
                    return XLogData(start, wal_end, memoryview(data)[25:])
                if kind == 0x6B:  # 'k'
                    wal_end, _, reply = _KEEPALIVE.unpack_from(data, 1)
                    return Keepalive(wal_end, bool(reply))
                continue
            if n < 0:
                result = pg.get_result()
                message = ((result.error_message if result else b"") or b"").decode(errors="replace").strip()
                raise SourceUnavailableError(f"replication stream ended: {message or 'server closed it'}")
            if deadline is None:
                deadline = time.monotonic() + timeout
            remaining = deadline - time.monotonic()
            # With no time left, still take in what the socket already holds (timeout 0 means
            # "only what is there now", not "nothing").
            readable, _, _ = select.select([self.pg.socket], [], [], max(0.0, remaining))
            if not readable:
                return None
            try:
                self.pg.consume_input()
            except psycopg.OperationalError as exc:
                raise SourceUnavailableError(f"replication stream broke: {mask_dsn(str(exc))}") from None

    def send_status(self, flushed: int, *, reply: bool = False) -> None:
        """Standby status update: everything up to ``flushed`` is safely stored downstream."""
        msg = _STATUS.pack(b"r", flushed, flushed, flushed, now_pg_us(), 1 if reply else 0)
        try:
            if self.pg.put_copy_data(msg) != 1:
                raise SourceUnavailableError("replication stream: could not queue a status update")
            self.pg.flush()
        except psycopg.OperationalError as exc:
            raise SourceUnavailableError(f"replication stream broke: {mask_dsn(str(exc))}") from None

    def close(self) -> None:
        self.conn.close()


def normal_connection(dsn: str) -> psycopg.Connection[Any]:
    """A regular connection with the same session settings as the walsender's."""
    return _connect(dsn)
