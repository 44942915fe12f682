"""Fatal is fatal: refused credentials stop with exit 10 and a clear error (never retried as if the
server were down); a long outage turns /healthz unhealthy while the connector keeps retrying."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import pytest

from cdc.errors import AuthenticationError
from cdc.schemas.subjects import SubjectSchema, make_client, resolve_id
from tests.integration.dbs import LegacyApp
from tests.integration.harness import ITEM_KEY, ITEM_VALUE, Connector, cdc, wait_for, write_config

pytestmark = pytest.mark.integration

CONFIG = """
name: auth-{tag}
source: {{connector: polling, url: "{url}"}}
streams:
  - {{name: items, key_schema: k.avsc, value_schema: v.avsc,
      capture: {{table: items, mode: incrementing, incrementing_column: id}}}}
output: {{kind: file, directory: out}}
offsets: {{store: file, path: offsets.json}}
runtime: {{http_port: {port}, unhealthy_after: 2s, retry_backoff_max: 1s}}
"""


def _with_password(url: str, password: str) -> str:
    u = urlparse(url)
    return urlunparse(u._replace(netloc=f"{u.username}:{password}@{u.hostname}:{u.port}"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("server", ["postgres", "mysql"])
def test_a_wrong_database_password_stops_at_once(
    tmp_path: Path, request: pytest.FixtureRequest, server: str
) -> None:
    url = request.getfixturevalue("pg_database" if server == "postgres" else "mysql_database")
    LegacyApp(url).dispose()
    bad = _with_password(url, "Wr0ng-pass word")
    config = write_config(
        tmp_path,
        CONFIG.format(tag=server, url=bad, port=_free_port()),
        {"k.avsc": ITEM_KEY, "v.avsc": ITEM_VALUE},
    )
    started = time.monotonic()
    out = cdc("run", str(config), timeout=60)
    assert out.returncode == 10, out.stderr[-2000:]
    assert time.monotonic() - started < 30
    assert "refused the credentials" in out.stderr and "retrying in" not in out.stderr
    assert "Wr0ng" not in out.stderr + out.stdout


def test_a_long_outage_makes_healthz_unhealthy_while_retrying(tmp_path: Path) -> None:
    port = _free_port()
    dead = f"postgresql://cdc:cdc@127.0.0.1:{_free_port()}/nowhere"  # nothing listens there
    config = write_config(
        tmp_path, CONFIG.format(tag="outage", url=dead, port=port), {"k.avsc": ITEM_KEY, "v.avsc": ITEM_VALUE}
    )
    conn = Connector(config, tmp_path / "c.log")

    def status() -> int:
        try:
            return int(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    try:
        wait_for(lambda: status() == 200, 30, "/healthz up and healthy at first")
        wait_for(lambda: status() == 503, 30, "/healthz unhealthy after unhealthy_after")
        assert conn.alive(), "still retrying, not dead"
        assert "retrying" in conn.log_text()
    finally:
        conn.terminate()
        conn.ensure_stopped()


class _Refusing(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self._refuse()

    def do_GET(self) -> None:
        self._refuse()

    def _refuse(self) -> None:
        body = b'{"error_code": 40101, "message": "Unauthorized"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        return


def test_a_registry_that_refuses_the_credentials_is_fatal() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = make_client(
            f"http://127.0.0.1:{server.server_address[1]}", {"basic.auth.user.info": "u:bad"}
        )
        with pytest.raises(AuthenticationError) as info:
            resolve_id(client, SubjectSchema("s-value", ITEM_VALUE, False))
        assert "refused (401)" in str(info.value) and "bad" not in str(info.value)
    finally:
        server.shutdown()
