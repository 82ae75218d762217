#!/usr/bin/env bash
# Writes the onnxruntime Silero VAD reference outputs the parity test
# compares with (tests/fixtures/reference/silero): the published ONNX file
# of the silero-vad==6.2.3 wheel run on the files listed in
# tests/fixtures/reference/silero/files.txt.
#   processor/scripts/silero-reference.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=torch-venv.sh
source processor/scripts/torch-venv.sh
"$py" -c 'import sys, onnxruntime; sys.exit(onnxruntime.__version__ != "1.32.0")' 2>/dev/null \
  || "$py" -m pip install --quiet onnxruntime==1.32.0

wheel_dir=$(mktemp -d)
trap 'rm -rf "$wheel_dir"' EXIT
"$py" -m pip download --quiet --no-deps --only-binary=:all: -d "$wheel_dir" silero-vad==6.2.3
"$py" -c 'import sys, zipfile, glob; zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0]).extractall(sys.argv[1])' "$wheel_dir"
echo "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3  $wheel_dir/silero_vad/data/silero_vad.onnx" | sha256sum -c --quiet
"$py" processor/scripts/silero_reference.py "$wheel_dir/silero_vad/data/silero_vad.onnx" tests/fixtures
