"""The row filter language: a small, safe predicate language parsed here (never Python ``eval``).

Grammar (keywords are case-insensitive)::

    expr     := and_expr ("or" and_expr)*
    and_expr := not_expr ("and" not_expr)*
    not_expr := "not" not_expr | test
    test     := operand [ cmp operand | "is" ["not"] "null" | ["not"] "in" "(" literal ("," literal)* ")" ]
    cmp      := "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    operand  := literal | field | "(" expr ")"
    literal  := 'text' ('' is a quote) | -?digits[.digits] | true | false | null
    field    := a name of the stream's value schema ([A-Za-z_][A-Za-z0-9_]*, or "double quoted")

Semantics are SQL's three-valued logic: a comparison with a null is unknown, ``not unknown`` is
unknown, and a row passes only when the whole predicate is true. So ``amount > 0`` drops rows
whose amount is null, exactly as a ``WHERE`` clause would.
"""

from __future__ import annotations

import decimal
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Row = Mapping[str, Any]
Predicate = Callable[[Row], bool | None]

_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?)|(?P<str>'(?:[^']|'')*')|(?P<qname>\"[^\"]+\")"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op><=|>=|<>|!=|==|=|<|>|\(|\)|,))"
)
_KEYWORDS = frozenset({"and", "or", "not", "is", "null", "in", "true", "false"})
_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "==": operator.eq, "!=": operator.ne, "<>": operator.ne,
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}  # fmt: skip


class FilterSyntaxError(ValueError):
    """The expression does not parse; the message names the position."""


class FilterTypeError(TypeError):
    """A row's value cannot be compared with the expression's literal (caught per row)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Field:
    name: str


@dataclass(frozen=True)
class Compare:
    op: str
    left: Literal | Field | Node
    right: Literal | Field | Node


@dataclass(frozen=True)
class IsNull:
    operand: Literal | Field | Node
    negated: bool


@dataclass(frozen=True)
class In:
    operand: Literal | Field | Node
    values: tuple[Any, ...]
    negated: bool


@dataclass(frozen=True)
class Bool:
    op: str  # "and" | "or" | "not" | "value"
    parts: tuple[Any, ...]


Node = Compare | IsNull | In | Bool


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, Any, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if m is None:
                raise FilterSyntaxError(f"unexpected character {text[pos:].lstrip()[:1]!r} at {pos + 1}")
            kind = m.lastgroup
            assert kind is not None
            raw = m.group(kind)
            at = m.start(kind) + 1
            if kind == "num":
                value: Any = decimal.Decimal(raw) if "." in raw else int(raw)
                self.tokens.append(("lit", value, at))
            elif kind == "str":
                self.tokens.append(("lit", raw[1:-1].replace("''", "'"), at))
            elif kind == "qname":
                self.tokens.append(("name", raw[1:-1], at))
            elif kind == "name" and raw.lower() in _KEYWORDS:
                word = raw.lower()
                if word in ("true", "false"):
                    self.tokens.append(("lit", word == "true", at))
                else:
                    self.tokens.append(("kw", word, at))
            else:
                self.tokens.append((kind, raw, at))
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, Any, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def accept(self, kind: str, value: Any = None) -> bool:
        tok = self.peek()
        if tok is not None and tok[0] == kind and (value is None or tok[1] == value):
            self.i += 1
            return True
        return False

    def fail(self, expected: str) -> FilterSyntaxError:
        tok = self.peek()
        where = "the end" if tok is None else f"{tok[1]!r} at {tok[2]}"
        return FilterSyntaxError(f"expected {expected}, found {where}")

    def parse(self) -> Node | Field | Literal:
        if not self.tokens:
            raise FilterSyntaxError("the expression is empty")
        node: Node | Field | Literal = self.or_expr()
        if self.peek() is not None:
            raise self.fail("'and', 'or' or the end")
        return node

    def or_expr(self) -> Any:
        parts = [self.and_expr()]
        while self.accept("kw", "or"):
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else Bool("or", tuple(parts))

    def and_expr(self) -> Any:
        parts = [self.not_expr()]
        while self.accept("kw", "and"):
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else Bool("and", tuple(parts))

    def not_expr(self) -> Any:
        if self.accept("kw", "not"):
            return Bool("not", (self.not_expr(),))
        return self.test()

    def test(self) -> Any:
        left = self.operand()
        tok = self.peek()
        if tok is not None and tok[0] == "op" and tok[1] in _CMP:
            self.i += 1
            return Compare(tok[1], left, self.operand())
        if self.accept("kw", "is"):
            negated = self.accept("kw", "not")
            if not self.accept("kw", "null"):
                raise self.fail("'null' after 'is'")
            return IsNull(left, negated)
        negated = self.accept("kw", "not")
        if self.accept("kw", "in"):
            return In(left, self.literal_list(), negated)
        if negated:
            raise self.fail("'in' after 'not'")
        return left

    def literal_list(self) -> tuple[Any, ...]:
        if not self.accept("op", "("):
            raise self.fail("'(' after 'in'")
        values = [self.literal()]
        while self.accept("op", ","):
            values.append(self.literal())
        if not self.accept("op", ")"):
            raise self.fail("',' or ')'")
        return tuple(values)

    def literal(self) -> Any:
        tok = self.peek()
        if tok is not None and tok[0] == "lit":
            self.i += 1
            return tok[1]
        if self.accept("kw", "null"):
            return None
        raise self.fail("a literal")

    def operand(self) -> Any:
        tok = self.peek()
        if tok is None:
            raise self.fail("a field, a literal or '('")
        if tok[0] == "lit":
            self.i += 1
            return Literal(tok[1])
        if tok[0] == "kw" and tok[1] == "null":
            self.i += 1
            return Literal(None)
        if tok[0] == "name":
            self.i += 1
            return Field(tok[1])
        if self.accept("op", "("):
            node = self.or_expr()
            if not self.accept("op", ")"):
                raise self.fail("')'")
            return node
        raise self.fail("a field, a literal or '('")


def parse(text: str) -> Node | Field | Literal:
    """The expression's syntax tree; FilterSyntaxError names the position of a mistake."""
    return _Parser(text).parse()


def fields_of(node: Any) -> list[str]:
    """The field names an expression reads, in order of appearance."""
    if isinstance(node, Field):
        return [node.name]
    if isinstance(node, Compare):
        return fields_of(node.left) + fields_of(node.right)
    if isinstance(node, IsNull | In):
        return fields_of(node.operand)
    if isinstance(node, Bool):
        return [name for part in node.parts for name in fields_of(part)]
    return []


def literals_by_field(node: Any) -> list[tuple[str, Any]]:
    """(field, literal) pairs the expression compares, so a start-up check can match types."""
    if isinstance(node, Compare):
        pairs = []
        if isinstance(node.left, Field) and isinstance(node.right, Literal):
            pairs.append((node.left.name, node.right.value))
        if isinstance(node.right, Field) and isinstance(node.left, Literal):
            pairs.append((node.right.name, node.left.value))
        return pairs
    if isinstance(node, In) and isinstance(node.operand, Field):
        return [(node.operand.name, v) for v in node.values]
    if isinstance(node, Bool):
        return [pair for part in node.parts for pair in literals_by_field(part)]
    return []


def compile_predicate(node: Any, columns: Mapping[str, str]) -> Predicate:
    """A closure over a row of *source column* values; ``columns`` maps field -> source column."""
    if isinstance(node, Literal):
        value = node.value
        return lambda row: value
    if isinstance(node, Field):
        column = columns.get(node.name, node.name)
        return lambda row: row.get(column)
    if isinstance(node, Compare) and _field_and_literal(node):
        return _compare_field(node, columns)
    if isinstance(node, Compare):
        left, right, cmp = (
            compile_predicate(node.left, columns),
            compile_predicate(node.right, columns),
            _CMP[node.op],
        )
        name = (fields_of(node) or ["?"])[0]

        def compare(row: Row) -> bool | None:
            a, b = left(row), right(row)
            if a is None or b is None:
                return None
            try:
                return cmp(a, b)
            except TypeError:
                # Types only: the row's value may be one a column policy hides (it would
                # reach the row error and the dead letter in clear).
                raise FilterTypeError(
                    name, f"cannot compare a {type(a).__name__} {node.op} a {type(b).__name__}"
                ) from None

        return compare
    if isinstance(node, IsNull):
        inner, negated = compile_predicate(node.operand, columns), node.negated
        return lambda row: (inner(row) is None) != negated
    if isinstance(node, In):
        inner, options, negated = compile_predicate(node.operand, columns), node.values, node.negated

        def member(row: Row) -> bool | None:
            value = inner(row)
            if value is None:
                return None
            if value in options:
                return not negated
            # SQL: x NOT IN (..., NULL) is unknown, x IN (..., NULL) without a match is unknown
            return None if None in options else negated

        return member
    assert isinstance(node, Bool)
    parts = [compile_predicate(p, columns) for p in node.parts]
    if node.op == "not":
        (inner,) = parts
        return lambda row: None if (v := inner(row)) is None else not v
    # and: false decides, or: true decides; otherwise any unknown makes the result unknown
    return _connective(parts, decisive=node.op == "or")


def _field_and_literal(node: Compare) -> bool:
    """A field compared with a non-null literal (either side): the common comparison."""
    if isinstance(node.left, Field) and isinstance(node.right, Literal):
        return node.right.value is not None
    return isinstance(node.left, Literal) and isinstance(node.right, Field) and node.left.value is not None


def _compare_field(node: Compare, columns: Mapping[str, str]) -> Predicate:
    """A field compared with a literal in one closure (no closures per operand: this runs per
    row); the same results and errors as the general comparison."""
    field_first = isinstance(node.left, Field)
    field_node, literal = (node.left, node.right) if field_first else (node.right, node.left)
    assert isinstance(field_node, Field) and isinstance(literal, Literal)
    column, value, cmp, op = (
        columns.get(field_node.name, field_node.name),
        literal.value,
        _CMP[node.op],
        node.op,
    )
    name = field_node.name

    def fail(a: Any, b: Any) -> FilterTypeError:
        # The literal (from the config) is shown, never the row's value: a column policy may
        # hide it, and this message reaches row errors and dead letters.
        shown = [f"{type(x).__name__} {x!r}" if x is value else f"a {type(x).__name__}" for x in (a, b)]
        return FilterTypeError(name, f"cannot compare {shown[0]} {op} {shown[1]}")

    if field_first:

        def compare(row: Row) -> bool | None:
            a = row.get(column)
            if a is None:
                return None
            try:
                return cmp(a, value)
            except TypeError:
                raise fail(a, value) from None

        return compare

    def compare_reversed(row: Row) -> bool | None:
        b = row.get(column)
        if b is None:
            return None
        try:
            return cmp(value, b)
        except TypeError:
            raise fail(value, b) from None

    return compare_reversed


def _connective(parts: list[Predicate], *, decisive: bool) -> Predicate:
    if len(parts) == 2:  # the common case, unrolled (the loop costs as much as a comparison)
        first, second = parts

        def pair(row: Row) -> bool | None:
            a = first(row)
            if a is decisive:
                return decisive
            b = second(row)
            if b is decisive:
                return decisive
            return None if a is None or b is None else not decisive

        return pair

    def combine(row: Row) -> bool | None:
        result: bool | None = not decisive
        for part in parts:
            v = part(row)
            if v is decisive:
                return decisive
            if v is None:
                result = None
        return result

    return combine


def render(node: Any) -> str:
    """An expression as text in the filter language (for logs and ``cdc check``)."""
    if isinstance(node, Literal):
        value = node.value
        if value is None:
            return "null"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return "'" + value.replace("'", "''") + "'"
        return str(value)
    if isinstance(node, Field):
        return node.name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", node.name) else f'"{node.name}"'
    if isinstance(node, Compare):
        return f"{render(node.left)} {node.op} {render(node.right)}"
    if isinstance(node, IsNull):
        return f"{render(node.operand)} is {'not ' if node.negated else ''}null"
    if isinstance(node, In):
        values = ", ".join(render(Literal(v)) for v in node.values)
        return f"{render(node.operand)} {'not ' if node.negated else ''}in ({values})"
    assert isinstance(node, Bool)
    if node.op == "not":
        return f"not ({render(node.parts[0])})"
    return f" {node.op} ".join(f"({render(p)})" if isinstance(p, Bool) else render(p) for p in node.parts)
