#!/usr/bin/env python3
"""Whisper log-mel reference for the parity test of the Rust front end.

Computed independently of the engine: mel filters from librosa
(`librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)`, Slaney), STFT with
numpy (centred, reflect padding, periodic Hann), then Whisper's log10 /
clip-to-max-minus-8 / (x + 4) / 4 scaling. Writes `mel_<i>.npy` (80 x frames,
float32) for the first 3 s of each file in `files.txt`.

    python3 -m venv /tmp/melref && /tmp/melref/bin/pip install numpy librosa
    /tmp/melref/bin/python processor/scripts/whisper-mel-reference.py tests/fixtures
"""
import sys
import wave
from pathlib import Path

import librosa
import numpy as np

fixtures = Path(sys.argv[1])
out = fixtures / "reference" / "whisper"
files = (out / "files.txt").read_text().split()
filters = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)
window = np.hanning(401)[:-1]  # periodic
for i, name in enumerate(files):
    with wave.open(str(fixtures / name)) as w:
        assert w.getframerate() == 16000 and w.getsampwidth() == 2
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    audio = pcm[: 3 * 16000].astype(np.float32) / 32768.0
    padded = np.pad(audio.astype(np.float64), 200, mode="reflect")
    frames = len(audio) // 160
    stft = np.stack([np.fft.rfft(padded[t * 160 : t * 160 + 400] * window) for t in range(frames)], axis=1)
    power = np.abs(stft) ** 2
    log_spec = np.log10(np.maximum(filters @ power, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    np.save(out / f"mel_{i}.npy", ((log_spec + 4.0) / 4.0).astype(np.float32))
    print(f"mel_{i}.npy: {name} {log_spec.shape}")
