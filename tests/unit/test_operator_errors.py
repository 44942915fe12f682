"""An operator's mistake ends in one located line and a documented exit code, never a traceback.

Runs the real CLI on the embedded demo's config (SQLite, file output: no server needed).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdc.demo import demo_config_path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cdc.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "CDC_LOG_FORMAT": "json", "PYTHONPATH": f"{cwd}:{ROOT}", **(env or {})},
    )


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Path]:
    shutil.copytree(demo_config_path().parent, tmp_path / "cfg")
    config = tmp_path / "cfg" / demo_config_path().name
    os.environ["CDC_DEMO_DIR"] = str(tmp_path / "run")
    (tmp_path / "run").mkdir()
    # The demo database, so `run` gets as far as its offsets and port.
    out = run("demo", "--dir", str(tmp_path / "run"), "--seconds", "1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (tmp_path / "run" / "offsets.json").unlink(missing_ok=True)
    yield config
    del os.environ["CDC_DEMO_DIR"]


def edit(config: Path, old: str, new: str) -> Path:
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new))
    return config


def assert_one_line_error(out: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.returncode == code, (out.returncode, out.stderr[-2000:])
    error = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert error, out.stderr[-2000:]
    for needle in needles:
        assert needle in out.stderr, out.stderr[-2000:]


def test_a_connector_module_that_raises_at_import(demo: Path, tmp_path: Path) -> None:
    (tmp_path / "brokenconn.py").write_text('raise RuntimeError("boom at import")\n')
    edit(demo, "connector: polling", 'connector: "brokenconn:Source"')
    out = run("validate", str(demo), cwd=tmp_path)
    assert_one_line_error(out, 2, "source.connector", "brokenconn", "RuntimeError: boom at import")


def test_a_config_that_is_not_utf8(demo: Path, tmp_path: Path) -> None:
    demo.write_bytes(demo.read_bytes().replace(b"demo-legacy-shop", "démo".encode("latin-1")))
    assert_one_line_error(run("validate", str(demo), cwd=tmp_path), 2, "not UTF-8")


def test_an_unknown_schema_registry_option(demo: Path, tmp_path: Path) -> None:
    text = demo.read_text().split("output:")[0] + (
        "output: {kind: kafka}\nkafka: {bootstrap_servers: 127.0.0.1:1}\n"
        "schema_registry: {url: 'http://127.0.0.1:1', config: {basic.auth.usr.info: 'a:b'}}\n"
        "offsets: {store: kafka}\n"
    )
    demo.write_text(text)
    out = run("validate", str(demo), cwd=tmp_path)
    assert_one_line_error(out, 2, "schema_registry.config", "basic.auth.usr.info")


def test_the_metrics_port_in_use(demo: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        edit(demo, "runtime:\n", f"runtime:\n  http_port: {port}\n")
        out = run("run", str(demo), cwd=tmp_path)
    assert_one_line_error(out, 9, "runtime.http_port", f"127.0.0.1:{port}")


def test_an_offsets_path_that_cannot_be_written(demo: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    edit(demo, "  path: ${CDC_DEMO_DIR:-../../.run/demo}/offsets.json", f"  path: {blocker}/offsets.json")
    out = run("run", str(demo), cwd=tmp_path)
    assert_one_line_error(out, 9, "offsets.path", "cannot write there")
