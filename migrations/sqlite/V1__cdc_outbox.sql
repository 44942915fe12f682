-- liberator-cdc outbox table (SQLite 3.8.3+).
--
-- The application inserts one row per event in the same transaction as its business change;
-- the outbox relay publishes the rows in seq order and deletes them. Columns follow Debezium's
-- outbox event router (id, aggregatetype, aggregateid, type, payload, timestamp) plus:
--   seq             assigned by the database at insert: the relay's order and resume position
--   schema_subject  registry subject of the payload's Avro schema (NULL: the relay's default)
--   schema_version  registry version of that subject (NULL: the version the relay resolves)
--   headers         JSON object of extra Kafka headers (string values), as text
-- payload is the plain Avro body (no Confluent wire header): the relay adds the schema id.
-- A NULL payload is a tombstone for the aggregate's key.
--
-- Differs from PostgreSQL and MySQL: AUTOINCREMENT is only allowed on the INTEGER PRIMARY KEY
-- (the rowid), so here seq is the primary key and id is NOT NULL UNIQUE. AUTOINCREMENT (not a
-- plain rowid alias) guarantees seq never reuses a value after the relay deleted the newest
-- rows. The rowid is the (seq) index. `timestamp` is ISO 8601 UTC text: OutboxWriter stores
-- microseconds (2024-05-01T12:00:00.123456Z), the column default milliseconds (...00.123Z).
--
-- Idempotent: safe to run again. Plain SQL, one statement per ';' at the end of a line.

CREATE TABLE IF NOT EXISTS cdc_outbox (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL UNIQUE,
    aggregatetype  VARCHAR(255) NOT NULL,
    aggregateid    VARCHAR(255) NOT NULL,
    type           VARCHAR(255) NOT NULL,
    payload        BLOB,
    "timestamp"    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    schema_subject VARCHAR(255),
    schema_version INTEGER,
    headers        TEXT
);

-- The relay reads per aggregate in seq order.
CREATE INDEX IF NOT EXISTS cdc_outbox_aggregate_seq_idx
    ON cdc_outbox (aggregatetype, aggregateid, seq);
