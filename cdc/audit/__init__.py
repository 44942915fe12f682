"""Trigger audit capture: generated audit tables and triggers (``cdc migrations audit``) that record
every row change of chosen tables as JSON row images, for databases whose log is out of reach.

The relay source ``audit`` (connectors/sources/audit) reads them back into change events.
"""
