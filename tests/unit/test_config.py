"""Config loading: every problem at once, with its dotted path and a hint; secrets masked."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc.config import load_config
from cdc.errors import ConfigError

KEY = '{"type":"record","name":"K","fields":[{"name":"id","type":"long"}]}'
VALUE = '{"type":"record","name":"V","fields":[{"name":"id","type":"long"},{"name":"name","type":"string"}]}'

BASE = """
name: shop
source:
  connector: polling
  url: ${DB_URL}
streams:
  - name: items
    key_schema: k.avsc
    value_schema: v.avsc
    capture: {table: items, mode: incrementing, incrementing_column: id}
output: {kind: file, directory: out}
offsets: {store: file, path: offsets.json}
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "k.avsc").write_text(KEY)
    (tmp_path / "v.avsc").write_text(VALUE)
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={"DB_URL": "sqlite:///x.db"} if env is None else env)
    return info.value.problems


def test_valid_config_resolves_paths_relative_to_the_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE), env={"DB_URL": "sqlite:///x.db"})
    assert cfg.resolve(cfg.streams[0].key_schema) == (tmp_path / "k.avsc").resolve()
    assert cfg.offsets.path is not None
    assert cfg.resolve(cfg.offsets.path) == (tmp_path / "offsets.json").resolve()


def test_bad_yaml_names_line_and_column(tmp_path: Path) -> None:
    found = problems(tmp_path, "name: x\nsource: [unclosed\n")
    assert len(found) == 1
    assert "line 3" in found[0] or "line 2" in found[0]
    assert "invalid YAML" in found[0]


def test_unknown_keys_everywhere_are_reported_together_with_hints(tmp_path: Path) -> None:
    text = BASE.replace("name: shop", "name: shop\ndelivey: exactly_once").replace(
        "capture: {table: items,", "capture: {tabel: items2, table: items,"
    )
    text = text.replace("  url: ${DB_URL}", "  url: ${DB_URL}\n  poll_intervall: 5s")
    found = problems(tmp_path, text)
    joined = "\n".join(found)
    assert "delivey: unknown key (hint: did you mean 'delivery'?)" in joined
    assert "source.poll_intervall: unknown key (hint: did you mean 'poll_interval'?)" in joined
    assert "streams[0].capture.tabel: unknown key (hint: did you mean 'table'?)" in joined


def test_wrong_types_name_the_path_and_the_value(tmp_path: Path) -> None:
    text = BASE.replace("url: ${DB_URL}", "url: ${DB_URL}\n  fetch_size: many")
    text = text.replace(
        "output: {kind: file, directory: out}",
        "output: {kind: file, directory: out}\nruntime: {max_batch: -3}",
    )
    joined = "\n".join(problems(tmp_path, text))
    assert "source.fetch_size" in joined and "'many'" in joined
    assert "runtime.max_batch" in joined


def test_missing_environment_variable_and_default(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE, env={})
    assert any("source.url: environment variable DB_URL is not set" in p for p in found)
    cfg = load_config(write(tmp_path, BASE.replace("${DB_URL}", "${DB_URL:-sqlite:///d.db}")), env={})
    assert cfg.source.options()["url"] == "sqlite:///d.db"


def test_substitution_is_on_values_not_raw_text(tmp_path: Path) -> None:
    # A value containing YAML syntax stays a plain string: no injection of structure.
    cfg = load_config(write(tmp_path, BASE), env={"DB_URL": "sqlite:///x.db\nevil: true"})
    assert cfg.source.options()["url"] == "sqlite:///x.db\nevil: true"


def test_exactly_once_needs_a_kafka_offset_store(tmp_path: Path) -> None:
    text = BASE + "delivery: exactly_once\n"
    joined = "\n".join(problems(tmp_path, text))
    assert "exactly_once needs offsets.store: kafka" in joined
    assert "exactly_once needs output.kind: kafka" in joined


def test_mode_requirements_of_the_polling_source(tmp_path: Path) -> None:
    text = BASE.replace(
        "capture: {table: items, mode: incrementing, incrementing_column: id}",
        "capture: {table: items, mode: timestamp}",
    )
    joined = "\n".join(problems(tmp_path, text))
    assert "streams[0].capture" in joined and "needs timestamp_column" in joined


def test_missing_schema_file_and_unknown_connector(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE.replace("v.avsc", "nope.avsc"))
    assert any("streams[0].value_schema: file not found" in p for p in found)
    found = problems(tmp_path, BASE.replace("connector: polling", "connector: polish"))
    assert any("unknown source connector 'polish'" in p for p in found)


def test_secrets_never_show_in_errors_or_repr(tmp_path: Path) -> None:
    env = {"DB_URL": "postgresql://app:s3cr3t@db:5432/shop"}
    text = BASE.replace("url: ${DB_URL}", "url: ${DB_URL}\n  fetch_size: zero")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env=env)
    assert "s3cr3t" not in str(info.value)
    from connectors.sources.polling.config import PollingConfig

    cfg = PollingConfig.model_validate({"url": env["DB_URL"]})
    assert "s3cr3t" not in repr(cfg) and "s3cr3t" not in str(cfg.url)
    assert cfg.url.secret == env["DB_URL"]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "top level must be a mapping" in problems(tmp_path, "- a\n- b\n")[0]


def test_source_and_sink_dead_letter_topics_never_collide(tmp_path: Path) -> None:
    from cdc.sink.config import SinkConfig

    cfg = load_config(write(tmp_path, BASE), env={"DB_URL": "sqlite:///x.db"})
    topic = cfg.topic_of(cfg.streams[0])
    sink = SinkConfig.model_validate(
        {
            "name": "s",
            "topics": [{"topic": topic}],
            "target": {"url": "sqlite:///t.db"},
            "kafka": {"bootstrap_servers": "k:9092"},
            "schema_registry": {"url": "http://r:8081"},
        }
    )
    assert cfg.dead_letter_topic_of(cfg.streams[0]) == f"{topic}.source-dlq"
    assert sink.dead_letter_topic(topic) == f"{topic}.sink-dlq"
