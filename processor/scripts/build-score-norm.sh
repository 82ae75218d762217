#!/usr/bin/env bash
# Rebuilds the bundled score normalisation of the default model
# (processor/src/scoring/score_norm.json) from LibriSpeech train-clean-100:
#   processor/scripts/build-score-norm.sh [librispeech-r folder]
# The folder is ../shared/data/librispeech-r's layout (manifest.tsv with a
# `subset` column; CC BY 4.0, LibriSpeech via Resemblyzer's audio_data). Only
# train-clean-100 speakers are used: the test-other speakers stay unseen for
# `timbre eval --protocol product`. Same inputs and weights, same bytes.
# Needs target/release/timbre and the weights (fetch-model.sh).
set -euo pipefail

data=$(realpath "${1:-$(dirname "$0")/../../../shared/data/librispeech-r}")
cd "$(dirname "$0")/../.."
manifest=$(mktemp --suffix .tsv)
trap 'rm -f "$manifest"' EXIT
# shellcheck source=manifest-subset.sh
source processor/scripts/manifest-subset.sh
manifest_subset "$data" train-clean-100 > "$manifest"
# f32 products: bf16 kernels (where the CPU has them) move embeddings by up
# to 0.008, and the bundle's bytes would depend on the machine.
./target/release/timbre calibrate --manifest "$manifest" --top-k 50 --matmul f32 \
  --out processor/src/scoring/score_norm.json
