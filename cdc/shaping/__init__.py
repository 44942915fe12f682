"""Shaping a stream in its contract: column policies (mask, hash, truncate, null) and row filters.

The runtime applies them to every source's change events before eventification, so what leaves
the process (records, dead letters, log lines of row errors) only ever carries the shaped values.
"""
