-- Undo V1__cdc_outbox.sql: drops the outbox table, its indexes and every unrelayed event in it.
DROP TABLE IF EXISTS cdc_outbox;
