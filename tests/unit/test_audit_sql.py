"""Audit capture without a database: trigger names, quoting, and the image decoders."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from cdc.audit import sql_mysql, sql_pg, sql_sqlite, values
from cdc.audit.catalog import AuditedTable, Column


def _table(name: str, *columns: tuple[str, str]) -> AuditedTable:
    cols = tuple(Column(n, t, t.split("(")[0]) for n, t in columns)
    return AuditedTable("db", name, cols, (cols[0].name,))


def test_mysql_trigger_names_fit_64_characters_and_stay_distinct() -> None:
    long_a, long_b = "a" * 60 + "x", "a" * 60 + "y"
    names = {sql_mysql.trigger_name(_table(n, ("id", "int")), "ai") for n in (long_a, long_b)}
    assert len(names) == 2 and all(len(n) <= 64 and n.startswith("cdc_audit_") for n in names)


def test_identifiers_and_literals_are_quoted() -> None:
    t = _table("we`ird'\"", ("i`d", "int"), ("price", "decimal(10,2)"))
    sql = "\n".join(sql_mysql.install("db", t, False))
    assert "`we``ird'\"`" in sql and "NEW.`i``d`" in sql and "'we`ird''\"'" in sql
    pg = "\n".join(sql_pg.install('s"x', _table('t"q', ("id", "int")), True))
    assert '"s""x"."cdc_audit_capture"()' in pg and '"db"."t""q"' in pg and "AFTER TRUNCATE" in pg
    lite = "\n".join(sql_sqlite.install("main", _table("it'em", ("id", "integer")), False))
    assert "'it''em'" in lite and '"it\'em"' in lite


def test_mysql_images_use_exact_forms_per_type() -> None:
    t = _table(
        "t",
        ("id", "int"),
        ("f", "float"),
        ("ts", "timestamp(3)"),
        ("b", "varbinary(4)"),
        ("bits", "bit(3)"),
        ("j", "json"),
    )
    image = sql_mysql.image("NEW", t)
    for part in (
        "NEW.`f` + 0e0",
        "UNIX_TIMESTAMP(NEW.`ts`)",
        "HEX(NEW.`b`)",
        "CAST(NEW.`bits` AS UNSIGNED)",
        "CONCAT(NEW.`j`)",
    ):
        assert part in image


def test_mysql_decoders() -> None:
    cols = [Column("t", "time(6)", "time"), Column("ts", "timestamp(6)", "timestamp"), Column("s", "set('a','b')", "set"),
            Column("n", "decimal(5,2)", "decimal"), Column("b", "blob", "blob"), Column("d", "date", "date")]  # fmt: skip
    decoders = values.mysql_decoders(cols)
    image = values.parse_image(
        '{"t": "-838:59:59.999999", "ts": 1577934245.123456, "s": "", "n": 5, "b": "00FF", "d": "0000-00-00"}'
    )
    assert image is not None
    row = values.decode_mysql(image, [c.name for c in cols], decoders)
    assert row["t"] == -dt.timedelta(hours=838, minutes=59, seconds=59, microseconds=999999)
    assert row["ts"] == dt.datetime(2020, 1, 2, 3, 4, 5, 123456, dt.UTC)
    assert row["s"] == [] and row["n"] == Decimal(5) and row["b"] == b"\x00\xff"
    assert row["d"] == "0000-00-00"  # the converter turns it into a row error naming the field


def test_sqlite_tags_are_undone() -> None:
    image = values.parse_image('{"r": ["r", "0.30000000000000004"], "b": ["b", "00ff"], "i": 3, "n": null}')
    assert image is not None
    assert values.decode_sqlite(image, ["r", "b", "i", "n"], {}) == {
        "r": 0.1 + 0.2,
        "b": b"\x00\xff",
        "i": 3,
        "n": None,
    }


def test_pg_decoders_rebuild_common_types_and_hand_doubts_back() -> None:
    oids = {"i": 23, "n": 1700, "f": 701, "t": 25, "c": 1042, "b": 16, "d": 1082, "ts": 1114, "tz": 1184}
    decoders = values.pg_decoders(oids, dt.UTC)
    assert decoders is not None
    assert values.pg_decoders({"u": 2950}, dt.UTC) is None  # uuid: rebuilt by the server
    text = (
        '{"i": -5, "n": 1.10, "f": 0.30000000000000004, "t": "a\\"b", "c": "ab   ", "b": false, '
        '"d": "2020-02-29", "ts": "2020-02-29T23:59:59.5", "tz": "2020-06-01T17:45:00.000001+05:45", "x": 1}'
    )
    row = values.decode_pg(text, list(oids), decoders)
    assert row == {
        "i": -5, "n": Decimal("1.10"), "f": 0.1 + 0.2, "t": 'a"b', "c": "ab   ", "b": False,
        "d": dt.date(2020, 2, 29), "ts": dt.datetime(2020, 2, 29, 23, 59, 59, 500000),
        "tz": dt.datetime(2020, 6, 1, 12, 0, 0, 1, dt.UTC),
    }  # fmt: skip
    assert row is not None and str(row["n"]) == "1.10" and row["tz"].tzinfo is dt.UTC
    assert values.decode_pg('{"n": 7}', ["n"], decoders) == {"n": Decimal(7)}
    assert values.decode_pg(None, ["n"], decoders) is None
    for name, doubtful in (("n", '"NaN"'), ("f", '"Infinity"'), ("d", '"infinity"'), ("d", '"0044-03-15 BC"'),
                           ("d", '"10000-01-01"'), ("ts", '"infinity"'), ("ts", '"2020-01-01T00:00:00+00:00"'),
                           ("tz", '"-infinity"'), ("i", "1.5"), ("t", "1")):  # fmt: skip
        with pytest.raises(values.UnsureValueError):
            values.decode_pg(f'{{"{name}": {doubtful}}}', [name], decoders)
    with pytest.raises(KeyError):  # a column the image lacks (added later): the server's NULL
        values.decode_pg('{"i": 1}', ["i", "n"], decoders)
