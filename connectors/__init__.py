"""Built-in connectors. Each depends on the public `cdc` plugin API only, never on another connector."""
