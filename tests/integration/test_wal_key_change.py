"""An UPDATE that changes the primary key deletes the old key downstream, whatever the table's
REPLICA IDENTITY: DEFAULT sends the old key ('K') only when it changed, FULL sends the whole old
row ('O') on every update, and both must end the old key in a tombstone."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.conftest import unique
from tests.integration.harness import Connector, TopicReader, write_config

pytestmark = pytest.mark.integration

KEY = {"type": "record", "name": "AccKey", "fields": [{"name": "id", "type": "long"}]}
VALUE = {
    "type": "record",
    "name": "Acc",
    "fields": [{"name": "id", "type": "long"}, {"name": "owner", "type": "string"}],
}
CONFIG = """
name: {name}
source: {{connector: postgres_wal, url: "{url}", slot: {slot}, publication: {slot}_pub, status_interval: 1s}}
streams:
  - {{name: acc, topic: {name}, key_schema: key.avsc, value_schema: value.avsc, capture: {{table: public.acc}}}}
kafka: {{bootstrap_servers: "{bootstrap}"}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 200ms}}
"""


@pytest.mark.parametrize("identity", ["DEFAULT", "FULL"])
def test_a_primary_key_change_tombstones_the_old_key(
    tmp_path: Path, pg_database: str, topic_name: str, kafka_bootstrap: str, registry_url: str, identity: str
) -> None:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE acc (id bigint PRIMARY KEY, owner text NOT NULL)")
        conn.execute(f"ALTER TABLE acc REPLICA IDENTITY {identity}")
        conn.execute("INSERT INTO acc VALUES (1, 'ann'), (2, 'bob')")
    slot = unique("test")
    text = CONFIG.format(
        name=topic_name, url=pg_database, slot=slot, bootstrap=kafka_bootstrap, registry=registry_url
    )
    conn_proc = Connector(
        write_config(tmp_path, text, {"key.avsc": KEY, "value.avsc": VALUE}), tmp_path / "c.log"
    )
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    try:
        reader.wait_until(lambda s: len(s) == 2, 60)  # the snapshot
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("UPDATE acc SET id = 10, owner = 'ann2' WHERE id = 1")
            conn.execute("UPDATE acc SET owner = 'bob2' WHERE id = 2")  # no key change: no delete
        state = reader.wait_until(
            lambda s: '{"id": 10}' in s and s.get('{"id": 2}', {}).get("owner") == "bob2", 60
        )
        assert state == {
            '{"id": 1}': None,
            '{"id": 2}': {"id": 2, "owner": "bob2"},
            '{"id": 10}': {"id": 10, "owner": "ann2"},
        }
        tombstones = [k for k, v, _ in reader.records if v is None]
        assert tombstones == [{"id": 1}], tombstones  # exactly one delete: the changed key's
    finally:
        conn_proc.terminate()
        conn_proc.ensure_stopped()
        reader.close()
