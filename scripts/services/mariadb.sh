#!/usr/bin/env bash
# Private MariaDB 10.11 instance for tests, examples and benchmarks.
# Usage: mariadb.sh start|stop|status
# Binlog settings are the ones row-based CDC needs: ROW format, FULL row image, FULL row
# metadata (column names in TABLE_MAP events), GTIDs, and a server_id.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SVC=mariadb
STATE="$CDC_SERVICES_DIR/mariadb"
DATA="$STATE/data"
SOCK="$STATE/mysqld.sock"
PIDFILE="$STATE/mysqld.pid"
LOG="$STATE/mysqld.log"
CNF="$STATE/my.cnf"
PASSWORD="${CDC_MYSQL_PASSWORD:-cdc}"

running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

write_cnf() {
  cat >"$CNF" <<CNF
[mysqld]
user = mysql
datadir = $DATA
socket = $SOCK
pid-file = $PIDFILE
log-error = $LOG
bind-address = 127.0.0.1
port = $CDC_MYSQL_PORT
server_id = 1
log_bin = $DATA/binlog
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
gtid_domain_id = 0
gtid_strict_mode = ON
log_slave_updates = ON
expire_logs_days = 7
character_set_server = utf8mb4
collation_server = utf8mb4_unicode_ci
default_time_zone = '+00:00'
innodb_buffer_pool_size = 256M
innodb_flush_log_at_trx_commit = 2
max_connections = 300
skip_name_resolve = ON
CNF
}

init_datadir() {
  info $SVC "initialising a new data directory in $DATA"
  mkdir -p "$DATA"
  chown -R mysql:mysql "$STATE"
  mariadb-install-db --defaults-file="$CNF" --auth-root-authentication-method=socket \
    --skip-test-db >"$STATE/install.log" 2>&1 || fail $SVC "mariadb-install-db failed: $(tail -n 3 "$STATE/install.log")"
}

start() {
  apt_ensure $SVC mariadb-server mariadb-client
  if running; then info $SVC "already running on 127.0.0.1:$CDC_MYSQL_PORT"; return 0; fi
  port_owner_check $SVC "$CDC_MYSQL_PORT" "$PIDFILE"
  mkdir -p "$STATE"
  write_cnf
  local fresh=0
  [[ -d "$DATA/mysql" ]] || { init_datadir; fresh=1; }
  chown -R mysql:mysql "$STATE"
  setsid mariadbd --defaults-file="$CNF" >/dev/null 2>&1 </dev/null &
  wait_port $SVC "$CDC_MYSQL_PORT" 60 "$LOG"
  if ((fresh)); then
    mariadb --socket="$SOCK" -uroot <<SQL || fail $SVC "could not create the cdc user"
CREATE USER IF NOT EXISTS 'cdc'@'127.0.0.1' IDENTIFIED BY '$PASSWORD';
CREATE USER IF NOT EXISTS 'cdc'@'localhost' IDENTIFIED BY '$PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO 'cdc'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'cdc'@'localhost' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
  fi
  info $SVC "running on 127.0.0.1:$CDC_MYSQL_PORT"
}

stop() { running && stop_pidfile $SVC "$PIDFILE" || true; }

status() { if running; then echo "$SVC: running on 127.0.0.1:$CDC_MYSQL_PORT"; else echo "$SVC: stopped"; return 1; fi; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
