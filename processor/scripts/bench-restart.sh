#!/usr/bin/env bash
# Stall through a processor crash, measured: verifications at a steady rate
# on real Kafka + Cassandra while `timbre run` is killed with SIGKILL and
# started again 3 s later. Rounds alternate static group membership
# (instance_id, as the Helm chart sets it from the pod name) and dynamic
# membership; each round prints one JSON line with loadgen's latency figures.
#
#   processor/scripts/bench-restart.sh [rounds (2)] [rate (8)] [seconds (60)]
#
# Starts its own Kafka and Cassandra (tests/services/services.sh), or uses
# the running ones when TIMBRE_TEST_KAFKA_BROKERS and TIMBRE_TEST_CQL_NODES
# are set.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
rounds=${1:-2}
rate=${2:-8}
seconds=${3:-60}
kill_after=25 # seconds into the run: the enrollment phase is over by then
down_for=3

cargo build --release --locked -p timbre -p timbre-loadgen >&2
processor/scripts/fetch-model.sh >&2
timbre="$repo/target/release/timbre"
loadgen="$repo/target/release/loadgen"

if [[ -z ${TIMBRE_TEST_KAFKA_BROKERS:-} || -z ${TIMBRE_TEST_CQL_NODES:-} ]]; then
  services=tests/services/services.sh
  trap '"$services" stop >&2 || true' EXIT
  "$services" start >&2
  set -a
  # shellcheck disable=SC1091
  source "${TIMBRE_SERVICES_DIR:-$repo/target/services}/env"
  set +a
fi
bus="kafka://$TIMBRE_TEST_KAFKA_BROKERS"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')

processor_pid=
start_processor() { # prefix keyspace mode
  local env=(
    TIMBRE__BUS="$bus"
    TIMBRE__STORE="cql://$TIMBRE_TEST_CQL_NODES/$2"
    TIMBRE__TOPIC_PREFIX="\"$1\""
    TIMBRE__GROUP="\"${1}processor\""
    TIMBRE__LISTEN='"127.0.0.1:0"'
    TIMBRE__POLICY__ENROLLMENT_TARGET_MILLIS=6000
    TIMBRE__POLICY__FREE_FAILURES=1000000
    TIMBRE__POLICY__REPLAY_MEMORY_DAYS=0 # loadgen reuses its clips
    TIMBRE__SYNTHETIC__ENABLED=false     # the figures compare with earlier runs
    TIMBRE_LOG=warn
  )
  [[ $3 == static ]] && env+=(TIMBRE__INSTANCE_ID="\"processor-0\"")
  env "${env[@]}" "$timbre" run >/dev/null 2>>"$work/processor.log" &
  processor_pid=$!
}

work=$(mktemp -d)
trap '[[ -n $processor_pid ]] && kill "$processor_pid" 2>/dev/null; rm -rf "$work"; "${services:-true}" stop >&2 2>/dev/null || true' EXIT

for round in $(seq 1 "$rounds"); do
  for mode in static dynamic; do
    tag="restart$(date +%s)${mode}${round}"
    prefix="$tag."
    keyspace="$tag"
    env TIMBRE__BUS="$bus" TIMBRE__STORE="cql://$TIMBRE_TEST_CQL_NODES/$keyspace" \
      TIMBRE__TOPIC_PREFIX="\"$prefix\"" TIMBRE_LOG=warn "$timbre" migrate >&2
    env TIMBRE__BUS="$bus" TIMBRE__TOPIC_PREFIX="\"$prefix\"" TIMBRE_LOG=warn \
      "$timbre" topics apply --replication 1 >&2
    start_processor "$prefix" "$keyspace" "$mode"
    "$loadgen" --target "$bus" --topic-prefix "$prefix" --rate "$rate" \
      --duration "$seconds" --drain-timeout 60 --json --quiet >"$work/report.json" &
    loadgen_pid=$!
    sleep "$kill_after"
    kill -9 "$processor_pid"
    wait "$processor_pid" 2>/dev/null || true
    sleep "$down_for"
    start_processor "$prefix" "$keyspace" "$mode"
    wait "$loadgen_pid" || true
    kill "$processor_pid" 2>/dev/null || true
    wait "$processor_pid" 2>/dev/null || true
    processor_pid=
    python3 - "$work/report.json" "$mode" "$round" "$cpu" "$down_for" <<'EOF'
import json, sys
path, mode, rnd, cpu, down = sys.argv[1:]
r = json.load(open(path))
l = r["latency_ms"]
print(json.dumps({
    "membership": mode, "round": int(rnd), "down_seconds": int(down),
    "sent": r["jobs"]["sent"], "decided": r["jobs"]["decided"],
    "p50_ms": l["p50"], "p95_ms": l["p95"], "p99_ms": l["p99"], "max_ms": l["max"],
    "failures": r["failures"], "cpu": cpu,
}))
EOF
  done
done
