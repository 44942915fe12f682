"""The capture process: the source connector runs in a child process, the pipeline in this one.

Python runs one thread at a time per process. With the source's reading and decoding, the
value conversion, the Avro encoding and the producer's delivery reports in one process, a
connector tops out near one core. So a child process reads (socket, protocol, decoding,
driver value loading) and hands change events over in batches; this process eventifies,
encodes, produces, tracks deliveries and commits offsets. Measured on two cores, that split
suits log readers, whose reading is the heavier half (change events pickle as plain tuples at
about 1.7 µs each). A source whose reading is light (``encode_in_capture``: polling) also
eventifies and encodes in the child, which then hands over wire-format bytes.

Nothing about delivery changes: the child acknowledges upstream only what the parent says was
committed, in the order it was told, between two polls of the source (on the thread that polls,
as in-process). The child dies with the parent (PR_SET_PDEATHSIG, and EOF on its pipe), so a
kill -9 of the connector never leaves a child holding a replication slot or a lease.

The child is spawned early (``spawn``: a second interpreter, its imports, the source built and
its tables described - seconds with many tables) while this process still resolves schemas in
the registry; ``start`` then sends what only exists after that: the committed offsets, the
schema ids, the live keys.

Messages, parent -> child: ``("start", StartOrder)`` once, then ``("ack", offsets)``,
``("stop",)`` (also before the start: the child then exits without starting). Child -> parent:
``("started",)``, ``("batch", [event fields as a plain tuple, ...])`` or, from a source that
encodes in the capture process (all its events, or its batches of snapshot rows),
``("encoded", [Encoded fields as a plain tuple | DeadLetter | Filtered | ChangeEvent, ...])``
(at least once, only the batch's last item of each partition carries its offset), ``("lag",
{...})``, ``("error", ErrorReport)``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from cdc import errors
from cdc.config.model import AppConfig, Delivery
from cdc.errors import CdcError, SourceUnavailableError
from cdc.plugin import ChangeEvent, Offsets, Op
from cdc.runtime import gctuning
from cdc.runtime.livekeys import LiveKeys, restore
from cdc.runtime.routing import DeadLetter, Encoded, Filtered, Router
from cdc.schemas.eventify import Record

if TYPE_CHECKING:
    from cdc.runtime.encoding import SchemaIds

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_LINGER = 0.002  # seconds the child waits to fill a batch once it has an event
_BATCH = 5000  # events per message at most
#: what crosses the pipe as itself (anything else is an Encoded record as a plain tuple)
_AS_IS = (DeadLetter, Filtered)
#: what crosses the pipe unencoded: the above and position-only checkpoints (Op.CHECKPOINT)
_RECEIVED_AS_IS = (*_AS_IS, ChangeEvent)


@dataclass(frozen=True)
class ErrorReport:
    """An exception raised in the child, in a form that always pickles."""

    type_name: str
    message: str
    hint: str | None
    trace: str

    @classmethod
    def of(cls, exc: BaseException) -> ErrorReport:
        trace = "".join(traceback.format_exception(exc))
        if isinstance(exc, CdcError):
            return cls(type(exc).__name__, exc.message, exc.hint, trace)
        return cls(type(exc).__name__, str(exc), None, trace)

    def to_exception(self) -> BaseException:
        """The same class of the one error tree where there is one (so the exit code and the
        retry decision are the child's); anything else is a RuntimeError carrying the trace."""
        cls = getattr(errors, self.type_name, None)
        if isinstance(cls, type) and issubclass(cls, CdcError):
            # Subclass constructors take their own arguments (RowError, ConfigError); the
            # message is already formatted, so it goes through the base constructor.
            exc = cls.__new__(cls)
            CdcError.__init__(exc, self.message, hint=self.hint)
            return exc
        return RuntimeError(f"capture process failed: {self.type_name}: {self.message}\n{self.trace}")


@dataclass(frozen=True)
class CaptureSettings:
    """What the child needs to prepare: it builds its own source from the config."""

    app: AppConfig
    log_level: int
    log_format: str
    lag_interval: float


@dataclass(frozen=True)
class StartOrder:
    """What the child needs to start its source, known once the parent prepared its output."""

    offsets: Offsets
    #: set when the source encodes in the capture process (``encode_in_capture`` or
    #: ``encode_snapshot_in_capture``)
    schema_ids: SchemaIds | None
    #: the baseline of key-set delete detection (cdc.runtime.keyset), restored before start
    live_keys: LiveKeys
    #: encode only the batches made of snapshot rows (``encode_snapshot_in_capture``)
    snapshots_only: bool = False


class CaptureProcess:
    """The source, started in a child process; has the pipeline's ``Feed`` interface."""

    def __init__(
        self,
        app: AppConfig,
        stop: threading.Event,
    ) -> None:
        self.app = app
        self.stop = stop
        # Set by the runner once its output is prepared (after ``spawn``), sent with the start.
        self.schema_ids: SchemaIds | None = None
        self.snapshots_only = False
        self.live_keys: LiveKeys = {}
        self._lag: dict[str, float] = {}
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None

    def spawn(self) -> None:
        """Start the child now: it builds its source and describes the tables, then waits for
        ``start``. Called early, that overlaps the parent's own preparation (the registry)."""
        if self._process is not None:
            return
        # spawn, not fork: this process already runs librdkafka's threads, which fork cannot copy.
        ctx = multiprocessing.get_context("spawn")
        parent_end, child_end = ctx.Pipe(duplex=True)
        settings = CaptureSettings(
            self.app,
            logging.getLogger().level,
            os.environ.get("CDC_LOG_FORMAT") or _current_log_format(),
            self.app.runtime.metrics_log_interval,
        )
        process = ctx.Process(
            target=_child_main, args=(child_end, settings, os.getpid()), name=f"cdc-capture-{self.app.name}"
        )
        process.daemon = True
        process.start()
        child_end.close()
        self._conn, self._process = parent_end, process
        log.info("capture process started (pid %d)", process.pid)

    def start(self, offsets: Offsets) -> None:
        """Spawn the child unless ``spawn`` did, hand it the offsets and what else it needs, and
        wait until its source started (its preparation and start errors are raised here)."""
        self.spawn()
        assert self._conn is not None
        try:
            self._conn.send(
                ("start", StartOrder(offsets, self.schema_ids, self.live_keys, self.snapshots_only))
            )
        except OSError:
            raise self._died() from None
        while True:
            message = self._receive(0.5)
            if message is None:
                if self.stop.is_set():
                    return  # a SIGTERM while the source starts: the pipeline stops, close() follows
                continue
            if message[0] == "started":
                return
            raise RuntimeError(f"capture process: unexpected message {message[0]!r} before start")

    def _receive(self, timeout: float) -> tuple[Any, ...] | None:
        """The next batch or start message; lag reports are absorbed; errors are raised."""
        assert self._conn is not None and self._process is not None
        try:
            if not self._conn.poll(timeout):
                if self._process.is_alive():
                    return None
                # It may have reported its error and exited since the poll began.
                if not self._conn.poll(0):
                    raise self._died()
            message: tuple[Any, ...] = self._conn.recv()
        except (EOFError, OSError):
            raise self._died() from None
        if message[0] == "error":
            report: ErrorReport = message[1]
            raise report.to_exception()
        if message[0] == "lag":
            self._lag = message[1]
            return None
        return message

    def _died(self) -> BaseException:
        """Why the child is gone: the error it reported if one is still in the pipe."""
        assert self._process is not None and self._conn is not None
        with contextlib.suppress(EOFError, OSError):
            while self._conn.poll(0):
                message = self._conn.recv()
                if message[0] == "error":
                    report: ErrorReport = message[1]
                    return report.to_exception()
        self._process.join(5)
        return SourceUnavailableError(
            f"the capture process ended unexpectedly (exit code {self._process.exitcode})",
            hint="see its log lines above; the connector resumes from the last committed position",
        )

    def poll(self, timeout: float) -> list[ChangeEvent] | list[Encoded | DeadLetter | Filtered | ChangeEvent]:
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(max(0.0, deadline - time.monotonic()))
            if message is not None:
                if message[0] == "batch":
                    return [ChangeEvent(*fields) for fields in message[1]]
                if message[0] != "encoded":
                    raise RuntimeError(f"capture process: unexpected message {message[0]!r}")
                make = Encoded._make
                return [item if type(item) in _RECEIVED_AS_IS else make(item) for item in message[1]]
            if time.monotonic() >= deadline:
                return []

    def acknowledge(self, offsets: Offsets) -> None:
        assert self._conn is not None
        try:
            self._conn.send(("ack", offsets))
        except OSError:
            raise self._died() from None

    def lag(self, offsets: Offsets) -> dict[str, float]:
        """The gauges the child last computed, for the offsets it was last told were committed."""
        return dict(self._lag)

    def close(self) -> None:
        """Ask the child to close its source and exit; kill it if it does not in time."""
        conn, process = self._conn, self._process
        self._conn = self._process = None
        if process is None or conn is None:
            return
        with contextlib.suppress(OSError):
            conn.send(("stop",))
        # Keep reading, so a child blocked on a full pipe sees the stop and finishes.
        deadline = time.monotonic() + 30
        while process.is_alive() and time.monotonic() < deadline:
            try:
                if conn.poll(0.1):
                    conn.recv()
            except (EOFError, OSError):
                break
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            log.warning("capture process did not exit in time; killing it")
            process.kill()
            process.join(5)
        conn.close()


def _current_log_format() -> str:
    handlers = logging.getLogger().handlers
    return "human" if handlers and type(handlers[0]).__name__ == "RichHandler" else "json"


# --- the child -------------------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _child_main(conn: Connection, settings: CaptureSettings, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    # The parent handles SIGINT/SIGTERM (flush, commit) and then tells the child to stop; a
    # Ctrl-C sent to the whole process group must not cut the child short first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from cdc import logs

    logs.setup(logging.getLevelName(settings.log_level), settings.log_format)
    try:
        _capture(conn, settings)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            conn.send(("error", ErrorReport.of(exc)))
        os._exit(1)
    os._exit(0)


def _capture(conn: Connection, settings: CaptureSettings) -> None:
    from cdc.runtime.sources import build_source

    source, eventifiers = build_source(settings.app)
    try:
        source.describe()
        # Prepared while the parent prepares its output; now wait for the order to start.
        message = conn.recv()  # EOF (the parent gone) ends the child through _child_main
        if message[0] != "start":
            return  # stopped before the start (the parent's preparation failed or a SIGTERM)
        order: StartOrder = message[1]
        gctuning.tune_for_streaming()
        pack = _packer(settings.app, order, eventifiers)
        acks: deque[Offsets] = deque()
        stop = threading.Event()
        threading.Thread(
            target=_control, args=(conn, acks, stop), name="capture-control", daemon=True
        ).start()
        committed = dict(order.offsets)
        restore(source, eventifiers, order.live_keys)
        source.start(committed)
        conn.send(("started",))
        next_lag = time.monotonic()
        while not stop.is_set():
            while acks:
                offsets = acks.popleft()
                committed.update(offsets)
                source.acknowledge(offsets)
            events = source.poll(0.2)
            if events and len(events) < _BATCH:
                _linger(source, events)
            if events:
                conn.send(pack(events))
            now = time.monotonic()
            if now >= next_lag:
                conn.send(("lag", source.lag(committed)))
                next_lag = now + settings.lag_interval
        # Acknowledgements that arrived before the stop still count: the source may release them.
        while acks:
            source.acknowledge(acks.popleft())
    finally:
        source.close()


def _linger(source: Any, events: list[ChangeEvent]) -> None:
    """Wait up to ``_LINGER`` for more events and add them to ``events`` (up to ``_BATCH``).

    Under a trickle of single-row transactions this sends a message every few milliseconds
    instead of one per event (syscalls and wake-ups in both processes), well inside the
    producer's own linger.ms. It sleeps through the linger and then takes what arrived, rather
    than waiting on the source: a wait returns at every chunk the reader thread hands over (one
    per transaction under a trickle), and each of those wake-ups is a futex and a hand-over of
    the GIL between the two threads - at 1,000 transactions/s they cost more CPU than reading
    the transactions (measured: 313 µs of capture CPU per live event against 44 in a drain)."""
    time.sleep(_LINGER)
    while len(events) < _BATCH:
        more = source.poll(0)
        if not more:
            return
        events.extend(more)


def _packer(
    app: AppConfig, order: StartOrder, eventifiers: dict[str, Any]
) -> Callable[[list[ChangeEvent]], tuple[str, list[Any]]]:
    """The message a batch of events crosses the pipe in: ``("batch", fields)`` as they are,
    or ``("encoded", items)`` serialized (every batch, or only those made of snapshot rows)."""
    if order.schema_ids is None:
        return lambda events: ("batch", _fields_of(events))
    encode = _encoder(app, order.schema_ids, eventifiers)
    if not order.snapshots_only:
        return lambda events: ("encoded", encode(events))

    def pack(events: list[ChangeEvent]) -> tuple[str, list[Any]]:
        # A snapshot hands its rows over in chunks of their own; the batch that holds its last
        # rows and the log's first events crosses unencoded, like the log's.
        if all(e.op is Op.READ or e.op is Op.CHECKPOINT for e in events):
            return ("encoded", encode(events))
        return ("batch", _fields_of(events))

    return pack


def _fields_of(events: list[ChangeEvent]) -> list[Any]:
    """The events as plain tuples (constructor order): they pickle several times faster."""
    return [
        (e.stream, e.op, e.key, e.after, e.partition, e.offset, e.before, e.ts_ms, e.txid, e.source,
         e.encoded_value, e.headers, e.txn_order, e.txn_end)
        for e in events
    ]  # fmt: skip


def _encoder(
    app: AppConfig, schema_ids: SchemaIds, eventifiers: dict[str, Any]
) -> Callable[[list[ChangeEvent]], list[Any]]:
    """Eventify and serialize in the child: records cross the pipe as wire-format bytes
    (Encoded fields as a plain tuple; a NamedTuple pickles through Python code per item)."""
    from cdc.runtime.encoding import RecordEncoder  # here: only a source that encodes here needs it

    reg = app.schema_registry
    assert reg is not None

    def registry() -> Any:
        # The registry client (and the Kafka client under it, ~30 MB of this interpreter) is
        # loaded only if a record needs a schema id the parent did not send (an application's
        # encoded value naming a schema version).
        from cdc.schemas.subjects import make_client

        return make_client(reg.url, reg.config)

    encoder = RecordEncoder(eventifiers, schema_ids, registry)
    route = Router(app, eventifiers)
    # At least once, a record crosses with its offset only if it is the batch's last of its
    # partition: the parent commits the delivered prefix's last offset per partition, so the
    # others were never used there, and a dict per row (with a datetime in a polling cursor)
    # was the costliest part of pickling and unpickling the batch (initial load: 1.5 of the
    # 1.6 µs per row of pickling). Exactly once keeps every offset: there the parent commits
    # the offsets of the records in its own transaction, which need not end with a batch.
    one_offset_per_partition = app.delivery is not Delivery.EXACTLY_ONCE

    def pack(events: list[ChangeEvent]) -> list[Any]:
        items: list[Any] = []
        last = {e.partition: i for i, e in enumerate(events)} if one_offset_per_partition else None
        for i, event in enumerate(events):
            if event.op is Op.CHECKPOINT:  # no record: crosses as the event itself
                items.append(event)
                continue
            routed = route(event)  # a RowError under on_error: fail ends the child, reported
            if type(routed) in _AS_IS:
                items.append(routed)  # a dead letter, or a filtered event's offset
                continue
            assert isinstance(routed, Record)
            key, value = encoder.encode(routed)
            offset = event.offset if last is None or last[event.partition] == i else None
            items.append(
                (routed.stream, routed.topic, key, value, routed.headers, event.partition, offset, event.op)
            )
        return items

    return pack


def _control(conn: Connection, acks: deque[Offsets], stop: threading.Event) -> None:
    """Receive the parent's messages; the parent gone (EOF) ends the child at once."""
    try:
        while True:
            message = conn.recv()
            if message[0] == "ack":
                acks.append(message[1])
            elif message[0] == "stop":
                stop.set()
                return
    except (EOFError, OSError):
        os._exit(1)
