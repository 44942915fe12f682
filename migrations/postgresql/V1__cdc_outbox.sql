-- liberator-cdc outbox table (PostgreSQL 12+).
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
-- Idempotent: safe to run again. Plain SQL, one statement per ';' at the end of a line, so
-- Flyway, Liquibase (sql changelog / sqlFile) and `cdc migrations apply` run it unchanged.

CREATE TABLE IF NOT EXISTS cdc_outbox (
    id             uuid                     NOT NULL,
    aggregatetype  varchar(255)             NOT NULL,
    aggregateid    varchar(255)             NOT NULL,
    type           varchar(255)             NOT NULL,
    payload        bytea,
    "timestamp"    timestamp with time zone NOT NULL DEFAULT now(),
    schema_subject varchar(255),
    schema_version integer,
    headers        jsonb,
    seq            bigint                   GENERATED ALWAYS AS IDENTITY,
    CONSTRAINT cdc_outbox_pkey PRIMARY KEY (id),
    CONSTRAINT cdc_outbox_seq_key UNIQUE (seq)
);

-- The relay reads by seq (the unique constraint's index) and per aggregate in seq order.
CREATE INDEX IF NOT EXISTS cdc_outbox_aggregate_seq_idx
    ON cdc_outbox (aggregatetype, aggregateid, seq);
