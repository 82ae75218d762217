"""onnxruntime Silero VAD reference outputs for the parity test.

Usage: silero_reference.py SILERO_ONNX FIXTURES

Runs the published ONNX model the way the silero-vad package's wrapper
does (chunks of 512 samples at 16 kHz or 256 at 8 kHz, each with the
previous chunk's last 64 or 32 samples in front, the last chunk
zero-filled, the LSTM state carried from chunk to chunk) on each file of
FIXTURES/reference/silero/files.txt at its own rate, and writes
FIXTURES/reference/silero/probs_<i>.npy (one float32 per chunk).
"""
import sys

import numpy as np
import onnxruntime as ort
import soundfile as sf

model, fixtures = sys.argv[1], sys.argv[2]
opts = ort.SessionOptions()
opts.inter_op_num_threads = 1
opts.intra_op_num_threads = 1
session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])

with open(f"{fixtures}/reference/silero/files.txt") as f:
    files = [line.strip() for line in f if line.strip()]
for i, name in enumerate(files):
    x, rate = sf.read(f"{fixtures}/{name}", dtype="float32")
    chunk, context = (512, 64) if rate == 16000 else (256, 32)
    assert rate in (16000, 8000), f"{name}: {rate} Hz"
    state = np.zeros((2, 1, 128), dtype=np.float32)
    before = np.zeros((1, context), dtype=np.float32)
    probs = []
    for start in range(0, len(x), chunk):
        part = np.zeros((1, chunk), dtype=np.float32)
        piece = x[start:start + chunk]
        part[0, :len(piece)] = piece
        inp = np.concatenate([before, part], axis=1)
        out, state = session.run(None, {"input": inp, "state": state, "sr": np.array(rate, dtype=np.int64)})
        probs.append(out[0, 0])
        before = inp[:, -context:]
    np.save(f"{fixtures}/reference/silero/probs_{i}.npy", np.array(probs, dtype=np.float32))
    print(f"{name}: {len(probs)} chunks, {np.mean(np.array(probs) >= 0.5):.2f} speech")
