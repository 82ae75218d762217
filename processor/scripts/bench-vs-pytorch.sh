#!/usr/bin/env bash
# Embedding speed of the engine against the PyTorch CAM++ reference
# (campplus_reference.py), on the same files, same machine, same run:
#   processor/scripts/bench-vs-pytorch.sh [rounds=5] [manifest]
# Each round runs every system single-threaded, then with all cores; the order
# rotates every round so that drift on a shared machine hits all of them.
# Systems: the engine as deployed (`--matmul auto`: bfloat16 products where
# the CPU has avx512_bf16), the engine with f32 products, and PyTorch.
# RTF = wall seconds of features + network / audio seconds (WAV decoding
# excluded on both sides). With all cores each system parallelises its own
# way: the engine embeds utterances side by side, PyTorch splits each operator
# (torch.set_num_threads). Prints one JSON line on stdout, progress on stderr.
#
# Needs target/release/timbre and the weights (fetch-model.sh). The first run
# installs torch from PyPI into a cached venv: several GB (CUDA wheels included).
set -euo pipefail

rounds=${1:-5}
# Resolve before the cd below so a manifest relative to the caller still works.
manifest=$(realpath "${2:-$(dirname "$0")/../../tests/fixtures/librispeech-r/manifest.tsv}")
cd "$(dirname "$0")/../.."
timbre=./target/release/timbre
reference=processor/scripts/campplus_reference.py
all=$(nproc)
# shellcheck source=torch-venv.sh
source processor/scripts/torch-venv.sh

# Same rule as the engine's manifest reader: `file` column, relative to the
# manifest's folder.
mapfile -t files < <(awk -F'\t' -v dir="$(dirname "$manifest")" '
  NR == 1 { for (i = 1; i <= NF; i++) if ($i == "file") col = i; next }
  NF { print dir "/" $col }' "$manifest")

parity=$("$py" "$reference" --parity)
echo "parity: $parity" >&2

results=$(mktemp)
trap 'rm -f "$results"' EXIT

run() { # SYSTEM THREADS
  local out
  if [[ $1 == timbre-f32 ]]; then
    out=$(RAYON_NUM_THREADS=1 "$timbre" bench embed --matmul f32 --threads "$2" --manifest "$manifest" --json)
  elif [[ $1 == timbre ]]; then
    # The engine's own default (README "Speed and memory"): one worker per
    # thread, each with single-threaded matmuls; pinned so that an inherited
    # RAYON_NUM_THREADS cannot change what is measured.
    out=$(RAYON_NUM_THREADS=1 "$timbre" bench embed --threads "$2" --manifest "$manifest" --json)
  else
    out=$("$py" "$reference" --bench --threads "$2" "${files[@]}")
  fi
  echo "$1 threads=$2 $out" >&2
  printf '%s\t%s\t%s\n' "$1" "$2" "$out" >>"$results"
}

for ((round = 0; round < rounds; round++)); do
  systems=(timbre timbre-f32 pytorch)
  shift=$((round % ${#systems[@]}))
  order=("${systems[@]:shift}" "${systems[@]:0:shift}")
  for threads in 1 "$all"; do
    for system in "${order[@]}"; do run "$system" "$threads"; done
  done
done

"$py" - "$results" "$rounds" "${#files[@]}" "$all" "$parity" <<'EOF'
import json, statistics, sys

path, rounds, files, all_threads, parity = sys.argv[1:]
rtf = {}
audio = set()
for line in open(path):
    system, threads, out = line.rstrip("\n").split("\t")
    out = json.loads(out)
    rtf.setdefault((threads, system), []).append(out["rtf"])
    if system == "timbre":
        matmul = out["matmul"]
    audio.add(round(out["audio_seconds"], 3))
if len(audio) != 1:
    sys.exit(f"the systems measured different audio: {sorted(audio)} s")

def stats(v):
    return {"median": statistics.median(v), "min": min(v), "max": max(v)}

def summary(threads):
    ours, f32, theirs = (rtf[(threads, s)] for s in ("timbre", "timbre-f32", "pytorch"))
    return {"timbre": stats(ours), "timbre_f32": stats(f32), "pytorch": stats(theirs),
            "ratio": statistics.median(theirs) / statistics.median(ours),
            "ratio_f32": statistics.median(theirs) / statistics.median(f32)}

cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
print(json.dumps({
    "cpu": cpu,
    "timbre_matmul": matmul,
    "threads_1": summary("1"),
    "threads_all": {"threads": int(all_threads), **summary(all_threads)},
    "rounds": int(rounds),
    "files": int(files),
    "audio_seconds": audio.pop(),
    "parity_min_cosine": json.loads(parity)["parity_min_cosine"],
}))
EOF
