"""Decoder for the pgoutput logical replication protocol, versions 1 and 2 (PostgreSQL 10+ / 14+).

Pure functions, no I/O: :func:`decode` turns one ``XLogData`` payload (or one ``data`` row of
``pg_logical_slot_get_binary_changes``) into one message object (read-only by convention).
What the messages mean, in the order the server sends them::

    Begin                              a transaction starts (final_lsn = its commit record)
      Relation / Type                  schema of a relation/type, sent before first use
      Insert / Update / Delete / Truncate / LogicalMessage
    Commit                             commit_lsn == Begin.final_lsn

    (protocol 2, streaming on, transaction larger than logical_decoding_work_mem)
    StreamStart(xid) ... changes carrying xid ... StreamStop     repeated, interleavable
    StreamCommit(xid) or StreamAbort(xid, subxid)

A streamed change's ``xid`` is that of the (sub)transaction that made it — not necessarily the
StreamStart's top-level xid — so that a ``StreamAbort(xid, subxid)`` of a rolled-back savepoint
can discard exactly the changes streamed under ``subxid``. Only changes that overflowed
logical_decoding_work_mem are streamed; the rest of an aborted subtransaction is never sent.

Column values stay undecoded here (``bytes`` in the type's text output format); turning them
into Python values is :mod:`cdc.pg.types`' job, because that needs the type catalog.

The layout follows the PostgreSQL documentation chapter "Logical Replication Message
Formats". Integers are big-endian ("network order"); strings are NUL-terminated; LSNs and
timestamps are 64-bit; timestamps are microseconds since 2000-01-01 00:00 UTC.
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, TypeAlias

__all__ = [
    "UNCHANGED_TOAST",
    "Begin",
    "BinaryValue",
    "ColumnValue",
    "Commit",
    "Delete",
    "Insert",
    "LogicalMessage",
    "Message",
    "Origin",
    "PgOutputDecoder",
    "RelColumn",
    "Relation",
    "StreamAbort",
    "StreamCommit",
    "StreamStart",
    "StreamStop",
    "Truncate",
    "TupleData",
    "Type",
    "Unchanged",
    "Update",
    "decode",
    "format_lsn",
    "parse_lsn",
    "pg_timestamp_to_datetime",
    "pg_timestamp_to_unix_ms",
]

# --------------------------------------------------------------------------- time and LSN helpers

#: 2000-01-01 00:00:00 UTC, the PostgreSQL epoch, in microseconds since the Unix epoch.
PG_EPOCH_UNIX_US: Final = 946_684_800_000_000
_PG_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)


def pg_timestamp_to_datetime(ts_us: int) -> datetime:
    """A protocol timestamp (µs since 2000-01-01 UTC) as an aware UTC datetime."""
    return _PG_EPOCH + timedelta(microseconds=ts_us)


def pg_timestamp_to_unix_ms(ts_us: int) -> int:
    """A protocol timestamp (µs since 2000-01-01 UTC) as milliseconds since the Unix epoch (floored)."""
    return (ts_us + PG_EPOCH_UNIX_US) // 1000


def format_lsn(lsn: int) -> str:
    """Format a 64-bit LSN the way PostgreSQL prints ``pg_lsn``: ``16/B374D848``."""
    if not 0 <= lsn < 1 << 64:
        raise ValueError(f"LSN out of range: {lsn}")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


_LSN_RE: Final = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


def parse_lsn(text: str) -> int:
    """Parse ``16/B374D848`` (either case, zero padding allowed) into a 64-bit integer."""
    # A regex, not int(x, 16) alone: int() would also accept signs, '_' and surrounding blanks.
    m = _LSN_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"not an LSN: {text!r} (expected like '16/B374D848')")
    return (int(m[1], 16) << 32) | int(m[2], 16)


# --------------------------------------------------------------------------- column values


class Unchanged(enum.Enum):
    """Type of :data:`UNCHANGED_TOAST`; an enum so the sentinel is a true singleton (even pickled)."""

    UNCHANGED_TOAST = "u"

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"


#: An unchanged TOASTed value (kind ``'u'``): the server did not send it because the update
#: left the out-of-line value alone. It is not NULL and not a value; the caller has to fetch it
#: or keep the previous one. Compare with ``is``.
UNCHANGED_TOAST: Final = Unchanged.UNCHANGED_TOAST


@dataclass(frozen=True, slots=True)
class BinaryValue:
    """A column value in the type's binary send format (kind ``'b'``, only with ``binary 'true'``)."""

    data: bytes


#: One column: ``None`` is SQL NULL, ``bytes`` is the type's text output (kind ``'t'``).
ColumnValue: TypeAlias = bytes | BinaryValue | Literal[Unchanged.UNCHANGED_TOAST] | None
#: One tuple, one entry per live (not dropped, not generated) column, in the Relation's order.
TupleData: TypeAlias = tuple[ColumnValue, ...]


# --------------------------------------------------------------------------- messages

# Begin, Commit and the row messages are decoded once or more per captured change, so they
# are plain slotted dataclasses: a frozen one's __init__ sets each field through
# object.__setattr__ and costs 0.40 µs against 0.11 µs (four fields). Nothing changes them after
# decoding; the rarer messages stay frozen.


class _CommitTime:
    """Adds ``commit_time``/``commit_unix_ms`` to messages carrying ``commit_ts_us``."""

    __slots__ = ()
    commit_ts_us: int

    @property
    def commit_time(self) -> datetime:
        """The commit timestamp as an aware UTC datetime."""
        return pg_timestamp_to_datetime(self.commit_ts_us)

    @property
    def commit_unix_ms(self) -> int:
        """The commit timestamp in milliseconds since the Unix epoch."""
        return pg_timestamp_to_unix_ms(self.commit_ts_us)


@dataclass(slots=True)  # not frozen: one per change (see "messages" above)
class Begin(_CommitTime):
    """``B``: a transaction starts. ``final_lsn`` is the LSN of its commit record."""

    final_lsn: int
    commit_ts_us: int
    xid: int


@dataclass(slots=True)  # not frozen: one per change (see "messages" above)
class Commit(_CommitTime):
    """``C``: the transaction commits. ``end_lsn`` is where to confirm once it is safely stored."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts_us: int


@dataclass(frozen=True, slots=True)
class Origin:
    """``O``: the transaction came from another node through replication origin ``name``."""

    origin_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class RelColumn:
    """One column of a :class:`Relation`. ``flags`` bit 1 marks a replica identity (key) column."""

    flags: int
    name: str
    type_oid: int
    type_modifier: int

    @property
    def is_key(self) -> bool:
        """True if the column is part of the replica identity (all columns with REPLICA IDENTITY FULL)."""
        return bool(self.flags & 1)


@dataclass(frozen=True, slots=True)
class Relation:
    """``R``: the shape of a relation, sent before its first change in a session and after DDL.

    ``replica_identity`` is ``'d'`` (default: primary key), ``'n'`` (nothing), ``'f'`` (full)
    or ``'i'`` (index). ``namespace`` is ``'pg_catalog'`` where the wire carries an empty string.
    """

    relation_id: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[RelColumn, ...]
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Type:
    """``Y``: a non-built-in type used by a following Relation (``namespace``/``name`` of its base)."""

    type_id: int
    namespace: str
    name: str
    xid: int | None = None


@dataclass(slots=True)  # not frozen: one per change (see "messages" above)
class Insert:
    """``I``: a new row."""

    relation_id: int
    new: TupleData
    xid: int | None = None


@dataclass(slots=True)  # not frozen: one per change (see "messages" above)
class Update:
    """``U``: a changed row.

    ``old`` is present only when the server sent it: ``old_kind`` ``'K'`` (the replica identity
    changed; non-key columns are None) or ``'O'`` (REPLICA IDENTITY FULL: the whole old row).
    An update that leaves the key alone carries only ``new``, in which out-of-line TOASTed
    columns that did not change are :data:`UNCHANGED_TOAST`.
    """

    relation_id: int
    new: TupleData
    old: TupleData | None = None
    old_kind: Literal["K", "O"] | None = None
    xid: int | None = None


@dataclass(slots=True)  # not frozen: one per change (see "messages" above)
class Delete:
    """``D``: a deleted row: the old key (``'K'``, non-key columns None) or whole old row (``'O'``)."""

    relation_id: int
    old_kind: Literal["K", "O"]
    old: TupleData
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Truncate:
    """``T``: relations truncated together. ``options`` bit 1 CASCADE, bit 2 RESTART IDENTITY."""

    options: int
    relation_ids: tuple[int, ...]
    xid: int | None = None

    @property
    def cascade(self) -> bool:
        """TRUNCATE ... CASCADE."""
        return bool(self.options & 1)

    @property
    def restart_identity(self) -> bool:
        """TRUNCATE ... RESTART IDENTITY."""
        return bool(self.options & 2)


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    """``M``: a ``pg_logical_emit_message()`` (only with the ``messages 'true'`` option).

    Non-transactional messages (``flags`` bit 1 clear) arrive outside Begin/Commit, as soon as
    they are decoded, even if the emitting transaction later rolls back.
    """

    flags: int
    lsn: int
    prefix: str
    content: bytes
    xid: int | None = None

    @property
    def transactional(self) -> bool:
        """True if the message belongs to its transaction (sent inside Begin/Commit)."""
        return bool(self.flags & 1)


@dataclass(frozen=True, slots=True)
class StreamStart:
    """``S`` (protocol 2): a block of changes of in-progress transaction ``xid`` follows."""

    xid: int
    first_segment: bool


@dataclass(frozen=True, slots=True)
class StreamStop:
    """``E`` (protocol 2): the current stream block ends."""


@dataclass(frozen=True, slots=True)
class StreamCommit(_CommitTime):
    """``c`` (protocol 2): streamed transaction ``xid`` committed."""

    xid: int
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_ts_us: int


@dataclass(frozen=True, slots=True)
class StreamAbort:
    """``A`` (protocol 2): streamed (sub)transaction aborted; ``subxid == xid`` for the top level.

    Changes streamed for ``subxid`` (and, for the top level, all of ``xid``) must be discarded.
    """

    xid: int
    subxid: int


#: Any decoded pgoutput message.
Message: TypeAlias = (
    Begin
    | Commit
    | Origin
    | Relation
    | Type
    | Insert
    | Update
    | Delete
    | Truncate
    | LogicalMessage
    | StreamStart
    | StreamStop
    | StreamCommit
    | StreamAbort
)


# --------------------------------------------------------------------------- decoding

# Precompiled, bound unpackers: struct.Struct avoids re-parsing the format per call and the
# bound method saves an attribute lookup on the hot path.
_u8_u32 = struct.Struct("!BI").unpack_from
_u16 = struct.Struct("!H").unpack_from
_u32 = struct.Struct("!I").unpack_from
_u32_u8 = struct.Struct("!IB").unpack_from
_u32_u8_u16 = struct.Struct("!IBH").unpack_from
_u32_u32 = struct.Struct("!II").unpack_from
_u32_i32 = struct.Struct("!Ii").unpack_from
_u64 = struct.Struct("!Q").unpack_from
_begin = struct.Struct("!QqI").unpack_from
_commit = struct.Struct("!BQQq").unpack_from
_stream_commit = struct.Struct("!IBQQq").unpack_from
_msg_head = struct.Struct("!BQ").unpack_from
_trunc_head = struct.Struct("!IB").unpack_from

_KIND_TEXT: Final = 0x74  # 't'
_KIND_NULL: Final = 0x6E  # 'n'
_KIND_UNCHANGED: Final = 0x75  # 'u'
_KIND_BINARY: Final = 0x62  # 'b'
_N: Final = 0x4E  # 'N' new tuple follows
_K: Final = 0x4B  # 'K' old key follows
_O: Final = 0x4F  # 'O' old row follows


def _read_tuple(buf: bytes, pos: int) -> tuple[TupleData, int]:
    (natts,) = _u16(buf, pos)
    pos += 2
    values: list[ColumnValue] = []
    append = values.append
    # One iteration per column, never per byte: a text value is one slice of the payload.
    for _ in range(natts):
        kind = buf[pos]
        if kind == _KIND_TEXT:
            (length,) = _u32(buf, pos + 1)
            pos += 5
            end = pos + length
            append(buf[pos:end])
            pos = end
        elif kind == _KIND_NULL:
            append(None)
            pos += 1
        elif kind == _KIND_UNCHANGED:
            append(UNCHANGED_TOAST)
            pos += 1
        elif kind == _KIND_BINARY:
            (length,) = _u32(buf, pos + 1)
            pos += 5
            end = pos + length
            append(BinaryValue(buf[pos:end]))
            pos = end
        else:
            raise ValueError(f"unknown tuple column kind {chr(kind)!r} (0x{kind:02x}) at offset {pos}")
    # Slicing past the end silently shortens the value instead of failing: check once here.
    if pos > len(buf):
        raise ValueError(f"tuple data runs past the end of the message ({pos} > {len(buf)} bytes)")
    return tuple(values), pos


def _read_cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.find(0, pos)
    if end < 0:
        raise ValueError(f"unterminated string at offset {pos}")
    # pgoutput sends names converted to the session's client_encoding (UTF8 for us).
    return buf[pos:end].decode("utf-8"), end + 1


def _old_kind(byte: int) -> Literal["K", "O"]:
    if byte == _K:
        return "K"
    if byte == _O:
        return "O"
    raise ValueError(f"expected old tuple kind 'K' or 'O', got {chr(byte)!r}")


def _expect_new(byte: int) -> None:
    if byte != _N:
        raise ValueError(
            f"expected new tuple marker 'N', got {chr(byte)!r} "
            "(a streamed change decoded with streaming=False, or the reverse?)"
        )


_Parsed: TypeAlias = tuple[Message, int]


def _p_begin(buf: bytes, pos: int, xid: int | None) -> _Parsed:
    final_lsn, ts, txid = _begin(buf, pos)
    return Begin(final_lsn, ts, txid), pos + 20


def _p_commit(buf: bytes, pos: int, xid: int | None) -> _Parsed:
    flags, commit_lsn, end_lsn, ts = _commit(buf, pos)
    return Commit(flags, commit_lsn, end_lsn, ts), pos + 25


def _p_origin(buf: bytes, pos: int, xid: int | None) -> _Parsed:
    (lsn,) = _u64(buf, pos)
    name, pos = _read_cstring(buf, pos + 8)
    return Origin(lsn, name), pos


def _p_relation(buf: bytes, pos: int, xid: int | None) -> _Parsed:
    (relid,) = _u32(buf, pos)
    namespace, pos = _read_cstring(buf, pos + 4)
    name, pos = _read_cstring(buf, pos)
    replident = chr(buf[pos])
    (natts,) = _u16(buf, pos + 1)
    pos += 3
    columns = []
    for _ in range(natts):
        flags = buf[pos]
        colname, pos = _read_cstring(buf, pos + 1)
        type_oid, typmod = _u32_i32(buf, pos)
        pos += 8
        columns.append(RelColumn(flags, colname, type_oid, typmod))
    return Relation(relid, namespace or "pg_catalog", name, replident, tuple(columns), xid), pos


def _p_type(buf: bytes, pos: int, xid: int | None) -> _Parsed:
    (type_id,) = _u32(buf, pos)
    namespace, pos = _read_cstring(buf, pos + 4)
    name, pos = _read_cstring(buf, pos)
    return Type(type_id, namespace or "pg_catalog", name, xid), pos


def _p_insert(buf: bytes, pos: int, xid: int | None) -> _Parsed:
    relid, marker = _u32_u8(buf, pos)
    _expect_new(marker)
    new, pos = _read_tuple(buf, pos + 5)
    return Insert(relid, new, xid), pos


def _p_update(buf: bytes, pos: int, xid: int | None) -> _Parsed:
    relid, marker = _u32_u8(buf, pos)
    pos += 5
    if marker == _N:
        new, pos = _read_tuple(buf, pos)
        return Update(relid, new, None, None, xid), pos
    kind = _old_kind(marker)
    old, pos = _read_tuple(buf, pos)
    _expect_new(buf[pos])
    new, pos = _read_tuple(buf, pos + 1)
    return Update(relid, new, old, kind, xid), pos


def _p_delete(buf: bytes, pos: int, xid: int | None) -> _Parsed:
    relid, marker = _u32_u8(buf, pos)
    kind = _old_kind(marker)
    old, pos = _read_tuple(buf, pos + 5)
    return Delete(relid, kind, old, xid), pos


def _p_truncate(buf: bytes, pos: int, xid: int | None) -> _Parsed:
    nrels, options = _trunc_head(buf, pos)
    pos += 5
    relids = struct.unpack_from(f"!{nrels}I", buf, pos)
    return Truncate(options, relids, xid), pos + 4 * nrels


def _p_message(buf: bytes, pos: int, xid: int | None) -> _Parsed:
    flags, lsn = _msg_head(buf, pos)
    prefix, pos = _read_cstring(buf, pos + 9)
    (length,) = _u32(buf, pos)
    pos += 4
    end = pos + length
    if end > len(buf):
        raise ValueError(f"message content runs past the end ({end} > {len(buf)} bytes)")
    return LogicalMessage(flags, lsn, prefix, buf[pos:end], xid), end


def _p_stream_start(buf: bytes, pos: int, xid: int | None) -> _Parsed:
    txid, first = _u32_u8(buf, pos)
    return StreamStart(txid, first == 1), pos + 5


def _p_stream_stop(buf: bytes, pos: int, xid: int | None) -> _Parsed:
    return StreamStop(), pos


def _p_stream_commit(buf: bytes, pos: int, xid: int | None) -> _Parsed:
    txid, flags, commit_lsn, end_lsn, ts = _stream_commit(buf, pos)
    return StreamCommit(txid, flags, commit_lsn, end_lsn, ts), pos + 29


def _p_stream_abort(buf: bytes, pos: int, xid: int | None) -> _Parsed:
    txid, subxid = _u32_u32(buf, pos)
    return StreamAbort(txid, subxid), pos + 8


_PARSERS: Final = {
    ord("B"): _p_begin,
    ord("C"): _p_commit,
    ord("O"): _p_origin,
    ord("R"): _p_relation,
    ord("Y"): _p_type,
    ord("I"): _p_insert,
    ord("U"): _p_update,
    ord("D"): _p_delete,
    ord("T"): _p_truncate,
    ord("M"): _p_message,
    ord("S"): _p_stream_start,
    ord("E"): _p_stream_stop,
    ord("c"): _p_stream_commit,
    ord("A"): _p_stream_abort,
}

# Inside a StreamStart/StreamStop block these carry the streamed transaction's xid first.
_XID_PREFIXED: Final = frozenset(map(ord, "RYIUDTM"))

_NAMES: Final = {
    ord("B"): "Begin",
    ord("C"): "Commit",
    ord("O"): "Origin",
    ord("R"): "Relation",
    ord("Y"): "Type",
    ord("I"): "Insert",
    ord("U"): "Update",
    ord("D"): "Delete",
    ord("T"): "Truncate",
    ord("M"): "Message",
    ord("S"): "Stream Start",
    ord("E"): "Stream Stop",
    ord("c"): "Stream Commit",
    ord("A"): "Stream Abort",
}


def decode(payload: bytes | memoryview, *, streaming: bool = False) -> Message:
    """Decode one pgoutput message.

    ``streaming`` must be True between a :class:`StreamStart` and its :class:`StreamStop`:
    there Relation/Type/Insert/Update/Delete/Truncate/Message carry the xid of the streamed
    (sub)transaction (set on the result's ``xid``). :class:`PgOutputDecoder` tracks this for you.

    Raises ValueError for an unknown message type, a truncated message, trailing bytes or a
    malformed tuple; the message names the type and offset.
    """
    # A memoryview is copied once: bytes slicing then yields each column value in one step,
    # which is cheaper than slicing a memoryview and copying every value out of it.
    buf = payload if type(payload) is bytes else bytes(payload)
    if not buf:
        raise ValueError("empty pgoutput message")
    tag = buf[0]
    parser = _PARSERS.get(tag)
    if parser is None:
        raise ValueError(
            f"unknown pgoutput message type {chr(tag)!r} (0x{tag:02x}); "
            "only protocol versions 1 and 2 are supported (no two_phase)"
        )
    try:
        if streaming and tag in _XID_PREFIXED:
            (xid,) = _u32(buf, 1)
            msg, end = parser(buf, 5, xid)
        else:
            msg, end = parser(buf, 1, None)
    except (struct.error, IndexError) as exc:
        raise ValueError(f"truncated pgoutput {_NAMES[tag]} message ({len(buf)} bytes): {exc}") from None
    except ValueError as exc:
        raise ValueError(f"malformed pgoutput {_NAMES[tag]} message: {exc}") from None
    if end != len(buf):
        raise ValueError(
            f"malformed pgoutput {_NAMES[tag]} message: {len(buf) - end} trailing byte(s)"
            + ("" if streaming else " (a streamed change decoded with streaming=False?)")
        )
    return msg


class PgOutputDecoder:
    """Decodes a message sequence, tracking whether it is inside a StreamStart/StreamStop block.

    Holds no other state, so one instance per replication connection is enough.
    """

    __slots__ = ("in_stream",)

    def __init__(self) -> None:
        self.in_stream = False

    def decode(self, payload: bytes | memoryview) -> Message:
        """Decode one message; see :func:`decode`."""
        msg = decode(payload, streaming=self.in_stream)
        if type(msg) is StreamStart:
            self.in_stream = True
        elif type(msg) is StreamStop:
            self.in_stream = False
        return msg
