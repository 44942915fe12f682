"""What every MySQL/MariaDB source shares: column descriptions and canonical values.

The value contract (the Python value each column type hands the runtime, whatever the capture
method: polling, binlog, audit relay) is documented in :mod:`cdc.mysql.types`.
"""
