"""Write outbox events from application code, in the application's own transaction.

An :class:`OutboxWriter` holds one event type's Avro schema. ``write`` checks and encodes the
payload first (a payload that does not fit raises :class:`~cdc.errors.RowError` and nothing is
inserted), then inserts one ``cdc_outbox`` row with bound parameters through whatever the
application already uses: a SQLAlchemy ``Session`` or ``Connection``, or a DB-API connection or
cursor (psycopg 3, pymysql, sqlite3, ...). It never commits: the event becomes visible exactly
when, and only if, the application's transaction commits.

The stored ``payload`` is the plain Avro body (no Confluent wire header): the relay resolves the
registry id from ``schema_subject`` / ``schema_version`` and prepends it.

This module imports only the standard library, fastavro and the project's schema code; nothing
of the relay (no Kafka client, no database driver, SQLAlchemy only if the application uses it).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import sys
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from fastavro import parse_schema, schemaless_writer

from cdc.errors import ConfigError, RowError, SchemaError
from cdc.schemas.avsc import load_avsc
from cdc.schemas.convert import compile_record

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["OutboxWriter"]

from cdc.outbox.table import WRITTEN_COLUMNS as COLUMNS

_MAX_TEXT = 255  # varchar(255) columns
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
_DIALECTS = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "sqlite": "sqlite",
}
# DB-API driver (top-level module of its connection class) -> dialect.
_DRIVERS = {
    "psycopg": "postgresql",
    "psycopg2": "postgresql",
    "pg8000": "postgresql",
    "pymysql": "mysql",
    "MySQLdb": "mysql",
    "mysql": "mysql",  # mysql.connector
    "mariadb": "mysql",
    "sqlite3": "sqlite",
    "_sqlite3": "sqlite",
    "pysqlite2": "sqlite",
}
_QUOTE = {"postgresql": '"{}"', "mysql": "`{}`", "sqlite": '"{}"'}
_CASTS = {"postgresql": {"id": "CAST({} AS uuid)", "headers": "CAST({} AS jsonb)"}}
_MARKERS: dict[str, Callable[[str, int], str]] = {
    "qmark": lambda col, i: "?",
    "numeric": lambda col, i: f":{i}",
    "named": lambda col, i: f":{col}",
    "format": lambda col, i: "%s",
    "pyformat": lambda col, i: f"%({col})s",
}


def _dialect(name: str) -> str:
    if name not in _DIALECTS:
        raise ConfigError(
            [f"outbox: unsupported dialect {name!r}; expected postgresql, mysql, mariadb or sqlite"],
            source="OutboxWriter",
        )
    return _DIALECTS[name]


def insert_sql(table: str, dialect: str, paramstyle: str) -> str:
    """The INSERT of one event for a dialect and a DB-API paramstyle; values are bound, never inlined."""
    if paramstyle not in _MARKERS:
        raise ConfigError([f"outbox: unsupported DB-API paramstyle {paramstyle!r}"], source="OutboxWriter")
    columns = ", ".join(_QUOTE[dialect].format(c) for c in COLUMNS)
    casts = _CASTS.get(dialect, {})
    marks = (casts.get(c, "{}").format(_MARKERS[paramstyle](c, i)) for i, c in enumerate(COLUMNS, 1))
    # The table name is a checked identifier and the columns are constants: values are bound.
    return f"INSERT INTO {table} ({columns}) VALUES ({', '.join(marks)})"  # noqa: S608


def _sqlalchemy_connection(target: object) -> Connection | None:
    """The SQLAlchemy Connection behind a Session or Connection; None for anything else.

    SQLAlchemy is never imported here: an object of its classes means the application did.
    """
    orm, engine = sys.modules.get("sqlalchemy.orm"), sys.modules.get("sqlalchemy.engine")
    if orm is not None and isinstance(target, orm.Session | orm.scoped_session):
        return cast("Connection", target.connection())  # joins the session's transaction
    if engine is not None and isinstance(target, engine.Connection):
        return cast("Connection", target)
    if engine is not None and isinstance(target, engine.Engine):
        raise TypeError(
            "OutboxWriter.write needs the Session or Connection of your transaction, not an Engine"
        )
    if type(target).__module__.startswith("sqlalchemy.ext.asyncio"):
        raise TypeError(
            "OutboxWriter.write is synchronous: use "
            "await session.run_sync(lambda s: writer.write(s, ...)) with an AsyncSession"
        )
    return None


def _dbapi_facts(target: object) -> tuple[str | None, str | None]:
    """(dialect, paramstyle) of a DB-API connection or cursor, from its driver's module."""
    parts = type(target).__module__.split(".")
    paramstyle = None
    for k in range(len(parts), 0, -1):  # mysql.connector.connection -> mysql.connector
        style = getattr(sys.modules.get(".".join(parts[:k])), "paramstyle", None)
        if isinstance(style, str):
            paramstyle = style
            break
    return _DRIVERS.get(parts[0]), paramstyle


def _text(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise ConfigError(
            [f"outbox: {what} must be a non-empty string of at most {_MAX_TEXT} characters, got {value!r}"],
            source="OutboxWriter",
        )
    return value


class OutboxWriter:
    """Writes events of one type (one Avro schema) into the outbox table.

    ``schema`` is a ``.avsc`` path or a record schema dict. ``aggregate_type`` and ``event_type``
    fill the Debezium-compatible ``aggregatetype`` and ``type`` columns; ``subject`` and
    ``version`` name the registered schema the relay resolves (None: the relay's default).
    ``dialect`` overrides detection (postgresql, mysql, mariadb, sqlite) for unknown drivers.

    Order: ``seq`` is assigned when the row is inserted, not when it commits. Lock the aggregate
    before writing its event -- ``SELECT ... FOR UPDATE`` on its row, or update the row first --
    so two transactions of the same aggregate cannot interleave and its events get seq in the
    order they commit (SQLite serialises all writers by itself)::

        created = OutboxWriter("schemas/order-created.avsc", aggregate_type="order",
                               event_type="OrderCreated", subject="shop.orders-value", version=3)
        with Session(engine) as session, session.begin():
            order = session.get(Order, order_id, with_for_update=True)  # lock the aggregate
            order.status = "created"
            created.write(session, order.id, {"id": order.id, "total": order.total})

    A payload that does not fit the schema raises :class:`~cdc.errors.RowError` (field path and
    reason) before anything is inserted; database errors are the driver's own, unchanged, so the
    application handles them as it handles its other statements.
    """

    def __init__(
        self,
        schema: str | Path | Mapping[str, Any],
        *,
        aggregate_type: str,
        event_type: str,
        subject: str | None = None,
        version: int | None = None,
        table: str = "cdc_outbox",
        dialect: str | None = None,
    ) -> None:
        self.schema = self._load(schema)
        self.aggregate_type = _text(aggregate_type, "aggregate_type")
        self.event_type = _text(event_type, "event_type")
        self.subject = None if subject is None else _text(subject, "subject")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
            raise ConfigError(
                [f"outbox: version must be a positive int, got {version!r}"], source="OutboxWriter"
            )
        self.version = version
        if not isinstance(table, str) or not _TABLE.match(table):
            raise ConfigError(
                [f"outbox: table {table!r} is not a plain [schema.]name identifier"], source="OutboxWriter"
            )
        self.table = table
        self.dialect = None if dialect is None else _dialect(dialect)
        self._stream = f"outbox {aggregate_type}/{event_type}"
        self._parsed = parse_schema(dict(self.schema), _write_hint=False)
        self._convert = compile_record(self.schema, stream=self._stream)
        self._fields = frozenset(str(f["name"]) for f in self.schema["fields"])
        self._sql: dict[tuple[str, str], str] = {}

    @staticmethod
    def _load(schema: str | Path | Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(schema, str | Path):
            return load_avsc(Path(schema))
        if not isinstance(schema, Mapping) or schema.get("type") != "record":
            raise SchemaError(
                "outbox: an event schema must be an Avro record", hint='{"type": "record", ...}'
            )
        try:
            parse_schema(dict(schema), _write_hint=False)
        except Exception as exc:  # fastavro raises several unrelated types for a bad schema
            raise SchemaError(f"outbox: invalid Avro schema: {exc}") from None
        return dict(schema)

    def encode(self, payload: Mapping[str, Any], aggregate_id: str = "") -> bytes:
        """The payload's plain Avro body; RowError (naming the field) if it does not fit the schema.

        Every field is checked exactly (see cdc.schemas.convert); a key that is no field of the
        schema is refused too, because it is almost always a misspelt field.
        """
        if not isinstance(payload, Mapping):
            raise RowError(
                self._stream, aggregate_id, "", f"payload must be a mapping, got {type(payload).__name__}"
            )
        if extra := sorted(str(k) for k in payload if k not in self._fields):
            raise RowError(self._stream, aggregate_id, extra[0], f"not a field of {self.schema['name']}")
        record = self._convert(payload, aggregate_id)
        buf = io.BytesIO()
        try:
            schemaless_writer(buf, self._parsed, record)
        except (ValueError, TypeError, OverflowError) as exc:  # the converter should have caught it
            raise RowError(self._stream, aggregate_id, "", f"Avro encoding failed: {exc}") from None
        return buf.getvalue()

    def write(
        self,
        target: object,
        aggregate_id: str | int | uuid.UUID,
        payload: Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
    ) -> uuid.UUID:
        """Insert one event in ``target``'s transaction and return its id; never commits.

        ``target``: a SQLAlchemy Session or Connection, or a DB-API connection or cursor.
        ``headers``: string values the relay sends as Kafka headers (stored as a JSON object).
        """
        key = str(aggregate_id)
        if not key or len(key) > _MAX_TEXT:
            raise RowError(self._stream, key, "aggregateid", f"must be 1 to {_MAX_TEXT} characters")
        body = self.encode(payload, key)
        header_text = self._headers(headers, key)
        event_id, now = uuid.uuid4(), dt.datetime.now(dt.UTC)
        values: dict[str, Any] = {
            "id": str(event_id),
            "aggregatetype": self.aggregate_type,
            "aggregateid": key,
            "type": self.event_type,
            "payload": body,
            "timestamp": now,
            "schema_subject": self.subject,
            "schema_version": self.version,
            "headers": header_text,
        }
        if (conn := _sqlalchemy_connection(target)) is not None:
            from sqlalchemy import text

            dialect = self.dialect or _dialect(conn.dialect.name)
            conn.execute(text(self._insert_sql(dialect, "named")), self._bind(values, dialect))
            return event_id
        self._execute_dbapi(target, values)
        return event_id

    def _headers(self, headers: Mapping[str, str] | None, key: str) -> str | None:
        if headers is None:
            return None
        if not isinstance(headers, Mapping):
            raise RowError(self._stream, key, "headers", f"must be a mapping, got {type(headers).__name__}")
        for name, value in headers.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise RowError(
                    self._stream,
                    key,
                    f"headers[{name!r}]",
                    f"names and values must be strings, got {value!r}",
                )
        return json.dumps(dict(headers), separators=(",", ":"), ensure_ascii=False)

    def _insert_sql(self, dialect: str, paramstyle: str) -> str:
        if (sql := self._sql.get((dialect, paramstyle))) is None:
            sql = self._sql[dialect, paramstyle] = insert_sql(self.table, dialect, paramstyle)
        return sql

    @staticmethod
    def _bind(values: dict[str, Any], dialect: str) -> dict[str, Any]:
        """Values as each driver stores them: timestamptz, UTC DATETIME(6), or ISO 8601 text."""
        now: dt.datetime = values["timestamp"]
        if dialect == "mysql":
            values = {**values, "timestamp": now.replace(tzinfo=None)}
        elif dialect == "sqlite":
            values = {**values, "timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        return values

    def _execute_dbapi(self, target: object, values: dict[str, Any]) -> None:
        driver_dialect, paramstyle = _dbapi_facts(target)
        dialect = self.dialect or driver_dialect
        usable = hasattr(target, "cursor") or hasattr(target, "execute")
        if dialect is None or paramstyle is None or not usable:
            raise TypeError(
                f"OutboxWriter.write: {type(target).__module__}.{type(target).__qualname__} is neither a "
                "SQLAlchemy Session/Connection nor a DB-API connection or cursor of a known driver "
                "(pass dialect= for another DB-API driver)"
            )
        sql, bound = self._insert_sql(dialect, paramstyle), self._bind(values, dialect)
        params: Any = bound if paramstyle in ("named", "pyformat") else tuple(bound[c] for c in COLUMNS)
        make_cursor = getattr(target, "cursor", None)
        cursor: Any = make_cursor() if callable(make_cursor) else target
        try:
            cursor.execute(sql, params)
        finally:
            if cursor is not target:
                cursor.close()
