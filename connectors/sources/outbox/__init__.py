"""Outbox relay: publishes rows an application wrote to its outbox table, then deletes them."""
