"""SQL helpers shared by connectors: engines with sane sessions, leases, dialect facts."""
