#!/usr/bin/env python3
"""CPU cost of the combined face+plate model against CenterFace alone.

onnxruntime, fixed 1280x736 input (a held-out dashcam frame, padded), ``--threads``
intra-op threads (default 2), the sessions run alternately so machine load hits them alike.
CenterFace runs as the engine runs it: dynamic input shape, initializers removed from the
graph inputs (DETECTORS.md). When the plate verifier (redact/verify.py) is calibrated for
``--model``, a third line adds its cost: the model's proposals on that frame at the
calibrated proposal threshold, cut out and scored (one thread, as the engine runs it).

    python scripts/bench_plate_model.py [--model redact/models/streetveil-fp-v1.onnx] [--runs 30]
    python scripts/bench_plate_model.py --int8   # the default setup: int8 model vs int8 CenterFace
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
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--int8", action="store_true",
                   help="compare the int8 variant of --model with the shipped int8 CenterFace copy")
    a = p.parse_args(argv)
    import onnxruntime as ort

    from redact.boxes import decode_centernet, nms
    from redact.centernet import ort_session, sha256_file
    from redact.detectors import CENTERFACE_INT8, int8_path
    from redact.train import data
    from redact.train.graph import fixed_centerface
    from redact.verify import VERIFIER_MODEL, PlateVerifier

    def session(src: bytes | str) -> ort.InferenceSession:
        # The engine's own session options: among them no spinning thread pool, without which
        # the session that runs next shares the cores with the last one's spinning threads
        # (measured here: +19-24 % for the plate branch that way, +11-15 % without).
        return ort_session(src if isinstance(src, bytes) else Path(src), a.threads)

    if a.int8:
        a.model = int8_path(a.model)
    base = str(CENTERFACE_INT8) if a.int8 else fixed_centerface().SerializeToString()
    sessions = {"centerface": session(base), "streetveil": session(str(a.model))}
    _, val = data.time_split(data.load_dashcam(a.shared / "plates-dashcam-ro"))
    rgb = data.read_rgb(val[0].path)[:736, :1280]
    x = np.zeros((1, 3, 736, 1280), np.float32)
    x[0, :, : rgb.shape[0], : rgb.shape[1]] = rgb.transpose(2, 0, 1)
    verifier = PlateVerifier(VERIFIER_MODEL) if VERIFIER_MODEL.is_file() else None
    cal = verifier.calibration(sha256_file(a.model)) if verifier else None
    names = [o.name for o in sessions["streetveil"].get_outputs()]
    times: dict[str, list[float]] = {k: [] for k in [*sessions, *(["+verifier"] if cal else [])]}
    for s in sessions.values():
        s.run(None, {s.get_inputs()[0].name: x})
    n_boxes = 0
    for _ in range(a.runs):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            out = s.run(None, {s.get_inputs()[0].name: x})
            times[k].append(time.perf_counter() - t0)
            if k == "streetveil" and verifier is not None and cal is not None:
                o = dict(zip(names, out, strict=True))
                t1 = time.perf_counter()
                b, sc = decode_centernet(o["plate_heatmap"][0, 0], o["plate_scale"][0], o["plate_offset"][0],
                                         cal.proposal)
                b = b[nms(b, sc, 0.3)]
                verifier.scores(rgb, b)
                times["+verifier"].append(times[k][-1] + time.perf_counter() - t1)
                n_boxes = len(b)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    low = {k: min(v) * 1000 for k, v in times.items()}
    for k in times:
        print(f"{k:11s} median {med[k]:6.1f} ms  min {low[k]:6.1f} ms  ({1000 / med[k]:.1f} frames/s)")
    print(f"extra cost of the plate branch: median {100 * (med['streetveil'] / med['centerface'] - 1):+.1f} %, "
          f"min {100 * (low['streetveil'] / low['centerface'] - 1):+.1f} %")
    if cal is not None:
        print(f"with the verifier ({n_boxes} proposals at {cal.proposal:g}): median "
              f"{100 * (med['+verifier'] / med['centerface'] - 1):+.1f} %, "
              f"min {100 * (low['+verifier'] / low['centerface'] - 1):+.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
