#!/usr/bin/env python3
"""Time the plate branch's training steps (scripts/train_plates.py's loop) where they run.

    python scripts/bench_train.py [--device cuda] [--cache-size 4000] [--workers N] [--threads T]

Builds (or reuses, under ``--cache-dir``) a feature cache of ``--cache-size`` training crops
from the plates-dashcam-ro training frames, then trains one epoch from CenterFace with the cache
read from its memory maps step by step and, on a GPU, once more with it copied into the GPU's
memory first (``TrainConfig.resident``, the default there when it fits). Prints seconds per
step of 16 crops. Needs the ``train`` extra (torch) and the generator's fonts.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--cache-size", type=int, default=4000)
    p.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "bench-train")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="cache-building processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads (CPU training)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        import torch
    except ImportError:
        print("scripts/bench_train.py needs torch: pip install -e '.[train]'", file=sys.stderr)
        return 2
    from redact.train import data, graph, loop

    if a.device != "cpu" and not torch.cuda.is_available():
        print(f"--device {a.device}: no CUDA device here", file=sys.stderr)
        return 2
    train_f, _ = data.time_split(data.load_dashcam(a.shared / "plates-dashcam-ro"))
    spec = loop.CacheSpec(a.cache_size, 20261126)
    t0 = time.time()
    cache = loop.build_cache(a.cache_dir, train_f, spec, workers=a.workers)
    print(f"feature cache: {a.cache_size} crops from {len(train_f)} frames, {time.time() - t0:.1f} s "
          f"({a.workers} processes; reused if unchanged)")
    steps = a.cache_size // 16
    modes = [False, True] if a.device != "cpu" else [False]
    for resident in modes:
        cfg = loop.TrainConfig(epochs=1, batch=16, seed=20261126, threads=a.threads, device=a.device,
                               resident=resident)
        t0 = time.time()
        loop.train(cache, graph.centerface_path(), cfg, log_every=10**9)
        dt = time.time() - t0
        where = "cache in GPU memory" if resident else "cache read from the memory maps"
        print(f"{a.device}, {where}: {steps} steps in {dt:.1f} s = {dt / steps:.4f} s per step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
