#!/usr/bin/env bash
# Private PostgreSQL 15 instance for tests, examples and benchmarks.
# Usage: postgres.sh start|stop|status
# Configured for logical decoding: wal_level=logical, replication connections from
# 127.0.0.1, many slots/senders for parallel tests, and a cap on WAL pinned by slots.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SVC=postgres
PG_BIN=/usr/lib/postgresql/15/bin
STATE="$CDC_SERVICES_DIR/postgres"
DATA="$STATE/data"
RUN="$STATE/run"
LOG="$STATE/postgres.log"
PASSWORD="${CDC_PG_PASSWORD:-cdc}"

as_pg() { runuser -u postgres -- "$@"; }

running() { [[ -f "$DATA/postmaster.pid" ]] && as_pg "$PG_BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

psql_admin() { as_pg "$PG_BIN/../bin/psql" -h "$RUN" -p "$CDC_PG_PORT" -U cdc -d postgres -v ON_ERROR_STOP=1 -qAt "$@"; }

init_cluster() {
  info $SVC "initialising a new cluster in $DATA"
  mkdir -p "$STATE" "$RUN"
  chown postgres:postgres "$STATE" "$RUN"
  local pw="$STATE/.pw"
  printf '%s\n' "$PASSWORD" >"$pw" && chown postgres "$pw" && chmod 600 "$pw"
  as_pg "$PG_BIN/initdb" -D "$DATA" -U cdc --pwfile="$pw" -A scram-sha-256 --auth-local=trust \
    -E UTF8 --locale=C.UTF-8 >"$STATE/initdb.log" 2>&1 || fail $SVC "initdb failed: $(tail -n 3 "$STATE/initdb.log")"
  rm -f "$pw"
  cat >>"$DATA/postgresql.conf" <<CONF
# --- cdc test instance ---
listen_addresses = '127.0.0.1'
port = $CDC_PG_PORT
unix_socket_directories = '$RUN'
wal_level = logical
max_replication_slots = 32
max_wal_senders = 32
max_slot_wal_keep_size = 4GB
max_connections = 200
shared_buffers = 256MB
# A throwaway test instance: durability against power loss is not under test here,
# the connector's own crash safety is (kill -9 of the connector, not of the machine).
fsync = off
full_page_writes = off
log_min_messages = warning
CONF
  cat >"$DATA/pg_hba.conf" <<HBA
local all         all                trust
host  all         all  127.0.0.1/32  scram-sha-256
host  replication all  127.0.0.1/32  scram-sha-256
HBA
}

start() {
  apt_ensure $SVC postgresql-15
  if running; then info $SVC "already running on 127.0.0.1:$CDC_PG_PORT"; return 0; fi
  port_owner_check $SVC "$CDC_PG_PORT" /nonexistent
  [[ -f "$DATA/PG_VERSION" ]] || init_cluster
  mkdir -p "$RUN" && chown postgres:postgres "$RUN"
  as_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null \
    || { tail -n 20 "$LOG" >&2; fail $SVC "pg_ctl start failed (log: $LOG)"; }
  wait_port $SVC "$CDC_PG_PORT" 30 "$LOG"
  # The schema registry keeps its schemas here so that ids survive a registry restart.
  if [[ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'apicurio'")" != 1 ]]; then
    psql_admin -c 'CREATE DATABASE apicurio' >/dev/null
  fi
  info $SVC "running on 127.0.0.1:$CDC_PG_PORT"
}

stop() {
  if running; then as_pg "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null; info $SVC "stopped"; fi
}

status() { if running; then echo "$SVC: running on 127.0.0.1:$CDC_PG_PORT"; else echo "$SVC: stopped"; return 1; fi; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
