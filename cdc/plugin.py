"""The public connector API. Connectors import this module (and the helpers it names) only.

A *source* turns changes of a database into :class:`ChangeEvent` objects. The runtime owns
everything after that: eventification through the stream's Avro schemas, serialization,
production, delivery tracking, offset commits, and - only after the broker acknowledged the
events - :meth:`SourceConnector.acknowledge`.

Positions follow Kafka Connect's model: a source has one or more *partitions* (a polled
table, a replication slot), each with a JSON-serializable *offset*. Every event names the
partition it came from and the offset to resume from once this event (and everything before
it) is safely delivered. The runtime commits, per partition, the offset of the last event of
the longest delivered prefix, so a resume never skips an undelivered event.

Resume semantics: :meth:`SourceConnector.start` receives the committed offsets; the source
continues strictly after them. Events at or below a committed offset may be re-emitted (the
runtime tolerates duplicates: delivery is at-least-once unless the config says exactly_once).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

JsonValue = Any
Offset = dict[str, JsonValue]
Offsets = dict[str, Offset]


class Op(enum.StrEnum):
    """Debezium's operation codes."""

    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"  # a row read by a snapshot or a bulk poll
    #: no row: only a position to commit once every event before it is delivered (nothing is
    #: produced). A source emits one to make a position durable before its first row, e.g. the
    #: log position of a snapshot, so a restart continues that snapshot instead of a new one.
    CHECKPOINT = "checkpoint"


@dataclass(frozen=True, slots=True)
class EncodedValue:
    """A plain Avro body (no wire header) and the registry subject/version of its writer schema.

    ``subject`` None means the stream's own value subject; ``version`` None means the version of
    the stream's value schema (the one registered for the .avsc).
    """

    body: bytes | None  # None: a tombstone
    subject: str | None = None
    version: int | None = None


@dataclass(frozen=True, slots=True)
class TransactionEnd:
    """What a source knows at a transaction's commit, attached to the last event it emits of
    that transaction (``ChangeEvent.txn_end``), for the runtime's transaction metadata topic."""

    txid: str
    position: JsonValue  # the commit position (a PostgreSQL commit LSN, a binlog file/pos or GTID)
    ts_ms: int | None  # commit time
    #: change events of the whole transaction per stream (counted also when a restart skips
    #: the ones already delivered, so the END record is the same after a crash)
    counts: dict[str, int]

    def __reduce__(self) -> tuple[type[TransactionEnd], tuple[str, JsonValue, int | None, dict[str, int]]]:
        # One crosses the capture process's pipe with every transaction's last event (every
        # event, for single-row transactions). A slotted dataclass's own pickling runs
        # __getstate__/__setstate__ in Python over fields(); the constructor's arguments cost
        # about 1.5 µs less on each side.
        return (TransactionEnd, (self.txid, self.position, self.ts_ms, self.counts))


@dataclass(slots=True)
class ChangeEvent:
    """One captured change of one row.

    ``before``/``after`` hold *source column* values as the driver returned them; the runtime
    maps them onto the stream's schema. ``key`` holds the key columns' values (for a delete,
    the only thing some sources know).
    """

    stream: str
    op: Op
    key: dict[str, Any]
    after: dict[str, Any] | None
    partition: str
    offset: Offset
    before: dict[str, Any] | None = None
    ts_ms: int | None = None
    txid: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    #: a value the application already encoded (an outbox payload): produced as is, not
    #: eventified; the runtime prefixes the registry id of its subject/version
    encoded_value: EncodedValue | None = None
    #: extra Kafka headers for this event
    headers: list[tuple[str, bytes]] | None = None
    #: 1-based order of this change within its transaction (``txid``), stable across restarts;
    #: None when the source does not number them (sources with ``transaction_metadata``)
    txn_order: int | None = None
    #: set on the last event a source emits of a transaction (``transaction_metadata`` sources)
    txn_end: TransactionEnd | None = None


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """A source column as the source reports it, used to check a stream's schema at start-up."""

    name: str
    type_name: str  # the database's own type name, e.g. "numeric(10,2)", "timestamp with time zone"
    nullable: bool
    python_type: type | None = None  # what the driver returns, where known
    precision: int | None = None
    scale: int | None = None
    timezone_aware: bool | None = None  # True for timestamptz / MySQL TIMESTAMP
    enum_labels: tuple[str, ...] | None = None  # ENUM labels; for a MySQL SET its members, in order
    #: the base type without parameters, lower case ("bigint", "time", "set"), where the source
    #: knows it; lets the start-up check judge source types a Python type cannot tell apart
    data_type: str | None = None
    #: the smallest and largest value of an integer column (BIGINT UNSIGNED: 0..2**64-1, BIT(3):
    #: 0..7), so a narrower Avro type is a start-up problem instead of a row error at run time
    value_range: tuple[int, int] | None = None
    length: int | None = None  # BINARY(n)/CHAR(n): n (bytes or characters); BIT(n): n bits
    fsp: int | None = None  # fractional-second digits of TIME/DATETIME/TIMESTAMP columns
    charset: str | None = None  # MySQL character set of a text column ("utf8mb4", "latin1")


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """What a source needs to know of one configured stream."""

    name: str
    key_columns: tuple[str, ...]
    columns: tuple[str, ...]  # every source column the stream maps (key columns included)
    capture: Mapping[str, Any]  # the connector's own per-stream options, already validated
    #: the stream's row filter as text (``where:``) and its field -> source column map, for a
    #: source that can push part of it into its query (cdc.shaping.pushdown); the runtime
    #: applies the whole filter anyway
    where: str | None = None
    field_map: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One finding of a preflight check (``cdc check``)."""

    ok: bool
    what: str
    detail: str = ""
    warning: bool = False


class Lease(abc.ABC):
    """Proof that this process is the only running instance of a connector."""

    @abc.abstractmethod
    def release(self) -> None:
        """Give the lease up (also happens when the process dies)."""


class SourceConnector(abc.ABC):
    """Base class of every source connector.

    Lifecycle: ``__init__(config, streams)`` (no I/O) -> ``describe`` / ``check`` ->
    ``acquire_lease`` -> ``start(offsets)`` -> ``poll`` repeatedly, interleaved with
    ``acknowledge`` -> ``close``. ``poll`` must not block longer than its timeout.

    With a Kafka output the runtime usually runs the started source in a capture process
    (``runtime.capture``): a second instance is constructed there from the same config, so the
    class must be importable by its entry point or ``package.module:Class`` name, and event
    values must pickle (driver values such as Decimal, datetime, UUID, lists and dicts do).
    ``describe``, ``check`` and ``acquire_lease`` run on the instance in the connector process.
    """

    #: the pydantic model of the ``source:`` block (extra keys forbidden)
    config_model: ClassVar[type[BaseModel]]
    #: the pydantic model of each stream's ``capture:`` block
    stream_model: ClassVar[type[BaseModel]]
    #: True when the source supplies ``encoded_value`` itself (the value schema is then the
    #: contract consumers read with, and is not checked against source columns)
    encodes_values: ClassVar[bool] = False
    #: True when reading is light next to value conversion and Avro encoding (a query-based
    #: source): a capture process then also eventifies and encodes, and hands over serialized
    #: records, so the two processes share the work evenly. Log readers leave it False.
    encode_in_capture: ClassVar[bool] = False
    #: True when the source's snapshot reading is light like a query's, though its log reading
    #: is not: a capture process then eventifies and encodes the batches made only of snapshot
    #: rows (READ events) and hands the log's events over unencoded.
    encode_snapshot_in_capture: ClassVar[bool] = False
    #: commit (and so acknowledge) at least this often, in seconds, whatever
    #: offsets.commit_interval says: for a source that releases rows on acknowledge and
    #: replays what it had not released after a crash (the outbox relay deletes relayed rows)
    max_commit_interval: ClassVar[float | None] = None
    #: True when events carry ``txn_order`` and the last of each transaction ``txn_end``, so the
    #: runtime can publish transaction metadata (BEGIN/END records) for this source
    transaction_metadata: ClassVar[bool] = False
    #: Set by the runtime before ``start``: False when the connector publishes no transaction
    #: metadata (no ``transactions:`` block). A ``transaction_metadata`` source may then leave
    #: ``txn_order`` and ``txn_end`` unset, and save their cost per event.
    transaction_metadata_wanted: bool = True

    def __init__(self, config: BaseModel, streams: Sequence[StreamSpec]) -> None:
        self.config = config
        self.streams = list(streams)

    @abc.abstractmethod
    def describe(self) -> dict[str, dict[str, ColumnInfo]]:
        """Return, per stream, the columns the stream reads. Raises SourceConfigError if missing."""

    def check(self) -> list[CheckResult]:
        """Preflight: reachability, privileges, settings. Default: describe() succeeds."""
        self.describe()
        return [CheckResult(True, "source reachable and streams resolvable")]

    @abc.abstractmethod
    def acquire_lease(self, connector_name: str) -> Lease:
        """Take the single-instance lease or raise AlreadyRunningError."""

    @abc.abstractmethod
    def start(self, offsets: Offsets) -> None:
        """Begin capturing strictly after the given committed offsets."""

    @abc.abstractmethod
    def poll(self, timeout: float) -> list[ChangeEvent]:
        """Return the next events (possibly none) within about ``timeout`` seconds. The returned
        event objects belong to the runtime, which may replace their fields (column policies,
        headers); the dicts they hold are never modified, so a source may share them."""

    def key_set_streams(self) -> list[str]:
        """Streams whose deletes this source finds by comparing key sets (a row whose key vanished
        was deleted). Before ``start`` the runtime then calls :meth:`restore_keys` with the keys
        the stream's entity topic still holds, so deletes made while the connector was stopped
        are found too. Default: none."""
        return []

    def restore_keys(  # noqa: B027 - optional hook
        self,
        stream: str,
        emitted: Mapping[bytes, dict[str, Any]],
        encode_key: Callable[[dict[str, Any]], bytes],
    ) -> None:
        """Called before ``start`` for each stream of :meth:`key_set_streams` (only with a Kafka
        output, entity format): ``emitted`` maps the Avro body of every key live in the stream's
        topic (latest record not a tombstone) to that key as source column values;
        ``encode_key`` encodes a key of source column values the same way, so the source
        compares keys byte for byte, never by Python value. Runs in the process the source
        runs in."""

    def acknowledge(self, offsets: Offsets) -> None:  # noqa: B027 - optional hook
        """Everything up to these offsets is committed downstream; the source may release it."""

    def check_position(self, offsets: Offsets) -> list[CheckResult]:
        """Preflight of the committed position (``cdc check``): can a start resume from these
        offsets (e.g. the binary logs or the slot holding them still exist)? Default: no finding.
        Must work on a source that was not started."""
        return []

    def lag(self, offsets: Offsets) -> dict[str, float]:
        """Optional gauges by name (``<stream>_seconds``, ``slot_bytes``...) for the given committed
        offsets, for metrics and ``cdc status``. Must work on a source that was not started."""
        return {}

    def show_offset(self, offset: Offset) -> Offset:
        """The offset as ``cdc status`` shows it (e.g. LSNs as PostgreSQL writes them). Default: as is."""
        return offset

    def signal(self, action: str, args: dict[str, Any]) -> str:
        """Send the running connector a signal through the source (e.g. ``execute-snapshot``);
        returns the signal's id. Sources without signals refuse."""
        from cdc.errors import SourceConfigError

        raise SourceConfigError(f"connector {type(self).__name__} does not take signals ({action!r})")

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and threads. Must be safe to call twice."""
