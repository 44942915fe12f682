"""A new key subject's compatibility rule when another connector creates the subject at once.

The race itself runs against the real registry in tests/integration/test_schema_registry.py;
these cover the answers that race cannot be made to give on demand (another rule in place, a
registry error other than 409)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError

from cdc.errors import SchemaError
from cdc.schemas.subjects import _key_compatibility


class Registry:
    """A client stand-in whose rule creation answers ``status`` and whose rule reads ``level``."""

    def __init__(self, status: int | None, level: str = "FULL_TRANSITIVE") -> None:
        self.status, self.level = status, level
        self.calls: list[tuple[str, Any]] = []

    def set_compatibility(self, subject: str, level: str) -> None:
        self.calls.append(("set", (subject, level)))
        if self.status is not None:
            raise SchemaRegistryError(self.status, 0, "refused")

    def get_compatibility(self, subject: str) -> str:
        self.calls.append(("get", subject))
        return self.level


def test_a_rule_created_first_is_set_without_a_read() -> None:
    registry = Registry(None)
    _key_compatibility(registry, "t-key")  # type: ignore[arg-type]
    assert registry.calls == [("set", ("t-key", "FULL_TRANSITIVE"))]


def test_a_409_with_the_wanted_rule_in_place_is_accepted() -> None:
    registry = Registry(409, "FULL_TRANSITIVE")
    _key_compatibility(registry, "t-key")  # type: ignore[arg-type]
    assert registry.calls == [("set", ("t-key", "FULL_TRANSITIVE")), ("get", "t-key")]


def test_a_409_with_another_rule_in_place_is_a_located_error() -> None:
    with pytest.raises(SchemaError) as refused:
        _key_compatibility(Registry(409, "NONE"), "t-key")  # type: ignore[arg-type]
    assert "'t-key'" in refused.value.message and "NONE" in refused.value.message
    assert refused.value.hint and "FULL_TRANSITIVE" in refused.value.hint


def test_another_registry_error_is_a_schema_error_naming_the_subject() -> None:
    with pytest.raises(SchemaError, match=r"'t-key'.*set compatibility"):
        _key_compatibility(Registry(500), "t-key")  # type: ignore[arg-type]
