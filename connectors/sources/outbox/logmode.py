"""Outbox relay, log mode (PostgreSQL): the outbox table's inserts read from the WAL.

The table is published with ``publish = 'insert'``, so the common insert-then-delete-in-the-same-
transaction pattern (which keeps the table empty) costs one WAL record each way and the delete
half is never seen. Transactions arrive in commit order, so each aggregate's events stay in
order. The slot is confirmed only past fully delivered transactions (see cdc.pg.confirm). Only
one relay can stream a slot at a time: a second replica waits (retrying) until the slot is free.
Rows are not deleted by the relay in this mode; the application's own delete does that.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from cdc.errors import CdcError, SourceConfigError, SourceUnavailableError
from cdc.handoff import EventHandoff
from cdc.masking import mask_dsn
from cdc.pg import pgoutput as po
from cdc.pg.confirm import ConfirmTracker
from cdc.pg.logical import run_stream
from cdc.pg.replication import ReplicationConnection, XLogData, normal_connection
from cdc.pg.types import TypeMap
from cdc.plugin import ChangeEvent, Offset

log = logging.getLogger(__name__)

CHUNK = 1000
#: pg_type OID of uuid. Its pgoutput text is uuid_out's canonical form (lowercase 8-4-4-4-12),
#: exactly what ``str(uuid.UUID(...))`` gives, and the relay only needs that text (a header, an
#: error message): parsing it into a UUID and printing it back cost 0.7 µs per event.
UUID_OID = 2950


class LogReader:
    """The reader thread of log mode; produces outbox events through ``to_event``."""

    def __init__(
        self,
        dsn: str,
        table: str,
        slot: str,
        publication: str,
        status_interval: float,
        to_event: Callable[[dict[str, Any], str, Offset], ChangeEvent],
    ) -> None:
        self.dsn, self.table, self.slot, self.publication = dsn, table, slot, publication
        self.status_interval = status_interval
        self.to_event = to_event
        self.partition = f"slot:{slot}"
        self.confirm = ConfirmTracker()
        self.handoff = EventHandoff(50 * CHUNK)
        self.stop = threading.Event()
        self.resume: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None

    def prepare(self) -> None:
        """Create the insert-only publication and the slot when missing; load the column types."""
        with normal_connection(self.dsn) as conn:
            pub = conn.execute(
                "SELECT pubinsert, pubupdate, pubdelete FROM pg_publication WHERE pubname = %s",
                (self.publication,),
            ).fetchone()
            if pub is None:
                conn.execute(
                    sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH (publish = 'insert')").format(
                        sql.Identifier(self.publication), sql.Identifier(self.table)
                    )
                )
            elif pub != (True, False, False):
                raise SourceConfigError(
                    f"publication {self.publication!r} must publish inserts only (the relay ignores deletes)",
                    hint=f"ALTER PUBLICATION {self.publication} SET (publish = 'insert')",
                )
            oids = [r[0] for r in conn.execute(
                "SELECT atttypid FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (self.table,),
            )]  # fmt: skip
            self.types = TypeMap.load(conn, oids)
            self.slot_exists = (
                conn.execute(
                    "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)
                ).fetchone()
                is not None
            )

    def start(self, offset: Offset | None) -> None:
        if offset and "commit" in offset:
            self.resume = (int(offset["commit"]), int(offset["i"]))
        self._thread = threading.Thread(target=self._run, name="cdc-outbox-wal", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        repl: ReplicationConnection | None = None
        try:
            repl = ReplicationConnection(self.dsn)
            if not self.slot_exists:
                created = repl.create_slot(self.slot, export_snapshot=False)
                log.info("created slot %s at %s", created.name, created.consistent_point)
            options = {"proto_version": "1", "publication_names": self.publication}
            handler = _Handler(self)
            run_stream(
                repl, self.slot, options, self.confirm, handler, self.stop,
                status_interval=self.status_interval, queue_empty=self.handoff.empty, on_idle=handler.flush,
            )  # fmt: skip
        except CdcError as exc:
            self.handoff.fail(exc)
        except psycopg.Error as exc:
            self.handoff.fail(SourceUnavailableError(f"outbox log mode: {mask_dsn(str(exc))}"))
        except Exception as exc:  # surfaced by poll()
            self.handoff.fail(exc)
        finally:
            if repl is not None:
                repl.close()

    def put(self, chunk: list[ChangeEvent]) -> None:
        if self.handoff.put(chunk, self.stop):
            last = chunk[-1].offset
            self.confirm.emitted(int(last["commit"]), int(last["i"]))

    def poll(self, timeout: float) -> list[ChangeEvent]:
        return self.handoff.take(timeout)

    def acknowledge(self, offset: Offset) -> None:
        self.confirm.acknowledge(int(offset["commit"]), int(offset["i"]))

    def close(self) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(30)


class _Handler:
    def __init__(self, reader: LogReader) -> None:
        self.reader = reader
        self.loaders: dict[int, tuple[tuple[str, Callable[[bytes], Any]], ...]] = {}
        self.chunk: list[ChangeEvent] = []
        self.commit_lsn = 0
        self.index = 0

    def __call__(self, msg: po.Message, frame: XLogData) -> None:
        r = self.reader
        kind = type(msg)
        if kind is po.Begin:
            assert isinstance(msg, po.Begin)
            self.commit_lsn, self.index = msg.final_lsn, 0
        elif kind is po.Commit:
            assert isinstance(msg, po.Commit)
            r.confirm.commit(self.commit_lsn, msg.end_lsn, self.index)
            # Batched across transactions until the socket runs dry (run_stream's on_idle).
            if len(self.chunk) >= CHUNK:
                self.flush()
        elif kind is po.Relation:
            assert isinstance(msg, po.Relation)
            self.loaders[msg.relation_id] = tuple(
                (c.name, bytes.decode if c.type_oid == UUID_OID else r.types.loader(c.type_oid))
                for c in msg.columns
            )
        elif kind is po.Insert:
            assert isinstance(msg, po.Insert)
            loaders = self.loaders.get(msg.relation_id)
            if loaders is None:
                return
            position = (self.commit_lsn, self.index)
            self.index += 1
            if r.resume is not None and position <= r.resume:
                return
            row = {}
            for (name, load), raw in zip(loaders, msg.new, strict=True):
                row[name] = load(raw) if isinstance(raw, bytes) else None
            offset = {"commit": position[0], "i": position[1]}
            self.chunk.append(r.to_event(row, r.partition, offset))
            if len(self.chunk) >= CHUNK:
                self.flush()

    def flush(self) -> None:
        if self.chunk:
            self.reader.put(self.chunk)
            self.chunk = []
