#!/usr/bin/env python3
"""Detection time per frame through the engine (plan, every pass, decode, NMS, close-ups),
for detector config variants, on real dashcam frames.

    python scripts/bench_detect.py [--frames 12] [--runs 3] [--threads 2]
                                   [--variant NAME=KEY=VALUE[,KEY=VALUE...] ...]

Frames: every 30th plates-dashcam-ro frame, as loaded (1280x720) and upscaled to 1920x1080
(the whole-frame pass then runs at 2/3 scale). Variants are DetectorSection fields, e.g.
``--variant nozoom=plate_zoom_out=0``; the default config always runs as "default". Variants
alternate frame by frame so that background load hits them alike; per variant and frame
size: median and best ms per frame, and the median relative to "default".
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("STREETVEIL_SHARED_DATA", ROOT.parent / "shared" / "data"))  # as bench_redact.py


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    import json

    name, _, rest = text.partition("=")
    if not name or not rest:
        raise SystemExit(f"--variant {text!r}: expected NAME=KEY=VALUE[,KEY=VALUE...]")
    kw: dict[str, Any] = {}
    for part in rest.split(","):
        k, _, v = part.partition("=")
        try:
            kw[k] = json.loads(v)
        except ValueError:
            kw[k] = v
    return name, kw


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder")
    args = ap.parse_args()

    import cv2

    from redact.config import DetectorSection
    from redact.detectors import build_detectors
    from redact.imageio import decode_image

    folder = args.shared / "plates-dashcam-ro"
    names = sorted(p for p in folder.rglob("*.jpg"))[::30][: args.frames]
    if not names:
        raise SystemExit(f"{folder}: no frames (set STREETVEIL_SHARED_DATA)")
    loaded = [decode_image(p.read_bytes(), name=p.name).rgb for p in names]
    sizes = {"1280x720": loaded,
             "1920x1080": [cv2.resize(im, (1920, 1080), interpolation=cv2.INTER_LINEAR) for im in loaded]}
    variants = dict([("default", {}), *(parse_variant(v) for v in args.variant)])
    dets = {n: build_detectors(DetectorSection(**kw), threads=args.threads) for n, kw in variants.items()}
    times: dict[tuple[str, str], list[float]] = {(n, s): [] for n in variants for s in sizes}
    for size, images in sizes.items():
        for n in variants:  # warm-up: the first call allocates the runtime's buffers
            for d in dets[n]:
                d(images[0])
        for _ in range(args.runs):
            for im in images:
                for n in variants:
                    t0 = time.perf_counter()
                    for d in dets[n]:
                        d(im)
                    times[(n, size)].append((time.perf_counter() - t0) * 1000)
    print(f"{len(names)} frames x {args.runs} runs, {args.threads} threads")
    for size in sizes:
        base = statistics.median(times[("default", size)])
        for n in variants:
            t = times[(n, size)]
            med = statistics.median(t)
            print(f"{size:10} {n:12} median {med:7.1f} ms  best {min(t):7.1f} ms  {med / base - 1:+6.1%} vs default")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
