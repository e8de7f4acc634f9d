#!/usr/bin/env python3
"""Reproduce the committed plate model ``redact/models/streetveil-fp-v1.onnx`` (v1.1).

Needs the ``train`` extra (pip install -e '.[train]') and the Debian fonts
``fonts-dejavu-core fonts-noto-cjk``. Stages (redact/train/pipeline.py): v1 and v2 feature
caches, round 1, mining of false detections on plate-free training videos, fine-tuning,
threshold calibration on training frames, export. On the 2-core CPU with the defaults (2
torch threads): under 2 hours, see redact/models/MODEL_CARD.md; ``--device cuda`` trains on
a GPU.

    python scripts/train_plates.py --shared ../shared/data --out redact/models/streetveil-fp-v1.onnx \
        --report /tmp/plates-report.json
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=ROOT / "redact" / "models" / "streetveil-fp-v1.onnx")
    p.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "plates")
    p.add_argument("--cache-size", type=int, default=14_000, help="v1 crops (dashcam frames)")
    p.add_argument("--v2-size", type=int, default=10_000, help="v2 crops (several cameras, more clutter)")
    p.add_argument("--mined-size", type=int, default=3_000, help="crops centred on mined false detections")
    p.add_argument("--steps", type=int, default=3_000, help="round-1 optimiser steps")
    p.add_argument("--finetune-steps", type=int, default=1_000, help="fine-tuning steps (0: no mining round)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--finetune-lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=20261126)
    p.add_argument("--threads", type=int, default=2, help="torch threads (same count = same weights)")
    p.add_argument("--workers", type=int, default=2, help="processes that build the feature caches")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--report", type=Path, default=None, help="also run the validation and write JSON here")
    p.add_argument("--evaluate", type=Path, default=None, metavar="MODEL",
                   help="only run the validation of an existing model (needs --report)")
    p.add_argument("--threshold", type=float, default=None, help="with --evaluate: instead of the model's own")
    p.add_argument("--extra-scales", type=float, nargs="*", default=[],
                   help="with --evaluate: also run the image at these scales (e.g. 0.5) and merge by NMS")
    a = p.parse_args(argv)
    if a.evaluate is not None:
        return _evaluate(a)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # Idle OpenMP threads sleep instead of spinning: on a shared CPU spinning slowed steps 2x.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch  # noqa: F401
    except ImportError:
        print("scripts/train_plates.py needs torch: pip install -e '.[train]'", file=sys.stderr)
        return 2
    from redact.errors import RedactError
    from redact.train.loop import TrainConfig
    from redact.train.pipeline import RunConfig, run

    try:
        common = {"batch": a.batch, "seed": a.seed, "threads": a.threads, "device": a.device, "window": (12, 8)}
        cfg = RunConfig(shared=a.shared, out=a.out, cache_dir=a.cache_dir, cache_size=a.cache_size,
                        v2_size=a.v2_size, mined_size=a.mined_size, seed=a.seed,
                        train=TrainConfig(lr=a.lr, steps=a.steps, **common),
                        finetune=TrainConfig(lr=a.finetune_lr, steps=a.finetune_steps, warmup=50, **common)
                        if a.finetune_steps > 0 else None,
                        workers=a.workers, report=a.report)
        run(cfg)
    except (RedactError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _evaluate(a: argparse.Namespace) -> int:
    import json

    import onnxruntime as ort

    from redact.train.pipeline import report

    if a.report is None:
        print("error: --evaluate needs --report FILE", file=sys.stderr)
        return 2
    if not a.evaluate.is_file():
        print(f"error: {a.evaluate}: no such model", file=sys.stderr)
        return 2
    meta = ort.InferenceSession(str(a.evaluate), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    thr = a.threshold if a.threshold is not None else float(meta["streetveil.plate_threshold"])
    res = report(a.evaluate, a.shared, thr, a.seed, a.workers, tuple(a.extra_scales))
    a.report.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
