"""Splitting migration scripts into statements: ';' at a line end, outside quotes and comments."""

from __future__ import annotations

import pytest

from cdc.migrations import DIALECTS, discover, split_statements


def test_statements_end_at_a_semicolon_at_the_end_of_a_line() -> None:
    sql = "CREATE TABLE a (id int);\nCREATE TABLE b (id int)  ;  \n\nINSERT INTO a\nVALUES (1);\n"
    assert split_statements(sql, "postgresql") == [
        "CREATE TABLE a (id int)",
        "CREATE TABLE b (id int)",
        "INSERT INTO a\nVALUES (1)",
    ]


def test_the_last_statement_needs_no_semicolon_and_empty_ones_vanish() -> None:
    assert split_statements(";\nSELECT 1;\n;\nSELECT 2\n", "sqlite") == ["SELECT 1", "SELECT 2"]
    assert split_statements("", "mysql") == []


def test_crlf_line_endings() -> None:
    assert split_statements("SELECT 1;\r\nSELECT 2;\r\n", "mysql") == ["SELECT 1", "SELECT 2"]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_semicolons_inside_strings_do_not_split(dialect: str) -> None:
    sql = "INSERT INTO t VALUES ('a;b', 'it''s;\nstill the string;', 'end');\nSELECT 2;\n"
    assert split_statements(sql, dialect) == [
        "INSERT INTO t VALUES ('a;b', 'it''s;\nstill the string;', 'end')",
        "SELECT 2",
    ]


@pytest.mark.parametrize(
    ("dialect", "quoted"),
    [("postgresql", '"we;ird"'), ("mysql", "`we;ird`"), ("sqlite", "[we;ird]"), ("sqlite", '"we"";ird"')],
)
def test_semicolons_inside_quoted_identifiers_do_not_split(dialect: str, quoted: str) -> None:
    assert split_statements(f"CREATE TABLE {quoted} (id int);\nSELECT 1;", dialect) == [
        f"CREATE TABLE {quoted} (id int)",
        "SELECT 1",
    ]


def test_mysql_backslash_escapes_in_strings() -> None:
    sql = "INSERT INTO t VALUES ('it\\';', \"x\\\";\");\nSELECT 1;"
    assert split_statements(sql, "mysql") == ["INSERT INTO t VALUES ('it\\';', \"x\\\";\")", "SELECT 1"]


def test_postgresql_escape_strings_but_standard_strings_keep_backslashes() -> None:
    escaped = "SELECT E'it\\'s;';\nSELECT 2;"
    assert split_statements(escaped, "postgresql") == ["SELECT E'it\\'s;'", "SELECT 2"]
    standard = "SELECT 'C:\\';\nSELECT 2;"  # standard_conforming_strings: the backslash is a character
    assert split_statements(standard, "postgresql") == ["SELECT 'C:\\'", "SELECT 2"]


def test_postgresql_dollar_quotes() -> None:
    sql = """CREATE FUNCTION f() RETURNS trigger AS $$
BEGIN
  NEW.note := 'x;';
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE FUNCTION g() RETURNS text AS $body$ SELECT $$;$$ || 'a;' $body$ LANGUAGE sql;
PREPARE p AS SELECT $1;
"""
    statements = split_statements(sql, "postgresql")
    assert len(statements) == 3
    assert statements[0].startswith("CREATE FUNCTION f()") and statements[0].endswith("$$ LANGUAGE plpgsql")
    assert (
        statements[1] == "CREATE FUNCTION g() RETURNS text AS $body$ SELECT $$;$$ || 'a;' $body$ LANGUAGE sql"
    )
    assert statements[2] == "PREPARE p AS SELECT $1"


def test_dollar_signs_are_identifier_characters_in_mysql() -> None:
    assert split_statements("CREATE TABLE a$b$ (id int);\nSELECT 1;", "mysql") == [
        "CREATE TABLE a$b$ (id int)",
        "SELECT 1",
    ]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_comments_hide_semicolons_and_comment_only_chunks_vanish(dialect: str) -> None:
    sql = """-- header; with a semicolon;
/* block;
   comment; */
CREATE TABLE t ( -- trailing;
  id int /* ; */
); -- after the end;
-- only a comment;
"""
    assert split_statements(sql, dialect) == ["CREATE TABLE t ( -- trailing;\n  id int /* ; */\n)"]


def test_postgresql_block_comments_nest() -> None:
    assert split_statements("/* a /* b; */ c; */ SELECT 1;\nSELECT 2;", "postgresql") == [
        "SELECT 1",
        "SELECT 2",
    ]


def test_mysql_hash_comments_and_dash_dash_needs_a_blank() -> None:
    assert split_statements("# note;\nSELECT 1 # x;\n;\nSELECT 2 --1;\n", "mysql") == [
        "SELECT 1 # x;",
        "SELECT 2 --1",
    ]


def test_sqlite_trigger_body_stays_one_statement() -> None:
    sql = """CREATE TRIGGER IF NOT EXISTS audit AFTER UPDATE ON items
BEGIN
  INSERT INTO audit VALUES (CASE WHEN NEW.price > 0 THEN 'up;' ELSE 'down' END);
  UPDATE totals SET n = n + 1;
END;
SELECT 1;
"""
    statements = split_statements(sql, "sqlite")
    assert len(statements) == 2
    assert statements[0].endswith("UPDATE totals SET n = n + 1;\nEND")


def test_mysql_routine_with_nested_blocks_stays_one_statement() -> None:
    sql = """CREATE DEFINER=`app`@`%` PROCEDURE p(x INT)
BEGIN
  IF x > 0 THEN
    SELECT 'pos;';
  END IF;
  CASE x WHEN 1 THEN SELECT 1;
  ELSE BEGIN SELECT 2; END;
  END CASE;
  lbl: LOOP
    LEAVE lbl;
  END LOOP lbl;
END;
CREATE TRIGGER t BEFORE INSERT ON items FOR EACH ROW SET NEW.n = 1;
SELECT 1;
"""
    statements = split_statements(sql, "mysql")
    assert len(statements) == 3, statements
    assert statements[0].endswith("END LOOP lbl;\nEND")
    assert statements[1] == "CREATE TRIGGER t BEFORE INSERT ON items FOR EACH ROW SET NEW.n = 1"


def test_semicolons_inside_parentheses_do_not_split() -> None:
    sql = "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2));\nSELECT 1;"
    assert len(split_statements(sql, "postgresql")) == 2


@pytest.mark.parametrize(
    ("dialect", "sql", "message"),
    [
        ("postgresql", "SELECT 1; SELECT 2;\n", "line 1: a statement's ';' must end its line"),
        ("mysql", "SELECT 1;\nSELECT 'open;\n", "line 2: unterminated ' quote"),
        ("sqlite", 'SELECT "open\n', 'line 1: unterminated " quote'),
        ("postgresql", "SELECT 1;\n/* open\n", "line 2: unterminated /* comment"),
        ("postgresql", "SELECT $x$ open;\n", "line 1: unterminated dollar quote $x$"),
        ("mysql", "DELIMITER //\nSELECT 1//\n", "line 1: DELIMITER is mysql client syntax"),
        ("postgresql", "\\i other.sql\n", "line 1: psql meta-commands"),
    ],
)
def test_problems_are_reported_with_their_line(dialect: str, sql: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("$", r"\$").replace("*", r"\*")):
        split_statements(sql, dialect)


def test_unknown_dialect() -> None:
    with pytest.raises(ValueError, match="unknown dialect 'oracle'"):
        split_statements("SELECT 1", "oracle")


@pytest.mark.parametrize(("dialect", "count"), [("postgresql", 2), ("mysql", 1), ("sqlite", 2)])
def test_packaged_outbox_migrations_split_cleanly(dialect: str, count: int) -> None:
    (v1,) = [m for m in discover(dialect) if m.version == "1"]
    statements = v1.statements()
    assert len(statements) == count
    assert statements[0].startswith("CREATE TABLE IF NOT EXISTS cdc_outbox (")
    assert all(s.startswith("CREATE INDEX IF NOT EXISTS") for s in statements[1:])
    assert v1.undo_statements() == ["DROP TABLE IF EXISTS cdc_outbox"]
    # Plain SQL for Flyway and Liquibase: every statement's ';' ends its line.
    assert all(
        line.rstrip().endswith(";") for line in v1.sql().splitlines() if ";" in line and "--" not in line
    )
