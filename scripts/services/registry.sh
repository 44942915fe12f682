#!/usr/bin/env bash
# Private Confluent-compatible schema registry (Apicurio Registry 3.x) for tests and examples.
# Usage: registry.sh start|stop|status
#
# Confluent API:  http://127.0.0.1:$CDC_REGISTRY_PORT/apis/ccompat/v7
# Management:     http://127.0.0.1:$CDC_REGISTRY_MGMT_PORT/health (Quarkus management interface)
# Storage:        PostgreSQL database "apicurio" on 127.0.0.1:$CDC_PG_PORT (start postgres.sh
#                 first), so schema ids survive a registry restart.
# The distribution is pinned in registry/pom.xml and fetched from Maven Central with mvn.
# Environment:    CDC_REGISTRY_DB (database, default apicurio), CDC_REGISTRY_JAVA (a Java 21+
#                 binary), CDC_REGISTRY_START_TIMEOUT (seconds, default 120),
#                 CDC_REGISTRY_APP_DIR (the unpacked distribution, default
#                 $CDC_SERVICES_DIR/registry/app; point an extra instance at an existing one
#                 to share it instead of fetching it again).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SVC=registry
STATE="$CDC_SERVICES_DIR/registry"
APP="${CDC_REGISTRY_APP_DIR:-$STATE/app}"
LOG="$STATE/registry.log"
PIDFILE="$STATE/registry.pid"
POM="$CDC_SERVICES_ROOT/registry/pom.xml"
DB="${CDC_REGISTRY_DB:-apicurio}"
DB_USER=cdc
DB_PASSWORD="${CDC_PG_PASSWORD:-cdc}"
START_TIMEOUT="${CDC_REGISTRY_START_TIMEOUT:-120}"
CCOMPAT="http://127.0.0.1:$CDC_REGISTRY_PORT/apis/ccompat/v7"

# running: our pid is alive and is still the registry (guards against a reused pid).
running() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid
  pid=$(cat "$PIDFILE")
  kill -0 "$pid" 2>/dev/null && grep -qa quarkus-run.jar "/proc/$pid/cmdline" 2>/dev/null
}

# find_java: print a java binary of version 21 or newer (the 3.3.x app is compiled for Java 21).
find_java() {
  local c home ver
  local cands=()
  [[ -n "${CDC_REGISTRY_JAVA:-}" ]] && cands+=("$CDC_REGISTRY_JAVA")
  command -v java >/dev/null 2>&1 && cands+=("$(readlink -f "$(command -v java)")")
  for c in /usr/lib/jvm/*/bin/java; do [[ -x "$c" ]] && cands+=("$c"); done
  for c in "${cands[@]}"; do
    home=$(dirname "$(dirname "$c")")
    if [[ -f "$home/release" ]]; then
      ver=$(sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$home/release")
    else
      ver=$("$c" -version 2>&1 | sed -n '1s/.*version "\([0-9]*\).*/\1/p')
    fi
    if [[ "$ver" =~ ^[0-9]+$ ]] && ((ver >= 21)); then echo "$c"; return 0; fi
  done
  fail $SVC "no Java 21+ runtime found (Apicurio Registry 3.3 needs Java 21; set CDC_REGISTRY_JAVA to a java binary)"
}

# ensure_app: fetch and unpack the pinned distribution unless the unpacked copy matches the pom.
ensure_app() {
  local sha
  sha=$(sha256sum "$POM" | cut -d' ' -f1)
  if [[ -f "$APP/quarkus-run.jar" && "$(cat "$APP/.pom.sha256" 2>/dev/null)" == "$sha" ]]; then return 0; fi
  command -v mvn >/dev/null 2>&1 || fail $SVC "mvn not found (needed to fetch the registry from Maven Central)"
  info $SVC "fetching the registry distribution pinned in $POM from Maven Central"
  local dl="$STATE/download"
  rm -rf "$dl" "$APP.new"
  mkdir -p "$dl" "$APP.new"
  # Fully qualified goal: no plugin-prefix lookup, and the plugin version is the pinned one.
  if ! mvn -B -C -ntp -Dstyle.color=never -f "$POM" \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy -DoutputDirectory="$dl" \
    >"$STATE/mvn.log" 2>&1; then
    tail -n 12 "$STATE/mvn.log" >&2
    fail $SVC "mvn could not fetch the registry distribution (is Maven Central reachable?): $(grep -m1 '^\[ERROR\]' "$STATE/mvn.log" || tail -n 1 "$STATE/mvn.log") (log: $STATE/mvn.log)"
  fi
  tar -xzf "$dl/apicurio-registry-app-all.tar.gz" -C "$APP.new" \
    || fail $SVC "could not unpack $dl/apicurio-registry-app-all.tar.gz"
  [[ -f "$APP.new/quarkus-run.jar" ]] || fail $SVC "the fetched archive has no quarkus-run.jar"
  echo "$sha" >"$APP.new/.pom.sha256"
  rm -rf "$APP" "$dl"
  mv "$APP.new" "$APP"
}

# check_postgres: the registry keeps its schemas in PostgreSQL; fail early and clearly without it.
check_postgres() {
  port_open "$CDC_PG_PORT" \
    || fail $SVC "PostgreSQL is not reachable at 127.0.0.1:$CDC_PG_PORT (the registry stores its schemas there; run scripts/services/postgres.sh start first)"
  command -v psql >/dev/null 2>&1 || return 0
  local out
  if ! out=$(PGPASSWORD="$DB_PASSWORD" PGCONNECT_TIMEOUT=5 psql -h 127.0.0.1 -p "$CDC_PG_PORT" -U "$DB_USER" \
    -d "$DB" -w -qAtc 'SELECT 1' 2>&1); then
    fail $SVC "cannot use PostgreSQL database \"$DB\" at 127.0.0.1:$CDC_PG_PORT as $DB_USER: $(echo "$out" | tail -n 1) (scripts/services/postgres.sh start creates it)"
  fi
}

# ccompat_get PATH: body of a GET on the Confluent API (empty on any error).
ccompat_get() { curl -fsS --max-time 5 "$CCOMPAT$1" 2>/dev/null || true; }

# ensure_backward: the global compatibility rule must be BACKWARD. The apicurio.rules.global
# property makes it the default; an explicit global rule stored in the database (e.g. a test
# that set another level) overrides that default, so put BACKWARD back if needed.
ensure_backward() {
  local cfg
  cfg=$(ccompat_get /config)
  [[ "$cfg" == *'"compatibilityLevel":"BACKWARD"'* ]] && return 0
  curl -fsS --max-time 10 -X PUT -H 'Content-Type: application/vnd.schemaregistry.v1+json' \
    --data '{"compatibility":"BACKWARD"}' "$CCOMPAT/config" >/dev/null \
    || fail $SVC "could not set the global BACKWARD compatibility rule (log: $LOG)"
  info $SVC "global compatibility rule set to BACKWARD (was: ${cfg:-unknown})"
}

start() {
  if running; then info $SVC "already running on $CCOMPAT"; return 0; fi
  # Serialise concurrent starts (e.g. parallel test sessions): the second one waits, then sees ours.
  mkdir -p "$STATE"
  exec 9>"$STATE/.start.lock"
  flock 9
  if running; then info $SVC "already running on $CCOMPAT"; return 0; fi
  command -v curl >/dev/null 2>&1 || apt_ensure $SVC curl
  port_owner_check $SVC "$CDC_REGISTRY_PORT" "$PIDFILE"
  port_owner_check $SVC "$CDC_REGISTRY_MGMT_PORT" "$PIDFILE"
  local java
  java=$(find_java)
  ensure_app
  check_postgres
  mkdir -p "$STATE/tmp"
  rm -f "$PIDFILE"
  local t0=$SECONDS
  # Every setting is a -D system property (highest precedence over the app's application.properties):
  #  - HTTP and management listeners on 127.0.0.1 only, on the project's ports;
  #  - SQL storage on PostgreSQL (schema created on first start by apicurio.sql.init=true);
  #  - a small connection pool (the default opens 20 connections and allows 100);
  #  - BACKWARD as the default global compatibility rule (Apicurio's default is none);
  #  - canonical-form content lookup in the ccompat API (whitespace/order-insensitive).
  (
    cd "$STATE" || exit 1
    # The password goes in the environment (Quarkus maps APICURIO_DATASOURCE_PASSWORD), not argv.
    export APICURIO_DATASOURCE_PASSWORD="$DB_PASSWORD"
    exec setsid "$java" -Xms64m -Xmx512m -XX:+ExitOnOutOfMemoryError \
      -Djava.io.tmpdir="$STATE/tmp" \
      -Dquarkus.http.host=127.0.0.1 \
      -Dquarkus.http.port="$CDC_REGISTRY_PORT" \
      -Dquarkus.management.host=127.0.0.1 \
      -Dquarkus.management.port="$CDC_REGISTRY_MGMT_PORT" \
      -Dapicurio.storage.kind=sql \
      -Dapicurio.storage.sql.kind=postgresql \
      -Dapicurio.datasource.url="jdbc:postgresql://127.0.0.1:$CDC_PG_PORT/$DB" \
      -Dapicurio.datasource.username="$DB_USER" \
      -Dapicurio.datasource.jdbc.initial-size=2 \
      -Dapicurio.datasource.jdbc.min-size=2 \
      -Dapicurio.datasource.jdbc.max-size=20 \
      -Dapicurio.rules.global.compatibility=BACKWARD \
      -Dapicurio.ccompat.use-canonical-hash=true \
      -Dapicurio.import.work-dir="$STATE/tmp" \
      -Dapicurio.storage.snapshot.location="$STATE/tmp" \
      -jar "$APP/quarkus-run.jar" </dev/null >"$LOG" 2>&1 9>&-
  ) &
  echo $! >"$PIDFILE"
  local pid i code
  pid=$(cat "$PIDFILE")
  for ((i = 0; i < START_TIMEOUT * 4; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PIDFILE"
      tail -n 30 "$LOG" >&2
      fail $SVC "exited during startup (log: $LOG)"
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$CCOMPAT/subjects" 2>/dev/null || true)
    [[ "$code" == 200 ]] && break
    sleep 0.25
  done
  if [[ "$code" != 200 ]]; then
    tail -n 30 "$LOG" >&2
    stop_pidfile $SVC "$PIDFILE"
    fail $SVC "no HTTP 200 from $CCOMPAT/subjects within ${START_TIMEOUT}s (log: $LOG)"
  fi
  ensure_backward
  info $SVC "running on $CCOMPAT (database $DB, ready in $((SECONDS - t0))s)"
}

stop() {
  if [[ -f "$PIDFILE" ]] && ! running; then rm -f "$PIDFILE"; return 0; fi
  stop_pidfile $SVC "$PIDFILE"
}

status() {
  if running; then echo "$SVC: running on $CCOMPAT (pid $(cat "$PIDFILE"))"; else echo "$SVC: stopped"; return 1; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
