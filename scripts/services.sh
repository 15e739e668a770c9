#!/usr/bin/env bash
# Local backing servers for development and tests, without Docker:
#   - Apache Kafka 4.4.0 (KRaft: one node, or KAFKA_BROKERS=3 nodes each broker + controller),
#     jars fetched with Maven (services/kafka/pom.xml);
#   - FerretDB v1.24.2 (MongoDB wire protocol on SQLite), built with Go (services/ferretdb/go.mod).
# This script fetches, builds, starts and stops processes. Whether a server answers, how
# long to wait for it and the status report are Python (scripts/devservices, run from
# .venv, which `make services` creates first).
#
# Everything generated lives in the git-ignored $SERVICES_DIR (default .services/):
#   kafka/libs  Kafka jars       bin/ferretdb   FerretDB binary   logs  server logs
#   kafka/data  Kafka log dir    ferretdb/data  SQLite files      run   pid files
#   kafka-<id>/ one node of a multi-node cluster (its data dir and server.properties)
#
# Usage: scripts/services.sh up|down|status [TARGET...]
#   up      fetch/build what is missing, start what is not running, wait until both
#           answer, then print KAFKA_BOOTSTRAP_SERVERS and MONGODB_URL. Idempotent. If
#           KAFKA_BOOTSTRAP_SERVERS / MONGODB_URL are set and a server answers there,
#           that one is used and nothing is started for it.
#   down    stop the servers this script started (TERM, then KILL after a deadline): every
#           node of a cluster, whatever KAFKA_BROKERS says now.
#   status  say whether each server (each node of a cluster) answers; exit 0 only if all do.
#   TARGETs (up and down; default all): kafka, ferretdb, or one node of a cluster, kafka-<id>.
#
# A cluster (KAFKA_BROKERS=3): nodes 1..N, each broker + controller, node <id> on ports
# KAFKA_PORT / KAFKA_CONTROLLER_PORT / KAFKA_INTERNAL_PORT + (id-1) * KAFKA_PORT_STEP
# (9092/9093/9095, 9192/9193/9195, 9292/9293/9295), no SASL_SSL listener. Its topics,
# the internal ones included, get replication factor min(N, 3) and min.insync.replicas 2
# (services/kafka/server-cluster.properties.template). The count is recorded while the
# cluster runs, so `status`, `down` and `up` without KAFKA_BROKERS act on the same nodes.
#
# Environment (all optional):
#   KAFKA_PORT=9092  KAFKA_CONTROLLER_PORT=9093  KAFKA_SASL_PORT=9094  MONGO_PORT=27017  SERVICES_DIR=.services
#   KAFKA_BROKERS=1  KAFKA_INTERNAL_PORT=9095  KAFKA_PORT_STEP=100
#   KAFKA_ADVERTISED_PORTS=p1,p2,..  (cluster: the client port each node advertises, e.g. a proxy's)
#   KAFKA_LIBS_DIR=$SERVICES_DIR/kafka/libs  FERRETDB_BIN=$SERVICES_DIR/bin/ferretdb  (share a build)
#   KAFKA_HEAP_OPTS="-Xms512m -Xmx512m" (a cluster node: "-Xms256m -Xmx384m")  KAFKA_JVM_PERFORMANCE_OPTS=...  KAFKA_OPTS=...
#   KAFKA_START_TIMEOUT=180  FERRETDB_START_TIMEOUT=60  STOP_TIMEOUT=30  (seconds)
#   JAVA_HOME (Java 17+ needed), FERRETDB_LOG_LEVEL=warn, SERVICES_PYTHON=.venv/bin/python
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SVC="$(mkdir -p "${SERVICES_DIR:-$ROOT/.services}" && cd "${SERVICES_DIR:-$ROOT/.services}" && pwd)"
RUN_DIR="$SVC/run"
LOG_DIR="$SVC/logs"
BIN_DIR="$SVC/bin"
KAFKA_DIR="$SVC/kafka"
KAFKA_LIBS="${KAFKA_LIBS_DIR:-$KAFKA_DIR/libs}"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_PROPS="$KAFKA_DIR/server.properties"
KAFKA_TLS="$KAFKA_DIR/tls"
FERRETDB_BIN="${FERRETDB_BIN:-$BIN_DIR/ferretdb}"
FERRETDB_DATA="$SVC/ferretdb/data"
PYTHON="${SERVICES_PYTHON:-$ROOT/.venv/bin/python}"

KAFKA_SRC="$ROOT/services/kafka"
FERRETDB_SRC="$ROOT/services/ferretdb"
FERRETDB_MODULE="github.com/FerretDB/FerretDB"

KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_SASL_PORT="${KAFKA_SASL_PORT:-9094}"
KAFKA_SASL_USER="worker"
MONGO_PORT="${MONGO_PORT:-27017}"
# KAFKA_BROKERS: as asked, else as recorded by the cluster that runs, else one node.
KAFKA_BROKERS="${KAFKA_BROKERS:-$(cat "$RUN_DIR/kafka.brokers" 2>/dev/null || echo 1)}"
[[ $KAFKA_BROKERS =~ ^[1-9]$ ]] || { echo "[services] ERROR: KAFKA_BROKERS must be 1..9, not '$KAFKA_BROKERS'" >&2; exit 2; }
KAFKA_INTERNAL_PORT="${KAFKA_INTERNAL_PORT:-9095}"
KAFKA_PORT_STEP="${KAFKA_PORT_STEP:-100}"
KAFKA_ADVERTISED_PORTS="${KAFKA_ADVERTISED_PORTS:-}"
if ((KAFKA_BROKERS > 1)); then
  # Three JVMs on two cores: a small heap, one GC thread, and the quick (C1) compiler only,
  # which halves a node's start-up on a busy machine.
  KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx384m}"
  KAFKA_JVM_PERFORMANCE_OPTS="${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:ParallelGCThreads=1 -XX:ConcGCThreads=1 -XX:TieredStopAtLevel=1 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true}"
else
  KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms512m -Xmx512m}"
  KAFKA_JVM_PERFORMANCE_OPTS="${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true}"
fi
KAFKA_OPTS="${KAFKA_OPTS:-}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-180}"
FERRETDB_START_TIMEOUT="${FERRETDB_START_TIMEOUT:-60}"
STOP_TIMEOUT="${STOP_TIMEOUT:-30}"
FERRETDB_LOG_LEVEL="${FERRETDB_LOG_LEVEL:-warn}"

LOCAL_KAFKA="127.0.0.1:$KAFKA_PORT"
LOCAL_MONGO="mongodb://127.0.0.1:$MONGO_PORT"
KAFKA_PATTERN="kafka.Kafka" # what the pid's command line must contain
FERRETDB_PATTERN="--sqlite-url=file:$FERRETDB_DATA/" # this dir's server, whichever binary runs it

# ----------------------------------------------------------------------------- helpers

log() { printf '[services] %s\n' "$*"; }
warn() { printf '[services] WARNING: %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found on PATH. $2"; }

sha_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

devservices() { "$PYTHON" -m scripts.devservices "$@"; }

# answers <kafka|mongo|port> <address>: one quiet readiness check (scripts/devservices).
answers() { devservices check "$1" "$2" --quiet; }

# Print the pid from $RUN_DIR/<name>.pid if that process is alive and its command
# line contains <pattern> (guards against a recycled pid); else remove a stale
# pid file and fail.
live_pid() {
  local name=$1 pattern=$2 pidfile="$RUN_DIR/$1.pid" pid cmd
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
    if [[ -r /proc/$pid/cmdline ]]; then
      cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline")
    else
      cmd=$(ps -o args= -p "$pid" 2>/dev/null || true)
    fi
    if [[ $cmd == *"$pattern"* ]]; then
      echo "$pid"
      return 0
    fi
  fi
  rm -f "$pidfile"
  return 1
}

# run_with_progress <label> <logfile> <command...>: run a slow step in the
# background, print a progress line every 15 s, fail with the log's tail.
run_with_progress() {
  local label=$1 logf=$2 t0=$SECONDS next=15 pid rc=0
  shift 2
  "$@" >>"$logf" 2>&1 9>&- &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS - t0 >= next)); then
      log "  ... $label: ${next}s so far (log: ${logf#"$ROOT"/})"
      next=$((next + 15))
    fi
    sleep 0.5
  done
  wait "$pid" || rc=$?
  if ((rc != 0)); then
    tail -n 30 "$logf" >&2 || true
    die "$label failed (exit $rc); full log: $logf"
  fi
}

# wait_ready <name> <pid> <deadline-seconds> <kafka|mongo> <address> <logfile...>
# Poll until the server answers; on failure scripts/devservices prints the logs' tails and why.
wait_ready() {
  local name=$1 pid=$2 timeout=$3 kind=$4 addr=$5 rc=0
  shift 5
  local logs=() f
  for f in "$@"; do logs+=(--log "$f"); done
  devservices wait "$kind" "$addr" --name "$name" --pid "$pid" --timeout-s "$timeout" "${logs[@]}" || rc=$?
  if ((rc == 3)); then rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.addr"; fi
  ((rc == 0)) || exit 1
}

# start_detached <name> <logfile> <command...>: start in a new session (so it
# outlives this shell and its process group) and record its pid.
start_detached() {
  local name=$1 logf=$2
  shift 2
  local launcher=()
  command -v setsid >/dev/null 2>&1 && launcher=(setsid)
  # The inner shell writes its own pid, then execs the server: the pid file holds
  # the server's pid whether or not setsid forked. fd 9 (the lock) is closed so
  # the server does not hold the lock for its whole life.
  # shellcheck disable=SC2016  # $$ and $@ belong to the inner shell
  ${launcher[@]+"${launcher[@]}"} bash -c 'echo $$ >"$0"; exec "$@"' "$RUN_DIR/$name.pid" "$@" \
    </dev/null >>"$logf" 2>&1 9>&- &
  local _
  for _ in $(seq 1 50); do
    [[ -s "$RUN_DIR/$name.pid" ]] && break
    sleep 0.1
  done
  [[ -s "$RUN_DIR/$name.pid" ]] || die "could not start $name"
  cat "$RUN_DIR/$name.pid"
}

# Stop the process recorded in <name>.pid: TERM, wait up to STOP_TIMEOUT, KILL.
stop_one() {
  local name=$1 pattern=$2 pid t0
  if ! pid=$(live_pid "$name" "$pattern"); then
    log "$name: not running (no live pid file)"
    return 0
  fi
  log "$name: stopping pid $pid (TERM, up to ${STOP_TIMEOUT}s)"
  t0=$(now)
  kill -TERM "$pid" 2>/dev/null || true
  local start=$SECONDS
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS - start >= STOP_TIMEOUT)); then
      warn "$name: still running after ${STOP_TIMEOUT}s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.addr"
  log "$name: stopped in $(since "$t0")s"
}

lock() {
  exec 9>"$RUN_DIR/services.lock"
  if command -v flock >/dev/null 2>&1; then
    flock -w 900 9 || die "another scripts/services.sh is still running"
  fi
}

# A server started earlier with other ports: say so instead of waiting on the wrong port.
check_same_addr() {
  local name=$1 want=$2 pid=$3 had
  had=$(cat "$RUN_DIR/$name.addr" 2>/dev/null || true)
  if [[ -n $had && $had != "$want" ]]; then
    die "$name is already running (pid $pid) at $had, not $want; run '$0 down' first to change ports"
  fi
}

# find_running <name> <kafka|mongo> <pid-pattern> <local-address> <local-port> <env-var> <deadline-s> <logfile...>
# Look for a server to use instead of starting one: this script's own process (waiting
# for it if it is still starting), then the address in <env-var>, then whatever answers
# on the local port. Sets FOUND (what was found; empty: start one) and FOUND_AT.
find_running() {
  local name=$1 kind=$2 pattern=$3 local_addr=$4 port=$5 env_var=$6 timeout=$7 pid t0
  shift 7
  FOUND="" FOUND_AT=$local_addr
  if pid=$(live_pid "$name" "$pattern"); then
    check_same_addr "$name" "$local_addr" "$pid"
    if answers "$kind" "$local_addr"; then
      log "$name: already running (pid $pid) at $local_addr; nothing to do"
      FOUND="already running (pid $pid)"
      return 0
    fi
    log "$name: pid $pid is running but not answering yet; waiting"
    t0=$(now)
    wait_ready "$name" "$pid" "$timeout" "$kind" "$local_addr" "$@"
    FOUND="ready after $(since "$t0")s more (pid $pid)"
    return 0
  fi
  if [[ -n ${!env_var:-} ]]; then
    if answers "$kind" "${!env_var}"; then
      log "$name: $env_var answers; using it, starting nothing"
      FOUND="external, not started here" FOUND_AT=${!env_var}
      return 0
    fi
    warn "$name: $env_var does not answer; falling back to the local server at $local_addr"
  fi
  if answers port "127.0.0.1:$port"; then
    if answers "$kind" "$local_addr"; then
      log "$name: a server not started by this script answers at $local_addr; using it"
      FOUND="external, not started here"
      return 0
    fi
    die "$name: port $port is taken by something that does not answer as a $kind server (set its port variable)"
  fi
}

# ----------------------------------------------------------------------------- Kafka

java_cmd() {
  if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
    echo "$JAVA_HOME/bin/java"
  else
    need java "Install a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless)."
    echo java
  fi
}

check_java() {
  local java ver major
  java=$(java_cmd)
  ver=$("$java" -version 2>&1 | awk -F'"' '/version/ { print $2; exit }')
  major=${ver%%.*}
  if [[ $major == 1 ]]; then major=$(echo "$ver" | cut -d. -f2); fi # 1.8.0_x style
  if ! [[ $major =~ ^[0-9]+$ ]] || ((major < 17)); then
    die "Kafka 4.x needs Java 17+, found '$ver' ($java). Set JAVA_HOME."
  fi
}

fetch_kafka() {
  local stamp want
  want=$(sha_of "$KAFKA_SRC/pom.xml")
  stamp="$KAFKA_LIBS/.fetched-from-pom"
  if [[ -f $stamp && $(<"$stamp") == "$want" ]]; then
    log "kafka: jars cached in $KAFKA_LIBS ($(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars)"
    return 0
  fi
  need mvn "Install Maven (e.g. apt-get install maven)."
  log "kafka: fetching Kafka jars with Maven (services/kafka/pom.xml; first run only)"
  local t0 tmp="$KAFKA_LIBS.tmp"
  t0=$(now)
  rm -rf "$tmp"
  : >"$LOG_DIR/kafka-fetch.log"
  run_with_progress "Maven fetch" "$LOG_DIR/kafka-fetch.log" \
    mvn -q -B -f "$KAFKA_SRC/pom.xml" package "-Dkafka.libs.dir=$tmp"
  echo "$want" >"$tmp/.fetched-from-pom"
  rm -rf "$KAFKA_LIBS"
  mv "$tmp" "$KAFKA_LIBS"
  log "kafka: fetched $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars in $(since "$t0")s"
}

format_kafka() {
  local java
  java=$(java_cmd)
  if [[ -f $KAFKA_DATA/meta.properties ]]; then
    log "kafka: log dir already formatted ($KAFKA_DATA)"
    return 0
  fi
  local id_file="$KAFKA_DIR/cluster.id" id
  if [[ ! -s $id_file ]]; then
    "$java" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>>"$LOG_DIR/kafka-format.log" | tail -n 1 >"$id_file.tmp"
    mv "$id_file.tmp" "$id_file"
  fi
  id=$(<"$id_file")
  log "kafka: formatting log dir (cluster id $id, single-voter dynamic quorum)"
  mkdir -p "$KAFKA_DATA"
  # --standalone makes this node the only controller voter (pairs with
  # controller.quorum.bootstrap.servers); -g skips a dir that is already formatted.
  "$java" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format --standalone -g \
    -t "$id" -c "$KAFKA_PROPS" >>"$LOG_DIR/kafka-format.log" 2>&1 ||
    { tail -n 20 "$LOG_DIR/kafka-format.log" >&2; die "kafka: storage format failed"; }
}

# A local CA and a broker certificate for 127.0.0.1 (PEM; the key unencrypted, PKCS#8), and
# the SCRAM password of the local user: made once, kept with the broker's other state.
make_tls() {
  [[ -f $KAFKA_TLS/broker.pem && -f $KAFKA_TLS/sasl-password ]] && return 0
  command -v openssl >/dev/null || die "kafka: openssl is needed to make the local TLS certificates"
  log "kafka: making a local CA and broker certificate in $KAFKA_TLS"
  local tmp="$KAFKA_TLS.tmp"
  rm -rf "$tmp" && mkdir -p "$tmp"
  (
    cd "$tmp"
    openssl req -x509 -newkey rsa:2048 -noenc -keyout ca.key -out ca.pem -days 3650 \
      -subj "/CN=kafka-job-worker local CA" 2>/dev/null
    openssl req -newkey rsa:2048 -noenc -keyout broker.key -out broker.csr -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out broker.crt \
      -days 3650 -extfile san.ext 2>/dev/null
    cat broker.key broker.crt >broker.pem
    openssl rand -hex 16 >sasl-password
    chmod 600 ca.key broker.key broker.pem sasl-password
  ) || die "kafka: making the TLS certificates failed"
  rm -rf "$KAFKA_TLS" && mv "$tmp" "$KAFKA_TLS"
}

# The SCRAM credential of the local user. Idempotent; it lives in the cluster metadata.
add_scram_user() {
  local java
  java=$(java_cmd)
  "$java" -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.ConfigCommand --bootstrap-server "$LOCAL_KAFKA" \
    --alter --entity-type users --entity-name "$KAFKA_SASL_USER" \
    --add-config "SCRAM-SHA-512=[password=$(cat "$KAFKA_TLS/sasl-password")]" \
    >>"$LOG_DIR/kafka-scram.log" 2>&1 ||
    { tail -n 20 "$LOG_DIR/kafka-scram.log" >&2; die "kafka: adding the SCRAM user failed"; }
  log "kafka: SASL_SSL on 127.0.0.1:$KAFKA_SASL_PORT (SCRAM-SHA-512 user $KAFKA_SASL_USER, CA $KAFKA_TLS/ca.pem)"
}

# start_kafka_process <name> <log-dir> <server.properties>: start one node; print its pid.
start_kafka_process() {
  local name=$1 logs=$2 props=$3 java heap perf extra
  java=$(java_cmd)
  read -r -a heap <<<"$KAFKA_HEAP_OPTS"
  read -r -a perf <<<"$KAFKA_JVM_PERFORMANCE_OPTS"
  read -r -a extra <<<"$KAFKA_OPTS"
  mkdir -p "$logs"
  start_detached "$name" "$logs/$name.out" \
    "$java" ${heap[@]+"${heap[@]}"} ${perf[@]+"${perf[@]}"} ${extra[@]+"${extra[@]}"} \
    "-Dlog4j2.configurationFile=$KAFKA_SRC/log4j2.yaml" \
    "-Dkafka.logs.dir=$logs" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$props"
}

KAFKA_RESULT=""
KAFKA_ADDR="$LOCAL_KAFKA"

kafka_up() {
  local pid t0
  find_running kafka kafka "$KAFKA_PATTERN" "$LOCAL_KAFKA" "$KAFKA_PORT" KAFKA_BOOTSTRAP_SERVERS \
    "$KAFKA_START_TIMEOUT" "$LOG_DIR/kafka.out" "$LOG_DIR/kafka.log"
  if [[ -n $FOUND ]]; then
    KAFKA_RESULT=$FOUND KAFKA_ADDR=$FOUND_AT
    return 0
  fi
  if answers port "127.0.0.1:$KAFKA_CONTROLLER_PORT"; then
    die "kafka: controller port $KAFKA_CONTROLLER_PORT is already in use (set KAFKA_CONTROLLER_PORT)"
  fi

  check_java
  fetch_kafka
  make_tls
  devservices render-config "$KAFKA_SRC/server.properties.template" "$KAFKA_PROPS" \
    "KAFKA_PORT=$KAFKA_PORT" "KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT" "KAFKA_DATA_DIR=$KAFKA_DATA" \
    "KAFKA_SASL_PORT=$KAFKA_SASL_PORT" "KAFKA_TLS_DIR=$KAFKA_TLS"
  format_kafka

  log "kafka: starting broker+controller on $LOCAL_KAFKA (controller 127.0.0.1:$KAFKA_CONTROLLER_PORT, heap: $KAFKA_HEAP_OPTS)"
  t0=$(now)
  pid=$(start_kafka_process kafka "$LOG_DIR" "$KAFKA_PROPS")
  echo "$LOCAL_KAFKA" >"$RUN_DIR/kafka.addr"
  log "kafka: pid $pid; waiting until it lists topics (deadline ${KAFKA_START_TIMEOUT}s)"
  wait_ready kafka "$pid" "$KAFKA_START_TIMEOUT" kafka "$LOCAL_KAFKA" "$LOG_DIR/kafka.out" "$LOG_DIR/kafka.log"
  add_scram_user
  KAFKA_RESULT="started in $(since "$t0")s (pid $pid)"
  log "kafka: ready, $KAFKA_RESULT; logs $LOG_DIR/kafka.log"
}


# ----------------------------------------------------------------------------- Kafka cluster
# Nodes 1..KAFKA_BROKERS, each broker + controller, named kafka-<id>, each with its own
# dir ($SVC/kafka-<id>: data, server.properties), logs ($LOG_DIR/kafka-<id>/) and ports.

CLUSTER_DIR="$SVC/kafka-cluster" # the cluster id and each node's directory id

node_port() { echo $(($1 + ($2 - 1) * KAFKA_PORT_STEP)); } # node_port <base> <id>
node_addr() { echo "127.0.0.1:$(node_port "$KAFKA_PORT" "$1")"; }
node_props() { echo "$SVC/kafka-$1/server.properties"; }
node_ids() { seq 1 "$KAFKA_BROKERS"; }
cluster_addrs() {
  local id out=()
  for id in $(node_ids); do out+=("$(node_addr "$id")"); done
  (
    IFS=,
    echo "${out[*]}"
  )
}
cluster_rf() { echo $((KAFKA_BROKERS < 3 ? KAFKA_BROKERS : 3)); }
cluster_min_isr() { echo $((KAFKA_BROKERS >= 3 ? 2 : 1)); }

advertised_port() {
  local id=$1 ports
  if [[ -n $KAFKA_ADVERTISED_PORTS ]]; then
    IFS=, read -r -a ports <<<"$KAFKA_ADVERTISED_PORTS"
    ((${#ports[@]} == KAFKA_BROKERS)) ||
      die "KAFKA_ADVERTISED_PORTS has ${#ports[@]} ports for $KAFKA_BROKERS brokers"
    echo "${ports[id - 1]}"
  else
    node_port "$KAFKA_PORT" "$id"
  fi
}

# A node's pid if it runs (its command line names its own server.properties).
node_pid() { live_pid "kafka-$1" "$(node_props "$1")"; }

cluster_ids() {
  local java id
  java=$(java_cmd)
  mkdir -p "$CLUSTER_DIR"
  for id in cluster $(node_ids); do
    [[ -s $CLUSTER_DIR/$id.id ]] && continue
    "$java" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>>"$LOG_DIR/kafka-format.log" |
      tail -n 1 >"$CLUSTER_DIR/$id.id.tmp"
    mv "$CLUSTER_DIR/$id.id.tmp" "$CLUSTER_DIR/$id.id"
  done
}

render_node() {
  local id=$1 quorum=() n
  for n in $(node_ids); do quorum+=("127.0.0.1:$(node_port "$KAFKA_CONTROLLER_PORT" "$n")"); done
  mkdir -p "$SVC/kafka-$id/data"
  devservices render-config "$KAFKA_SRC/server-cluster.properties.template" "$(node_props "$id")" \
    "KAFKA_NODE_ID=$id" \
    "KAFKA_PORT=$(node_port "$KAFKA_PORT" "$id")" \
    "KAFKA_ADVERTISED_PORT=$(advertised_port "$id")" \
    "KAFKA_CONTROLLER_PORT=$(node_port "$KAFKA_CONTROLLER_PORT" "$id")" \
    "KAFKA_INTERNAL_PORT=$(node_port "$KAFKA_INTERNAL_PORT" "$id")" \
    "KAFKA_QUORUM_BOOTSTRAP=$(
      IFS=,
      echo "${quorum[*]}"
    )" \
    "KAFKA_DATA_DIR=$SVC/kafka-$id/data" \
    "KAFKA_REPLICATION_FACTOR=$(cluster_rf)" \
    "KAFKA_MIN_INSYNC_REPLICAS=$(cluster_min_isr)"
}

format_node() {
  local id=$1 java voters=() n
  [[ -f $SVC/kafka-$id/data/meta.properties ]] && return 0
  java=$(java_cmd)
  for n in $(node_ids); do
    voters+=("$n@127.0.0.1:$(node_port "$KAFKA_CONTROLLER_PORT" "$n"):$(<"$CLUSTER_DIR/$n.id")")
  done
  log "kafka-$id: formatting log dir (cluster id $(<"$CLUSTER_DIR/cluster.id"), $KAFKA_BROKERS voters)"
  "$java" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format -g -t "$(<"$CLUSTER_DIR/cluster.id")" \
    --initial-controllers "$(
      IFS=,
      echo "${voters[*]}"
    )" -c "$(node_props "$id")" >>"$LOG_DIR/kafka-format.log" 2>&1 ||
    { tail -n 20 "$LOG_DIR/kafka-format.log" >&2; die "kafka-$id: storage format failed"; }
}

# cluster_up <id...>: start the nodes given that are not running, then wait until each
# answers as a live broker (all started first: no node answers before a quorum of
# controllers runs), then, when all nodes were asked for, until the cluster has them all.
cluster_up() {
  local ids=("$@") id pid t0 started=() port
  if pid=$(live_pid kafka "$KAFKA_PATTERN"); then
    die "kafka: a single-node broker runs (pid $pid); run '$0 down' before starting a cluster"
  fi
  t0=$(now)
  for id in "${ids[@]}"; do
    ((id >= 1 && id <= KAFKA_BROKERS)) || die "no node kafka-$id in a cluster of $KAFKA_BROKERS"
    if node_pid "$id" >/dev/null; then continue; fi
    for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_INTERNAL_PORT"; do
      port=$(node_port "$port" "$id")
      if answers port "127.0.0.1:$port"; then
        die "kafka-$id: port $port is already in use (set KAFKA_PORT / KAFKA_CONTROLLER_PORT / KAFKA_INTERNAL_PORT)"
      fi
    done
    if ((${#started[@]} == 0)); then
      check_java
      fetch_kafka
      cluster_ids
    fi
    render_node "$id"
    format_node "$id"
    pid=$(start_kafka_process "kafka-$id" "$LOG_DIR/kafka-$id" "$(node_props "$id")")
    echo "$(node_addr "$id")" >"$RUN_DIR/kafka-$id.addr"
    echo "$KAFKA_BROKERS" >"$RUN_DIR/kafka.brokers"
    log "kafka-$id: pid $pid at $(node_addr "$id") (controller $(node_port "$KAFKA_CONTROLLER_PORT" "$id"), heap: $KAFKA_HEAP_OPTS)"
    started+=("$id")
  done
  for id in "${ids[@]}"; do
    pid=$(node_pid "$id") || die "kafka-$id: exited during start-up; see $LOG_DIR/kafka-$id/"
    devservices wait kafka "$(node_addr "$id")" --node-id "$id" --name "kafka-$id" --pid "$pid" \
      --timeout-s "$KAFKA_START_TIMEOUT" --log "$LOG_DIR/kafka-$id/kafka-$id.out" \
      --log "$LOG_DIR/kafka-$id/kafka.log" || exit 1
  done
  if ((${#ids[@]} == KAFKA_BROKERS)); then
    devservices wait kafka "$(cluster_addrs)" --brokers "$KAFKA_BROKERS" --name "kafka cluster" \
      --timeout-s "$KAFKA_START_TIMEOUT" || exit 1
  fi
  KAFKA_ADDR=$(cluster_addrs)
  if ((${#started[@]} == 0)); then
    KAFKA_RESULT="already running: $KAFKA_BROKERS brokers"
  else
    KAFKA_RESULT="started kafka-$(
      IFS=,
      echo "${started[*]}"
    ) in $(since "$t0")s; $KAFKA_BROKERS brokers, replication factor $(cluster_rf), min.insync.replicas $(cluster_min_isr)"
  fi
  log "kafka: $KAFKA_RESULT"
}

# The nodes recorded as running, whatever KAFKA_BROKERS says now.
recorded_nodes() {
  local f
  for f in "$RUN_DIR"/kafka-[0-9]*.pid; do
    [[ -e $f ]] || continue
    f=${f##*/kafka-}
    echo "${f%.pid}"
  done
}

# cluster_down <id...>: TERM them all at once, then wait for each (KILL after STOP_TIMEOUT).
# One at a time, the last node would wait out the deadline: its controlled shutdown needs
# a quorum of controllers, and the others are gone.
cluster_down() {
  local id pid t0 start i pids=() names=()
  t0=$(now)
  for id in "$@"; do
    if pid=$(node_pid "$id"); then
      log "kafka-$id: stopping pid $pid (TERM, up to ${STOP_TIMEOUT}s)"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid") names+=("kafka-$id")
    else
      log "kafka-$id: not running (no live pid file)"
    fi
  done
  start=$SECONDS
  for i in "${!pids[@]}"; do
    while kill -0 "${pids[i]}" 2>/dev/null; do
      if ((SECONDS - start >= STOP_TIMEOUT)); then
        warn "${names[i]}: still running after ${STOP_TIMEOUT}s; sending KILL"
        kill -KILL "${pids[i]}" 2>/dev/null || true
        break
      fi
      sleep 0.2
    done
    while kill -0 "${pids[i]}" 2>/dev/null; do sleep 0.1; done
    rm -f "$RUN_DIR/${names[i]}.pid" "$RUN_DIR/${names[i]}.addr"
    log "${names[i]}: stopped in $(since "$t0")s"
  done
  [[ -n $(recorded_nodes) ]] || rm -f "$RUN_DIR/kafka.brokers"
}

# ----------------------------------------------------------------------------- FerretDB

build_ferretdb() {
  local want stamp
  stamp="$(dirname "$FERRETDB_BIN")/.ferretdb.built-from"
  want=$(sha_of "$FERRETDB_SRC/go.mod" "$FERRETDB_SRC/go.sum")
  if [[ -x $FERRETDB_BIN && -f $stamp && $(<"$stamp") == "$want" ]]; then
    log "ferretdb: binary cached ($FERRETDB_BIN)"
    return 0
  fi
  need go "Install Go 1.24+ (e.g. from the distribution's packages)."
  export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
  local t0 version src build="$SVC/build/ferretdb" logf="$LOG_DIR/ferretdb-build.log"
  t0=$(now)
  : >"$logf"
  log "ferretdb: downloading Go modules (services/ferretdb/go.mod)"
  (cd "$FERRETDB_SRC" && run_with_progress "go mod download" "$logf" go mod download)
  version=$(cd "$FERRETDB_SRC" && go list -m -f '{{.Version}}' "$FERRETDB_MODULE")
  src=$(cd "$FERRETDB_SRC" && go list -m -f '{{.Dir}}' "$FERRETDB_MODULE")
  [[ -n $version && -d $src ]] || die "ferretdb: could not resolve $FERRETDB_MODULE"

  # FerretDB's build/version package panics at start unless the module that holds
  # the main package embeds build/version/version.txt (a generated file, absent
  # from the published module). Building cmd/ferretdb from a wrapper module does
  # not help (runtime/debug reports FerretDB's module as the main one), and the
  # module cache is read-only, so build against a copy with version.txt added:
  # a private go.mod (-modfile) whose replace directive points at the copy.
  rm -rf "$build"
  mkdir -p "$build"
  cp -R "$src" "$build/FerretDB"
  chmod -R u+w "$build/FerretDB"
  echo "$version" >"$build/FerretDB/build/version/version.txt"
  cp "$FERRETDB_SRC/go.mod" "$build/go.mod"
  cp "$FERRETDB_SRC/go.sum" "$build/go.sum"
  (cd "$FERRETDB_SRC" && go mod edit -modfile="$build/go.mod" -replace="$FERRETDB_MODULE=$build/FerretDB")

  log "ferretdb: building FerretDB $version with $(go env GOVERSION) (first run only; a few minutes on 2 cores)"
  (cd "$FERRETDB_SRC" && run_with_progress "go build" "$logf" \
    go build -modfile="$build/go.mod" -trimpath -o "$FERRETDB_BIN.tmp" "$FERRETDB_MODULE/cmd/ferretdb")
  "$FERRETDB_BIN.tmp" --version >>"$logf" 2>&1 || die "ferretdb: built binary does not run; see $logf"
  mv "$FERRETDB_BIN.tmp" "$FERRETDB_BIN"
  echo "$want" >"$stamp"
  rm -rf "$build"
  log "ferretdb: built $FERRETDB_BIN in $(since "$t0")s"
}

MONGO_RESULT=""
MONGO_ADDR="$LOCAL_MONGO"

ferretdb_up() {
  local pid t0
  find_running ferretdb mongo "$FERRETDB_PATTERN" "$LOCAL_MONGO" "$MONGO_PORT" MONGODB_URL \
    "$FERRETDB_START_TIMEOUT" "$LOG_DIR/ferretdb.log"
  if [[ -n $FOUND ]]; then
    MONGO_RESULT=$FOUND MONGO_ADDR=$FOUND_AT
    return 0
  fi

  build_ferretdb
  mkdir -p "$FERRETDB_DATA"
  log "ferretdb: starting on $LOCAL_MONGO (SQLite in $FERRETDB_DATA)"
  t0=$(now)
  pid=$(start_detached ferretdb "$LOG_DIR/ferretdb.log" \
    "$FERRETDB_BIN" \
    --handler=sqlite \
    "--sqlite-url=file:$FERRETDB_DATA/" \
    "--listen-addr=127.0.0.1:$MONGO_PORT" \
    --state-dir=- \
    --telemetry=disable \
    --debug-addr=- \
    "--log-level=$FERRETDB_LOG_LEVEL")
  echo "$LOCAL_MONGO" >"$RUN_DIR/ferretdb.addr"
  log "ferretdb: pid $pid; waiting for ping (deadline ${FERRETDB_START_TIMEOUT}s)"
  wait_ready ferretdb "$pid" "$FERRETDB_START_TIMEOUT" mongo "$LOCAL_MONGO" "$LOG_DIR/ferretdb.log"
  MONGO_RESULT="started in $(since "$t0")s (pid $pid)"
  log "ferretdb: ready, $MONGO_RESULT; logs $LOG_DIR/ferretdb.log"
}

# ----------------------------------------------------------------------------- commands

# Which servers the TARGETs name: sets WANT_FERRETDB (0/1) and WANT_NODES (node ids; for the
# single node: the word "single").
parse_targets() {
  local t
  WANT_FERRETDB=0 WANT_NODES=()
  (($# > 0)) || set -- kafka ferretdb
  for t in "$@"; do
    case $t in
      ferretdb) WANT_FERRETDB=1 ;;
      kafka)
        if ((KAFKA_BROKERS > 1)); then
          mapfile -t -O "${#WANT_NODES[@]}" WANT_NODES < <(node_ids)
        else
          WANT_NODES+=(single)
        fi
        ;;
      kafka-[0-9]*)
        ((KAFKA_BROKERS > 1)) || die "$t: not a cluster (set KAFKA_BROKERS=3)"
        WANT_NODES+=("${t#kafka-}")
        ;;
      *) die "unknown target '$t' (kafka, ferretdb, kafka-<id>)" ;;
    esac
  done
}

cmd_up() {
  local t0
  t0=$(now)
  parse_targets "$@"
  if [[ ${WANT_NODES[*]-} == single ]]; then
    kafka_up
  elif ((${#WANT_NODES[@]} > 0)); then
    cluster_up "${WANT_NODES[@]}"
  fi
  ((WANT_FERRETDB)) && ferretdb_up
  log "all up in $(since "$t0")s"
  echo
  if ((${#WANT_NODES[@]} > 0)); then
    echo "KAFKA_BOOTSTRAP_SERVERS=$KAFKA_ADDR"
    if [[ $KAFKA_ADDR == "$LOCAL_KAFKA" ]]; then
      echo "# SASL_SSL: KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_SASL_PORT KAFKA_SECURITY_PROTOCOL=SASL_SSL" \
        "KAFKA_SASL_MECHANISM=SCRAM-SHA-512 KAFKA_SASL_USERNAME=$KAFKA_SASL_USER" \
        "KAFKA_SASL_PASSWORD=\$(cat $KAFKA_TLS/sasl-password) KAFKA_SSL_CA_FILE=$KAFKA_TLS/ca.pem"
    elif ((KAFKA_BROKERS > 1)); then
      echo "KAFKA_REPLICATION_FACTOR=$(cluster_rf)  # for the worker's topics (min.insync.replicas $(cluster_min_isr))"
    fi
  fi
  # An external MONGODB_URL may hold a password: show it with the password masked.
  ((WANT_FERRETDB)) && echo "MONGODB_URL=$(sed -E 's#(://[^:/@]*:)[^@/]*@#\1***@#' <<<"$MONGO_ADDR")"
  echo
  ((${#WANT_NODES[@]} == 0)) || echo "  kafka:    $KAFKA_RESULT"
  ((WANT_FERRETDB == 0)) || echo "  ferretdb: $MONGO_RESULT"
}

cmd_down() {
  local targets=("$@") nodes t
  (($# > 0)) || targets=(kafka ferretdb)
  for t in "${targets[@]}"; do
    case $t in
      kafka)
        mapfile -t nodes < <(recorded_nodes)
        if ((${#nodes[@]} == 0)) || [[ -f $RUN_DIR/kafka.pid ]]; then stop_one kafka "$KAFKA_PATTERN"; fi
        ((${#nodes[@]} == 0)) || cluster_down "${nodes[@]}"
        ;;
      kafka-[0-9]*) cluster_down "${t#kafka-}" ;;
      ferretdb) stop_one ferretdb "$FERRETDB_PATTERN" ;;
      *) die "unknown target '$t' (kafka, ferretdb, kafka-<id>)" ;;
    esac
  done
}

cmd_status() {
  local args=(--mongo-local "$LOCAL_MONGO") pid id
  if ((KAFKA_BROKERS > 1)); then
    for id in $(node_ids); do
      pid=$(node_pid "$id") || pid=""
      args+=(--kafka-node "kafka-$id=$(node_addr "$id")${pid:+,$pid}")
    done
    args+=(--kafka-brokers "$KAFKA_BROKERS")
  else
    args+=(--kafka-local "$LOCAL_KAFKA")
    if pid=$(live_pid kafka "$KAFKA_PATTERN"); then
      args+=(--kafka-pid "$pid" --kafka-addr "$(cat "$RUN_DIR/kafka.addr" 2>/dev/null || echo "$LOCAL_KAFKA")")
    fi
  fi
  if pid=$(live_pid ferretdb "$FERRETDB_PATTERN"); then
    args+=(--mongo-pid "$pid" --mongo-addr "$(cat "$RUN_DIR/ferretdb.addr" 2>/dev/null || echo "$LOCAL_MONGO")")
  fi
  devservices status "${args[@]}"
}

main() {
  local cmd=${1:-}
  case $cmd in
    up | down | status) ;;
    *)
      echo "usage: $0 up|down|status [kafka|ferretdb|kafka-<id>...]" >&2
      exit 2
      ;;
  esac
  shift
  mkdir -p "$RUN_DIR" "$LOG_DIR" "$BIN_DIR" "$KAFKA_DIR"
  if [[ $cmd != down && ! -x $PYTHON ]]; then
    die "$PYTHON not found: the readiness checks run from the virtualenv; run 'make venv' (make services does)"
  fi
  case $cmd in
    up) lock && cmd_up "$@" ;;
    down) lock && cmd_down "$@" ;;
    status) cmd_status ;;
  esac
}

main "$@"
