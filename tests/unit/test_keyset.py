"""cdc.runtime.keyset: which key-set streams can have their baseline read back from Kafka."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from cdc.config import load_config
from cdc.plugin import SourceConnector
from cdc.runtime.keyset import streams_to_restore, unrestorable
from tests.unit.test_config import BASE, write

KAFKA = BASE.replace(
    "output: {kind: file, directory: out}",
    "kafka: {bootstrap_servers: 'k:9092'}\nschema_registry: {url: 'http://r:8081'}",
).replace("offsets: {store: file, path: offsets.json}", "")


class _Source:
    def key_set_streams(self) -> list[str]:
        return ["items"]


def _load(tmp_path: Path, text: str) -> Any:
    return load_config(write(tmp_path, text), env={"DB_URL": "sqlite:///x.db"})


def test_entity_streams_on_kafka_are_restored(tmp_path: Path) -> None:
    source = cast(SourceConnector, _Source())
    cfg = _load(tmp_path, KAFKA)
    assert streams_to_restore(cfg, source) == ["items"] and unrestorable(cfg, source) == []


def test_file_output_and_envelope_streams_warn(tmp_path: Path) -> None:
    source = cast(SourceConnector, _Source())
    (warning,) = unrestorable(_load(tmp_path, BASE), source)
    assert "'items'" in warning and "deleted while the connector is stopped" in warning
    envelope = KAFKA.replace("    value_schema: v.avsc\n", "    value_schema: v.avsc\n    format: envelope\n")
    cfg = _load(tmp_path, envelope)
    assert streams_to_restore(cfg, source) == [] and len(unrestorable(cfg, source)) == 1
