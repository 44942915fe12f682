"""Avro schemas: loading, conversion of row values, eventification and subjects."""
