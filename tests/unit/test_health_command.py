"""``cdc health``: the image's HEALTHCHECK finds the endpoint the connector announced.

A real HTTP server (``serve`` on a free port of the loopback interface) answers; only the
environment variable and the file are set up by the test."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cdc.cli import app
from cdc.runtime.metrics import HEALTH_FILE_ENV, Metrics, health_url, serve


@pytest.fixture
def announced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Metrics, Path]]:
    path = tmp_path / "health-url"
    monkeypatch.setenv(HEALTH_FILE_ENV, str(path))
    metrics = Metrics("t")
    server = serve(metrics, "127.0.0.1", 0)  # port 0: not the 8080 the image once assumed
    try:
        yield metrics, path
    finally:
        server.shutdown()
        server.server_close()


def health(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["health", *args])
    return result.exit_code, result.output


def test_serve_announces_the_port_it_bound_and_health_follows_it(announced: tuple[Metrics, Path]) -> None:
    metrics, path = announced
    url = path.read_text().strip()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/healthz")
    assert not url.startswith("http://127.0.0.1:0/")
    code, output = health()
    assert code == 0, output
    metrics.failed(retriable=False)  # a fatal error: /healthz answers 503
    code, output = health()
    assert code == 1 and "answered 503" in output, output


def test_no_announcement_is_unhealthy_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HEALTH_FILE_ENV, str(tmp_path / "never-written"))
    code, output = health()
    assert code == 1 and "runtime.http_port" in output, output
    monkeypatch.delenv(HEALTH_FILE_ENV)
    code, output = health()
    assert code == 1 and "--url" in output, output


def test_url_overrides_the_announcement_and_a_gone_endpoint_is_unhealthy(
    announced: tuple[Metrics, Path],
) -> None:
    assert health()[0] == 0  # the announced endpoint is up; --url asks another one
    code, output = health("--url", "http://127.0.0.1:1/healthz", "--timeout", "2")
    assert code == 1 and "127.0.0.1:1" in output, output


def test_wildcard_addresses_are_probed_on_loopback() -> None:
    assert health_url("0.0.0.0", 8080) == "http://127.0.0.1:8080/healthz"  # noqa: S104 - not a bind
    assert health_url("::", 9000) == "http://[::1]:9000/healthz"
    assert health_url("10.1.2.3", 80) == "http://10.1.2.3:80/healthz"


def test_an_unwritable_announcement_is_a_warning_and_serving_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(HEALTH_FILE_ENV, str(tmp_path / "missing-dir" / "health-url"))
    with caplog.at_level(logging.WARNING, logger="cdc.runtime.metrics"):
        server = serve(Metrics("t"), "127.0.0.1", 0)
    try:
        code, output = health("--url", health_url("127.0.0.1", int(server.server_address[1])))
        assert code == 0, output
    finally:
        server.shutdown()
        server.server_close()
    assert any("cdc health" in r.getMessage() and "writable" in r.getMessage() for r in caplog.records)
