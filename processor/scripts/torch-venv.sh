# Sourced by the reference and benchmark scripts: makes sure a cached venv
# with CPU PyTorch exists and sets `py` to its interpreter. The first run
# installs torch from PyPI: several GB (CUDA wheels included).
venv=${XDG_CACHE_HOME:-$HOME/.cache}/timbre/torch-venv
py=$venv/bin/python
if ! "$py" -c 'import torch, torchaudio, numpy, soundfile' 2>/dev/null; then
  echo "installing torch, torchaudio, numpy, soundfile into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet torch torchaudio numpy soundfile
fi
