"""Signals a process manager or a closed terminal sends: each is a graceful stop, never a kill.

Runs the embedded demo (SQLite -> Avro files, no server needed) as a real process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.harness import ROOT, wait_for


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_stop_signal_flushes_commits_and_exits_zero(tmp_path: Path, sig: signal.Signals) -> None:
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cdc.cli", "demo", "--dir", str(tmp_path / "d"), "--seconds", "120"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        try:
            offsets = tmp_path / "d" / "offsets.json"
            wait_for(lambda: offsets.is_file() and offsets.stat().st_size > 0, 60, "the demo's first commit")
            started = time.monotonic()
            proc.send_signal(sig)
            code = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    text = log.read_text(errors="replace")
    assert code == 0, f"{sig.name}: exit {code}\n{text[-2000:]}"
    assert time.monotonic() - started < 25
    assert f"received {sig.name}: stopping" in text
    assert json.loads(offsets.read_text()), "offsets committed"


def test_a_stop_while_the_broker_is_down_at_start_up_is_prompt(
    tmp_path: Path, pg_database: str, registry_url: str
) -> None:
    """Blocking metadata calls wait in one-second slices, so SIGTERM is not held for their timeout."""
    from tests.integration.dbs import LegacyApp
    from tests.integration.harness import ITEM_KEY, ITEM_VALUE, Connector, write_config

    LegacyApp(pg_database).dispose()  # the items table
    text = f"""
name: stop-while-down
source: {{connector: polling, url: "{pg_database}"}}
streams:
  - {{name: items, key_schema: k.avsc, value_schema: v.avsc,
      capture: {{table: items, mode: incrementing, incrementing_column: id}}}}
kafka: {{bootstrap_servers: "127.0.0.1:1"}}
schema_registry: {{url: "{registry_url}"}}
offsets: {{store: kafka}}
"""
    conn = Connector(
        write_config(tmp_path, text, {"k.avsc": ITEM_KEY, "v.avsc": ITEM_VALUE}), tmp_path / "c.log"
    )
    try:
        wait_for(lambda: "starting connector" in conn.log_text(), 30, "start-up")
        time.sleep(3)  # inside the first metadata request to the dead broker
        code, took = conn.terminate(timeout=60)
    finally:
        conn.ensure_stopped()
    assert code == 0, conn.log_text()[-2000:]
    assert took < 5, f"SIGTERM took {took:.1f}s"
