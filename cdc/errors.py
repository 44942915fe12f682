"""The one exception tree of the service.

Every error says what went wrong, where, and what to do. Each class also says whether the
supervisor should retry (the condition may clear by itself: a server restarting) or stop
(only a person can fix it), and which process exit code a stop uses::

    CdcError                          base; never raised directly
    ├── ConfigError          fatal 2  bad YAML, unknown keys, wrong types (all problems at once)
    ├── SchemaError          fatal 3  an .avsc that is missing, invalid, unregistered or incompatible
    ├── RowError             fatal 4  a row that does not fit its stream's schema (stream/key/field)
    ├── PositionLostError    fatal 5  a stored position the source can no longer serve
    ├── AlreadyRunningError  fatal 6  another instance of the same connector holds the lease
    │   └── LeaseHeldError            ... and runtime.standby is off (with it on: wait for the lease)
    ├── SourceConfigError    fatal 7  the source disagrees with the config (missing table, privileges)
    ├── DeliveryError        fatal 8  the broker refused an event permanently
    ├── LocalResourceError   fatal 9  a port in use, an offsets path that cannot be written
    ├── AuthenticationError  fatal 10 credentials refused by a database, Kafka or the registry
    └── RetriableError             the supervisor retries with backoff
        ├── SourceUnavailableError   the database cannot be reached right now
        └── BrokerUnavailableError   Kafka or the registry cannot be reached right now

Driver exceptions are translated at the connector boundary, so nothing above the connector
needs to know psycopg, pymysql or librdkafka error classes.
"""

from __future__ import annotations


class CdcError(Exception):
    """Base of every error this service raises on purpose."""

    exit_code = 1
    retriable = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  hint: {hint}")


class ConfigError(CdcError):
    """The configuration is invalid. Carries every problem found, each with its dotted path."""

    exit_code = 2

    def __init__(self, problems: list[str], *, source: str = "config") -> None:
        self.problems = problems
        self.source = source
        body = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{body}")


class SchemaError(CdcError):
    """A stream's Avro schema is missing, invalid, unregistered or incompatible."""

    exit_code = 3


class RowError(CdcError):
    """A source row does not fit its stream's schema."""

    exit_code = 4

    def __init__(self, stream: str, key: object, field: str, reason: str) -> None:
        self.stream = stream
        self.key = key
        self.field = field
        self.reason = reason
        super().__init__(
            f"stream {stream!r}, key {key!r}, field {field!r}: {reason}",
            hint="fix the row or the schema, or set the stream's on_error: dead_letter",
        )


class PositionLostError(CdcError):
    """The stored position can no longer be served (slot dropped, binlog purged, ...)."""

    exit_code = 5


class AlreadyRunningError(CdcError):
    """Another instance of the same connector is running."""

    exit_code = 6


class LeaseHeldError(AlreadyRunningError):
    """The lease is held by another live instance (a standby waits for it; see runtime.standby)."""


class SourceConfigError(CdcError):
    """The source database disagrees with the config (missing table or column, privileges)."""

    exit_code = 7


class DeliveryError(CdcError):
    """The broker refused an event permanently (too large, authorization, missing topic)."""

    exit_code = 8


class LocalResourceError(CdcError):
    """Something on this machine is unusable: a port already taken, a path that cannot be written."""

    exit_code = 9


class AuthenticationError(CdcError):
    """A server refused our credentials or our rights: retrying would only lock the account."""

    exit_code = 10


class RetriableError(CdcError):
    """A condition that may clear by itself; the supervisor retries with backoff."""

    retriable = True


class SourceUnavailableError(RetriableError):
    """The source database cannot be reached right now."""


class BrokerUnavailableError(RetriableError):
    """Kafka or the schema registry cannot be reached right now."""
