"""cdc schemas diff: a contract scaffolded by cdc init, registered, then the table changes under it."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from tests.integration.harness import cdc

pytestmark = pytest.mark.integration


def test_diff_reports_drift_proposes_an_evolution_and_asks_the_registry(
    pg_database: str, tmp_path: Path, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE item (id int PRIMARY KEY, name text NOT NULL, price numeric(6,2), qty int, gone text)"
        )
    directory = tmp_path / topic_name
    env = {"KAFKA": kafka_bootstrap, "REGISTRY": registry_url}
    made = cdc(
        "init", str(directory), "-c", "postgres_wal", "--url", pg_database, "--name", topic_name,
        "--kafka-bootstrap", "${KAFKA}", "--registry-url", "${REGISTRY}",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    config = str(directory / "connector.yaml")
    assert cdc("schemas", "register", config, env=env).returncode == 0

    def diff(*extra: str) -> tuple[int, str]:
        out = cdc("schemas", "diff", config, *extra, env=env)
        assert "Traceback" not in out.stderr, out.stderr
        return out.returncode, out.stdout + out.stderr

    code, out = diff()
    assert code == 0 and "stream item: no differences" in out, out
    assert f"registry: subject {topic_name}.item-value accepts the contract" in out

    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE item ADD COLUMN note text; ALTER TABLE item ALTER COLUMN qty TYPE bigint; "
            "ALTER TABLE item DROP COLUMN gone; ALTER TABLE item ALTER COLUMN name DROP NOT NULL; "
            'ALTER TABLE item ADD COLUMN "unit price" numeric(8,3)'
        )
    code, out = diff("--write")
    assert code == 0, out  # the runtime still accepts the contract: drift, not breakage
    assert (
        '+ column note (text) is not in the contract: proposed optional field note ["null", "string"]' in out
    )
    assert "(add fields: {unit_price: unit price})" in out
    assert "~ field qty: column 'qty' is now bigint (maps to long)" in out
    assert "~ field gone: source column 'gone' was dropped" in out
    assert "value fields ['name']: the source columns are nullable" in out
    assert f"subject {topic_name}.item-value accepts the evolved schema" in out
    proposed = json.loads((directory / "schemas/item-value.proposed.avsc").read_text())
    assert proposed["fields"][-2:] == [
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "unit_price", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 8,
                                                  "scale": 3}], "default": None},
    ]  # fmt: skip

    # A contract edited incompatibly (a new field without a default) is refused by the registry.
    current = directory / "schemas/item-value.avsc"
    schema = json.loads(current.read_text())
    schema["fields"].append({"name": "note", "type": "string"})
    current.write_text(json.dumps(schema))
    code, out = diff()
    assert code == 3 and f"subject {topic_name}.item-value REFUSES the evolved schema" in out, out

    # A mapped column without a default that is gone: the runtime would refuse to start.
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("ALTER TABLE item DROP COLUMN name")
    code, out = diff()
    assert code == 3 and "! stream 'item' value field 'name': source column 'name' does not exist" in out, out
