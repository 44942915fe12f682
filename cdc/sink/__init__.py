"""The database sink: keyed Avro topics -> tables in PostgreSQL, MySQL/MariaDB or SQLite.

Each batch's rows and the consumed positions commit in ONE target-database transaction
(``cdc_sink_offsets``, guarded by a conditional update), so a crash, a rebalance or a stalled
instance neither loses nor doubles a change. Kafka group offsets are committed afterwards for
lag reporting only.
"""
