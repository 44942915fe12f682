"""One stream's shaping: its row filter, then its column policies, applied to a change event.

The filter reads the *raw* values (filtering on a hashed column would be useless); everything
after it - records, dead letters, error messages - sees only the policies' output.

Filter rule for updates (entity streams get a tombstone, envelope streams a delete): an update
whose new row fails the filter becomes a delete of the key, unless the old row is known and
failed too (then nothing is emitted). Consumers of a filtered entity topic thus never keep a row
that left the filter. Inserts and snapshot reads that fail are dropped; a delete is dropped only
when its old row is known and failed the filter.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cdc.errors import RowError, SchemaError
from cdc.plugin import ChangeEvent, Op
from cdc.schemas.convert import compose
from cdc.shaping import expr
from cdc.shaping.config import Policy
from cdc.shaping.policies import Apply, avro_kinds, check_policies, compile_policy, describe

_NUMERIC = frozenset({"int", "long", "float", "double", "decimal"})
_TEXT = frozenset({"string", "enum", "uuid"})


def _literal_fits(value: Any, kinds: set[str]) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return "boolean" in kinds
    if isinstance(value, str):
        return bool(kinds & _TEXT)
    return bool(kinds & _NUMERIC)


def compile_filter(
    stream: str, text: str, schema: Mapping[str, Any], field_map: Mapping[str, str]
) -> expr.Predicate:
    """Parse and check a stream's ``where``: it may name only fields of the value schema, and
    compare each with literals of a fitting type. Raises SchemaError (a start-up error)."""
    try:
        tree = expr.parse(text)
    except expr.FilterSyntaxError as exc:
        raise SchemaError(
            f"stream {stream!r} where: {exc} in {text!r}",
            hint="see README 'Shaping streams' for the filter language",
        ) from None
    types = {f["name"]: f["type"] for f in schema["fields"]}
    problems = [
        f"{name!r} is no field of the value schema" for name in expr.fields_of(tree) if name not in types
    ]
    for name, literal in expr.literals_by_field(tree):
        if name in types and not _literal_fits(literal, avro_kinds(types[name])):
            problems.append(f"{name!r} ({types[name]}) is compared with {literal!r}")
    if problems:
        raise SchemaError(f"stream {stream!r} where {text!r}: " + "; ".join(dict.fromkeys(problems)))
    return expr.compile_predicate(tree, field_map)


class StreamShaper:
    """Applies one stream's filter and policies to its change events (source column values)."""

    def __init__(
        self,
        stream: str,
        policies: Mapping[str, Policy],
        where: str | None,
        key_schema: Mapping[str, Any],
        row_schema: Mapping[str, Any],
        field_map: Mapping[str, str],
        base_dir: Path,
    ) -> None:
        check_policies(stream, policies, {"key": key_schema, "value": row_schema})
        self.stream = stream
        self.policies = dict(policies)
        self.where = where
        key_fields = {f["name"] for f in key_schema["fields"]}
        self._value_fields = {f["name"] for f in row_schema["fields"]}
        compiled = {
            name: compile_policy(p, f"streams[{stream}].policies.{name}", base_dir)
            for name, p in policies.items()
        }
        # per source column: the policy's function (a field maps to one column)
        self._row: list[tuple[str, Apply]] = [(field_map.get(n, n), f) for n, f in compiled.items()]
        self._key: list[tuple[str, Apply]] = [
            (field_map.get(n, n), f) for n, f in compiled.items() if n in key_fields
        ]
        self._filter = None if where is None else compile_filter(stream, where, row_schema, field_map)

    @property
    def shapes_value(self) -> bool:
        """True when a policy names a field of the value schema."""
        return bool(self._value_fields & set(self.policies))

    @property
    def shapes_key(self) -> bool:
        """True when a policy applies to a key field."""
        return bool(self._key)

    def summary(self) -> dict[str, Any]:
        """What ``cdc schemas show`` and ``cdc check`` print: field -> policy, and the filter."""
        out: dict[str, Any] = {"policies": {name: describe(p) for name, p in self.policies.items()}}
        if self.where is not None:
            out["where"] = self.where
        return out

    def _passes(self, row: dict[str, Any] | None, key: Any) -> bool | None:
        """The filter's verdict on a row (None: the row is not known)."""
        if row is None:
            return None
        assert self._filter is not None
        try:
            return self._filter(row) is True
        except expr.FilterTypeError as exc:
            raise RowError(self.stream, key, exc.field, f"where: {exc}") from None

    def __call__(self, event: ChangeEvent) -> ChangeEvent | None:
        """The shaped event, or None when the filter drops it (its offset still advances).

        The reference path: the Router filters with :meth:`filter` and applies the policies
        while converting (:meth:`column_policies`), which gives the same records."""
        kept = self.filter(event)
        if kept is None or not self._row:
            return kept
        return self.apply_policies(kept)

    def filter(self, event: ChangeEvent) -> ChangeEvent | None:
        """The filter alone, on the raw values: the event, a delete in place of an update whose
        new row left the filter, or None when it drops the event. A row error (a comparison of
        mismatched types) names the key as published, never the raw value."""
        predicate = self._filter
        if predicate is None:
            return event
        op = event.op
        try:
            if op is Op.CREATE or op is Op.READ:
                after = event.after  # the hot path, inlined: the row is known, it must pass
                if after is None or predicate(after) is not True:
                    return None
            elif op is Op.UPDATE:
                if not self._passes(event.after, event.key):
                    if self._passes(event.before, event.key) is False:
                        return None  # out before, out after: nothing to tell
                    return _as_delete(event)
            elif self._passes(event.before, event.key) is False:
                return None
        except expr.FilterTypeError as exc:  # from the inlined path
            raise RowError(self.stream, self.published_key(event.key), exc.field, f"where: {exc}") from None
        except RowError as err:
            raise RowError(err.stream, self.published_key(event.key), err.field, err.reason) from None
        return event

    def published_key(self, key: dict[str, Any]) -> dict[str, Any]:
        """A key of source column values with the key fields' policies applied (a copy)."""
        out: dict[str, Any] = self._apply(self._key, key) if self._key else key
        return out

    def column_policies(self, key: bool) -> dict[str, Apply]:
        """Per source column, the function its policies apply (of the key fields' policies only
        for ``key``), for a converter to apply while it converts: the same values as
        :meth:`apply_policies` (policies naming one column apply in turn, as there)."""
        out: dict[str, Apply] = {}
        for column, apply in self._key if key else self._row:
            first = out.get(column)
            out[column] = apply if first is None else compose(first, apply)
        return out

    def apply_policies(self, event: ChangeEvent) -> ChangeEvent:
        """The event with every policy applied to its key, before and after images. The event
        object is the runtime's once polled (see ``SourceConnector.poll``), so its fields are
        replaced in place; the dicts are copied, never changed (a source may share one between
        two events, e.g. the old row of a key change's delete and update)."""
        if self._key:
            event.key = self._apply(self._key, event.key)
        if event.after is not None:
            event.after = self._apply(self._row, event.after)
        if event.before is not None:
            event.before = self._apply(self._row, event.before)
        return event

    @staticmethod
    def _apply(policies: list[tuple[str, Apply]], row: dict[str, Any] | None) -> Any:
        if row is None:
            return None
        out = dict(row)
        for column, apply in policies:
            if column in out:
                out[column] = apply(out[column])
        return out


def _as_delete(event: ChangeEvent) -> ChangeEvent:
    return ChangeEvent(
        event.stream, Op.DELETE, event.key, None, event.partition, event.offset, event.before,
        event.ts_ms, event.txid, event.source, event.encoded_value, event.headers, event.txn_order, event.txn_end,
    )  # fmt: skip


def shaping_lines(eventifiers: Mapping[str, Any]) -> list[str]:
    """One line per shaped stream for ``cdc check``: its policies per field and its filter."""
    lines = []
    for name, ev in eventifiers.items():
        shaper: StreamShaper | None = ev.shaper
        if shaper is None:
            continue
        summary = shaper.summary()
        parts = [f"{field}: {what}" for field, what in summary["policies"].items()]
        if "where" in summary:
            parts.append(f"where {summary['where']}")
        lines.append(f"stream {name} shaping: " + "; ".join(parts))
    return lines
