"""Delete detection with the file output survives restarts: the entity topic files are read back
at start-up, so a row deleted while the connector was stopped gets its tombstone (SQLite: no
server needed)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from cdc.tail import read_events
from tests.integration.harness import ITEM_KEY, ITEM_VALUE, ROOT, write_config

CONFIG = """
name: file-deletes
source: {{connector: polling, url: "sqlite:///{db}", poll_interval: 200ms, lag_window: 0s}}
streams:
  - name: items
    key_schema: key.avsc
    value_schema: value.avsc
    capture:
      table: items
      mode: timestamp+incrementing
      timestamp_column: updated_at
      incrementing_column: id
      delete_detection: {{interval: 500ms}}
output: {{kind: file, directory: topics}}
offsets: {{store: file, path: offsets.json, commit_interval: 200ms}}
"""


def _run(config: Path, seconds: float) -> str:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cdc.cli", "run", str(config), "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, text=True,
    )  # fmt: skip
    time.sleep(seconds)
    proc.terminate()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    return out


def test_a_row_deleted_while_stopped_gets_its_tombstone(tmp_path: Path) -> None:
    db = tmp_path / "legacy.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE items (id INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL, "
            "price NUMERIC(10,2) NOT NULL, updated_at TIMESTAMP NOT NULL, secret TEXT)"
        )
        conn.executemany(
            "INSERT INTO items VALUES (?, ?, '1.00', '2024-01-01 00:00:00.000000', NULL)",
            [(i, f"item {i}") for i in range(1, 6)],
        )
    config = write_config(tmp_path, CONFIG.format(db=db), {"key.avsc": ITEM_KEY, "value.avsc": ITEM_VALUE})
    first = _run(config, 4)
    assert "cannot be read back" not in first
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM items WHERE id IN (2, 4)")  # while the connector is stopped
    _run(config, 4)
    (topic_file,) = (tmp_path / "topics").glob("*.avro")
    last: dict[int, object] = {}
    for event in read_events(topic_file):
        last[event["key"]["id"]] = event["value"]
    assert {k for k, v in last.items() if v is None} == {2, 4}, last
    assert {k for k, v in last.items() if v is not None} == {1, 3, 5}
