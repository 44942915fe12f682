"""PostgreSQL pieces shared by the WAL source and the outbox relay: pgoutput decoding, type loading."""
