"""The MySQL/MariaDB binlog source connector."""
