#!/usr/bin/env bash
# Start, stop, or describe every service the tests need.
# Usage: services.sh up|down|status|env
#   up      start PostgreSQL, MariaDB, Kafka and the schema registry (idempotent)
#   down    stop them all (data is kept under $CDC_SERVICES_DIR)
#   status  one line per service
#   env     shell export lines for the CDC_TEST_* variables the tests read
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
HERE="$CDC_SERVICES_ROOT"

case "${1:-}" in
  up)
    bash "$HERE/postgres.sh" start
    bash "$HERE/mariadb.sh" start
    bash "$HERE/kafka.sh" start
    bash "$HERE/registry.sh" start   # after postgres: the registry stores its schemas there
    ;;
  down)
    bash "$HERE/registry.sh" stop || true
    bash "$HERE/kafka.sh" stop || true
    bash "$HERE/mariadb.sh" stop || true
    bash "$HERE/postgres.sh" stop || true
    ;;
  status)
    rc=0
    for s in postgres mariadb kafka registry; do bash "$HERE/$s.sh" status || rc=1; done
    exit $rc
    ;;
  env)
    cat <<ENV
export CDC_TEST_POSTGRES_DSN=postgresql://cdc:cdc@127.0.0.1:$CDC_PG_PORT/postgres
export CDC_TEST_MYSQL_DSN=mysql://cdc:cdc@127.0.0.1:$CDC_MYSQL_PORT/mysql
export CDC_TEST_KAFKA_BOOTSTRAP=127.0.0.1:$CDC_KAFKA_PORT
export CDC_TEST_SCHEMA_REGISTRY_URL=http://127.0.0.1:$CDC_REGISTRY_PORT/apis/ccompat/v7
export CDC_SERVICES_DIR=$CDC_SERVICES_DIR
ENV
    ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
