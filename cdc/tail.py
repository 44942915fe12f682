"""``cdc tail``: decode the Avro files of the file output and print the latest events."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

from fastavro import reader
from rich.console import Console


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every event in one output file, decoded."""
    with open(path, "rb") as fh:
        return [e for e in reader(fh) if isinstance(e, dict)]


def print_tail(path: Path, limit: int) -> None:
    console = Console()
    files = sorted(path.glob("*.avro")) if path.is_dir() else [path]
    if not files:
        console.print(f"no .avro files in {path}")
        return
    for file in files:
        with open(file, "rb") as fh:
            events: deque[dict[str, Any]] = deque(
                (e for e in reader(fh) if isinstance(e, dict)), maxlen=limit
            )
        console.rule(f"{file.stem} (last {len(events)})")
        for event in events:
            op = event["headers"].get("cdc.op", "?")
            value = "∅ (tombstone)" if event["value"] is None else json.dumps(event["value"], default=str)
            console.print(
                f"[bold]{op}[/] key={json.dumps(event['key'], default=str)} value={value}", markup=True
            )
