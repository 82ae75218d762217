#!/usr/bin/env bash
# Real Apache Kafka (KRaft, one node) and Apache Cassandra for the test suite,
# run as plain JVM processes from Maven Central jars: no Docker, no tarballs.
#
#   services.sh start [kafka|cassandra|all]   default all; idempotent
#   services.sh stop [kafka|cassandra|all]    default all; fine if not running
#   services.sh status                        exit 0 only if both are up
#   services.sh env                           print <workdir>/env
#   services.sh crash <kafka|cassandra>       kill -9 the JVM, keep its state
#   services.sh resume <kafka|cassandra>      restart a crashed service on its
#                                             state, port and certificates
#
# The test runner sources <workdir>/env:
#   TIMBRE_TEST_KAFKA_BROKERS=127.0.0.1:<port>
#   TIMBRE_TEST_CQL_NODES=127.0.0.1:<port>
#
# Environment: TIMBRE_SERVICES_DIR (work dir, default <repo>/target/services),
# TIMBRE_CACHE_DIR (jar cache, default ~/.cache/timbre),
# TIMBRE_KAFKA_START_TIMEOUT (60 s), TIMBRE_CASSANDRA_START_TIMEOUT (180 s),
# TIMBRE_SERVICES_STOP_TIMEOUT (30 s), TIMBRE_CASSANDRA_DURABLE (1: every
# acknowledged write and schema change survives kill -9, for fault tests).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=${TIMBRE_SERVICES_DIR:-$repo/target/services}
cache=${TIMBRE_CACHE_DIR:-${HOME:?}/.cache/timbre}
java=${JAVA_HOME:+$JAVA_HOME/bin/}java
probe=$here/probe.py

kafka_timeout=${TIMBRE_KAFKA_START_TIMEOUT:-60}
cassandra_timeout=${TIMBRE_CASSANDRA_START_TIMEOUT:-180}
stop_timeout=${TIMBRE_SERVICES_STOP_TIMEOUT:-30}

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

check_prereqs() {
  local missing=() pkgs=() major
  if ! command -v "$java" >/dev/null 2>&1; then
    missing+=("java 17+") pkgs+=(openjdk-17-jdk-headless)
  else
    # First line looks like: openjdk version "17.0.15" 2025-04-15 (or "1.8.0_...").
    major=$("$java" -version 2>&1 | sed -n '1s/.*version "\([0-9]*\)[."].*/\1/p')
    if [[ -z $major || $major -lt 17 || $major -eq 1 ]]; then
      missing+=("java 17+ (found ${major:-unknown} at $(command -v "$java"))")
      pkgs+=(openjdk-17-jdk-headless)
    elif ((major > 17)); then
      log "warning: java $major found; cassandra 5.0 is only supported on java 17"
    fi
  fi
  command -v mvn >/dev/null 2>&1 || { missing+=(maven) pkgs+=(maven); }
  command -v openssl >/dev/null 2>&1 || { missing+=(openssl) pkgs+=(openssl); }
  command -v python3 >/dev/null 2>&1 || { missing+=(python3) pkgs+=(python3); }
  if ((${#missing[@]})); then
    log "error: missing prerequisites: ${missing[*]}"
    log "install with: apt-get install ${pkgs[*]}"
    [[ ${pkgs[*]} != *openjdk* ]] || log "(or point JAVA_HOME at a java 17 jdk)"
    exit 1
  fi
}

# Service metadata. The main class doubles as a check that a pid file still
# points at our JVM and not at a recycled pid.
main_class() {
  case $1 in
    kafka) echo kafka.Kafka ;;
    cassandra) echo org.apache.cassandra.service.CassandraDaemon ;;
  esac
}
probe_kind() { [[ $1 == kafka ]] && echo kafka || echo cql; }
pid_file() { echo "$work/$1/$1.pid"; }
port_file() { echo "$work/$1/port"; }
log_file() { echo "$work/$1/$1.log"; }

pom_version() { # pom_version <svc>: the <svc>.version property of its pom
  sed -n "s:.*<$1\.version>\(.*\)</$1\.version>.*:\1:p" "$here/$1/pom.xml" | head -n1
}
lib_dir() { echo "$cache/$1-lib-$(pom_version "$1")"; }

# pid_alive <pid> <svc>: a zombie counts as dead (kill -0 succeeds on zombies,
# and a container's pid 1 may never reap them).
pid_alive() {
  local pid=$1 svc=$2 state
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r /proc/$pid/stat ]]; then
    state=$(sed 's/.*) //' "/proc/$pid/stat" | cut -d' ' -f1)
    [[ $state != Z ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF " $(main_class "$svc") " || return 1
  fi
}

running_pid() { # prints the pid if the service's JVM is alive
  local f pid
  f=$(pid_file "$1")
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] && pid_alive "$pid" "$1" && echo "$pid"
}

probe_ok() {
  local f
  f=$(port_file "$1")
  [[ -f $f ]] && python3 "$probe" "$(probe_kind "$1")" "127.0.0.1:$(<"$f")"
}

# pick_ports <preferred>...: each preferred port if it is free on 127.0.0.1,
# otherwise a free ephemeral one. Sockets stay open until all are chosen so the
# answers are distinct. SO_REUSEADDR mirrors what the JVM servers set.
pick_ports() {
  python3 - "$@" <<'EOF'
import socket, sys
held = []
for want in map(int, sys.argv[1:]):
    for port in (want, 0):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        held.append(s)
        print(s.getsockname()[1])
        break
EOF
}

# Jars come from Maven Central once per version; ~/.m2 also keeps them. The
# copy lands in a temp dir and is renamed so an interrupted run never leaves a
# half-filled cache that later runs would trust.
ensure_lib() {
  local svc=$1 lib tmp started
  lib=$(lib_dir "$svc")
  [[ -d $lib ]] && return 0
  mkdir -p "$cache"
  tmp=$(mktemp -d "$lib.tmp.XXXXXX")
  started=$SECONDS
  log "$svc: resolving $(pom_version "$svc") from maven central (first run only)"
  if ! mvn -q -B -f "$here/$svc/pom.xml" dependency:copy-dependencies \
    -Dlib.dir="$tmp" >"$tmp.mvn.log" 2>&1; then
    tail -n 40 "$tmp.mvn.log" >&2
    rm -rf "$tmp"
    die "$svc: maven could not resolve the jars (full log: $tmp.mvn.log)"
  fi
  rm -f "$tmp.mvn.log"
  mv "$tmp" "$lib" 2>/dev/null || rm -rf "$tmp" # lost a race: someone else filled it
  log "$svc: $(find "$lib" -name '*.jar' | wc -l) jars in $lib ($((SECONDS - started))s)"
}

render() { # render <template> <out> KEY=VALUE...: replaces @KEY@
  local tpl=$1 out=$2 kv args=()
  shift 2
  for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${args[@]}" "$tpl" >"$out"
}

# launch <svc> <java args...>: detached (setsid) so the JVM outlives this script
# and a ^C in the caller's terminal; stdin closed for CI.
launch() {
  local svc=$1 pid i
  shift
  setsid "$java" "$@" >>"$(log_file "$svc")" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$(pid_file "$svc")"
  # The forked shell becomes the JVM only at exec; until then its command
  # line is this script's and pid_alive would call the service dead.
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF " $(main_class "$svc") " && break
    sleep 0.1
  done
}

prepare_kafka() { # prepare_kafka <port> <controller port>
  local dir=$work/kafka lib cluster_id
  lib=$(lib_dir kafka)
  mkdir -p "$dir"
  render "$here/kafka/server.properties.in" "$dir/server.properties" \
    PORT="$1" CONTROLLER_PORT="$2" DATA_DIR="$dir/data"
  echo "$1" >"$(port_file kafka)"
  # KRaft refuses to start on an unformatted log dir; format a fresh one.
  cluster_id=$("$java" -cp "$lib/*" kafka.tools.StorageTool random-uuid 2>>"$dir/kafka.log")
  "$java" -cp "$lib/*" -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" \
    kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" \
    >>"$dir/kafka.log" 2>&1 || { tail -n 20 "$dir/kafka.log" >&2; die "kafka: storage format failed"; }
  launch_kafka
}

launch_kafka() {
  local dir=$work/kafka lib
  lib=$(lib_dir kafka)
  launch kafka -Xms512m -Xmx512m -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" \
    -cp "$lib/*" kafka.Kafka "$dir/server.properties"
}

# make_tls <dir>: a throwaway CA, the node's certificate (for 127.0.0.1) and
# a client certificate signed by it, the node's PKCS12 key and trust stores,
# and a second CA that signed nothing (to test that verification fails).
make_tls() {
  local d=$1 pass=timbre-test who ca keytool=${JAVA_HOME:+$JAVA_HOME/bin/}keytool
  rm -rf "$d"
  mkdir -p "$d"
  for ca in ca other-ca; do
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=timbre test $ca" \
      -keyout "$d/$ca.key" -out "$d/$ca.pem" 2>>"$d/openssl.log"
  done
  for who in node client; do
    openssl req -newkey rsa:2048 -nodes -subj "/CN=timbre-$who" \
      -keyout "$d/$who.key" -out "$d/$who.csr" 2>>"$d/openssl.log"
    openssl x509 -req -in "$d/$who.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
      -days 30 -out "$d/$who.pem" \
      -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n') 2>>"$d/openssl.log"
  done
  openssl pkcs12 -export -in "$d/node.pem" -inkey "$d/node.key" -certfile "$d/ca.pem" \
    -name node -passout "pass:$pass" -out "$d/node.p12" 2>>"$d/openssl.log"
  "$keytool" -importcert -noprompt -alias ca -file "$d/ca.pem" -storetype PKCS12 \
    -keystore "$d/truststore.p12" -storepass "$pass" >>"$d/openssl.log" 2>&1
  [[ -s $d/node.p12 && -s $d/truststore.p12 && -s $d/client.pem ]] ||
    { cat "$d/openssl.log" >&2; die "cassandra: making the test certificates failed"; }
}

prepare_cassandra() { # prepare_cassandra <native port> <storage port>
  local dir=$work/cassandra
  mkdir -p "$dir/data"
  # The native port takes plaintext and TLS (client certificate required).
  make_tls "$dir/tls"
  local sync=periodic window="commitlog_sync_period: 10000ms"
  if [[ ${TIMBRE_CASSANDRA_DURABLE:-0} == 1 ]]; then
    sync=group window="commitlog_sync_group_window: 10ms"
  fi
  render "$here/cassandra/cassandra.yaml.in" "$dir/cassandra.yaml" \
    WORK_DIR="$dir" NATIVE_PORT="$1" STORAGE_PORT="$2" \
    COMMITLOG_SYNC="$sync" COMMITLOG_SYNC_WINDOW="$window"
  echo "$1" >"$(port_file cassandra)"
  launch_cassandra
}

launch_cassandra() {
  local dir=$work/cassandra lib line jamm opts=() words durability=()
  lib=$(lib_dir cassandra)
  # Schema changes skip the commit log (fast keyspace churn for the tests)
  # unless TIMBRE_CASSANDRA_DURABLE=1: a kill -9 would lose the keyspaces.
  [[ ${TIMBRE_CASSANDRA_DURABLE:-0} == 1 ]] || durability=(-Dcassandra.unsafesystem=true)
  # Options file lines like "--add-opens a/b=ALL-UNNAMED" are two arguments.
  while IFS= read -r line; do
    [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
    read -ra words <<<"$line"
    opts+=("${words[@]}")
  done <"$here/cassandra/jvm17-server.options"
  jamm=$(find "$lib" -name 'jamm-*.jar' | head -n1)
  [[ -n $jamm ]] || die "cassandra: no jamm jar in $lib (delete it to re-resolve)"
  # jamm measures object sizes for memtables; without the agent start-up fails.
  # The heap is set because Cassandra's default takes a quarter of the RAM.
  launch cassandra -Xms1g -Xmx1g -Xss256k -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError \
    "${opts[@]}" \
    -javaagent:"$jamm" \
    -Dcassandra.config="file://$dir/cassandra.yaml" \
    -Dcassandra.storagedir="$dir/data" \
    -Dcassandra.logdir="$dir" \
    -Dlogback.configurationFile="$here/cassandra/logback.xml" \
    -Dcassandra-foreground=yes \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    "${durability[@]}" \
    -cp "$lib/*" org.apache.cassandra.service.CassandraDaemon
}

# wait_ready <svc> <timeout s>: a protocol round trip, not a log line, decides.
wait_ready() {
  local svc=$1 timeout=$2 started=$SECONDS pid out
  pid=$(<"$(pid_file "$svc")")
  while :; do
    if ! pid_alive "$pid" "$svc"; then
      log "$svc: jvm (pid $pid) exited during start-up; last lines of $(log_file "$svc"):"
      tail -n 60 "$(log_file "$svc")" >&2
      rm -f "$(pid_file "$svc")" "$(port_file "$svc")"
      return 1
    fi
    if out=$(probe_ok "$svc" 2>/dev/null); then
      log "$svc: ready on 127.0.0.1:$(<"$(port_file "$svc")") in $((SECONDS - started))s," \
        "pid $pid; $out"
      return 0
    fi
    if ((SECONDS - started >= timeout)); then
      log "$svc: not ready after ${timeout}s; last lines of $(log_file "$svc"):"
      tail -n 60 "$(log_file "$svc")" >&2
      stop_one "$svc" # a half-started JVM would only hold ports and memory
      return 1
    fi
    sleep 1
  done
}

stop_one() {
  local svc=$1 pid deadline
  if pid=$(running_pid "$svc"); then
    log "$svc: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + stop_timeout))
    while pid_alive "$pid" "$svc" && ((SECONDS < deadline)); do sleep 0.5; done
    if pid_alive "$pid" "$svc"; then
      log "$svc: still up after ${stop_timeout}s, killing"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 10))
      while pid_alive "$pid" "$svc" && ((SECONDS < deadline)); do sleep 0.2; done
      ! pid_alive "$pid" "$svc" || die "$svc: pid $pid survived SIGKILL"
    fi
    log "$svc: stopped"
  else
    log "$svc: not running"
  fi
  rm -f "$(pid_file "$svc")" "$(port_file "$svc")"
}

# env lists only services that are up, so a partial start never advertises a
# dead endpoint.
write_env() {
  local tmp
  mkdir -p "$work"
  tmp=$(mktemp "$work/env.XXXXXX")
  if running_pid kafka >/dev/null; then
    echo "TIMBRE_TEST_KAFKA_BROKERS=127.0.0.1:$(<"$(port_file kafka)")" >>"$tmp"
  fi
  if running_pid cassandra >/dev/null; then
    echo "TIMBRE_TEST_CQL_NODES=127.0.0.1:$(<"$(port_file cassandra)")" >>"$tmp"
    echo "TIMBRE_TEST_CQL_TLS_DIR=$work/cassandra/tls" >>"$tmp"
  fi
  if [[ -s $tmp ]]; then mv "$tmp" "$work/env"; else rm -f "$tmp" "$work/env"; fi
}

services_for() {
  case ${1:-all} in
    all) echo kafka cassandra ;;
    kafka | cassandra) echo "$1" ;;
    *) die "unknown service '$1' (kafka, cassandra or all)" ;;
  esac
}

cmd_start() {
  local svc todo=() ports pids=() rc=0 started=$SECONDS
  for svc in $(services_for "${1:-}"); do
    if running_pid "$svc" >/dev/null; then
      if probe_ok "$svc" >/dev/null 2>&1; then
        log "$svc: already running on 127.0.0.1:$(<"$(port_file "$svc")")"
        continue
      fi
      log "$svc: running but not answering; restarting it"
      stop_one "$svc"
    fi
    todo+=("$svc")
  done

  if ((${#todo[@]})); then
    # Sequential: two mvn runs sharing a cold ~/.m2 can trip over each other.
    for svc in "${todo[@]}"; do ensure_lib "$svc"; done
    # All ports in one go so they cannot collide; defaults first.
    mapfile -t ports < <(pick_ports 9092 9093 9042 7000)
    ((${#ports[@]} == 4)) || die "could not find free ports on 127.0.0.1"
    local defaults=(9092 9093 9042 7000) i
    for i in 0 1 2 3; do
      ((ports[i] == defaults[i])) || log "port ${defaults[i]} is busy, using ${ports[i]}"
    done
    # No "a && b" around these steps: bash ignores set -e inside such lists.
    for svc in "${todo[@]}"; do
      # Fresh state every run: tests must not depend on leftovers.
      rm -rf "${work:?}/$svc"
      mkdir -p "$work/$svc"
      case $svc in
        kafka)
          log "kafka: starting on 127.0.0.1:${ports[0]} (controller ${ports[1]})"
          (prepare_kafka "${ports[0]}" "${ports[1]}"; wait_ready kafka "$kafka_timeout") &
          ;;
        cassandra)
          log "cassandra: starting cql on 127.0.0.1:${ports[2]} (storage ${ports[3]})"
          (prepare_cassandra "${ports[2]}" "${ports[3]}"; wait_ready cassandra "$cassandra_timeout") &
          ;;
      esac
      pids+=($!)
    done
    # Both JVMs boot in parallel; Cassandra dominates the wall time anyway.
    for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
    if ((rc)); then log "start failed"; else log "started in $((SECONDS - started))s"; fi
  fi

  write_env
  [[ -f $work/env ]] && cat "$work/env"
  return "$rc"
}

cmd_stop() {
  local svc
  for svc in $(services_for "${1:-}"); do stop_one "$svc"; done
  write_env
}

cmd_status() {
  local svc pid rss rc=0
  for svc in kafka cassandra; do
    if pid=$(running_pid "$svc"); then
      rss=$(awk '/^VmRSS/ {printf "%d MiB", $2 / 1024}' "/proc/$pid/status" 2>/dev/null || true)
      if probe_ok "$svc" >/dev/null 2>&1; then
        echo "$svc: running, pid $pid, 127.0.0.1:$(<"$(port_file "$svc")"), rss ${rss:-?}"
      else
        echo "$svc: pid $pid alive but not answering on 127.0.0.1:$(<"$(port_file "$svc")")"
        rc=1
      fi
    else
      echo "$svc: stopped"
      rc=3
    fi
  done
  return "$rc"
}

# crash <svc>: SIGKILL, as a machine failure would; data, port and
# configuration stay for `resume`.
cmd_crash() {
  local svc=$1 pid deadline
  pid=$(running_pid "$svc") || die "$svc: not running"
  kill -KILL "$pid"
  deadline=$((SECONDS + 10))
  while pid_alive "$pid" "$svc" && ((SECONDS < deadline)); do sleep 0.1; done
  ! pid_alive "$pid" "$svc" || die "$svc: pid $pid survived SIGKILL"
  rm -f "$(pid_file "$svc")"
  log "$svc: killed (pid $pid)"
}

cmd_resume() {
  local svc=$1
  [[ -f $(port_file "$svc") ]] || die "$svc: nothing to resume (start it first)"
  ! running_pid "$svc" >/dev/null || die "$svc: already running"
  "launch_$svc"
  wait_ready "$svc" "$(timeout_of "$svc")"
}

timeout_of() {
  case $1 in
    kafka) echo "$kafka_timeout" ;;
    cassandra) echo "$cassandra_timeout" ;;
  esac
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

main() {
  local cmd=${1:-}
  shift || true
  case $cmd in
    start)
      check_prereqs
      cmd_start "$@"
      ;;
    stop) cmd_stop "$@" ;;
    crash | resume)
      [[ ${1:-} == kafka || ${1:-} == cassandra ]] || usage
      "cmd_$cmd" "$1"
      ;;
    status) cmd_status ;;
    env)
      [[ -f $work/env ]] || die "no $work/env; run: $0 start"
      cat "$work/env"
      ;;
    *) usage ;;
  esac
}

main "$@"
