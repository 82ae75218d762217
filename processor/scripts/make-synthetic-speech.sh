#!/usr/bin/env bash
# Synthetic speech for the synthetic-speech evaluation
# (`timbre eval --protocol spoof --spoof OUT/manifest.tsv`): the same
# sentences spoken by every local text-to-speech voice of espeak-ng, flite
# and festival (Debian packages), as 16 kHz 16-bit mono WAVs.
#   processor/scripts/make-synthetic-speech.sh OUT
# OUT/manifest.tsv: speaker (engine:voice), file, engine. Needs:
#   apt-get install espeak-ng flite festival festvox-kallpc16k \
#     festvox-kdlpc16k festvox-us-slt-hts sox
set -euo pipefail

out=${1:?usage: make-synthetic-speech.sh OUT}
for tool in espeak-ng flite text2wave sox; do
  command -v "$tool" >/dev/null || {
    echo "$tool is required (see the header of $0)" >&2
    exit 1
  }
done
mkdir -p "$out/wav"
out=$(realpath "$out")

sentences=(
  "My voice is my password, please verify me."
  "I would like to check the balance of my current account."
  "Please transfer two hundred pounds to my savings account."
  "The quick brown fox jumps over the lazy dog."
  "Seven three nine one four two."
  "Can you tell me when my next payment is due?"
  "I lost my card yesterday and need a replacement."
  "Good morning, this is a call about my insurance claim."
  "Zero five eight six one seven."
  "The weather was cold, so we stayed inside and read."
  "Please update the address on my account to the new one."
  "I am calling to report a problem with my last bill."
  "Four eight two zero nine three."
  "She sells sea shells by the sea shore every summer."
  "Could you read back the last three transactions for me?"
  "We walked along the river until the sun went down."
  "I want to cancel the direct debit set up last month."
  "One six three eight five zero."
  "Thank you for your help, that is all for today."
  "The meeting has been moved to Thursday afternoon."
)

espeak_voices=(en-us en-gb en-gb-scotland en-gb-x-rp en-us+f3 en-us+m3)
flite_voices=(kal kal16 awb rms slt)
festival_voices=(kal_diphone ked_diphone cmu_us_slt_arctic_hts)

manifest=$out/manifest.tsv
printf 'speaker\tfile\tengine\n' >"$manifest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# to16k RAW_WAV NAME SPEAKER ENGINE
to16k() {
  sox -q "$1" -r 16000 -c 1 -b 16 "$out/wav/$2.wav"
  printf '%s\t%s\t%s\n' "$3" "wav/$2.wav" "$4" >>"$manifest"
}

for i in "${!sentences[@]}"; do
  text=${sentences[$i]}
  printf '%s\n' "$text" >"$tmp/text.txt"
  for v in "${espeak_voices[@]}"; do
    espeak-ng -v "$v" -w "$tmp/raw.wav" "$text"
    to16k "$tmp/raw.wav" "espeak-${v//+/-}-$i" "espeak-ng:$v" espeak-ng
  done
  for v in "${flite_voices[@]}"; do
    flite -voice "$v" -f "$tmp/text.txt" -o "$tmp/raw.wav"
    to16k "$tmp/raw.wav" "flite-$v-$i" "flite:$v" flite
  done
  for v in "${festival_voices[@]}"; do
    text2wave -eval "(voice_$v)" "$tmp/text.txt" -o "$tmp/raw.wav" 2>/dev/null
    to16k "$tmp/raw.wav" "festival-$v-$i" "festival:$v" festival
  done
done
echo "$(($(wc -l <"$manifest") - 1)) clips in $manifest" >&2
