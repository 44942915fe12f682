"""The Router's fused shaping path (filter on raw values, policies applied while converting)
against the reference path (``StreamShaper`` shapes a copy of the event, then the plain
converters): the same records, bytes, dead letters and row errors on the same input. And the
filter's specialized closures against a plain evaluator of SQL's three-valued logic."""

from __future__ import annotations

import copy
import decimal
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from cdc.config import load_config
from cdc.config.model import OnError
from cdc.errors import RowError
from cdc.plugin import ChangeEvent, Op
from cdc.runtime.encoding import RecordEncoder
from cdc.runtime.routing import DeadLetter, Filtered, Router
from cdc.schemas.eventify import Record, StreamEventifier
from cdc.shaping import expr

KEY = {
    "type": "record",
    "name": "K",
    "fields": [{"name": "id", "type": "long"}, {"name": "email", "type": "string"}],
}
ROW = {
    "type": "record",
    "name": "V",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "email", "type": "string"},
        {"name": "status", "type": "string"},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}},
        {"name": "note", "type": ["null", "string"]},
        {"name": "secret", "type": ["null", "bytes"]},
        {"name": "account", "type": "string"},
        {"name": "gone", "type": ["null", "string"], "default": None},
    ],
}
POLICIES = """
    policies:
      email: {policy: hash, secret_env: FUSED_TEST_KEY}
      account: {policy: hash, secret_env: FUSED_TEST_KEY}
      secret: {policy: hash, secret_env: FUSED_TEST_KEY, output: bytes}
      status: {policy: mask, keep_length: true}
      note: {policy: truncate, length: 3}
      gone: {policy: "null"}"""
CONFIG = """
name: fused
source: {{connector: postgres_wal, url: "postgresql://u@127.0.0.1/db", slot: s, publication: p}}
streams:
  - name: s
    topic: t
    key_schema: k.avsc
    value_schema: v.avsc
    format: {format}
    on_error: {on_error}
    fields: {{account: acct}}
    capture: {{table: public.t}}
{shaping}
kafka: {{bootstrap_servers: "127.0.0.1:1"}}
schema_registry: {{url: "http://127.0.0.1:1"}}
"""


def make(tmp: Path, fmt: str, on_error: str, shaping: str) -> tuple[Router, RecordEncoder]:
    (tmp / "k.avsc").write_text(json.dumps(KEY))
    (tmp / "v.avsc").write_text(json.dumps(ROW))
    (tmp / "c.yaml").write_text(CONFIG.format(format=fmt, on_error=on_error, shaping=shaping))
    app = load_config(tmp / "c.yaml")
    eventifiers = {s.name: StreamEventifier(app, s) for s in app.streams}
    return Router(app, eventifiers), RecordEncoder(eventifiers, {"s": (1, 2)}, lambda: None)


def reference(router: Router, event: ChangeEvent) -> Record | DeadLetter | Filtered:
    """The Router as it was before the fused path: shape the event, then convert it."""
    eventifier = router.eventifiers[event.stream]
    shaper = eventifier.shaper
    assert shaper is not None
    try:
        try:
            shaped = shaper(event)
        except RowError:
            event = shaper.apply_policies(event)
            raise
        if shaped is None:
            return Filtered(event.stream, event.partition, event.offset)
        event = shaped
        return eventifier(event)
    except RowError as err:
        stream = router._streams[event.stream]
        if stream.on_error is OnError.FAIL:
            raise
        return DeadLetter(
            stream.name, router.app.dead_letter_topic_of(stream), event.key,
            router._payload(event, err), event.partition, event.offset,
        )  # fmt: skip


def rows() -> list[dict[str, Any]]:
    """Rows that pass and fail the filters, fit and misfit the schema (a null email, an amount
    too large for decimal(6,2), a float amount, text where the filter compares numbers)."""
    out = []
    for i, (status, amount, note, secret, email) in enumerate(
        itertools.product(
            ["paid", "draft", ""],
            [decimal.Decimal("1.50"), decimal.Decimal("-2"), decimal.Decimal("123456.00"), None, 1.5],
            [None, "a longer note"],
            [None, b"\x00\xff"],
            ["a@example.com", None],
        )
    ):
        out.append(
            {"id": i, "email": email, "status": status, "amount": amount, "note": note,
             "secret": secret, "acct": i % 7, "gone": "x"}
        )  # fmt: skip
    out.append({"id": 9999, "email": "e", "status": "paid", "amount": "text", "note": None,
                "secret": None, "acct": 1, "gone": None})  # fmt: skip
    out.append({"id": 9998, "email": "e", "status": "paid", "amount": decimal.Decimal(1), "note": None,
                "secret": None})  # fmt: skip  # no acct column: a missing column without a default
    return out


def events() -> list[ChangeEvent]:
    rs = rows()
    out = []
    for n, row in enumerate(rs):
        other = rs[(n * 7 + 3) % len(rs)]
        key = {"id": row["id"], "email": row["email"] or "k"}
        for op, after, before in (
            (Op.CREATE, row, None),
            (Op.READ, row, None),
            (Op.UPDATE, row, None),
            (Op.UPDATE, row, other),
            (Op.DELETE, None, row),
            (Op.DELETE, None, None),
        ):
            out.append(ChangeEvent("s", op, key, after, "p", {"n": n}, before, 1700000000000, "42"))
    return out


def outcome(route: Any, encoder: RecordEncoder, event: ChangeEvent) -> Any:
    try:
        routed = route(event)
    except RowError as err:
        return ("error", str(err), err.key, err.field, err.reason)
    if isinstance(routed, Record):
        if isinstance(routed.value, dict) and "source" in routed.value:
            routed.value["ts_ms"] = 0  # the envelope's processing time
        return (routed, encoder.encode(routed))
    return routed


@pytest.mark.parametrize("fmt", ["entity", "envelope"])
@pytest.mark.parametrize("on_error", ["fail", "dead_letter"])
@pytest.mark.parametrize(
    "where",
    [None, "amount >= 0 and status != 'draft'", "not (id in (3, 5)) or note is null", "0 < amount"],
)
def test_fused_router_equals_shaping_then_converting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, on_error: str, where: str | None
) -> None:
    monkeypatch.setenv("FUSED_TEST_KEY", "fused-key")
    shaping = POLICIES + (f'\n    where: "{where}"' if where else "")
    if on_error == "dead_letter":
        shaping += "\n    dead_letter_topic: t.dlq"
    router, encoder = make(tmp_path, fmt, on_error, shaping)
    assert router.eventifiers["s"].fuses_policies
    counts: dict[str, int] = {}
    for event in events():
        # each path gets its own copy: both replace the event's fields (never its dicts)
        original = copy.deepcopy(event)
        fused = outcome(router, encoder, copy.deepcopy(event))
        expected = outcome(lambda e: reference(router, e), encoder, copy.deepcopy(event))
        assert fused == expected, (event, fused, expected)
        assert event == original
        kind = type(fused).__name__ if isinstance(fused, DeadLetter | Filtered) else str(fused[0])[:6]
        counts[kind] = counts.get(kind, 0) + 1
    # the input covers records, filtered events and row errors (or dead letters)
    assert counts.get("Record", 0) and ("error" in counts or "DeadLetter" in counts)
    assert where is None or counts.get("Filtered", 0)


def test_a_routed_stream_keeps_the_reference_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSED_TEST_KEY", "fused-key")
    (tmp_path / "k.avsc").write_text(json.dumps(KEY))
    (tmp_path / "v.avsc").write_text(json.dumps(ROW))
    (tmp_path / "c.yaml").write_text(
        CONFIG.format(format="entity", on_error="fail", shaping=POLICIES).replace(
            "topic: t", "topic: t.{note}"
        )
    )
    app = load_config(tmp_path / "c.yaml")
    ev = StreamEventifier(app, app.streams[0])
    assert not ev.fuses_policies  # the topic renders from the shaped values
    row = {**rows()[0], "note": "abcdef"}
    record = Router(app, {"s": ev})(ChangeEvent("s", Op.CREATE, {"id": 0, "email": "e"}, row, "p", {}))
    assert isinstance(record, Record) and record.topic == "t.abc" and record.value is not None
    assert record.value["note"] == "abc" and record.value["email"] != "e"


def evaluate(node: Any, row: dict[str, Any]) -> Any:
    """SQL's three-valued logic, spelled out (the reference the compiled closures must match)."""
    if isinstance(node, expr.Literal):
        return node.value
    if isinstance(node, expr.Field):
        return row.get(node.name)
    if isinstance(node, expr.Compare):
        a, b = evaluate(node.left, row), evaluate(node.right, row)
        if a is None or b is None:
            return None
        return expr._CMP[node.op](a, b)  # a TypeError: the row error
    if isinstance(node, expr.IsNull):
        return (evaluate(node.operand, row) is None) != node.negated
    if isinstance(node, expr.In):
        v = evaluate(node.operand, row)
        if v is None:
            return None
        if v in node.values:
            return not node.negated
        return None if None in node.values else node.negated
    values = [evaluate(p, row) for p in node.parts]
    if node.op == "not":
        return None if values[0] is None else not values[0]
    decisive = node.op == "or"
    if any(v is decisive for v in values):
        return decisive
    return None if any(v is None for v in values) else not decisive


@pytest.mark.parametrize(
    "text",
    [
        "a > 1", "1 < a", "a = 'x'", "'x' <> a", "a >= 1 and b != ''", "a < 2 or b = 'y'",
        "not a > 1 and b = 'y'", "a > 1 and b = 'y' and a < 5", "a or b = 'y'", "a > 1 or a < 0 or b = 'z'",
        "a = null", "(a > 1) = true", "b and a",
    ],
)  # fmt: skip
def test_compiled_filters_follow_three_valued_logic(text: str) -> None:
    tree = expr.parse(text)
    predicate = expr.compile_predicate(tree, {})
    for a, b in itertools.product([None, 0, 1, 2, 7, decimal.Decimal("1.5"), "t", True], [None, "", "y", 3]):
        row = {"a": a, "b": b}
        try:
            expected = evaluate(tree, row)
        except TypeError:
            expected = "type error"
        try:
            got = predicate(row)
        except expr.FilterTypeError:
            got = "type error"
        assert got == expected and type(got) is type(expected), (text, row, got, expected)
