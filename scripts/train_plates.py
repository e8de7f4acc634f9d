#!/usr/bin/env python3
"""Reproduce the committed plate models ``redact/models/streetveil-fp-v1.onnx`` and its int8 variant.

Needs the ``train`` extra (pip install -e '.[train]') and the Debian fonts
``fonts-dejavu-core fonts-noto-cjk``. On the 2-core CPU: about an hour with the defaults
(see redact/models/MODEL_CARD.md); uses CUDA for training when ``--device cuda``.

    python scripts/train_plates.py --shared ../shared/data --out redact/models/streetveil-fp-v1.onnx \
        --report /tmp/plates-report.json

``--int8`` builds ``streetveil-fp-v1-int8.onnx`` instead: the shipped int8 CenterFace copy as
backbone and face path, and the fp32 model's plate branch fine-tuned on the taps that int8
backbone computes (defaults then: --epochs 3 --lr 1e-3, cache .cache/plates-int8).

``--verifier`` builds ``streetveil-plate-verify-v4.onnx``, the second look at plate
candidates (redact/verify.py), from the packaged detector files (defaults then: --epochs 6
--lr 2e-3 --batch 128, harvest cache .cache/verify; about 30 min with --report).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def demo_sample_scenes() -> dict:
    """The demo session's 24 frames (pipeline/sample.py: its own plate renderer, Latin text in
    Pillow's font on flat cartoon cars, never used in training) with their plates and road
    sign: the verifier report's ``ood/demo_sample``."""
    import numpy as np

    from pipeline.sample import draw_frame
    from redact.train.data import Scene

    z = np.zeros((0, 4), np.float32)
    scenes = []
    for i in range(24):
        img, truth = draw_frame(i)
        scenes.append(Scene(img, np.array(truth.plates, np.float32).reshape(-1, 4), z,
                            np.array(truth.signs, np.float32).reshape(-1, 4), f"sample-{i:02d}"))
    return {"demo_sample": scenes}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--int8", action="store_true", help="build the int8 variant (see above)")
    p.add_argument("--verifier", action="store_true", help="build the plate verifier (see above)")
    p.add_argument("--scenes", type=int, default=3000, help="--verifier: training scenes to harvest")
    p.add_argument("--harvest-detector", type=Path, default=None,
                   help="--verifier: the detector file whose proposals it learns from (default: the packaged int8 file)")
    p.add_argument("--calibrate-only", action="store_true",
                   help="--verifier: keep the verifier file's weights, calibrate it for the packaged detector files")
    p.add_argument("--out", type=Path, default=None, help="default: redact/models/streetveil-fp-v1[-int8].onnx")
    p.add_argument("--cache-dir", type=Path, default=None, help="default: .cache/plates[-int8]")
    p.add_argument("--cache-size", type=int, default=14_000)
    p.add_argument("--epochs", type=int, default=None, help="default 4 (--int8: 3)")
    p.add_argument("--batch", type=int, default=None, help="default 16 (--verifier: 128)")
    p.add_argument("--lr", type=float, default=None, help="default 2e-3 (--int8: 1e-3)")
    p.add_argument("--seed", type=int, default=20261126)
    p.add_argument("--train-seed", type=int, default=None,
                   help="training order and torch seed only (default: --seed); the data, calibration and "
                        "validation scenes stay those of --seed, so runs differing only here measure retrain variance")
    p.add_argument("--threads", type=int, default=1, help="torch threads for training (1 = reproducible here)")
    p.add_argument("--workers", type=int, default=2, help="processes that build the feature cache")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--separable-fuse", type=int, default=0, metavar="RANK",
                   help="the plate neck's last 3x3 conv as depthwise (RANK filters per channel) + pointwise, "
                        "SVD-initialised (0: full conv)")
    p.add_argument("--head-blocks", type=int, default=0, metavar="N",
                   help="N inverted-residual blocks in the plate head (32->64->32 at stride 4), started at zero so "
                        "training begins from the starting branch (0: the shipped head)")
    p.add_argument("--angled-views", type=float, default=None, metavar="SHARE",
                   help="that share of training crops with their extra plates at strong angles (MODEL_CARD.md, "
                        "'Night, angle, blur'); default none")
    p.add_argument("--streaked-views", type=float, default=None, metavar="SHARE",
                   help="that share of training crops streaked by motion, drawn independently; default none "
                        "(--verifier: of harvest scenes; default 0.25, the shipped verifier's)")
    p.add_argument("--night-views", type=float, default=None, metavar="SHARE",
                   help="--verifier: that share of harvest scenes seen at night, drawn independently; default 0.25 "
                        "(the shipped verifier's; 0 with --streaked-views 0: v2's harvest)")
    p.add_argument("--streaked-signs", type=int, default=None, metavar="K",
                   help="with --streaked-views: K more hard negatives (signs, lettering, lights) in each streaked crop")
    p.add_argument("--report", type=Path, default=None, help="also run the validation and write JSON here")
    a = p.parse_args(argv)
    if a.verifier and a.int8:
        p.error("--verifier and --int8 build different files: run them one after the other")
    if not a.verifier and (a.calibrate_only or a.harvest_detector):
        p.error("--calibrate-only and --harvest-detector are --verifier options")
    if a.calibrate_only and a.harvest_detector:
        p.error("--calibrate-only harvests nothing: drop --harvest-detector")
    if a.verifier and (a.separable_fuse or a.head_blocks):
        p.error("--separable-fuse and --head-blocks are plate model options, not --verifier ones")
    if a.verifier and (a.angled_views is not None or a.streaked_signs is not None):
        p.error("--angled-views and --streaked-signs are plate model options, not --verifier ones")
    if not a.verifier and a.night_views is not None:
        p.error("--night-views is a --verifier option (the plate model's crops are at night in 20 %% already)")
    if a.calibrate_only and (a.night_views is not None or a.streaked_views is not None):
        p.error("--calibrate-only harvests nothing: drop --night-views / --streaked-views")
    if a.verifier and a.train_seed is not None:
        p.error("--train-seed is a plate model option, not a --verifier one")
    train_seed = a.seed if a.train_seed is None else a.train_seed
    suffix = "-int8" if a.int8 else ""
    out = a.out or ROOT / "redact" / "models" / f"streetveil-fp-v1{suffix}.onnx"
    cache_dir = a.cache_dir or ROOT / ".cache" / f"plates{suffix}"
    epochs = a.epochs or (3 if a.int8 else 4)
    lr = a.lr or (1e-3 if a.int8 else 2e-3)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        import torch  # noqa: F401
    except ImportError:
        print("scripts/train_plates.py needs torch: pip install -e '.[train]'", file=sys.stderr)
        return 2
    from redact.errors import RedactError
    from redact.train.loop import TrainConfig
    from redact.train.pipeline import RunConfig, run

    if a.verifier:
        from redact.train.pipeline import VerifierRunConfig, run_verifier
        from redact.train.verify import SHIPPED_VIEWS, HardViews
        from redact.train.verify import TrainConfig as VerifierTrain

        try:
            run_verifier(VerifierRunConfig(
                shared=a.shared, out=a.out or ROOT / "redact" / "models" / "streetveil-plate-verify-v4.onnx",
                cache_dir=a.cache_dir or ROOT / ".cache" / "verify", scenes=a.scenes, seed=a.seed,
                train=VerifierTrain(epochs=a.epochs or 6, batch=a.batch or 128, lr=a.lr or 2e-3, seed=a.seed,
                                    threads=a.threads),
                workers=a.workers, report=a.report, extra_scenes=demo_sample_scenes,
                harvest_detector=a.harvest_detector, calibrate_only=a.calibrate_only,
                views=HardViews(night=SHIPPED_VIEWS.night if a.night_views is None else a.night_views,
                                streaked=SHIPPED_VIEWS.streaked if a.streaked_views is None else a.streaked_views)))
        except (RedactError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    try:
        cfg = RunConfig(shared=a.shared, out=out, cache_dir=cache_dir, cache_size=a.cache_size, seed=a.seed,
                        train=TrainConfig(epochs=epochs, batch=a.batch or 16, lr=lr, seed=train_seed, threads=a.threads,
                                          device=a.device, separable_fuse=a.separable_fuse,
                                          head_blocks=a.head_blocks),
                        workers=a.workers, report=a.report, int8=a.int8,
                        angled_views=a.angled_views, streaked_views=a.streaked_views,
                        streaked_signs=a.streaked_signs)
        run(cfg)
    except (RedactError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
