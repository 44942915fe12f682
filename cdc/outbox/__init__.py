"""The transactional outbox: the application writes events in its own transaction.

Create the table with ``cdc migrations apply --dsn URL`` (or Flyway, Liquibase, Alembic via
:mod:`cdc.outbox.alembic`), then write events with :class:`OutboxWriter` in the same transaction
as the business change; the outbox relay publishes them to Kafka in ``seq`` order.

Importing this package loads no database driver, Kafka client or SQLAlchemy.
"""

from cdc.outbox.writer import OutboxWriter

__all__ = ["OutboxWriter"]
