#!/usr/bin/env bash
# Re-scoring as the tenant grows, on Kafka + Cassandra. For each size N: a
# fresh tenant of N enrolled users, one retained clip each, written straight
# to the store (`timbre bench seed`); then `timbre rescore` plans, publishes,
# follows and cuts the tenant over while loadgen sends paced live
# verifications through Kafka to the same processor. Prints one JSON line
# per size: users/s, audio seconds per wall second per background worker,
# the planner's wall time and peak RSS, live p99 publish → decision before
# and during the run, and the CPU model.
#
#   processor/scripts/bench-rescore-scale.sh [sizes (1000 10000 100000)]
#
#   TIMBRE_BENCH_LIVE_RATE      live verifications per second (4)
#   TIMBRE_BENCH_CLIP_SECONDS   retained clip per user (1.0)
#   TIMBRE_BENCH_WINDOW         seconds per live loadgen window (20)
#
# Starts its own Kafka and Cassandra (tests/services/services.sh), or uses
# the running ones when TIMBRE_TEST_KAFKA_BROKERS and TIMBRE_TEST_CQL_NODES
# are set. One processor with the default workers (one per core; re-scoring
# takes at most half), the synthetic-speech check off as in bench-per-core;
# everything shares the machine's cores (pin nothing).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
sizes=("${@:-1000 10000 100000}")
read -ra sizes <<<"${sizes[*]}"
rate=${TIMBRE_BENCH_LIVE_RATE:-4}
clip=${TIMBRE_BENCH_CLIP_SECONDS:-1.0}
window=${TIMBRE_BENCH_WINDOW:-20}
[[ -x /usr/bin/time ]] || { echo "needs GNU time (apt-get install time)" >&2; exit 2; }

cargo build --release --locked -p timbre -p timbre-loadgen >&2
processor/scripts/fetch-model.sh >&2
timbre="$repo/target/release/timbre"
loadgen="$repo/target/release/loadgen"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
metrics_port=19474

# shellcheck source=processor/scripts/bench-services.sh
source processor/scripts/bench-services.sh
bench_services
bus="kafka://$TIMBRE_TEST_KAFKA_BROKERS"
target_name=campplus-next
target="$target_name@sha256:$("$timbre" model 2>/dev/null | grep -o 'sha256:[0-9a-f]*' | head -1 | cut -d: -f2)"

# Runs loadgen windows on the live tenant until the file $1 exists.
live_windows() { # stop-file out-prefix
  local n=0
  while [[ ! -e $1 && -d $work ]]; do
    n=$((n + 1))
    "$loadgen" "${live[@]}" --duration "$window" >"$2.$n.json" 2>>"$work/loadgen.log" || true
  done
}

for size in "${sizes[@]}"; do
  tag="rescale$(date +%s)n$size"
  prefix="$tag."
  env=(TIMBRE__BUS="$bus" TIMBRE__STORE="cql://$TIMBRE_TEST_CQL_NODES/$tag"
    TIMBRE__TOPIC_PREFIX="\"$prefix\"" TIMBRE__GROUP="\"${prefix}processor\""
    TIMBRE__EXTRA_MODELS="[{ name = \"$target_name\" }]"
    TIMBRE__POLICY__ENROLLMENT_TARGET_MILLIS=6000 TIMBRE__POLICY__FREE_FAILURES=1000000
    TIMBRE__POLICY__REPLAY_MEMORY_DAYS=0 TIMBRE__SYNTHETIC__ENABLED=false TIMBRE_LOG=warn)
  env "${env[@]}" "$timbre" migrate >&2
  env "${env[@]}" "$timbre" topics apply --replication 1 >&2
  seeded=$(env "${env[@]}" "$timbre" bench seed --tenant bulk --users "$size" \
    --clip-seconds "$clip" --json)
  env "${env[@]}" TIMBRE__LISTEN="\"127.0.0.1:$metrics_port\"" \
    "$timbre" run >/dev/null 2>>"$work/processor.log" &
  processor=$!
  pids+=("$processor")
  for _ in $(seq 300); do curl -sf "127.0.0.1:$metrics_port/metrics" >/dev/null && break; sleep 0.2; done
  live=(--target "$bus" --topic-prefix "$prefix" --tenant live --speakers 4 --rate "$rate"
    --json --quiet --drain-timeout 30)
  # Live traffic alone first (it also enrolls the live speakers).
  "$loadgen" "${live[@]}" --duration "$window" >"$work/baseline.json" 2>>"$work/loadgen.log"
  live_windows "$work/stop" "$work/during" &
  windows=$!
  pids+=("$windows")
  /usr/bin/time -f '%M %e' -o "$work/planner.time" env "${env[@]}" \
    "$timbre" rescore --to-model "$target" --tenant bulk --json >"$work/progress.json"
  touch "$work/stop"
  wait "$windows"
  kill "$processor" 2>/dev/null || true
  wait "$processor" 2>/dev/null || true
  pids=()
  python3 - "$size" "$clip" "$cpu" "$seeded" "$work" "$(nproc)" <<'EOF_PY'
import glob, json, statistics, sys
size, clip, cpu, seeded, work, cores = sys.argv[1:]
size, clip = int(size), float(clip)
rss_kib, wall = open(f"{work}/planner.time").read().split()[-2:]
wall = float(wall)
progress = json.load(open(f"{work}/progress.json"))
baseline = json.load(open(f"{work}/baseline.json"))
windows = [json.load(open(p)) for p in sorted(glob.glob(f"{work}/during.*.json"))]
p99s = [w["latency_ms"]["p99"] for w in windows if w["jobs"]["decided"]]
background = max(int(cores) // 2, 1)  # default workers: one per core, half for re-scoring
print(json.dumps({
    "users": size, "state": progress["state"], "rebuilt": progress["done"],
    "failed": progress["failed"], "planner_wall_s": round(wall, 1),
    "users_per_s": round(size / wall, 1),
    "audio_s_per_wall_s_per_background_worker": round(size * clip / wall / background, 1),
    "planner_peak_rss_mib": round(int(rss_kib) / 1024, 1),
    "seed": json.loads(seeded),
    "live": {"rate": baseline["rate"], "p99_ms_before": baseline["latency_ms"]["p99"],
             "p99_ms_during_median": statistics.median(p99s) if p99s else None,
             "p99_ms_during_max": max(p99s) if p99s else None,
             "windows": len(windows),
             "missing": sum(w["jobs"]["missing"] for w in windows)},
    "cpu": cpu,
}))
EOF_PY
  rm -f "$work"/stop "$work"/during.*.json
done
