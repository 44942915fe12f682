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
