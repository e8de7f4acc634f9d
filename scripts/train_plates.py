#!/usr/bin/env python3
"""Reproduce the committed plate model ``redact/models/streetveil-fp-v1.onnx``.

Needs the ``train`` extra (pip install -e '.[train]') and the Debian fonts
``fonts-dejavu-core fonts-noto-cjk``. On the 2-core CPU: about an hour with the defaults
(see redact/models/MODEL_CARD.md); uses CUDA for training when ``--device cuda``.

    python scripts/train_plates.py --shared ../shared/data --out redact/models/streetveil-fp-v1.onnx \
        --report /tmp/plates-report.json
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=ROOT / "redact" / "models" / "streetveil-fp-v1.onnx")
    p.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "plates")
    p.add_argument("--cache-size", type=int, default=14_000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=20261126)
    p.add_argument("--threads", type=int, default=1, help="torch threads for training (1 = reproducible here)")
    p.add_argument("--workers", type=int, default=2, help="processes that build the feature cache")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--report", type=Path, default=None, help="also run the validation and write JSON here")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        import torch  # noqa: F401
    except ImportError:
        print("scripts/train_plates.py needs torch: pip install -e '.[train]'", file=sys.stderr)
        return 2
    from redact.errors import RedactError
    from redact.train.loop import TrainConfig
    from redact.train.pipeline import RunConfig, run

    try:
        cfg = RunConfig(shared=a.shared, out=a.out, cache_dir=a.cache_dir, cache_size=a.cache_size, seed=a.seed,
                        train=TrainConfig(epochs=a.epochs, batch=a.batch, lr=a.lr, seed=a.seed, threads=a.threads,
                                          device=a.device),
                        workers=a.workers, report=a.report)
        run(cfg)
    except (RedactError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
