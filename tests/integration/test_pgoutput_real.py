"""cdc.pg.pgoutput + cdc.pg.types against a real PostgreSQL: what the server really sends.

Changes are read with ``pg_logical_slot_peek_binary_changes`` (SQL, no replication
connection): the pgoutput plugin then runs in the peeking session, so that session's
TimeZone/DateStyle/IntervalStyle/client_encoding format the values — it is opened with the
same SESSION_OPTIONS as the connection the TypeMap is loaded from.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from cdc.errors import SourceConfigError
from cdc.pg.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    BinaryValue,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Message,
    PgOutputDecoder,
    Relation,
    StreamAbort,
    StreamCommit,
    StreamStart,
    StreamStop,
    Truncate,
    TupleData,
    Type,
    Update,
    decode,
    parse_lsn,
)
from cdc.pg.types import SESSION_OPTIONS, TypeMap, parse_interval
from tests.conftest import unique

pytestmark = pytest.mark.integration

UTC = dt.UTC
BIG = "".join(random.Random(7).choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12_000))

DDL = """
CREATE TYPE mood AS ENUM ('happy', 'so-so', 'sad');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TABLE everything (
    id integer PRIMARY KEY,
    c_int2 int2, c_int4 int4, c_int8 int8,
    c_num numeric(10,2), c_numeric numeric, c_f4 float4, c_f8 float8,
    c_bool bool, c_text text, c_varchar varchar(20), c_bytea bytea,
    c_date date, c_time time, c_ts timestamp, c_tstz timestamptz, c_iv interval,
    c_uuid uuid, c_json json, c_jsonb jsonb, c_tsv tsvector,
    c_ia int[], c_ta text[], c_mood mood, c_pos posint,
    c_big text
);
-- Out of line without compression, so a 12 kB value really is a TOAST pointer on disk.
ALTER TABLE everything ALTER COLUMN c_big SET STORAGE EXTERNAL;
CREATE PUBLICATION pub_everything FOR TABLE everything;
"""

INSERT = """
INSERT INTO everything VALUES (
    %(id)s, %(c_int2)s, %(c_int4)s, %(c_int8)s, %(c_num)s, %(c_numeric)s, %(c_f4)s, %(c_f8)s,
    %(c_bool)s, %(c_text)s, %(c_varchar)s, %(c_bytea)s, %(c_date)s, %(c_time)s, %(c_ts)s,
    %(c_tstz)s, %(c_iv)s::interval, %(c_uuid)s, %(c_json)s::json, %(c_jsonb)s::jsonb,
    %(c_tsv)s::tsvector, %(c_ia)s::int[], %(c_ta)s::text[], %(c_mood)s::mood, %(c_pos)s, %(c_big)s)
"""

ROW1: dict[str, Any] = {
    "id": 1,
    "c_int2": -32768,
    "c_int4": 2147483647,
    "c_int8": -9223372036854775808,
    "c_num": Decimal("12345678.90"),
    "c_numeric": Decimal("-0.000000000000000000000000001234567890123456789"),
    "c_f4": 0.1,
    "c_f8": 0.1 + 0.2,
    "c_bool": True,
    "c_text": 'héllo, "wörld" 🐘\n\ttab \\ back',
    "c_varchar": "short, 'quoted'",
    "c_bytea": b"\x00\x01\xfe\xff\\x",
    "c_date": dt.date(2024, 2, 29),
    "c_time": dt.time(23, 59, 59, 999999),
    "c_ts": dt.datetime(2024, 1, 2, 3, 4, 5, 678901),
    "c_tstz": dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    "c_iv": "1 year 2 mons -3 days 04:05:06.789",
    "c_uuid": uuid.UUID("f47ac10b-58cc-4372-a567-0e02b2c3d479"),
    "c_json": '{"b": 1,   "a": [1, 2.50]}',
    "c_jsonb": '{"b": 1,   "a": [1, 2.50]}',
    "c_tsv": "fat:2 cat:3 a:1",
    "c_ia": [1, None, 3],
    "c_ta": ["a", "b,c", "NULL", None, '"q"', "", "{x}"],
    "c_mood": "so-so",
    "c_pos": 42,
    "c_big": BIG,
}

# What the decoder + TypeMap must produce for ROW1 (interval_as_tuple=True).
EXPECTED1: dict[str, Any] = {
    **ROW1,
    "c_f4": 0.1,  # float4 0.1 prints as "0.1" (shortest exact), which loads as the *double* 0.1
    "c_tstz": dt.datetime(2024, 1, 1, 21, 34, 5, 678901, tzinfo=UTC),
    "c_iv": (14, -3, 14_706_789_000),
    "c_json": '{"b": 1,   "a": [1, 2.50]}',  # json keeps the text exactly as inserted
    "c_jsonb": '{"a": [1, 2.50], "b": 1}',  # jsonb is normalised by the server
    "c_tsv": "'a':1 'cat':3 'fat':2",
}

ROW2_NULLS: dict[str, Any] = {k: (2 if k == "id" else None) for k in ROW1}

ROW3_EDGES: dict[str, Any] = {
    **ROW2_NULLS,
    "id": 3,
    "c_numeric": "NaN",
    "c_f4": "-Infinity",
    "c_f8": "NaN",
    "c_date": "infinity",
    "c_ts": "-infinity",
    "c_iv": "-00:00:00.000001",
    "c_text": "",
    "c_ta": [],
    "c_big": "small",
}


@dataclass
class Txn:
    begin: Begin
    begin_lsn: int
    changes: list[tuple[int, Message]] = field(default_factory=list)
    commit: Commit | None = None
    commit_row_lsn: int = 0


def connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, options=SESSION_OPTIONS, autocommit=True)


@pytest.fixture
def db(pg_database: str) -> Iterator[tuple[psycopg.Connection[Any], str]]:
    """A connection to a fresh database with the test table, and a pgoutput slot on it."""
    conn = connect(pg_database)
    conn.execute(DDL)
    slot = unique("test")
    conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    try:
        yield conn, slot
    finally:
        # A leftover slot would pin WAL and block DROP DATABASE.
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        conn.close()


def peek(conn: psycopg.Connection[Any], slot: str, *options: str) -> list[tuple[int, int, bytes]]:
    """(lsn, xid, data) of every pending change, without consuming them."""
    args = ", ".join(["%s"] * len(options))
    rows = conn.execute(
        f"SELECT lsn::text, xid::text::int8, data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, {args})",
        (slot, *options),
    ).fetchall()
    return [(parse_lsn(lsn), xid, bytes(data)) for lsn, xid, data in rows]


def group(rows: list[tuple[int, int, bytes]]) -> tuple[list[Txn], dict[int, Relation], list[Type]]:
    txns: list[Txn] = []
    relations: dict[int, Relation] = {}
    types: list[Type] = []
    current: Txn | None = None
    for lsn, _xid, data in rows:
        msg = decode(data)
        if isinstance(msg, Begin):
            assert current is None, "Begin inside a transaction"
            current = Txn(msg, lsn)
        elif isinstance(msg, Commit):
            assert current is not None
            current.commit, current.commit_row_lsn = msg, lsn
            txns.append(current)
            current = None
        else:
            assert current is not None, f"{msg} outside a transaction"
            if isinstance(msg, Relation):
                relations[msg.relation_id] = msg
            elif isinstance(msg, Type):
                types.append(msg)
            else:
                current.changes.append((lsn, msg))
    assert current is None, "unterminated transaction"
    return txns, relations, types


def load_row(
    tm: TypeMap, rel: Relation, values: TupleData, *, interval_as_tuple: bool = True
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for col, value in zip(rel.columns, values, strict=True):
        if value is None or value is UNCHANGED_TOAST:
            out[col.name] = value
        else:
            assert isinstance(value, bytes)
            out[col.name] = tm.loader(col.type_oid, interval_as_tuple=interval_as_tuple)(value)
    return out


def test_every_type_toast_rollback_and_lsns(db: tuple[psycopg.Connection[Any], str]) -> None:
    conn, slot = db
    started = dt.datetime.now(UTC)
    with conn.transaction():
        conn.execute(INSERT, ROW1)
        conn.execute(INSERT, ROW2_NULLS)
    with conn.transaction():  # only c_int4 changes: c_big stays a TOAST pointer
        conn.execute("UPDATE everything SET c_int4 = 7 WHERE id = 1")
    with conn.transaction(force_rollback=True):
        rolled_back_xid = conn.execute("SELECT txid_current()").fetchone()[0]  # type: ignore[index]
        conn.execute(INSERT, {**ROW2_NULLS, "id": 99, "c_text": "never"})
        conn.execute("UPDATE everything SET c_text = 'never' WHERE id = 1")
    with conn.transaction():
        conn.execute("DELETE FROM everything WHERE id = 2")
        conn.execute(INSERT, ROW3_EDGES)
        conn.execute("UPDATE everything SET id = 30, c_big = 'changed' WHERE id = 3")

    rows = peek(conn, slot, "proto_version", "1", "publication_names", "pub_everything")
    txns, relations, types = group(rows)

    # ---- the rolled-back transaction left no trace
    assert len(txns) == 3
    assert rolled_back_xid not in {t.begin.xid for t in txns}
    assert all(xid != rolled_back_xid for _, xid, _ in rows)

    # ---- LSNs and times are consistent
    previous_end = 0
    for t in txns:
        assert t.commit is not None
        assert t.begin.final_lsn == t.commit.commit_lsn
        assert t.commit.end_lsn > t.commit.commit_lsn
        assert t.commit_row_lsn == t.commit.end_lsn  # the SQL interface reports end_lsn for commits
        assert t.begin.commit_ts_us == t.commit.commit_ts_us
        assert started - dt.timedelta(seconds=5) <= t.commit.commit_time <= dt.datetime.now(UTC)
        assert t.commit.commit_unix_ms == int(t.commit.commit_time.timestamp() * 1000)
        assert t.begin_lsn <= min(lsn for lsn, _ in t.changes)
        assert max(lsn for lsn, _ in t.changes) < t.commit.commit_lsn
        assert t.commit.commit_lsn > previous_end  # commit order
        previous_end = t.commit.end_lsn

    # ---- relation and type messages
    (rel,) = relations.values()
    table_oid = conn.execute("SELECT 'everything'::regclass::oid::int8").fetchone()[0]  # type: ignore[index]
    assert rel.relation_id == table_oid
    assert (rel.namespace, rel.name, rel.replica_identity) == ("public", "everything", "d")
    assert [c.name for c in rel.columns] == list(ROW1)
    assert [c.name for c in rel.columns if c.is_key] == ["id"]
    mood_oid, posint_oid = conn.execute(
        "SELECT 'mood'::regtype::oid::int8, 'posint'::regtype::oid::int8"
    ).fetchone() or (0, 0)
    by_name = {c.name: c for c in rel.columns}
    assert by_name["c_mood"].type_oid == mood_oid
    assert by_name["c_pos"].type_oid == posint_oid  # the domain, not its base
    assert by_name["c_num"].type_modifier == (10 << 16 | 2) + 4
    # Type messages name the *base* type of a domain, under the domain's OID.
    assert {(t.type_id, t.namespace, t.name) for t in types} == {
        (mood_oid, "public", "mood"),
        (posint_oid, "pg_catalog", "int4"),
    }

    # ---- values, through a TypeMap built from the Relation's type OIDs
    tm = TypeMap.load(conn, {c.type_oid for c in rel.columns})
    assert tm.enum_labels(mood_oid) == ("happy", "so-so", "sad")
    assert tm.enum_labels(posint_oid) is None
    assert tm.type_name(posint_oid) == "posint"
    assert tm.info(posint_oid).base_oid == 23

    t1, t2, t3 = txns
    assert [type(m) for _, m in t1.changes] == [Insert, Insert]
    ins1, ins2 = (m for _, m in t1.changes)
    assert isinstance(ins1, Insert)
    assert isinstance(ins2, Insert)
    row1 = load_row(tm, rel, ins1.new)
    for name, expected in EXPECTED1.items():
        assert row1[name] == expected, name
        assert type(row1[name]) is type(expected), name
    assert row1["c_tstz"].tzinfo == UTC
    assert load_row(tm, rel, ins1.new, interval_as_tuple=False)["c_iv"] == dt.timedelta(
        days=365 + 2 * 30 - 3, seconds=4 * 3600 + 5 * 60 + 6, microseconds=789000
    )  # the lossy default: psycopg folds a year into 365 days and a month into 30
    assert load_row(tm, rel, ins2.new) == ROW2_NULLS

    # The update: no old tuple (key unchanged), c_big not sent (unchanged TOAST), the rest sent.
    ((_, upd),) = t2.changes
    assert isinstance(upd, Update)
    assert upd.old is None
    assert upd.old_kind is None
    new = load_row(tm, rel, upd.new)
    assert new["c_big"] is UNCHANGED_TOAST
    assert new == {**EXPECTED1, "c_int4": 7, "c_big": UNCHANGED_TOAST}

    # Delete carries the key only; the key update carries the old key ('K').
    (_, dele), (_, ins3), (_, keyupd) = t3.changes
    assert isinstance(dele, Delete)
    assert dele.old_kind == "K"
    assert load_row(tm, rel, dele.old) == {**dict.fromkeys(ROW1), "id": 2}
    assert isinstance(ins3, Insert)
    assert isinstance(keyupd, Update)
    assert keyupd.old_kind == "K"
    assert keyupd.old is not None
    assert load_row(tm, rel, keyupd.old) == {**dict.fromkeys(ROW1), "id": 3}
    assert keyupd.new[0] == b"30"

    # Edge values: NaN/Infinity come through; dates Python cannot hold are a clear ValueError.
    cols = {c.name: (c, v) for c, v in zip(rel.columns, ins3.new, strict=True)}

    def load(name: str) -> Any:
        col, value = cols[name]
        assert isinstance(value, bytes)
        return tm.loader(col.type_oid, interval_as_tuple=True)(value)

    assert load("c_numeric").is_nan()
    assert load("c_f4") == float("-inf")
    assert load("c_f8") != load("c_f8")  # NaN
    assert load("c_iv") == (0, 0, -1)
    assert load("c_text") == ""
    assert load("c_ta") == []
    assert cols["c_date"][1] == b"infinity"
    # Python cannot hold them: PostgreSQL's text arrives, and the converter makes it a row error.
    assert load("c_date") == "infinity"
    assert load("c_ts") == "-infinity"


def test_streaming_large_transactions(db: tuple[psycopg.Connection[Any], str]) -> None:
    conn, slot = db
    n = 4000
    with conn.transaction():
        big_xid = conn.execute("SELECT txid_current()").fetchone()[0]  # type: ignore[index]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO everything (id, c_text, c_mood) VALUES (%s, %s, 'sad')",
                [(i, f"row {i} " + "x" * 80) for i in range(1, n + 1)],
            )
    with conn.transaction():
        conn.execute("INSERT INTO everything (id, c_text) VALUES (-1, 'small')")
    with conn.transaction():  # a large subtransaction rolled back to its savepoint
        sub_xid = conn.execute("SELECT txid_current()").fetchone()[0]  # type: ignore[index]
        conn.execute("INSERT INTO everything (id) VALUES (-2)")
        with conn.transaction(force_rollback=True):  # a savepoint, rolled back to
            conn.execute(
                "INSERT INTO everything (id, c_text) SELECT g, 'gone' FROM generate_series(100001, 104000) g"
            )
    with conn.transaction(force_rollback=True):  # a large transaction rolled back
        aborted_xid = conn.execute("SELECT txid_current()").fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO everything (id, c_text) SELECT g, 'gone' FROM generate_series(200001, 204000) g"
        )
    # An abort is not flushed to disk at once, and decoding stops at the flushed LSN: without a
    # later commit (which flushes everything before it) the abort may not be visible yet.
    conn.execute("INSERT INTO everything (id) VALUES (-3)")

    conn.execute("SET logical_decoding_work_mem = '64kB'")
    rows = peek(conn, slot, "proto_version", "2", "publication_names", "pub_everything", "streaming", "on")
    decoder = PgOutputDecoder()
    msgs = [decoder.decode(data) for _, _, data in rows]
    assert not decoder.in_stream

    starts = [m for m in msgs if isinstance(m, StreamStart)]
    assert {s.xid for s in starts} >= {big_xid, sub_xid, aborted_xid}
    for xid in (big_xid, aborted_xid):
        firsts = [s.first_segment for s in starts if s.xid == xid]
        assert firsts[0] is True
        assert not any(firsts[1:])
    assert sum(isinstance(m, StreamStop) for m in msgs) == len(starts)

    # Every change inside a stream block carries an xid: the block's own, or - for a change made
    # in a subtransaction - the subtransaction's, so that a StreamAbort(xid, subxid) can discard it.
    in_block: int | None = None
    streamed: dict[int, list[Insert]] = {}
    relation: Relation | None = None
    for m in msgs:
        if isinstance(m, StreamStart):
            in_block = m.xid
        elif isinstance(m, StreamStop):
            in_block = None
        elif isinstance(m, Relation):
            relation = m
            assert m.xid == in_block
        elif isinstance(m, Insert | Update | Delete | Type):
            assert (m.xid is None) == (in_block is None)
            if isinstance(m, Insert) and in_block is not None:
                streamed.setdefault(in_block, []).append(m)
    assert relation is not None
    assert [int(m.new[0]) for m in streamed[big_xid]] == list(range(1, n + 1))  # type: ignore[arg-type]
    assert {m.xid for m in streamed[big_xid]} == {big_xid}
    assert {m.xid for m in streamed[aborted_xid]} == {aborted_xid}

    commits = [m for m in msgs if isinstance(m, StreamCommit)]
    aborts = [m for m in msgs if isinstance(m, StreamAbort)]
    big_commit = next(c for c in commits if c.xid == big_xid)
    assert big_commit.end_lsn > big_commit.commit_lsn
    assert StreamAbort(aborted_xid, aborted_xid) in aborts
    assert any(c.xid == sub_xid for c in commits)
    # The savepoint's rows were streamed under their subtransaction's xid, then aborted.
    (sub_abort,) = (a for a in aborts if a.xid == sub_xid)
    assert sub_abort.subxid != sub_xid
    by_xid: dict[int | None, list[bytes | None]] = {}
    for m in streamed[sub_xid]:
        by_xid.setdefault(m.xid, []).append(m.new[9])  # type: ignore[arg-type]
    assert set(by_xid[sub_abort.subxid]) == {b"gone"}
    # Only what had piled up past the memory limit was streamed; the tail still in memory at the
    # abort was dropped without ever being sent.
    assert 0 < len(by_xid[sub_abort.subxid]) <= 4000

    # The small transaction is not streamed: plain Begin ... Commit with xid-less changes.
    i = next(i for i, m in enumerate(msgs) if isinstance(m, Insert) and m.new[0] == b"-1")
    assert msgs[i].xid is None  # type: ignore[union-attr]
    assert isinstance(msgs[i - 1], Begin | Relation | Type)

    # Values of streamed rows load like any other.
    tm = TypeMap.load(conn, {c.type_oid for c in relation.columns})
    first_insert = next(m for m in msgs if isinstance(m, Insert) and m.xid == big_xid)
    row = load_row(tm, relation, first_insert.new)
    assert (row["id"], row["c_text"], row["c_mood"]) == (1, "row 1 " + "x" * 80, "sad")


def test_messages_truncate_and_binary(db: tuple[psycopg.Connection[Any], str]) -> None:
    conn, slot = db
    with conn.transaction():
        conn.execute("INSERT INTO everything (id, c_int8, c_text) VALUES (5, 1234567890123, 'b')")
        conn.execute("SELECT pg_logical_emit_message(true, 'outbox', '\\x00ff'::bytea)")
    conn.execute("SELECT pg_logical_emit_message(false, 'beacon', 'now')")
    conn.execute("TRUNCATE everything RESTART IDENTITY")

    rows = peek(
        conn,
        slot,
        "proto_version",
        "1",
        "publication_names",
        "pub_everything",
        "messages",
        "true",
        "binary",
        "true",
    )
    msgs = [decode(data) for _, _, data in rows]
    ins = next(m for m in msgs if isinstance(m, Insert))
    # Binary mode: send-function output; int8 as 8 big-endian bytes, text as its bytes.
    assert ins.new[0] == BinaryValue((5).to_bytes(4, "big"))
    assert ins.new[3] == BinaryValue((1234567890123).to_bytes(8, "big"))
    assert ins.new[9] == BinaryValue(b"b")

    logical = [m for m in msgs if isinstance(m, LogicalMessage)]
    assert [(m.prefix, m.content, m.transactional) for m in logical] == [
        ("outbox", b"\x00\xff", True),
        ("beacon", b"now", False),
    ]
    table_oid = conn.execute("SELECT 'everything'::regclass::oid::int8").fetchone()[0]  # type: ignore[index]
    (trunc,) = (m for m in msgs if isinstance(m, Truncate))
    assert trunc.relation_ids == (table_oid,)
    assert trunc.restart_identity
    assert not trunc.cascade


def test_intervals_match_the_server_exactly(pg_database: str) -> None:
    """parse_interval against the server's own field extraction, over many random intervals."""
    rnd = random.Random(2024)
    literals = [
        "0",
        "-1 microsecond",
        "1 mon -1 day",
        "-178000000 years",
        "2147483647 days",
        "-2147483648 days",
    ]
    for _ in range(300):
        literals.append(
            f"{rnd.randint(-5000, 5000)} years {rnd.randint(-30, 30)} mons {rnd.randint(-1000, 1000)} days "
            f"{rnd.randint(-(10**7), 10**7)} seconds {rnd.randint(-999999, 999999)} microseconds"
        )
    with connect(pg_database) as conn:
        rows = conn.execute(
            """SELECT v::text,
                      (extract(year FROM v) * 12 + extract(month FROM v))::int8,
                      extract(day FROM v)::int8,
                      (extract(hour FROM v) * 3600000000 + extract(minute FROM v) * 60000000
                       + extract(microseconds FROM v))::int8
               FROM unnest(%s::interval[]) AS v""",
            (literals,),
        ).fetchall()
    assert len(rows) == len(literals)
    for text, months, days, micros in rows:
        assert parse_interval(text) == (months, days, micros), text


def test_unsupported_types_fail_at_start_up(pg_database: str) -> None:
    with connect(pg_database) as conn:
        conn.execute("CREATE TYPE pair AS (a int, b int); CREATE DOMAIN pairs AS pair[]")
        oids = [
            conn.execute("SELECT %s::regtype::oid::int8", (name,)).fetchone()[0]  # type: ignore[index]
            for name in ("pair", "pairs", "int4range", "point", "int4")
        ]
        with pytest.raises(SourceConfigError) as exc:
            TypeMap.load(conn, oids)
        message = str(exc.value)
        assert "pair (composite" in message
        assert "domain public.pairs over pair[] (array of pair (composite" in message
        assert "point (base type without a loader" in message
        assert "integer" not in message and "int4range" not in message  # ranges load as text
    with (
        psycopg.connect(pg_database, options="-c TimeZone=Europe/Berlin -c DateStyle=German") as other,
        pytest.raises(SourceConfigError, match=r"TimeZone is 'Europe/Berlin'.*DateStyle is 'German"),
    ):
        TypeMap.load(other, [23])
