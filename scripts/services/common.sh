# Shared helpers for the service provisioning scripts. Sourced, never executed.
# Every service runs as a private instance on 127.0.0.1 under $CDC_SERVICES_DIR so that
# the project never touches a system-wide server and tests can start extra instances.
set -euo pipefail

CDC_SERVICES_DIR="${CDC_SERVICES_DIR:-/var/tmp/cdc-services}"
CDC_PG_PORT="${CDC_PG_PORT:-55432}"
CDC_MYSQL_PORT="${CDC_MYSQL_PORT:-53306}"
CDC_KAFKA_PORT="${CDC_KAFKA_PORT:-59092}"
CDC_KAFKA_CONTROLLER_PORT="${CDC_KAFKA_CONTROLLER_PORT:-59093}"
CDC_REGISTRY_PORT="${CDC_REGISTRY_PORT:-58081}"
CDC_REGISTRY_MGMT_PORT="${CDC_REGISTRY_MGMT_PORT:-58082}"
CDC_SERVICES_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$CDC_SERVICES_DIR"

# fail SERVICE MESSAGE: print a located error and exit non-zero.
fail() { echo "services: $1: ERROR: $2" >&2; exit 1; }
info() { echo "services: $1: $2" >&2; }

# port_open PORT: true when something listens on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port SERVICE PORT SECONDS [LOGFILE]: wait for a listener, else fail with the log tail.
wait_port() {
  local svc=$1 port=$2 secs=$3 log=${4:-}
  local i
  for ((i = 0; i < secs * 4; i++)); do
    if port_open "$port"; then return 0; fi
    sleep 0.25
  done
  if [[ -n "$log" && -f "$log" ]]; then tail -n 30 "$log" >&2; fi
  fail "$svc" "did not listen on 127.0.0.1:$port within ${secs}s (log: ${log:-none})"
}

# port_owner_check SERVICE PORT PIDFILE: fail clearly when the port is taken by a process
# that is not ours (so a stale foreign server is never mistaken for our instance).
port_owner_check() {
  local svc=$1 port=$2 pidfile=$3
  if port_open "$port"; then
    if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then return 0; fi
    fail "$svc" "port 127.0.0.1:$port is already taken by another process; stop it or set the port variable (see scripts/services/common.sh)"
  fi
}

# apt_ensure SERVICE PKG...: install Debian packages when missing, with a located error.
apt_ensure() {
  local svc=$1; shift
  local missing=()
  local p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  ((${#missing[@]} == 0)) && return 0
  info "$svc" "installing ${missing[*]} from apt"
  if [[ ! -f "$CDC_SERVICES_DIR/.apt-updated" ]]; then
    apt-get update -qq >"$CDC_SERVICES_DIR/apt-update.log" 2>&1 \
      || fail "$svc" "apt-get update failed (is the Debian mirror reachable?): $(tail -n 3 "$CDC_SERVICES_DIR/apt-update.log")"
    touch "$CDC_SERVICES_DIR/.apt-updated"
  fi
  # policy-rc.d 101 keeps Debian's maintainer scripts from starting system-wide servers.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >"$CDC_SERVICES_DIR/apt-$svc.log" 2>&1 \
    || { rm -f /usr/sbin/policy-rc.d; fail "$svc" "apt-get install ${missing[*]} failed: $(tail -n 3 "$CDC_SERVICES_DIR/apt-$svc.log")"; }
  rm -f /usr/sbin/policy-rc.d
}

# stop_pidfile SERVICE PIDFILE: TERM, wait, then KILL.
stop_pidfile() {
  local svc=$1 pidfile=$2 pid i
  [[ -f "$pidfile" ]] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 120; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  info "$svc" "stopped"
}
