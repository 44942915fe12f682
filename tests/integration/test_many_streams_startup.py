"""Start-up with many streams (issue #15): the WAL source's catalog read in one set of queries
for every table, and the registry's subjects resolved concurrently. Each fast path is compared
with the path it replaces, on the same database or registry."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import psycopg
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from cdc.errors import SchemaError, SourceConfigError
from cdc.pg.columns import load_columns, load_columns_of
from cdc.schemas.subjects import SubjectSchema, for_each_subject, make_client, register, resolve_id
from connectors.sources.postgres_wal import catalog
from tests.conftest import delete_subjects, required, unique

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE DOMAIN positive AS numeric(10, 2) CHECK (VALUE > 0);
CREATE DOMAIN positive_too AS positive;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE plain (id bigint PRIMARY KEY, name text NOT NULL, price numeric(12, 3), at timestamptz);
CREATE TABLE typed (a int, b text, m mood, p positive_too, tags text[], r int4range, j jsonb,
                    u uuid, d date, PRIMARY KEY (b, a));
CREATE TABLE dropped (id int PRIMARY KEY, gone text, kept varchar(20));
ALTER TABLE dropped DROP COLUMN gone;
CREATE TABLE nokey (x int, y text);
CREATE SCHEMA other;
CREATE TABLE other.plain (k smallint PRIMARY KEY, v bytea);
CREATE TABLE parts (id int, region text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE parts_eu PARTITION OF parts FOR VALUES IN ('eu');
CREATE TABLE parts_us PARTITION OF parts FOR VALUES IN ('us');
CREATE TABLE parent (id int PRIMARY KEY);
CREATE TABLE child_2024 () INHERITS (parent);
CREATE TABLE child_2025 () INHERITS (parent);
CREATE TABLE child_other () INHERITS (parent);
CREATE VIEW a_view AS SELECT 1 AS one;
CREATE TABLE "Mixed Case" ("Id" int PRIMARY KEY);
"""

WANTED: list[tuple[str, str | None]] = [
    ("public.plain", None),
    ("typed", None),
    ("dropped", None),
    ("public.nokey", None),
    ("other.plain", None),
    ("parts", None),
    ("parent", r"child_\d+"),
    ("public.Mixed Case", None),
    ("plain", None),  # the same table for a second stream
]
MISSING = ["nosuch", "a_view", "other.typed", "nosuchschema.plain"]


def test_load_tables_equals_load_table_per_table(pg_database: str) -> None:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(SCHEMA)
        wanted = (
            WANTED[:3]
            + [(name, None) for name in MISSING[:2]]
            + WANTED[3:]
            + [(n, None) for n in MISSING[2:]]
        )
        batched = catalog.load_tables(conn, wanted)
        assert len(batched) == len(wanted)
        for (qualified, children), table in zip(wanted, batched, strict=True):
            if qualified in MISSING:
                assert table is None
                with pytest.raises(SourceConfigError) as one:
                    catalog.load_table(conn, qualified, children)
                assert str(one.value) == str(catalog.missing_table(qualified))
                continue
            assert table is not None, qualified
            # dataclass equality: oid, names, replica identity, key order, columns (in order), kind, children
            reference = catalog.load_table(conn, qualified, children)
            assert table == reference
            assert list(table.columns) == list(reference.columns)
        by_name = {t.qualified: t for t in batched if t is not None}
        assert by_name["public.typed"].key == ("b", "a")
        assert by_name["public.nokey"].key == ()
        assert list(by_name["public.dropped"].columns) == ["id", "kept"]
        assert [c[2] for c in by_name["public.parent"].children] == ["child_2024", "child_2025"]
        # two streams of one table get Table objects of their own
        first, second = batched[0], batched[-len(MISSING[2:]) - 1]
        assert first == second and first is not second and first is not None and second is not None
        assert first.children is not second.children and first.columns is not second.columns
        assert catalog.load_tables(conn, []) == []


def test_load_columns_of_equals_load_columns(pg_database: str) -> None:
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(SCHEMA)
        oids = [
            int(r[0])
            for r in conn.execute(
                "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname IN ('public', 'other') AND c.relkind IN ('r', 'p', 'v') ORDER BY c.relname"
            )
        ]
        assert len(oids) > 10
        many = load_columns_of(conn, oids)
        assert list(many) == oids
        for oid in oids:
            assert many[oid] == load_columns(conn, oid)
            assert list(many[oid]) == list(load_columns(conn, oid))
        assert load_columns_of(conn, []) == {}
        assert load_columns_of(conn, [0]) == {0: {}}


def _schema(name: str, field: str, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    fields: list[dict[str, Any]] = [{"name": field, "type": "long"}, *(extra or [])]
    return {"type": "record", "name": name, "namespace": "cdc.test.many", "fields": fields}


@pytest.fixture
def prefix(registry_url: str) -> Iterator[str]:
    """A unique subject prefix; every subject under it is deleted (soft, then permanently) afterwards."""
    name = unique("test_many")
    yield name
    client = SchemaRegistryClient({"url": registry_url})
    subjects: list[str] = []
    with contextlib.suppress(SchemaRegistryError):
        subjects = [s for s in client.get_subjects() if s.startswith(name)]
    delete_subjects(registry_url, subjects)


def _items(prefix: str, n: int) -> list[SubjectSchema]:
    # distinct schemas per subject, so every subject gets an id of its own
    return [
        SubjectSchema(f"{prefix}.t{i}-{part}", _schema(f"R{i}{part}", f"{part}{i}"), part == "key")
        for i in range(n)
        for part in ("key", "value")
    ]


def test_concurrent_registration_gives_the_ids_of_one_after_another(registry_url: str, prefix: str) -> None:
    required("registry")
    items = _items(prefix, 12)
    concurrent = for_each_subject(partial(register, make_client(registry_url, {})), items)
    assert len(set(concurrent)) == len(items)
    # the reference path: one subject after another, a fresh client (no cached ids)
    client = make_client(registry_url, {})
    assert [register(client, item) for item in items] == concurrent
    assert [resolve_id(client, item) for item in items] == concurrent
    assert for_each_subject(partial(resolve_id, make_client(registry_url, {})), items) == concurrent
    raw = SchemaRegistryClient({"url": registry_url})
    for item in items:
        assert len(raw.get_versions(item.subject)) == 1  # registered once, however often asked
        if item.is_key:
            assert raw.get_compatibility(item.subject) == "FULL_TRANSITIVE"


def test_registration_errors_are_those_of_the_first_failing_subject(registry_url: str, prefix: str) -> None:
    required("registry")
    client = make_client(registry_url, {})
    items = _items(prefix, 4)
    for_each_subject(partial(register, client), items)
    # subject 2's key changes compatibly (refused without allow_key_change), subject 3's value breaks
    # BACKWARD compatibility (a new field without a default)
    changed = list(items)
    changed[4] = SubjectSchema(
        items[4].subject, _schema("R2key", "key2", [{"name": "x", "type": "int", "default": 0}]), True
    )
    changed[7] = SubjectSchema(
        items[7].subject, _schema("R3value", "value3", [{"name": "y", "type": "string"}]), False
    )
    fresh = make_client(registry_url, {})
    with pytest.raises(SchemaError) as many:
        for_each_subject(partial(register, fresh), changed)

    def one_after_another() -> None:
        for item in changed:
            register(make_client(registry_url, {}), item)

    with pytest.raises(SchemaError) as one:
        one_after_another()
    assert str(many.value) == str(one.value)
    assert "key schema differs" in str(many.value) and items[4].subject in str(many.value)
    # allowed, the changed key registers as a new version; an unchanged one is found in one lookup
    new_id = register(fresh, changed[4], allow_key_change=True)
    assert new_id not in for_each_subject(partial(register, fresh), items[:4])
    assert register(make_client(registry_url, {}), changed[4]) == new_id


def test_topics_created_in_several_requests_all_exist(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from confluent_kafka.admin import AdminClient

    from cdc import kafka_clients
    from cdc.config.model import KafkaConfig

    # a small limit stands in for 1,000 topics of 16 partitions (over the controller's 10,000)
    monkeypatch.setattr(kafka_clients, "MAX_RECORDS_PER_REQUEST", 12)
    names = [unique("test_many_topics") for _ in range(5)]
    specs = [kafka_clients.TopicSpec(name, i % 2 == 0, 4, 1, {}) for i, name in enumerate(names)]
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    try:
        kafka_clients.ensure_topics(KafkaConfig(bootstrap_servers=kafka_bootstrap), specs)
        deadline = time.monotonic() + 30
        while True:  # the broker's metadata catches up with the controller shortly after
            topics = admin.list_topics(timeout=30).topics
            if all(name in topics for name in names) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for name in names:
            assert len(topics[name].partitions) == 4
        kafka_clients.ensure_topics(KafkaConfig(bootstrap_servers=kafka_bootstrap), specs)  # idempotent
    finally:
        for fut in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                fut.result()
