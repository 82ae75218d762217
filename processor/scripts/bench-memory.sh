#!/usr/bin/env bash
# Peak memory under large audio, measured on real Kafka + Cassandra against
# the Helm chart's limits (adapter 512 MiB, processor 2560 MiB):
#   1. `timbre serve` alone takes N concurrent uploads of a 10 MiB WAV from
#      clients that wait `Retry-After` and retry when it answers 503;
#   2. `timbre run` then starts on the backlog of those jobs and drains it.
# Prints one JSON line per process with its peak resident set (VmHWM).
#
#   processor/scripts/bench-memory.sh [uploads (200)]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
uploads=${1:-200}

cargo build --release --locked -p timbre >&2
processor/scripts/fetch-model.sh >&2
timbre="$repo/target/release/timbre"

# shellcheck source=processor/scripts/bench-services.sh
source processor/scripts/bench-services.sh
bench_services

tag="mem$(date +%s)"
export TIMBRE__BUS="kafka://$TIMBRE_TEST_KAFKA_BROKERS"
export TIMBRE__STORE="cql://$TIMBRE_TEST_CQL_NODES/$tag"
export TIMBRE__TOPIC_PREFIX="\"$tag.\""
export TIMBRE__GROUP="\"$tag.processor\""
export TIMBRE__API__KEY_PEPPER='"bench"'
export TIMBRE__API__TOKEN_SIGNING_KEY='"bench"'
export TIMBRE__API__WAIT_TIMEOUT_MS=2000
export TIMBRE__API__RATE_LIMIT_PER_MINUTE=100000
export TIMBRE__POLICY__CONSENT_REQUIRED=false
export TIMBRE_LOG=warn
"$timbre" migrate >&2
"$timbre" topics apply --replication 1 >&2
key=$("$timbre" keys create --tenant bench | tail -1)

# 10 MiB of 48 kHz stereo 16-bit noise (54 s, within the audio limits): the
# largest upload the API takes, decoded and scored in full by the processor.
python3 -c '
import random, struct, sys, wave
frames = (10 * 1024 * 1024 - 44) // 4
rng = random.Random(7)
with wave.open(sys.argv[1], "wb") as w:
    w.setnchannels(2); w.setsampwidth(2); w.setframerate(48000)
    w.writeframes(struct.pack(f"<{2 * frames}h", *(rng.randint(-6000, 6000) for _ in range(2 * frames))))
' "$work/big.wav"

peak_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
port_api=18480
port_ops=19480

# A client as the API asks: on 503 it waits Retry-After (1 s) and tries again.
upload() {
  local code
  for _ in $(seq 1 600); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$port_api/enroll" \
      -H "x-api-key: $key" -F "user_id=user$1" -F "audio=@$work/big.wav;type=audio/wav")
    [[ $code == 503 ]] || break
    echo busy >>"$work/busy.txt"
    sleep 1
  done
  echo "$code"
}
export -f upload
export work key port_api

TIMBRE__API__LISTEN="\"127.0.0.1:$port_api\"" TIMBRE__LISTEN="\"127.0.0.1:$port_ops\"" \
  "$timbre" serve 2>>"$work/serve.log" &
serve=$!
pids+=("$serve")
for _ in $(seq 1 100); do
  curl -fs "127.0.0.1:$port_ops/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
: >"$work/busy.txt"
started=$(date +%s)
seq 1 "$uploads" | xargs -P "$uploads" -I{} bash -c 'upload {}' >"$work/codes.txt"
codes=$(sort "$work/codes.txt" | uniq -c | awk '{printf "%s\"%s\": %s", (NR>1?", ":""), $2, $1}')
echo "{\"process\": \"timbre serve\", \"uploads\": $uploads, \"upload_bytes\": $(stat -c %s "$work/big.wav"), \"answers\": {$codes}, \"busy_retries\": $(wc -l <"$work/busy.txt"), \"seconds\": $(($(date +%s) - started)), \"peak_rss_mib\": $(($(peak_kib "$serve") / 1024)), \"limit_mib\": 512}"

# The processor was off, so every published upload waits as a 202: drained
# when that many decisions were made.
backlog=$(grep -c '^202$' "$work/codes.txt" || true)
TIMBRE__LISTEN="\"127.0.0.1:$((port_ops + 1))\"" "$timbre" run 2>>"$work/run.log" &
run=$!
pids+=("$run")
started=$(date +%s)
while :; do
  # (the listener opens once the models are loaded)
  decided=$({ curl -fs "127.0.0.1:$((port_ops + 1))/metrics" 2>/dev/null || true; } |
    awk '/^timbre_decisions_total/ {n += $2} END {print n + 0}')
  ((decided >= backlog)) && break
  if (($(date +%s) - started > 1800)); then
    echo "backlog not drained in 1800 s" >&2
    break
  fi
  sleep 1
done
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
echo "{\"process\": \"timbre run\", \"backlog_jobs\": $backlog, \"decided\": $decided, \"drain_seconds\": $(($(date +%s) - started)), \"peak_rss_mib\": $(($(peak_kib "$run") / 1024)), \"limit_mib\": 2560, \"cpu\": \"$cpu\"}"
