#!/usr/bin/env python3
"""CPU cost of the combined face+plate model against CenterFace alone.

onnxruntime, fixed 1280x736 input, ``--threads`` intra-op threads (default 2), the two
sessions run alternately so machine load hits both alike. CenterFace runs as the engine runs
it: dynamic input shape, initializers removed from the graph inputs (DETECTORS.md).

    python scripts/bench_plate_model.py [--model redact/models/streetveil-fp-v1.onnx] [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=ROOT / "redact" / "models" / "streetveil-fp-v1.onnx")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    import onnxruntime as ort

    from redact.train.graph import fixed_centerface

    def session(src: bytes | str) -> ort.InferenceSession:
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])

    sessions = {"centerface": session(fixed_centerface().SerializeToString()), "streetveil": session(str(a.model))}
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 736, 1280)).astype(np.float32)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, {"input": x})
    for _ in range(a.runs):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, {"input": x})
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    low = {k: min(v) * 1000 for k, v in times.items()}
    for k in sessions:
        print(f"{k:11s} median {med[k]:6.1f} ms  min {low[k]:6.1f} ms  ({1000 / med[k]:.1f} frames/s)")
    print(f"extra cost of the plate branch: median {100 * (med['streetveil'] / med['centerface'] - 1):+.1f} %, "
          f"min {100 * (low['streetveil'] / low['centerface'] - 1):+.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
