#!/usr/bin/env bash
# Verifications per core, measured fairly: the processor (`timbre run`, one
# scoring worker) pinned to CPU 0, and everything else — Kafka, Cassandra,
# the API adapter (`timbre serve`) and loadgen — pinned to CPU 1. Per
# round: an open-loop Kafka run gives the processor's rate; a Kafka run and
# an HTTP run (open loop, paced) at half that rate give publish → decision
# latency. Each run prints one JSON line with loadgen's figures, the
# engine's own mean times per job (worker, whole job) and the CPU model.
#
#   processor/scripts/bench-per-core.sh [rounds (2)] [jobs (600)] [paced seconds (30)] [synthetic (off|on)]
#
# Needs a machine with at least two CPUs. Starts its own Kafka and Cassandra
# (tests/services/services.sh) on CPU 1, or uses the running ones when
# TIMBRE_TEST_KAFKA_BROKERS and TIMBRE_TEST_CQL_NODES are set (pin them
# yourself then). Clips are 3 s of ../shared/data/librispeech-r
# (TIMBRE_BENCH_MANIFEST overrides), 10 speakers, half impostors.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
rounds=${1:-2}
jobs=${2:-600}
seconds=${3:-30}
synthetic=${4:-off}
manifest=${TIMBRE_BENCH_MANIFEST:-$repo/../shared/data/librispeech-r/manifest.tsv}
[[ -f $manifest ]] || { echo "no manifest at $manifest (set TIMBRE_BENCH_MANIFEST)" >&2; exit 2; }
(($(nproc) >= 2)) || { echo "needs two CPUs" >&2; exit 2; }
[[ $synthetic == on || $synthetic == off ]] || { echo "synthetic: on or off" >&2; exit 2; }

cargo build --release --locked -p timbre -p timbre-loadgen >&2
processor/scripts/fetch-model.sh >&2
timbre="$repo/target/release/timbre"
loadgen="$repo/target/release/loadgen"
engine_cpu=0
other_cpu=1

# shellcheck source=processor/scripts/bench-services.sh
source processor/scripts/bench-services.sh
bench_services taskset -c "$other_cpu"
bus="kafka://$TIMBRE_TEST_KAFKA_BROKERS"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
metrics_port=19464
api_port=18090

# Settings of every engine process of a run (processor and API adapter).
engine_env() { # prefix keyspace
  echo TIMBRE__BUS="$bus" TIMBRE__STORE="cql://$TIMBRE_TEST_CQL_NODES/$2" \
    TIMBRE__TOPIC_PREFIX="\"$1\"" TIMBRE__GROUP="\"${1}processor\"" \
    TIMBRE__WORKERS=1 TIMBRE__POLICY__ENROLLMENT_TARGET_MILLIS=6000 \
    TIMBRE__POLICY__FREE_FAILURES=1000000 TIMBRE__POLICY__REPLAY_MEMORY_DAYS=0 \
    TIMBRE__SYNTHETIC__ENABLED=$([[ $synthetic == on ]] && echo true || echo false) \
    TIMBRE__API__RATE_LIMIT_PER_MINUTE=1000000 TIMBRE__API__KEY_PEPPER=bench \
    TIMBRE__API__LISTEN="\"127.0.0.1:$api_port\"" TIMBRE_LOG=warn
}

# `sum count` of a histogram on the processor's metrics endpoint.
histogram() {
  { curl -sf "127.0.0.1:$metrics_port/metrics" || true; } |
    awk -v h="$1" '$1 == h"_sum" {s = $2} $1 == h"_count" {c = $2} END {print s + 0, c + 0}'
}

# Loadgen's report plus the engine's mean worker and job times over the run.
report() { # path mode report.json before-scoring before-job
  read -r scoring_sum scoring_count < <(histogram timbre_scoring_seconds)
  read -r job_sum job_count < <(histogram timbre_job_seconds)
  python3 - "$@" "$scoring_sum" "$scoring_count" "$job_sum" "$job_count" "$cpu" "$synthetic" <<'EOF'
import json, sys
path, mode, file, s0, j0, s1, sc1, j1, jc1, cpu, synthetic = sys.argv[1:]
r = json.load(open(file))
s0, sc0 = map(float, s0.split())
j0, jc0 = map(float, j0.split())
mean = lambda total, n: round(1000 * total / n, 1) if n else None
print(json.dumps({
    "path": path, "mode": mode, "rate": r["rate"], "decided": r["jobs"]["decided"],
    "missing": r["jobs"]["missing"], "throughput_per_s": round(r["throughput_per_s"], 2),
    "latency_ms": r["latency_ms"], "errors": r["errors"], "far": r["far"], "frr": r["frr"],
    "engine_mean_ms": {"worker": mean(float(s1) - s0, float(sc1) - sc0),
                       "job": mean(float(j1) - j0, float(jc1) - jc0)},
    "synthetic": synthetic, "cpu": cpu,
}))
EOF
}

for round in $(seq 1 "$rounds"); do
  tag="percore$(date +%s)r$round"
  prefix="$tag."
  read -ra env < <(engine_env "$prefix" "$tag")
  env "${env[@]}" taskset -c "$other_cpu" "$timbre" migrate >&2
  env "${env[@]}" taskset -c "$other_cpu" "$timbre" topics apply --replication 1 >&2
  env "${env[@]}" TIMBRE__LISTEN="\"127.0.0.1:$metrics_port\"" \
    taskset -c "$engine_cpu" "$timbre" run >/dev/null 2>>"$work/processor.log" &
  processor=$!
  pids+=("$processor")
  for _ in $(seq 300); do curl -sf "127.0.0.1:$metrics_port/metrics" >/dev/null && break; sleep 0.2; done
  common=(--manifest "$manifest" --speakers 10 --json --quiet)
  kafka=(--target "$bus" --topic-prefix "$prefix" --tenant loadtest)

  # The processor's rate: open loop.
  before=("$(histogram timbre_scoring_seconds)" "$(histogram timbre_job_seconds)")
  taskset -c "$other_cpu" "$loadgen" "${common[@]}" "${kafka[@]}" --rate 0 --jobs "$jobs" \
    --drain-timeout 120 >"$work/open.json"
  report kafka open "$work/open.json" "${before[@]}"
  half=$(python3 -c "import json; print(round(json.load(open('$work/open.json'))['throughput_per_s'] / 2, 1))")

  # Half that rate, paced, through Kafka.
  before=("$(histogram timbre_scoring_seconds)" "$(histogram timbre_job_seconds)")
  taskset -c "$other_cpu" "$loadgen" "${common[@]}" "${kafka[@]}" --rate "$half" \
    --duration "$seconds" --drain-timeout 60 >"$work/paced.json"
  report kafka paced "$work/paced.json" "${before[@]}"

  # The same rate through the API adapter, on the other CPU.
  key=$(env "${env[@]}" "$timbre" keys create --tenant loadtest 2>/dev/null | tail -1)
  env "${env[@]}" TIMBRE__TENANTS__loadtest__FREE_FAILURES=1000000 \
    taskset -c "$other_cpu" "$timbre" serve >/dev/null 2>>"$work/api.log" &
  api=$!
  pids+=("$api")
  for _ in $(seq 100); do curl -sf "127.0.0.1:$api_port/healthz" >/dev/null && break; sleep 0.2; done
  before=("$(histogram timbre_scoring_seconds)" "$(histogram timbre_job_seconds)")
  taskset -c "$other_cpu" "$loadgen" "${common[@]}" --target "http://127.0.0.1:$api_port" \
    --api-key "$key" --rate "$half" --duration "$seconds" --concurrency 64 >"$work/http.json"
  report http paced "$work/http.json" "${before[@]}"
  kill "$api" "$processor" 2>/dev/null || true
  wait "$api" "$processor" 2>/dev/null || true
  pids=()
done
