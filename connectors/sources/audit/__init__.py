"""Audit relay: publishes the row changes that generated audit triggers recorded, then deletes them."""
