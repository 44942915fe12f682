"""Schema-registry subjects: resolve ids at start-up, register on request.

Subjects follow the TopicNameStrategy: ``<topic>-key`` and ``<topic>-value``. Key subjects get
FULL_TRANSITIVE compatibility, because a changed key schema changes the key bytes, which breaks
partitioning and compaction; a key change needs ``allow_key_schema_change``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from cdc.errors import AuthenticationError, BrokerUnavailableError, ConfigError, SchemaError
from cdc.masking import mask_dsn
from cdc.schemas.avsc import canonical

log = logging.getLogger(__name__)

_SUBJECT_NOT_FOUND = 40401
_NOT_FOUND = {_SUBJECT_NOT_FOUND, 40403}  # subject, or schema (version) in the subject, not found
#: what a key subject is given: a changed key schema changes key bytes (partitioning, compaction)
_KEY_COMPATIBILITY = "FULL_TRANSITIVE"

#: registry calls in flight at once while a connector resolves its subjects at start-up: each
#: call is a round trip of a few milliseconds, mostly the registry's own time, so 2,000 subjects
#: (1,000 streams) took 17-29 s one after another
CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class SubjectSchema:
    subject: str
    schema: dict[str, Any]
    is_key: bool


def make_client(url: str, options: dict[str, str]) -> SchemaRegistryClient:
    """The registry client; an option it does not know is a ConfigError naming it (no I/O here)."""
    try:
        return SchemaRegistryClient({"url": url, **options})
    except (ValueError, TypeError) as exc:
        raise ConfigError([f"schema_registry.config: {exc}"]) from None


def _call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except SchemaRegistryError as exc:
        if exc.http_status_code in (401, 403):
            raise AuthenticationError(
                f"schema registry: {what}: refused ({exc.http_status_code}): {exc.error_message}",
                hint="fix schema_registry.config basic.auth.user.info (or the registry's access rules)",
            ) from None
        raise
    except Exception as exc:  # requests/httpx errors: the registry is unreachable
        raise BrokerUnavailableError(f"schema registry: {what}: {mask_dsn(str(exc))}") from None


def resolve_id(client: SchemaRegistryClient, item: SubjectSchema) -> int:
    """Return the id of an exact registered version, or raise SchemaError saying what to run."""
    schema = Schema(canonical(item.schema), "AVRO")
    try:
        return int(_call("lookup", client.lookup_schema, item.subject, schema).schema_id)
    except SchemaRegistryError as exc:
        if exc.error_code not in _NOT_FOUND:
            raise SchemaError(
                f"subject {item.subject!r}: registry error {exc.error_code}: {exc.error_message}"
            ) from None
    compatible = True
    try:
        compatible = bool(_call("compatibility", client.test_compatibility, item.subject, schema))
    except SchemaRegistryError as exc:
        if exc.error_code not in _NOT_FOUND:
            raise SchemaError(
                f"subject {item.subject!r}: registry error {exc.error_code}: {exc.error_message}"
            ) from None
    if not compatible:
        raise SchemaError(
            f"subject {item.subject!r}: the local schema is incompatible with the latest registered version; "
            "nothing was produced",
            hint="evolve the .avsc compatibly (add fields with defaults) or move the stream to a new topic",
        )
    raise SchemaError(
        f"subject {item.subject!r}: the local schema is not registered",
        hint="run: cdc schemas register CONFIG (or set schema_registry.auto_register: true)",
    )


def register(client: SchemaRegistryClient, item: SubjectSchema, *, allow_key_change: bool = False) -> int:
    """Register a subject's schema (idempotent); key subjects get FULL_TRANSITIVE and are guarded."""
    schema = Schema(canonical(item.schema), "AVRO")
    if not item.is_key:
        # One round trip, new or not: registering a schema the subject already holds returns
        # its id and adds no version (Confluent's rule, Apicurio's too), and a new one meets
        # the registry's compatibility rule. A lookup first cost a cold start of N streams N
        # round trips that could only fail.
        return _register(client, item.subject, schema, logging.DEBUG)
    # A key subject, guarded. The common case at start-up, a schema registered before, is one
    # round trip: found means the subject has versions, where the path below looks it up as
    # well. A schema not found in an existing subject takes that path (it looks again: the
    # subject may have been registered meanwhile); a subject not found goes straight to its
    # rule and its registration.
    try:
        return int(_call("lookup", client.lookup_schema, item.subject, schema).schema_id)
    except SchemaRegistryError as exc:
        if exc.error_code not in _NOT_FOUND:
            raise SchemaError(f"subject {item.subject!r}: {exc.error_message}") from None
        # "subject not found" already says it has no versions: a new subject (a cold start of
        # N streams creates 2N) skips asking for them
        subject_missing = exc.error_code == _SUBJECT_NOT_FOUND
    versions: list[int] = []
    if not subject_missing:
        try:
            versions = _call("versions", client.get_versions, item.subject)
        except SchemaRegistryError as exc:
            if exc.error_code not in _NOT_FOUND:
                raise SchemaError(f"subject {item.subject!r}: {exc.error_message}") from None
    if not versions:
        _key_compatibility(client, item.subject)
    else:
        try:
            return int(_call("lookup", client.lookup_schema, item.subject, schema).schema_id)
        except SchemaRegistryError as exc:
            if exc.error_code not in _NOT_FOUND:
                raise SchemaError(f"subject {item.subject!r}: {exc.error_message}") from None
        if not allow_key_change:
            raise SchemaError(
                f"subject {item.subject!r}: the key schema differs from the registered one; a new key schema "
                "changes key bytes, partitioning and compaction",
                hint="if this is intended, set schema_registry.allow_key_schema_change: true (or --allow-key-change)",
            )
    return _register(client, item.subject, schema, logging.INFO)


def _register(client: SchemaRegistryClient, subject: str, schema: Schema, level: int) -> int:
    """Register ``schema`` under ``subject``; logged at ``level`` (a value subject's registration
    runs at every start and mostly finds its schema: DEBUG)."""
    try:
        schema_id = int(_call("register", client.register_schema, subject, schema))
    except SchemaRegistryError as exc:
        raise SchemaError(
            f"subject {subject!r}: registration refused ({exc.error_code}): {exc.error_message}",
            hint="the registry's compatibility rule rejected the change; evolve the schema compatibly",
        ) from None
    log.log(level, "registered subject %s id %s", subject, schema_id)
    return schema_id


def _key_compatibility(client: SchemaRegistryClient, subject: str) -> None:
    """Give a new key subject FULL_TRANSITIVE compatibility.

    Another connector (another process) may create the same subject at the same moment: the
    registry then refuses the second rule with 409. That is fine when the rule in place is the
    one wanted, and a located error when it is not."""
    try:
        _call("set compatibility", client.set_compatibility, subject, _KEY_COMPATIBILITY)
        return
    except SchemaRegistryError as exc:
        if exc.http_status_code != 409:
            raise SchemaError(f"subject {subject!r}: set compatibility: {exc.error_message}") from None
    try:
        level = _call("compatibility", client.get_compatibility, subject)
    except SchemaRegistryError as exc:
        raise SchemaError(f"subject {subject!r}: read compatibility: {exc.error_message}") from None
    if str(level).upper() != _KEY_COMPATIBILITY:
        raise SchemaError(
            f"subject {subject!r}: key subjects need {_KEY_COMPATIBILITY} compatibility, but the registry "
            f"already holds {level} for it (set by someone else while this connector created it)",
            hint=f"set the subject's compatibility to {_KEY_COMPATIBILITY} in the registry, then restart",
        )


def for_each_subject(fn: Callable[[SubjectSchema], int], items: Sequence[SubjectSchema]) -> list[int]:
    """``fn`` (``register`` or ``resolve_id`` with their options bound) over ``items``, up to
    CONCURRENCY subjects at a time; the ids in the order of ``items``. Items of one subject
    (streams sharing a topic) run one after another in ``items`` order, as their registrations
    depend on each other (the first one creates the subject and sets its compatibility);
    distinct subjects are independent. When several fail, the error raised is that of the first
    failing item in ``items`` order, as it was one after another (items after it may have been
    registered meanwhile: registering is idempotent)."""
    if len(items) <= 1:
        return [fn(item) for item in items]
    groups: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(item.subject, []).append(index)
    ids: list[int] = [0] * len(items)

    def run(indexes: list[int]) -> tuple[int, BaseException] | None:
        for index in indexes:
            try:
                ids[index] = fn(items[index])
            except Exception as exc:
                return index, exc
        return None

    pool = ThreadPoolExecutor(min(CONCURRENCY, len(groups)), thread_name_prefix="registry")
    try:
        outcomes = [future.result() for future in [pool.submit(run, g) for g in groups.values()]]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    failures = [outcome for outcome in outcomes if outcome is not None]
    if failures:
        raise min(failures, key=lambda failure: failure[0])[1]
    return ids


def resolve_version_id(client: SchemaRegistryClient, subject: str, version: int | None) -> int:
    """The id of ``subject`` at ``version`` (None: latest); a missing one is a SchemaError."""
    try:
        if version is None:
            registered = _call("latest version", client.get_latest_version, subject)
        else:
            registered = _call("version", client.get_version, subject, version)
    except SchemaRegistryError as exc:
        raise SchemaError(
            f"subject {subject!r} version {version if version is not None else 'latest'}: {exc.error_message}",
            hint="the outbox row names a schema that is not registered; register it (cdc schemas register)",
        ) from None
    return int(registered.schema_id)


def accepts(client: SchemaRegistryClient, subject: str, schema: dict[str, Any]) -> bool | None:
    """Whether ``subject``'s compatibility rule accepts ``schema`` as its next version; None when
    the subject has no version yet (any schema is accepted)."""
    try:
        return bool(
            _call("compatibility", client.test_compatibility, subject, Schema(canonical(schema), "AVRO"))
        )
    except SchemaRegistryError as exc:
        if exc.error_code in _NOT_FOUND:
            return None
        raise SchemaError(
            f"subject {subject!r}: registry error {exc.error_code}: {exc.error_message}"
        ) from None
