"""The registry round trips ``register`` makes per subject (a cold start of N streams makes them
for 2N subjects). The calls are recorded by a stand-in client; their answers are the ones the
registry gives (tests/integration/test_schema_registry.py runs the same paths against it)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError

from cdc.errors import SchemaError
from cdc.schemas.subjects import SubjectSchema, register


class Registry:
    """Subjects -> registered schema texts; ids are positions in one list of texts."""

    def __init__(self, subjects: dict[str, list[str]] | None = None) -> None:
        self.subjects = subjects or {}
        self.texts: list[str] = [t for versions in self.subjects.values() for t in versions]
        self.calls: list[str] = []

    def lookup_schema(self, subject: str, schema: Any) -> Any:
        self.calls.append("lookup")
        if subject not in self.subjects:
            raise SchemaRegistryError(404, 40401, "Subject not found")
        if schema.schema_str not in self.subjects[subject]:
            raise SchemaRegistryError(404, 40403, "Schema not found")
        return type("Found", (), {"schema_id": self.texts.index(schema.schema_str) + 1})()

    def get_versions(self, subject: str) -> list[int]:
        self.calls.append("versions")
        if subject not in self.subjects:
            raise SchemaRegistryError(404, 40401, "Subject not found")
        return list(range(1, len(self.subjects[subject]) + 1))

    def set_compatibility(self, subject: str, level: str) -> None:
        self.calls.append(f"set {level}")

    def register_schema(self, subject: str, schema: Any) -> int:
        self.calls.append("register")
        versions = self.subjects.setdefault(subject, [])
        if schema.schema_str not in versions:  # a schema the subject holds adds no version
            versions.append(schema.schema_str)
        if schema.schema_str not in self.texts:
            self.texts.append(schema.schema_str)
        return self.texts.index(schema.schema_str) + 1


VALUE = {"type": "record", "name": "V", "fields": [{"name": "id", "type": "long"}]}


def test_a_new_value_subject_is_registered_without_a_lookup() -> None:
    registry = Registry()
    assert register(registry, SubjectSchema("t-value", VALUE, False)) == 1  # type: ignore[arg-type]
    assert registry.calls == ["register"]


def test_a_new_key_subject_gets_its_rule_then_is_registered() -> None:
    registry = Registry()
    register(registry, SubjectSchema("t-key", {"type": "long"}, True))  # type: ignore[arg-type]
    assert registry.calls == ["lookup", "set FULL_TRANSITIVE", "register"]


def test_a_registered_value_schema_is_one_registration_adding_no_version() -> None:
    registry = Registry()
    first = register(registry, SubjectSchema("t-value", VALUE, False))  # type: ignore[arg-type]
    registry.calls.clear()
    assert register(registry, SubjectSchema("t-value", VALUE, False)) == first  # type: ignore[arg-type]
    assert registry.calls == ["register"]
    assert len(registry.subjects["t-value"]) == 1


def test_a_new_value_version_is_one_registration() -> None:
    registry = Registry()
    register(registry, SubjectSchema("t-value", VALUE, False))  # type: ignore[arg-type]
    registry.calls.clear()
    v2 = {**VALUE, "fields": [*VALUE["fields"], {"name": "n", "type": ["null", "long"], "default": None}]}  # type: ignore[list-item]
    assert register(registry, SubjectSchema("t-value", v2, False)) == 2  # type: ignore[arg-type]
    assert registry.calls == ["register"]


def test_a_registered_key_schema_is_one_lookup() -> None:
    registry = Registry()
    first = register(registry, SubjectSchema("t-key", {"type": "long"}, True))  # type: ignore[arg-type]
    registry.calls.clear()
    assert register(registry, SubjectSchema("t-key", {"type": "long"}, True)) == first  # type: ignore[arg-type]
    assert registry.calls == ["lookup"]


def test_a_new_key_schema_asks_for_the_versions_and_is_refused_unless_allowed() -> None:
    registry = Registry()
    register(registry, SubjectSchema("t-key", {"type": "long"}, True))  # type: ignore[arg-type]
    registry.calls.clear()
    with pytest.raises(SchemaError, match="key schema differs"):
        register(registry, SubjectSchema("t-key", {"type": "string"}, True))  # type: ignore[arg-type]
    assert registry.calls == ["lookup", "versions", "lookup"]
    registry.calls.clear()
    assert register(registry, SubjectSchema("t-key", {"type": "string"}, True), allow_key_change=True) == 2  # type: ignore[arg-type]
    assert registry.calls == ["lookup", "versions", "lookup", "register"]
