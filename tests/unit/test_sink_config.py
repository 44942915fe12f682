"""Sink config loading: every problem at once, with dotted paths and hints, like connector configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc.errors import ConfigError
from cdc.sink.loader import load_sink_config

BASE = """
name: shop-sink
topics:
  - topic: cdc.items
  - topic: cdc.orders
    table: orders
    schema: sales
    mode: update
    format: envelope
    key: [order_id]
target:
  url: ${DB_URL}
kafka:
  bootstrap_servers: localhost:9092
schema_registry:
  url: http://localhost:8081
"""


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "sink.yaml"
    path.write_text(text)
    return load_sink_config(path, env={"DB_URL": "postgresql://u:secret@db/x"} if env is None else env)


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    return info.value.problems


def test_defaults_and_per_topic_options(tmp_path: Path) -> None:
    cfg = load(tmp_path, BASE)
    assert cfg.group == "cdc-sink-shop-sink"
    items, orders = cfg.topics
    assert (items.table_name, items.mode.value, items.format.value, items.key) == (
        "cdc_items",
        "upsert",
        "entity",
        None,
    )
    assert (orders.table_name, orders.table_schema, orders.mode.value, orders.key) == (
        "orders",
        "sales",
        "update",
        ["order_id"],
    )
    assert cfg.dead_letter_topic("cdc.items") == "cdc.items.sink-dlq"
    assert "secret" not in str(cfg.target.url) and cfg.target.url.secret.endswith("@db/x")
    assert cfg.on_error.value == "fail" and cfg.auto_create and cfg.batch_size == 5000


def test_every_problem_is_reported_at_once_with_paths_and_hints(tmp_path: Path) -> None:
    text = (
        BASE.replace("mode: update", "mode: merge")
        .replace("  - topic: cdc.items", "  - topic: cdc.items\n    tabel: x")
        .replace("name: shop-sink", "name: shop-sink\nbatch_size: 0\non_eror: fail")
    )
    found = problems(tmp_path, text, env={})
    joined = "\n".join(found)
    assert "target.url: environment variable DB_URL is not set" in joined
    assert "topics[0].tabel: unknown key (hint: did you mean 'table'?)" in joined
    assert "topics[1].mode: Input should be 'insert', 'upsert' or 'update'" in joined
    assert "batch_size: Input should be greater than or equal to 1" in joined
    assert "on_eror: unknown key (hint: did you mean 'on_error'?)" in joined
    assert len(found) == 6, joined  # the unset variable also leaves target.url empty


def test_required_blocks_and_duplicate_topics(tmp_path: Path) -> None:
    found = problems(tmp_path, "name: s\ntopics: [{topic: a}, {topic: a}]\n")
    assert {
        "target: required key is missing",
        "kafka: required key is missing",
        "schema_registry: required key is missing",
    } <= set(found)
    found = problems(tmp_path, BASE.replace("cdc.orders", "cdc.items"))
    assert found == ["topics: duplicate topics ['cdc.items']"]


def test_bad_yaml_and_a_non_mapping(tmp_path: Path) -> None:
    assert "invalid YAML" in problems(tmp_path, "name: [x\n")[0]
    assert "top level must be a mapping" in problems(tmp_path, "- a\n")[0]


def test_the_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "configs" / "sink" / "postgres-sink.yaml"
    cfg = load_sink_config(example, env={"WAREHOUSE_URL": "postgresql://u:p@db/warehouse"})
    assert [t.table_name for t in cfg.topics] == ["customer", "payment"]
