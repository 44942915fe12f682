"""`make run` greets a newcomer without warnings: the demo's tables match its contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_runs_without_warnings(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cdc.cli", "demo", "--dir", str(tmp_path / "demo"), "--seconds", "3"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr  # rich logs to stdout
    assert "INFO" in text, "the demo's log is missing"
    noisy = [line for line in text.splitlines() if "WARNING" in line or "ERROR" in line]
    assert not noisy, "\n".join(noisy)
