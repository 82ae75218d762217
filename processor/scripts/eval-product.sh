#!/usr/bin/env bash
# Accuracy through the product path against raw cosine, on the two corpora
# of ../shared/data, for 1 and 3 enrollment recordings and 2 s, 3 s and
# whole probes; then the enrollment modes at N = 3. Prints one markdown
# table row per setting:
#   processor/scripts/eval-product.sh [data folder] [threads]
# librispeech-r: its test-other speakers only (10 x 10 recordings; the
# train-clean-100 speakers built the bundled cohort and calibration).
# fsdd: 4-digit codes of single-digit recordings (8 kHz), 50 per speaker,
# pooled over 8 compositions (seeds 7-14: each joins other recordings), as
# one composition's six speakers swing the EER change by +-30%.
# Needs target/release/timbre and the weights (fetch-model.sh).
set -euo pipefail

data=$(realpath "${1:-$(dirname "$0")/../../../shared/data}")
threads=${2:-$(nproc)}
cd "$(dirname "$0")/../.."
test_other=$(mktemp --suffix .tsv)
trap 'rm -f "$test_other"' EXIT
# shellcheck source=manifest-subset.sh
source processor/scripts/manifest-subset.sh
manifest_subset "$data/librispeech-r" test-other > "$test_other"

row() { # corpus label, then eval arguments
  local label=$1; shift
  local product
  product=$(./target/release/timbre eval --protocol product --norm as-norm --threads "$threads" --json "$@" 2>/dev/null)
  python3 - "$label" "$product" <<'PY'
import json, sys
label, product = sys.argv[1], json.loads(sys.argv[2])
raw = product["raw_cosine"]  # the same trials by raw cosine
pct = lambda x: f"{100 * x:.2f}%"
rel = (product["eer"] - raw["eer"]) / raw["eer"] if raw["eer"] > 0 else float("nan")
print(f"| {label} | {product['enroll']} | {product['probe_seconds'] or 'full'} | {product['enroll_mode']} "
      f"| {pct(raw['eer'])} | {pct(product['eer'])} | {rel:+.0%} "
      f"| {pct(raw['far_at_threshold'])} / {pct(raw['frr_at_threshold'])} "
      f"| {pct(product['far_frr_bundled_line'][0])} / {pct(product['far_frr_bundled_line'][1])} "
      f"| {pct(product['far_at_threshold'])} / {pct(product['frr_at_threshold'])} "
      f"| {product['target_trials']} / {product['nontarget_trials']} ({product['compositions']}) |")
PY
}

echo "| corpus | N | probe s | enroll | EER raw | EER product | change | raw cosine 0.50: FAR / FRR | bundled line, target 0.1%: FAR / FRR | with the tenant's tail: FAR / FRR | trials (compositions) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for n in 1 3; do
  for s in 2 3 full; do
    probe=(); [ "$s" != full ] && probe=(--probe-seconds "$s")
    row "librispeech-r test-other" --manifest "$test_other" --enroll "$n" "${probe[@]}"
    row "fsdd 4-digit codes (8 kHz)" --manifest "$data/fsdd/manifest.tsv" --join 4 \
      --codes-per-speaker 50 --seeds 8 --enroll "$n" "${probe[@]}"
  done
done
for mode in weighted best; do
  row "librispeech-r test-other" --manifest "$test_other" --enroll 3 --probe-seconds 2 --enroll-mode "$mode"
  row "fsdd 4-digit codes (8 kHz)" --manifest "$data/fsdd/manifest.tsv" --join 4 \
    --codes-per-speaker 50 --seeds 8 --enroll 3 --probe-seconds 2 --enroll-mode "$mode"
done
