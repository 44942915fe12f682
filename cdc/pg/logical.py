"""The logical-replication read loop shared by the WAL source and the outbox relay's log mode.

It owns the protocol chores - status updates at a fixed interval, keepalives answered at once,
an optional heartbeat query, transaction boundaries for the confirm tracker - and hands every
decoded pgoutput message to a handler.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import psycopg

from cdc.pg import pgoutput as po
from cdc.pg.confirm import ConfirmTracker
from cdc.pg.replication import Keepalive, ReplicationConnection, XLogData

#: seconds after a committed position moved before it is confirmed to the server
PROMPT_CONFIRM = 0.25


def run_stream(
    repl: ReplicationConnection,
    slot: str,
    options: Mapping[str, str],
    tracker: ConfirmTracker,
    handle: Callable[[po.Message, XLogData], None],
    stop: threading.Event,
    *,
    status_interval: float,
    queue_empty: Callable[[], bool],
    heartbeat: tuple[psycopg.Connection[Any], str, float] | None = None,
    on_idle: Callable[[], None] | None = None,
) -> None:
    """START_REPLICATION and dispatch messages until ``stop`` is set (errors propagate).

    ``on_idle`` is called whenever no further frame is waiting, and before every keepalive and
    status update: a handler that batches events across small transactions hands its batch
    over there, so batching never delays an event behind an empty socket, and the confirm
    tracker never judges "everything delivered" while events sit in a batch.
    """
    idle = on_idle or (lambda: None)
    repl.start(slot, "0/0", options)
    decoder = po.PgOutputDecoder()
    next_status = time.monotonic() + status_interval
    next_heartbeat = time.monotonic() + (heartbeat[2] if heartbeat else 0)
    received = False
    sent, last_sent = 0, time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        # Besides every status_interval, confirm soon after the committed position moved: a
        # process killed before its first status update restarts from the old position and
        # decodes everything since again (issue #12: short runs redid more work every restart).
        if now >= next_status or (tracker.flushed > sent and now >= last_sent + PROMPT_CONFIRM):
            idle()
            sent = tracker.confirmable(queue_empty())
            repl.send_status(sent)
            next_status, last_sent = now + status_interval, now
        if heartbeat is not None and now >= next_heartbeat:
            heartbeat[0].execute(heartbeat[1])
            next_heartbeat = now + heartbeat[2]
        frame = repl.read(0)
        if frame is None:
            idle()
            frame = repl.read(0.2)
            if frame is None:
                continue
        if isinstance(frame, Keepalive):
            idle()
            if not received:
                tracker.keepalive(frame.wal_end)
            received = False
            if frame.reply_requested:
                repl.send_status(tracker.confirmable(queue_empty()))
            continue
        received = True
        msg = decoder.decode(frame.payload)
        if type(msg) is po.Begin:
            tracker.begin()
        handle(msg, frame)
