"""PostgreSQL WAL source: logical decoding (pgoutput) with a consistent initial snapshot."""
