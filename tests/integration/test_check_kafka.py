"""`cdc check` checks what it says: the broker answers with the configured client settings, the
topics exist with a fitting cleanup policy or may be created, and the subjects are registered."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.integration.dbs import LegacyApp
from tests.integration.harness import ITEM_KEY, ITEM_VALUE, cdc, write_config

pytestmark = pytest.mark.integration

CONFIG = """
name: {topic}
source: {{connector: polling, url: "{url}"}}
streams:
  - name: items
    topic: {topic}
    key_schema: key.avsc
    value_schema: value.avsc
    capture: {{table: items, mode: incrementing, incrementing_column: id}}
kafka:
  bootstrap_servers: "{bootstrap}"
  client: {client}
schema_registry: {{url: "{registry}"}}
offsets: {{store: kafka, topic: {topic}.offsets}}
"""


def check(
    tmp_path: Path, url: str, topic: str, bootstrap: str, registry: str, client: str = "{}"
) -> tuple[int, str]:
    text = CONFIG.format(url=url, topic=topic, bootstrap=bootstrap, registry=registry, client=client)
    config = write_config(tmp_path, text, {"key.avsc": ITEM_KEY, "value.avsc": ITEM_VALUE})
    out = cdc("check", str(config), timeout=120)
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    return out.returncode, out.stdout + out.stderr


def test_check_contacts_kafka(
    tmp_path: Path, pg_database: str, topic_name: str, kafka_bootstrap: str, registry_url: str
) -> None:
    LegacyApp(pg_database).dispose()  # creates the items table
    code, out = check(tmp_path, pg_database, topic_name, "127.0.0.1:1", registry_url)
    assert code == 7 and "[FAIL] kafka at 127.0.0.1:1 did not answer" in out, out
    assert "check passed" not in out

    sasl = "{security.protocol: SASL_PLAINTEXT, sasl.mechanism: PLAIN, sasl.username: u, sasl.password: p}"
    code, out = check(tmp_path, pg_database, topic_name, kafka_bootstrap, registry_url, sasl)
    assert code == 7 and "did not answer" in out and "check passed" not in out, out
    assert "sasl.password" not in out or "'p'" not in out

    # Reachable: the missing topics may be created; the subjects are not registered yet.
    code, out = check(tmp_path, pg_database, topic_name, kafka_bootstrap, registry_url)
    assert f"[ok  ] topic {topic_name} is missing; this principal may create it" in out, out
    assert f"[ok  ] topic {topic_name}.offsets is missing" in out
    # Not registered yet but compatible: a warning, so check -> schemas register -> run works in that order.
    assert code == 0 and f"[warn] subject {topic_name}-value: not registered yet (compatible)" in out, out

    # An entity stream's topic that exists with the delete policy cannot hold its tombstones.
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    fut = admin.create_topics([NewTopic(topic_name, 1, 1, config={"cleanup.policy": "delete"})])[topic_name]
    fut.result(30)
    assert cdc("schemas", "register", str(tmp_path / "connector.yaml")).returncode == 0
    code, out = check(tmp_path, pg_database, topic_name, kafka_bootstrap, registry_url)
    assert code == 7 and f"[FAIL] topic {topic_name}: cleanup.policy=delete" in out, out
    for f in admin.delete_topics([topic_name], operation_timeout=30).values():
        f.result(30)
    code, out = check(tmp_path, pg_database, topic_name, kafka_bootstrap, registry_url)
    assert code == 0 and "check passed" in out, out
