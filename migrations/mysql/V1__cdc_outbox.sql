-- liberator-cdc outbox table (MySQL 8.0+, MariaDB 10.3+; tested on MariaDB 10.11).
--
-- The application inserts one row per event in the same transaction as its business change;
-- the outbox relay publishes the rows in seq order and deletes them. Columns follow Debezium's
-- outbox event router (id, aggregatetype, aggregateid, type, payload, timestamp) plus:
--   seq             assigned by the database at insert: the relay's order and resume position
--   schema_subject  registry subject of the payload's Avro schema (NULL: the relay's default)
--   schema_version  registry version of that subject (NULL: the version the relay resolves)
--   headers         JSON object of extra Kafka headers (string values)
-- payload is the plain Avro body (no Confluent wire header): the relay adds the schema id.
-- A NULL payload is a tombstone for the aggregate's key.
--
-- id is the UUID's canonical 36-character text in ASCII: readable in any client, identical to
-- what PostgreSQL and SQLite store and to the Kafka header the relay sends, and comparable
-- without UUID_TO_BIN() (MySQL only) or INET6/UUID types (MariaDB only). BINARY(16) would
-- save 20 bytes per row, which does not matter for a table the relay keeps nearly empty.
-- `timestamp` is UTC wall clock; it has no default because CURRENT_TIMESTAMP follows the
-- session's time zone: write UTC_TIMESTAMP(6) when inserting by hand.
-- InnoDB requires the AUTO_INCREMENT column to be the first column of an index: seq has a
-- UNIQUE KEY, which is also the relay's (seq) index. All indexes are declared inside CREATE
-- TABLE because MySQL has no CREATE INDEX IF NOT EXISTS.
--
-- Idempotent: safe to run again. Plain SQL, one statement per ';' at the end of a line, no
-- DELIMITER, so Flyway, Liquibase and `cdc migrations apply` run it unchanged.

CREATE TABLE IF NOT EXISTS cdc_outbox (
    id             CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    aggregatetype  VARCHAR(255) NOT NULL,
    aggregateid    VARCHAR(255) NOT NULL,
    type           VARCHAR(255) NOT NULL,
    payload        LONGBLOB NULL,
    `timestamp`    DATETIME(6)  NOT NULL,
    schema_subject VARCHAR(255) NULL,
    schema_version INT          NULL,
    headers        JSON         NULL,
    seq            BIGINT       NOT NULL AUTO_INCREMENT,
    PRIMARY KEY (id),
    UNIQUE KEY cdc_outbox_seq_key (seq),
    KEY cdc_outbox_aggregate_seq_idx (aggregatetype, aggregateid, seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
