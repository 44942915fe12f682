"""Prometheus metrics and the liveness/readiness HTTP endpoint."""

from __future__ import annotations

import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

log = logging.getLogger(__name__)

#: names a file where :func:`serve` writes its /healthz URL once it listens, so ``cdc health``
#: (the image's HEALTHCHECK, which sets this variable) finds the endpoint on whatever host and
#: port the config chose
HEALTH_FILE_ENV = "CDC_HEALTH_FILE"


class Health:
    """Liveness and readiness, shared by a source connector's Metrics and the sink's SinkMetrics."""

    def __init__(self) -> None:
        self.ready = False
        self.alive = True
        #: monotonic time of the first retriable failure of the current outage (None: healthy)
        self.failing_since: float | None = None
        self.unhealthy_after = float("inf")
        #: a hot standby waiting for the lease: alive, not ready
        self.standby = False

    def standing_by(self, waiting: bool) -> None:
        """Entering (True) or leaving (False) hot standby."""
        self.standby = waiting
        if waiting:
            self.ready = False

    def healthy(self) -> bool:
        """Alive, and not retrying an outage for longer than ``unhealthy_after``."""
        since = self.failing_since
        return self.alive and (since is None or time.monotonic() - since < self.unhealthy_after)

    def failed(self, retriable: bool) -> None:
        """An attempt failed: a fatal error ends liveness, a retriable one starts (or continues) an outage."""
        self.ready = False
        if not retriable:
            self.alive = False
        elif self.failing_since is None:
            self.failing_since = time.monotonic()

    def running(self) -> None:
        """Started (again): ready, and any outage is over."""
        self.ready, self.failing_since = True, None


class Metrics(Health):
    """The connector's metrics, in a registry of their own (several connectors per process in tests)."""

    def __init__(self, connector: str) -> None:
        super().__init__()
        self.registry = CollectorRegistry()
        labels = ["connector"]
        self.events = Counter(
            "cdc_events_total", "events produced", [*labels, "stream"], registry=self.registry
        )
        self.errors = Counter("cdc_errors_total", "errors by kind", [*labels, "kind"], registry=self.registry)
        self.dead_letters = Counter(
            "cdc_dead_letters_total",
            "rows routed to a dead-letter topic",
            [*labels, "stream"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "cdc_in_flight_events", "events sent, not yet delivered", labels, registry=self.registry
        )
        self.last_commit = Gauge(
            "cdc_last_commit_timestamp_seconds",
            "when offsets were last committed",
            labels,
            registry=self.registry,
        )
        self.lag = Gauge(
            "cdc_source_lag", "source lag gauges (see name)", [*labels, "name"], registry=self.registry
        )
        self.standby_gauge = Gauge(
            "cdc_standby",
            "1 while this instance is a hot standby waiting for the lease",
            labels,
            registry=self.registry,
        )
        self.connector = connector
        self.committed_text = "{}"

    def standing_by(self, waiting: bool) -> None:
        super().standing_by(waiting)
        self.standby_gauge.labels(self.connector).set(1 if waiting else 0)

    def exposition(self) -> bytes:
        return bytes(generate_latest(self.registry))


class Served(Protocol):
    """What the HTTP endpoint serves: source connectors' Metrics and the sink's SinkMetrics."""

    ready: bool
    standby: bool

    def healthy(self) -> bool: ...

    def exposition(self) -> bytes: ...


def serve(metrics: Served, host: str, port: int) -> ThreadingHTTPServer:
    """Serve /healthz (liveness), /readyz (readiness) and /metrics in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._reply(200, metrics.exposition(), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                healthy = metrics.healthy()
                self._reply(200 if healthy else 503, b"ok\n" if healthy else b"unhealthy\n")
            elif self.path == "/readyz":
                if metrics.ready:
                    self._reply(200, b"ready\n")
                else:
                    self._reply(503, b"standby\n" if metrics.standby else b"starting\n")
            else:
                self._reply(404, b"not found\n")

        def _reply(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:  # keep access logs out of the connector's log
            return

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        from cdc.errors import LocalResourceError

        raise LocalResourceError(
            f"runtime.http_port: cannot serve health and metrics on {host}:{port}: {exc.strerror}",
            hint="choose another runtime.http_port, or stop the process that holds it",
        ) from None
    threading.Thread(target=server.serve_forever, name="cdc-http", daemon=True).start()
    port = int(server.server_address[1])  # the one bound: http_port 0 picks a free port
    log.info("health and metrics on http://%s:%s/", host, port)
    announce(host, port)
    return server


def health_url(host: str, port: int) -> str:
    """The /healthz URL a local probe calls for a server bound to ``host`` (a wildcard address
    is probed on the loopback address of its family)."""
    wildcard = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - not a bind
    probe = wildcard.get(host, host)
    return f"http://[{probe}]:{port}/healthz" if ":" in probe else f"http://{probe}:{port}/healthz"


def announce(host: str, port: int) -> None:
    """Write the /healthz URL to the file named by ``CDC_HEALTH_FILE``, if set (atomically: a
    probe never reads half of it). Failing to is a warning: serving goes on."""
    path = os.environ.get(HEALTH_FILE_ENV)
    if not path:
        return
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as fh:
            fh.write(health_url(host, port) + "\n")
        os.replace(temporary, path)
    except OSError as exc:
        log.warning(
            "cannot write the health endpoint's URL to %s (%s): `cdc health` will not find it; "
            "make its directory writable (a read-only root filesystem needs a tmpfs at /tmp)",
            path, exc.strerror,
        )  # fmt: skip
