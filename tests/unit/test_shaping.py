"""Column policies and row filters, without servers: the language, the policies, the update rule."""

from __future__ import annotations

import decimal
import hashlib
import hmac
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from cdc.errors import ConfigError, RowError, SchemaError
from cdc.plugin import ChangeEvent, ColumnInfo, Lease, Offsets, Op, SourceConnector
from cdc.shaping import expr
from cdc.shaping.config import HashPolicy, MaskPolicy, NullPolicy, TruncatePolicy
from cdc.shaping.shaper import StreamShaper

KEY = {"type": "record", "name": "K", "fields": [{"name": "id", "type": "long"}]}
ROW = {
    "type": "record",
    "name": "V",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "email", "type": ["null", "string"]},
        {"name": "status", "type": "string"},
        {
            "name": "amount",
            "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}],
        },
        {"name": "note", "type": ["null", "string"]},
        {"name": "secret", "type": ["null", "bytes"]},
    ],
}


def matches(text: str, row: dict[str, Any], columns: dict[str, str] | None = None) -> bool | None:
    return expr.compile_predicate(expr.parse(text), columns or {})(row)


@pytest.mark.parametrize(
    ("text", "row", "expected"),
    [
        ("status != 'draft' and amount > 0", {"status": "paid", "amount": decimal.Decimal("1.5")}, True),
        ("status != 'draft' and amount > 0", {"status": "draft", "amount": decimal.Decimal("1.5")}, False),
        ("amount > 0", {"amount": None}, None),  # SQL: unknown, so the row does not pass
        ("not amount > 0", {"amount": None}, None),
        ("amount > 0 or status = 'x'", {"amount": None, "status": "x"}, True),
        ("amount > 0 and status = 'x'", {"amount": None, "status": "y"}, False),
        ("amount is null", {"amount": None}, True),
        ("amount is not null", {"amount": None}, False),
        ("status in ('a', 'b')", {"status": "b"}, True),
        ("status not in ('a', 'b')", {"status": "b"}, False),
        ("status not in ('a', null)", {"status": "c"}, None),
        ("status = 'it''s'", {"status": "it's"}, True),
        ("(status = 'a' or status = 'b') and not id >= 10", {"status": "b", "id": 3}, True),
        ("ID = -3", {"id": -3}, True),  # names are as written; keywords are case-insensitive
        ("flag", {"flag": True}, True),
        ('"odd name" = 1.50', {"odd name": decimal.Decimal("1.5")}, True),
    ],
)
def test_filter_language_follows_sql_three_valued_logic(
    text: str, row: dict[str, Any], expected: bool | None
) -> None:
    if text.startswith("ID"):
        assert matches(text, row, {"ID": "id"}) is expected
    else:
        assert matches(text, row) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("status = ", "a field, a literal"),
        ("status = 'a' status", "'and', 'or' or the end"),
        ("__import__('os')", "'and', 'or' or the end"),
        ("status ; drop", "unexpected character ';'"),
        ("status in 'a'", "'(' after 'in'"),
        ("amount is 3", "'null' after 'is'"),
        ("(status = 'a'", "')'"),
    ],
)
def test_filter_syntax_errors_name_the_position(text: str, message: str) -> None:
    with pytest.raises(expr.FilterSyntaxError, match=re.escape(message)):
        expr.parse(text)


def shaper(
    policies: dict[str, Any] | None = None, where: str | None = None, tmp: Path = Path(".")
) -> StreamShaper:
    return StreamShaper("s", policies or {}, where, KEY, ROW, {}, tmp)


def event(op: Op, after: dict[str, Any] | None, before: dict[str, Any] | None = None) -> ChangeEvent:
    key = {"id": (after or before or {}).get("id", 1)}
    return ChangeEvent("s", op, key, after, "p", {"o": 1}, before)


def test_hash_is_keyed_hmac_sha256_and_equal_for_equal_inputs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("K1", "key-one")
    (tmp_path / "k").write_text("key-one\n")
    by_env = shaper({"email": HashPolicy(policy="hash", secret_env="K1")})
    by_file = shaper({"email": HashPolicy(policy="hash", secret_file=Path("k"))}, tmp=tmp_path)
    row = {"id": 1, "email": "a@example.com", "status": "x"}
    expected = hmac.new(b"key-one", b"a@example.com", hashlib.sha256).hexdigest()
    shaped = by_env(event(Op.CREATE, row))
    assert shaped is not None and shaped.after is not None
    assert shaped.after["email"] == expected
    assert by_file(event(Op.CREATE, row)).after["email"] == expected  # type: ignore[union-attr]
    assert row["email"] == "a@example.com"  # the source's dict is never modified (it may be shared)
    monkeypatch.setenv("K1", "another-key")
    other = shaper({"email": HashPolicy(policy="hash", secret_env="K1")})(event(Op.CREATE, row))
    assert other is not None and other.after is not None and other.after["email"] != expected


def test_hash_bytes_output_and_null_stays_null(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K1", "k")
    s = shaper({"secret": HashPolicy(policy="hash", secret_env="K1", output="bytes")})
    out = s(event(Op.UPDATE, {"id": 1, "secret": b"\x00\x01", "status": "x"}, {"id": 1, "secret": None}))
    assert out is not None and out.after is not None and out.before is not None
    assert out.after["secret"] == hmac.new(b"k", b"\x00\x01", hashlib.sha256).digest()
    assert out.before["secret"] is None


def test_mask_truncate_null_on_before_and_after() -> None:
    s = shaper(
        {
            "email": MaskPolicy(policy="mask", keep_length=True, replacement="#"),
            "status": MaskPolicy(policy="mask"),
            "note": TruncatePolicy(policy="truncate", length=3),
            "secret": NullPolicy(policy="null"),
        }
    )
    row = {"id": 1, "email": "abcd", "status": "paid", "note": "hello", "secret": b"x"}
    out = s(event(Op.UPDATE, row, dict(row)))
    assert out is not None
    for image in (out.after, out.before):
        assert image == {"id": 1, "email": "####", "status": "****", "note": "hel", "secret": None}


def test_policy_on_a_key_field_shapes_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    key = {"type": "record", "name": "K", "fields": [{"name": "email", "type": "string"}]}
    monkeypatch.setenv("K1", "k")
    s = StreamShaper(
        "s", {"email": HashPolicy(policy="hash", secret_env="K1")}, None, key, ROW, {}, Path(".")
    )
    out = s(ChangeEvent("s", Op.DELETE, {"email": "a"}, None, "p", {}, None))
    assert out is not None and out.key == {"email": hmac.new(b"k", b"a", hashlib.sha256).hexdigest()}
    assert s.shapes_key


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        ({"id": NullPolicy(policy="null")}, "the null policy needs a nullable field"),
        ({"id": MaskPolicy(policy="mask")}, "yields a string, the field's Avro type is long"),
        ({"email": HashPolicy(policy="hash", secret_env="K1", output="bytes")}, "yields a bytes"),
        ({"nope": NullPolicy(policy="null")}, "no field of the key or value schema"),
    ],
)
def test_a_policy_that_does_not_fit_is_a_startup_error(
    policies: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("K1", "k")
    with pytest.raises(SchemaError, match=re.escape(message)):
        shaper(policies)


def test_a_missing_secret_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE is not set"):
        shaper({"email": HashPolicy(policy="hash", secret_env="NOT_SET_ANYWHERE")})
    with pytest.raises(ConfigError, match="cannot be read"):
        shaper({"email": HashPolicy(policy="hash", secret_file=Path("missing"))}, tmp=tmp_path)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("missing = 1", "'missing' is no field of the value schema"),
        ("status > 3", "'status' (string) is compared with 3"),
        ("amount = 'x'", "is compared with 'x'"),
        ("status = ", "expected a field"),
    ],
)
def test_a_bad_filter_is_a_startup_error(where: str, message: str) -> None:
    with pytest.raises(SchemaError, match=re.escape(message)):
        shaper(where=where)


def test_filter_rule_for_inserts_updates_and_deletes() -> None:
    s = shaper(where="status != 'draft'")
    draft, paid = {"id": 1, "status": "draft"}, {"id": 1, "status": "paid"}
    assert s(event(Op.CREATE, draft)) is None
    assert s(event(Op.READ, draft)) is None
    assert s(event(Op.CREATE, paid)) is not None
    # in -> out: a delete (a tombstone for entity streams)
    moved_out = s(event(Op.UPDATE, draft, paid))
    assert moved_out is not None and moved_out.op is Op.DELETE and moved_out.after is None
    # old row unknown (no REPLICA IDENTITY FULL): still a delete, so no consumer keeps the row
    unknown = s(event(Op.UPDATE, draft, None))
    assert unknown is not None and unknown.op is Op.DELETE
    # out -> out: nothing
    assert s(event(Op.UPDATE, draft, dict(draft))) is None
    # out -> in: the update, as an upsert
    moved_in = s(event(Op.UPDATE, paid, draft))
    assert moved_in is not None and moved_in.op is Op.UPDATE
    assert s(event(Op.DELETE, None, draft)) is None
    assert s(event(Op.DELETE, None, paid)) is not None
    assert s(event(Op.DELETE, None, None)) is not None  # key only: a tombstone to be safe


def test_a_filter_type_error_is_a_row_error_showing_the_shaped_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K1", "k")
    key = {"type": "record", "name": "K", "fields": [{"name": "email", "type": "string"}]}
    s = StreamShaper(
        "s", {"email": HashPolicy(policy="hash", secret_env="K1")}, "amount > 0", key, ROW, {}, Path(".")
    )
    with pytest.raises(RowError) as info:
        s(ChangeEvent("s", Op.CREATE, {"email": "raw@x"}, {"email": "raw@x", "amount": "text"}, "p", {}))
    assert "raw@x" not in str(info.value) and info.value.field == "amount"


@pytest.mark.parametrize("where", ["note > 'a'", "'a' < note", "note > amount"])
def test_a_filter_type_error_never_shows_the_row_value(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    # The compared field is itself hashed and the source hands it over as a number (a value the
    # start-up check cannot see): its raw value must reach neither the row error nor, through
    # it, a dead letter. Comparisons of a field with a literal, either side, and of two fields.
    monkeypatch.setenv("K1", "k")
    s = shaper({"note": HashPolicy(policy="hash", secret_env="K1")}, where)
    row = {"id": 1, "note": 4111111111111111, "amount": "2.00", "status": "x"}
    with pytest.raises(RowError) as info:
        s(event(Op.CREATE, row))
    assert "4111111111111111" not in str(info.value) and info.value.field == "note"
    assert "cannot compare" in str(info.value) and "int" in str(info.value)


def test_topic_route_renders_values_and_refuses_what_cannot_name_a_topic() -> None:
    from cdc.shaping.routes import TopicRoute, base_name

    route = TopicRoute("s", "orders.{status}.{id}", KEY, ROW, {"status": "state"})
    assert base_name(route.template) == "orders.status.id"
    assert (
        route(ChangeEvent("s", Op.CREATE, {"id": 7}, {"id": 7, "state": "eu-1"}, "p", {})) == "orders.eu-1.7"
    )
    # a delete with its old row routes on it; with only the key, a key field still routes
    assert (
        route(ChangeEvent("s", Op.DELETE, {"id": 7}, None, "p", {}, {"id": 7, "state": "us"}))
        == "orders.us.7"
    )
    with pytest.raises(RowError, match="cannot route this delete"):
        route(ChangeEvent("s", Op.DELETE, {"id": 7}, None, "p", {}, None))
    with pytest.raises(RowError, match="cannot be part of a topic name"):
        route(ChangeEvent("s", Op.CREATE, {"id": 7}, {"id": 7, "state": "a/b"}, "p", {}))
    with pytest.raises(RowError, match="cannot be part of a topic name"):
        route(ChangeEvent("s", Op.CREATE, {"id": 7}, {"id": 7, "state": None}, "p", {}))


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("orders.{nope}", "{nope} names no field"),
        ("orders.{a b}", "{a b} is not a field name"),
        ("orders.{status", "unbalanced braces"),
    ],
)
def test_a_bad_topic_template_is_a_startup_error(template: str, message: str) -> None:
    from cdc.shaping.routes import TopicRoute

    with pytest.raises(SchemaError, match=re.escape(message)):
        TopicRoute("s", template, KEY, ROW, {})


def test_pushdown_keeps_only_terms_sql_evaluates_exactly_alike() -> None:
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql, postgresql

    from cdc.shaping.pushdown import pushdown

    table = sa.Table(
        "t", sa.MetaData(),
        sa.Column("id", sa.BigInteger), sa.Column("state", sa.Text), sa.Column("amount", sa.Numeric(10, 2)),
        sa.Column("ratio", sa.Float), sa.Column("code", sa.CHAR(3)), sa.Column("flag", sa.Boolean),
    )  # fmt: skip
    columns = dict(table.c.items())
    where = (
        "status != 'draft' and amount > 0 and status < 'm' and ratio > 0.5 and code = 'ab' "
        "and (flag = true or amount is null) and id not in (1, 2)"
    )
    pushed, kept = pushdown(where, columns, {"status": "state"}, "postgresql")
    sql = str(sa.select(table.c.id).where(*pushed).compile(dialect=postgresql.dialect()))
    assert "t.state != %(param_1)s" in sql and "t.amount > %(param_2)s" in sql
    assert "t.flag = %(param_3)s OR t.amount IS NULL" in sql and "(t.id NOT IN (__[POSTCOMPILE_id_1]))" in sql
    # text order follows collations, floats compare in binary, CHAR(n) pads: left to the runtime
    assert kept == ["status < 'm'", "ratio > 0.5", "code = 'ab'"]
    # MySQL's usual collations ignore case: text equality is not pushed there
    pushed, kept = pushdown("status != 'draft' and amount > 0", columns, {"status": "state"}, "mysql")
    assert kept == ["status != 'draft'"] and len(pushed) == 1
    assert "t.amount >" in str(sa.select(table.c.id).where(*pushed).compile(dialect=mysql.dialect()))


def test_render_round_trips_through_the_parser() -> None:
    text = "(a = 'it''s' or b is not null) and not (c in (1, 2.5, null)) and \"odd name\" >= -3 and d = true"
    rendered = expr.render(expr.parse(text))
    assert expr.parse(rendered) == expr.parse(text)


@pytest.mark.parametrize("key", ["k", "x" * 64, "long key " * 20, "ключ"])
@pytest.mark.parametrize("value", ["", "a@example.com", b"\x00\xff", 42, decimal.Decimal("1.50")])
def test_hash_equals_the_standard_library_hmac(key: str, value: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from cdc.shaping.policies import compile_policy

    monkeypatch.setenv("K1", key)
    data = value if isinstance(value, bytes) else str(value).encode()
    as_hex = compile_policy(HashPolicy(policy="hash", secret_env="K1"), "w", Path("."))
    as_bytes = compile_policy(HashPolicy(policy="hash", secret_env="K1", output="bytes"), "w", Path("."))
    assert as_hex(value) == hmac.new(key.encode(), data, hashlib.sha256).hexdigest()
    assert as_bytes(value) == hmac.new(key.encode(), data, hashlib.sha256).digest()


class _Empty(BaseModel):
    pass


class _EncodedSource(SourceConnector):
    """A source whose values arrive encoded (like the outbox relay), for the start-up check."""

    config_model = _Empty
    stream_model = _Empty
    encodes_values = True

    def describe(self) -> dict[str, dict[str, ColumnInfo]]:
        return {s.name: {"id": ColumnInfo("id", "bigint", False, int)} for s in self.streams}

    def acquire_lease(self, connector_name: str) -> Lease:
        raise NotImplementedError

    def start(self, offsets: Offsets) -> None:
        raise NotImplementedError

    def poll(self, timeout: float) -> list[ChangeEvent]:
        return []

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "shaping",
    ["where: \"status = 'x'\"", "policies: {email: {policy: mask}}"],
)
def test_shaping_an_application_encoded_value_is_a_startup_error(tmp_path: Path, shaping: str) -> None:
    import json

    from cdc.config import load_config
    from cdc.runtime.runner import prepare

    (tmp_path / "k.avsc").write_text(json.dumps(KEY))
    (tmp_path / "v.avsc").write_text(json.dumps(ROW))
    (tmp_path / "c.yaml").write_text(
        f"""
name: enc
source: {{connector: "tests.unit.test_shaping:_EncodedSource"}}
streams:
  - name: s
    key_schema: k.avsc
    value_schema: v.avsc
    {shaping}
output: {{kind: file, directory: {tmp_path}}}
offsets: {{store: file, path: {tmp_path}/o.json}}
"""
    )
    with pytest.raises(SchemaError, match="values arrive encoded by the application"):
        prepare(load_config(tmp_path / "c.yaml"))
