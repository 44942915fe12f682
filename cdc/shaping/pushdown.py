"""Pushing a row filter into a query-based source's SQL, only where it is exactly equivalent.

The runtime applies the whole filter to every event anyway, so pushing down only *some*
top-level ``and`` terms is safe as long as each pushed term keeps exactly the rows the
runtime's evaluation keeps. A term is pushed only when SQL and the filter language agree on
every value:

- integer and numeric columns compared with number literals (exact on both sides; not floats,
  where a decimal literal is compared as binary floating point by SQL);
- boolean columns with ``= true/false``;
- ``is [not] null`` on any column;
- text columns (varchar/text, default collation) with ``=``, ``!=``, ``in``, on PostgreSQL
  only, where equality under a deterministic collation is equality of the characters (not
  MySQL, whose usual collations ignore case and trailing spaces; not ``<``/``>``, which follow
  the collation's order; not CHAR(n), which pads; not enums, ordered by declaration).

Both sides use SQL's three-valued logic, so ``not``/``or`` of pushable terms are pushable too.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from cdc.shaping import expr

_OPS = {
    "=": "__eq__", "==": "__eq__", "!=": "__ne__", "<>": "__ne__",
    "<": "__lt__", "<=": "__le__", ">": "__gt__", ">=": "__ge__",
}  # fmt: skip


def _kind(column: sa.ColumnElement[Any], dialect: str) -> str | None:
    t = column.type
    if isinstance(t, sa.Boolean):
        return "bool"
    if isinstance(t, sa.Integer) or (
        isinstance(t, sa.Numeric) and not isinstance(t, sa.Float) and t.asdecimal
    ):
        return "number"
    if (
        dialect == "postgresql"
        and isinstance(t, sa.String)
        and not isinstance(t, sa.Enum | sa.CHAR | sa.NCHAR)
        and getattr(t, "collation", None) is None
    ):
        return "text"
    return None


def _literal_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | decimal.Decimal):
        return "number"
    if isinstance(value, str):
        return "text"
    return None


class _Translator:
    def __init__(
        self, columns: Mapping[str, sa.ColumnElement[Any]], field_map: Mapping[str, str], dialect: str
    ):
        self.columns = columns
        self.field_map = field_map
        self.dialect = dialect

    def column(self, node: Any) -> tuple[sa.ColumnElement[Any], str | None] | None:
        if not isinstance(node, expr.Field):
            return None
        col = self.columns.get(self.field_map.get(node.name, node.name))
        return None if col is None else (col, _kind(col, self.dialect))

    def __call__(self, node: Any) -> sa.ColumnElement[bool] | None:
        if isinstance(node, expr.IsNull):
            found = self.column(node.operand)
            if found is None:
                return None
            return found[0].is_not(None) if node.negated else found[0].is_(None)
        if isinstance(node, expr.Compare):
            field, literal, op = node.left, node.right, node.op
            if isinstance(field, expr.Literal) and isinstance(literal, expr.Field):
                field, literal = literal, field
                op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op)
            found = self.column(field)
            if found is None or not isinstance(literal, expr.Literal) or literal.value is None:
                return None
            col, kind = found
            if kind is None or kind != _literal_kind(literal.value):
                return None
            if kind in ("text", "bool") and op not in ("=", "==", "!=", "<>"):
                return None
            result: sa.ColumnElement[bool] = getattr(col, _OPS[op])(
                sa.bindparam(None, literal.value, type_=col.type)
            )
            return result
        if isinstance(node, expr.In):
            found = self.column(node.operand)
            if found is None or found[1] is None or None in node.values:
                return None
            col, kind = found
            if any(_literal_kind(v) != kind for v in node.values):
                return None
            members = col.in_(list(node.values))
            return sa.not_(members) if node.negated else members
        if isinstance(node, expr.Bool) and node.op in ("and", "or", "not"):
            parts = [self(p) for p in node.parts]
            if any(p is None for p in parts):
                return None
            pushed = [p for p in parts if p is not None]
            if node.op == "not":
                return sa.not_(pushed[0])
            return sa.and_(*pushed) if node.op == "and" else sa.or_(*pushed)
        return None


def pushdown(
    where: str, columns: Mapping[str, sa.ColumnElement[Any]], field_map: Mapping[str, str], dialect: str
) -> tuple[list[sa.ColumnElement[bool]], list[str]]:
    """The SQL terms equivalent to the filter's pushable top-level ``and`` terms, and the text of
    the terms left to the runtime alone (for the log). ``columns``: source column name -> column."""
    tree = expr.parse(where)
    terms = list(tree.parts) if isinstance(tree, expr.Bool) and tree.op == "and" else [tree]
    translate = _Translator(columns, field_map, dialect)
    pushed: list[sa.ColumnElement[bool]] = []
    kept: list[str] = []
    for term in terms:
        sql = translate(term)
        if sql is None:
            kept.append(expr.render(term))
        else:
            pushed.append(sql)
    return pushed, kept
