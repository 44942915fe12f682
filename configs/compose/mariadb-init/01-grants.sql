-- The image grants the application user rights on its own database only; CDC needs more:
-- reading the binlog (REPLICATION SLAVE, REPLICATION CLIENT), seeing open transactions for
-- the polling bound (PROCESS), and the test suite creates databases. Same as scripts/services.
GRANT ALL PRIVILEGES ON *.* TO 'cdc'@'%' WITH GRANT OPTION;
FLUSH PRIVILEGES;
