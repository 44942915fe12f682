"""char(n) keeps its padding in the snapshot exactly as pgoutput sends it in the stream
(``::text`` would strip the trailing blanks of a bpchar)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.conftest import unique
from tests.integration.harness import Connector, TopicReader, write_config

pytestmark = pytest.mark.integration

KEY = {"type": "record", "name": "PadKey", "fields": [{"name": "id", "type": "long"}]}
VALUE = {
    "type": "record",
    "name": "Pad",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "code", "type": "string"},
        {"name": "tag", "type": ["null", "string"], "default": None},
        {"name": "codes", "type": {"type": "array", "items": "string"}},
    ],
}
CONFIG = """
name: {name}
source: {{connector: postgres_wal, url: "{url}", slot: {slot}, publication: {slot}_pub, status_interval: 1s}}
streams:
  - {{name: pad, topic: {name}, key_schema: key.avsc, value_schema: value.avsc, capture: {{table: public.pad}}}}
kafka: {{bootstrap_servers: "{bootstrap}"}}
schema_registry: {{url: "{registry}", auto_register: true}}
offsets: {{store: kafka, topic: {name}.offsets, commit_interval: 200ms}}
"""


def test_char_padding_is_equal_in_snapshot_and_stream(
    tmp_path: Path, pg_database: str, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("CREATE DOMAIN tag8 AS char(8)")
        conn.execute(
            "CREATE TABLE pad (id bigint PRIMARY KEY, code char(6) NOT NULL, tag tag8, codes char(3)[] NOT NULL)"
        )
        conn.execute("INSERT INTO pad VALUES (1, 'ab', 'x', ARRAY['a', 'bc']), (2, '', NULL, '{}')")
    slot = unique("test")
    text = CONFIG.format(
        name=topic_name, url=pg_database, slot=slot, bootstrap=kafka_bootstrap, registry=registry_url
    )
    proc = Connector(write_config(tmp_path, text, {"key.avsc": KEY, "value.avsc": VALUE}), tmp_path / "c.log")
    reader = TopicReader(kafka_bootstrap, registry_url, topic_name)
    try:
        reader.wait_until(lambda s: len(s) == 2, 60)  # the snapshot
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute("INSERT INTO pad VALUES (11, 'ab', 'x', ARRAY['a', 'bc']), (12, '', NULL, '{}')")
        state = reader.wait_until(lambda s: len(s) == 4, 60)
    finally:
        proc.terminate()
        proc.ensure_stopped()
        reader.close()
    snap1, snap2, streamed1, streamed2 = (state[f'{{"id": {i}}}'] for i in (1, 2, 11, 12))
    assert snap1 == {"id": 1, "code": "ab    ", "tag": "x       ", "codes": ["a  ", "bc "]}
    assert snap2 == {"id": 2, "code": "      ", "tag": None, "codes": []}
    assert {**streamed1, "id": 1} == snap1 and {**streamed2, "id": 2} == snap2
