"""Avro field -> column: the SQL type to create, the Python family to check, the value converter.

Types: decimal -> NUMERIC(p,s); timestamp-millis/micros -> timestamptz (MySQL/MariaDB and SQLite:
DATETIME(6) holding UTC); local-timestamp-* -> timestamp / DATETIME(6); date; time; uuid (uuid
on PostgreSQL, 36 characters elsewhere); string and enum -> text; bytes and fixed -> binary;
int/long/boolean/float/double; arrays of scalars -> PostgreSQL arrays; maps, records and other
arrays -> jsonb on PostgreSQL, JSON text elsewhere.

Into existing columns, beyond those: a ``long`` into an interval column (PostgreSQL ``interval``,
MySQL/MariaDB ``TIME``) is read as signed microseconds (how MySQL-family sources map a TIME), and
an array of strings into a MySQL ``SET`` column is written as its comma-joined members, a
decimal of scale 0 into an integer column (BIGINT UNSIGNED) as an int; MySQL YEAR takes an
int or long, BIT an int, long or boolean; a type the dialect does not know (MariaDB INET6) takes
the value as it is. On PostgreSQL a ``string`` into a column of any other type (numeric, json,
timetz, inet, money, bit, ranges ...) is that type's text, as the WAL source sends it: bound as
text and cast by the database (:class:`DatabaseText`), so it is parsed by the type's own input
function, never re-serialised; an interval record ``{months, days, micros}`` goes into an
``interval`` column exactly.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from cdc.errors import SchemaError

Converter = Callable[[Any], Any]

_PRIMITIVE = {"int", "long", "float", "double", "boolean", "string", "bytes"}
_LOGICAL = {
    "timestamp-millis": "timestamp",
    "timestamp-micros": "timestamp",
    "local-timestamp-millis": "local_timestamp",
    "local-timestamp-micros": "local_timestamp",
    "date": "date",
    "time-millis": "time",
    "time-micros": "time",
    "uuid": "uuid",
    "decimal": "decimal",
}
# What a reflected column's python_type may be for each kind (a changed type is refused).
_FAMILIES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "long": (int,),
    "float": (float, Decimal),
    "double": (float, Decimal),
    "boolean": (bool, int),
    "string": (str,),
    "bytes": (bytes,),
    "decimal": (Decimal, float),
    "timestamp": (dt.datetime,),
    "local_timestamp": (dt.datetime,),
    "date": (dt.date,),
    "time": (dt.time, dt.timedelta),
    "uuid": (uuid.UUID, str),
    "array": (list, str, dict),
    "json": (dict, list, str),
}
_MYSQL = ("mysql", "mariadb")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One Avro field reduced to what a column needs."""

    name: str
    kind: str  # a key of _FAMILIES
    nullable: bool  # the Avro type admits null
    optional: bool  # nullable or has a default: may become a nullable column later
    precision: int | None = None
    scale: int | None = None
    item: FieldSpec | None = None  # the element of an array of scalars
    interval: bool = False  # a record {months, days, micros}: PostgreSQL's interval, exactly

    def describe(self) -> str:
        if self.kind == "decimal":
            return f"decimal({self.precision},{self.scale})"
        return f"array<{self.item.kind}>" if self.item is not None else self.kind


def named_types(
    schema: Any, found: dict[str, Any] | None = None, namespace: str | None = None
) -> dict[str, Any]:
    """Index every named type (record, enum, fixed) of a schema by full and short name."""
    found = {} if found is None else found
    if isinstance(schema, list):
        for branch in schema:
            named_types(branch, found, namespace)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed", "error") and "name" in schema:
            ns = schema.get("namespace", namespace)
            name = str(schema["name"])
            full = name if "." in name or not ns else f"{ns}.{name}"
            found[full] = schema
            found.setdefault(name.rsplit(".", 1)[-1], schema)
            namespace = ns
        for f in schema.get("fields", []) if kind in ("record", "error") else []:
            named_types(f.get("type"), found, namespace)
        if kind == "array":
            named_types(schema.get("items"), found, namespace)
        if kind == "map":
            named_types(schema.get("values"), found, namespace)
        if isinstance(kind, dict | list):
            named_types(kind, found, namespace)
    return found


def resolve(avro_type: Any, names: dict[str, Any]) -> Any:
    """Follow a reference to a named type."""
    if isinstance(avro_type, str) and avro_type not in _PRIMITIVE and avro_type != "null":
        if avro_type not in names:
            raise SchemaError(f"unknown Avro type name {avro_type!r}")
        return names[avro_type]
    return avro_type


def field_spec(field: dict[str, Any], names: dict[str, Any], where: str) -> FieldSpec:
    """Reduce an Avro record field to a FieldSpec; unions other than [null, X] are refused."""
    name = str(field["name"])
    avro_type = field["type"]
    nullable = False
    if isinstance(avro_type, list):
        branches = [b for b in avro_type if b != "null"]
        nullable = len(branches) < len(avro_type)
        if len(branches) != 1:
            raise SchemaError(
                f"{where}.{name}: a union of several non-null types has no column type",
                hint="use [null, X], or a record per alternative",
            )
        avro_type = branches[0]
    resolved = resolve(avro_type, names)
    kind, precision, scale, item = _kind(resolved, names)
    interval = (
        isinstance(resolved, dict)
        and resolved.get("type") == "record"
        and sorted(f.get("name") for f in resolved.get("fields", [])) == ["days", "micros", "months"]
    )
    return FieldSpec(name, kind, nullable, nullable or "default" in field, precision, scale, item, interval)


def _kind(avro_type: Any, names: dict[str, Any]) -> tuple[str, int | None, int | None, FieldSpec | None]:
    if isinstance(avro_type, str):
        if avro_type == "null":
            raise SchemaError("a field of type null has no column type")
        return avro_type, None, None, None
    if isinstance(avro_type, list):
        return "json", None, None, None
    logical = avro_type.get("logicalType")
    base = avro_type.get("type")
    if logical == "decimal" and base in ("bytes", "fixed"):
        return "decimal", int(avro_type["precision"]), int(avro_type.get("scale", 0)), None
    if logical in _LOGICAL and logical != "decimal":
        return _LOGICAL[logical], None, None, None
    if base == "enum":
        return "string", None, None, None
    if base == "fixed":
        return "bytes", None, None, None
    if base == "array":
        items = avro_type["items"]
        if isinstance(items, list) and len(others := [b for b in items if b != "null"]) == 1:
            items = others[0]  # [null, X] items: a PostgreSQL array's elements may be NULL
        items = resolve(items, names)
        try:
            kind, precision, scale, nested = _kind(items, names)
        except SchemaError:
            return "json", None, None, None
        if nested is not None or kind in ("json", "array"):
            return "json", None, None, None
        return "array", None, None, FieldSpec("item", kind, False, False, precision, scale)
    if base in ("map", "record", "error"):
        return "json", None, None, None
    if isinstance(base, str | dict | list):
        return _kind(resolve(base, names), names)
    raise SchemaError(f"unsupported Avro type {avro_type!r}")


def record_fields(schema: Any, where: str) -> list[FieldSpec]:
    """The FieldSpecs of a record schema (a key or a value)."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise SchemaError(f"{where}: expected an Avro record, got {json.dumps(schema)[:200]}")
    names = named_types(schema)
    return [field_spec(f, names, where) for f in schema["fields"]]


def sql_type(spec: FieldSpec, dialect: str, *, key: bool = False) -> sa.types.TypeEngine[Any]:
    """The column type to create for a field on a dialect (key columns must be indexable)."""
    kind = spec.kind
    on_mysql = dialect in _MYSQL
    if kind in ("string", "bytes") and key and on_mysql:
        return sa.String(255) if kind == "string" else mysql.VARBINARY(255)
    if kind in ("json", "array") and key:
        raise SchemaError(f"key field {spec.name!r} is {spec.describe()}, which cannot be a primary key")
    simple: dict[str, sa.types.TypeEngine[Any]] = {
        "int": sa.Integer(),
        "long": sa.BigInteger(),
        "float": sa.Float(24),
        "double": sa.Double(),
        "boolean": sa.Boolean(),
        "string": sa.Text(),
        "bytes": mysql.LONGBLOB() if on_mysql else sa.LargeBinary(),
        "date": sa.Date(),
    }
    if kind in simple:
        return simple[kind]
    if kind == "decimal":
        return sa.Numeric(spec.precision, spec.scale)
    if kind in ("timestamp", "local_timestamp"):
        if on_mysql:
            return mysql.DATETIME(fsp=6)
        return sa.DateTime(timezone=kind == "timestamp" and dialect == "postgresql")
    if kind == "time":
        return mysql.TIME(fsp=6) if on_mysql else sa.Time()
    if kind == "uuid":
        return sa.Uuid() if dialect == "postgresql" else sa.String(36)
    if kind == "array" and dialect == "postgresql" and spec.item is not None:
        return postgresql.ARRAY(sql_type(spec.item, dialect))
    if kind in ("array", "json"):
        return postgresql.JSONB() if dialect == "postgresql" else sa.Text()
    raise SchemaError(f"field {spec.name!r}: no column type for Avro {spec.describe()}")


def _interval_column(column_type: sa.types.TypeEngine[Any]) -> bool:
    return isinstance(column_type, sa.Interval | postgresql.INTERVAL | mysql.TIME)


class DatabaseText(sa.types.TypeDecorator[str]):
    """A column bound as text and cast to its real type by the database (see the module doc)."""

    impl = sa.Text
    cache_ok = False  # the wrapped type need not be hashable; statements are cached by the writer

    def __init__(self, target: sa.types.TypeEngine[Any]) -> None:
        super().__init__()
        self.target = target

    def bind_expression(self, bindvalue: Any) -> Any:
        return sa.cast(bindvalue, self.target)


def database_text(spec: FieldSpec, column_type: sa.types.TypeEngine[Any], dialect: str) -> bool:
    """Whether the field's values are written as the column type's text, cast by the database."""
    if dialect != "postgresql":
        return False
    if spec.interval:
        return isinstance(column_type, sa.Interval | postgresql.INTERVAL)
    if spec.kind != "string" or isinstance(column_type, sa.String | DatabaseText):
        return False
    if isinstance(column_type, sa.Time):
        return bool(column_type.timezone)  # timetz has no Avro type; time has time-micros
    try:
        python_type = column_type.python_type
    except NotImplementedError:
        return True
    # Types with an exact Avro counterpart keep refusing a string: a mistake is found at start-up.
    return not issubclass(python_type, int | float | bytes | dt.date)


def compatible(spec: FieldSpec, column_type: sa.types.TypeEngine[Any], dialect: str = "") -> bool:
    """Whether an existing column can hold the field (coarse: the Python family, decimal scale)."""
    if database_text(spec, column_type, dialect):
        return True
    if spec.kind == "long" and _interval_column(column_type):
        return True  # signed microseconds (a MySQL TIME) into an interval / MySQL TIME column
    if spec.kind == "array" and isinstance(column_type, mysql.SET):
        return spec.item is not None and spec.item.kind == "string"
    if isinstance(column_type, sa.JSON):  # the jsonb/JSON column auto_create makes for json kinds
        return spec.kind in ("json", "array")
    try:
        python_type = column_type.python_type
    except NotImplementedError:
        return True  # a type SQLAlchemy cannot describe (SQLite's NullType): do not guess
    if isinstance(column_type, mysql.YEAR | mysql.BIT):
        return spec.kind in ("int", "long") or (spec.kind == "boolean" and isinstance(column_type, mysql.BIT))
    if isinstance(column_type, sa.types.NullType):
        return True  # a type the dialect does not know (MariaDB INET6): do not guess
    if python_type is object:
        return True  # SQLAlchemy 2.1 answers object where 2.0 raised NotImplementedError: unknown
    if spec.kind == "decimal" and spec.scale == 0 and python_type is int:
        return True  # decimal(20,0) (a BIGINT UNSIGNED) into an integer column
    if not issubclass(python_type, _FAMILIES[spec.kind]):
        return False
    if spec.kind == "decimal" and isinstance(column_type, sa.Numeric) and column_type.scale is not None:
        return column_type.scale == spec.scale and (column_type.precision or 0) >= (spec.precision or 0)
    return True


def jsonable(value: Any) -> Any:
    """A decoded Avro value as plain JSON data (decimals and times as text, bytes as base64)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def _utc_naive(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _json_text(value: Any) -> Any:
    return None if value is None else json.dumps(jsonable(value), separators=(",", ":"))


def _json_data(value: Any) -> Any:
    return None if value is None else jsonable(value)


def _text(value: Any) -> Any:
    return None if value is None else str(value)


def _micros(value: Any) -> Any:
    return None if value is None else dt.timedelta(microseconds=value)


def _integer(value: Any) -> Any:
    return None if value is None else int(value)  # a decimal of scale 0: exact


def _set_members(value: Any) -> Any:
    return None if value is None else ",".join(value)


def _interval_text(value: Any) -> Any:
    if value is None:
        return None
    return f"{value['months']} mons {value['days']} days {value['micros']} microseconds"


def converter(spec: FieldSpec, column_type: sa.types.TypeEngine[Any], dialect: str) -> Converter | None:
    """How to turn the decoded value into what the column's driver accepts (None: as is)."""
    if spec.interval and database_text(spec, column_type, dialect):
        return _interval_text
    if database_text(spec, column_type, dialect):
        return None
    if spec.kind == "long" and _interval_column(column_type):
        return _micros
    if spec.kind == "array" and isinstance(column_type, mysql.SET):
        return _set_members
    if spec.kind == "decimal" and isinstance(column_type, sa.Integer):
        return _integer
    if spec.kind == "timestamp" and dialect != "postgresql":
        return _utc_naive  # MySQL drivers and SQLite ignore tzinfo: store the UTC wall clock
    if spec.kind == "uuid" and not isinstance(column_type, sa.Uuid):
        return _text
    if spec.kind in ("array", "json"):
        if isinstance(column_type, sa.ARRAY) and spec.kind == "array":
            return None
        return _json_data if isinstance(column_type, sa.JSON) else _json_text
    return None
