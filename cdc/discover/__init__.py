"""Discovery: inspect a live database and scaffold a connector (``cdc init``), and compare a
config's contracts with the live tables (``cdc schemas diff``)."""
