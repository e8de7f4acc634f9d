#!/usr/bin/env python3
"""The plate model card's validation numbers for a model file as it is (no training), and the
calibration-scene comparison that chose the engine's zoom-out scale.

    python scripts/report_plates.py [--model redact/models/streetveil-fp-v1-int8.onnx]
        [--threshold T] [--zoom-out 1/3] [--merge union] [--verify | --verifier V.onnx] [--json OUT]
    python scripts/report_plates.py --choose-zoom 1/2,2/5,1/3,1/4 [--merge union]

The first form runs ``redact.train.pipeline.report`` (dashcam train/val, the synthetic
families and sign scenes on held-out frames, plate-free and out-of-distribution sets; about
8 min on 2 cores) at the model's calibrated threshold (its metadata) unless ``--threshold``,
with the engine's zoom-out pass at ``--zoom-out`` (0 = none), its union merge of overlapping
boxes with ``--merge union`` (the engine's default; ``nms``: the model as it is) and, with
``--verify``, the plate verifier at the thresholds calibrated for the packaged model (``--verifier``:
a candidate verifier file instead, at the thresholds it states for ``--model``). The demo
session's frames (``pipeline/sample.py``) are reported too, as ``ood/demo_sample``.
``--choose-zoom`` scores each scale (and none) on the calibration scenes, built on *training*
frames only, and prints recall >= 16 px and >= 128 px, false detections per scene, signs hit
and the coverage of plates >= 64 px (about 1 min per scale): the rule in MODEL_CARD.md takes
the highest recall >= 16 px, the cheaper scale of equal ones.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _scale(text: str) -> float:
    """``0.25`` or ``1/4``, in [0, 1)."""
    try:
        v = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a scale such as 1/3 or 0.25") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a zoom-out scale must be in [0, 1)")
    return v


def _print_stress(out: dict) -> None:
    """One line per condition: recall >= 16 px and 8-16 px over all families, the weakest
    family's recall >= 16 px, and false boxes per scene."""
    fams = next(iter(out["conditions"].values()))["families"]
    print(f"{'condition':20} {'>=16':>6} {'8-16':>6} {'weakest family >=16':>26} {'>=128':>6} {'false/img':>9}")
    for name, c in out["conditions"].items():
        d = c["all"]
        worst = min(fams, key=lambda f: c["families"][f]["recall_ge16"] or 0.0)
        big = d["bands"].get(">=128", {}).get("recall")
        print(f"{name:20} {d['recall_ge16']:6.3f} {d['recall_8_16']:6.3f} "
              f"{worst + ' ' + format(c['families'][worst]['recall_ge16'], '.3f'):>26} "
              f"{big if big is not None else '-':>6} {d['false_per_image']:9.2f}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "redact" / "models" / "streetveil-fp-v1-int8.onnx")
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--threshold", type=float, default=None, help="default: the model's streetveil.plate_threshold")
    p.add_argument("--zoom-out", type=_scale, default=0.0, help="the engine's zoom-out pass at this scale (0 = none)")
    p.add_argument("--merge", choices=("nms", "union"), default="nms",
                   help="how overlapping boxes merge (the engine's plate_merge; union is its default)")
    p.add_argument("--verify", action="store_true", help="with the packaged plate verifier")
    p.add_argument("--verifier", type=Path, default=None,
                   help="with this verifier file (its calibration for --model) instead of the packaged one")
    p.add_argument("--choose-zoom", default=None, metavar="S1,S2,...", help="compare scales on calibration scenes")
    p.add_argument("--stress", action="store_true",
                   help="instead: recall by capture condition (night, angle, motion blur, heavy JPEG) on held-out frames")
    p.add_argument("--per-cell", type=int, default=8, help="--stress: scenes per family, height band and condition")
    p.add_argument("--seed", type=int, default=20261126)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from redact.detectors import streetveil_plate_threshold
    from redact.train import data, evaluate, pipeline

    if not a.model.is_file():
        p.error(f"{a.model}: no such model file")
    if a.choose_zoom is not None:
        try:
            scales = [0.0, *(_scale(v) for v in a.choose_zoom.split(","))]
        except argparse.ArgumentTypeError as e:
            p.error(f"--choose-zoom: {e}")
        thr = a.threshold or streetveil_plate_threshold(a.model)
        train_f, _ = data.time_split(data.load_dashcam(a.shared / "plates-dashcam-ro"))
        scenes = pipeline.calibration_scenes(train_f, a.seed)
        plate = evaluate.PlateRunner(a.model, a.threads)
        rows = {}
        for s in scales:
            runner: evaluate.Runner = evaluate.EngineRunner(plate, s, a.merge == "union")
            d = evaluate.evaluate_scenes(runner, scenes, thr).as_dict()
            cov = d.get("coverage_ge64") or {}
            rows[f"{s:.3f}"] = d
            print(f"zoom-out {s:.3f}: recall>=16 {d['recall_ge16']}  >=128 "
                  f"{d['bands'].get('>=128', {}).get('recall')}  false/scene {d['false_per_image']}  "
                  f"signs {d.get('signs_detected')}/{d.get('signs')}  covered>=64px "
                  f"{cov.get('mean', '-')} (>=95%: {cov.get('share_ge95', '-')})", flush=True)
        out = {"threshold": thr, "scenes": len(scenes), "merge": a.merge, "scales": rows}
    else:
        verifier = None
        thr = a.threshold
        if a.verifier is not None:
            from redact.centernet import sha256_file
            from redact.errors import RedactError
            from redact.verify import PlateVerifier

            try:
                cal = PlateVerifier(a.verifier).calibration(sha256_file(a.model))
            except RedactError as e:
                p.error(str(e))
            if cal is None:
                p.error(f"{a.verifier}: states no thresholds for {a.model.name}")
            verifier = (a.verifier, cal)
            thr = thr or cal.proposal
        elif a.verify:
            from redact.config import DetectorSection
            from redact.detectors import plate_verification
            from redact.verify import VERIFIER_MODEL

            int8 = a.model.name.endswith("-int8.onnx")
            cal = plate_verification(DetectorSection(plate_verify="on", precision="int8" if int8 else "fp32"))
            assert cal is not None
            verifier = (VERIFIER_MODEL, cal)
            thr = thr or cal.proposal
        # The detector alone's threshold: behind a verifier only its boxes grow a box (engine).
        alone = a.threshold or streetveil_plate_threshold(a.model)
        thr = thr or alone
        if a.stress:
            runner = pipeline.make_runner(a.model, a.threads, verifier, a.zoom_out, a.merge == "union",
                                          grow_min=alone if verifier else 0.0)
            out = pipeline.stress_report(runner, a.shared, thr, a.seed, a.per_cell)
            _print_stress(out)
            if a.json:
                a.json.write_text(json.dumps(out, indent=1))
            return 0
        sys.path.insert(0, str(ROOT / "scripts"))
        from train_plates import demo_sample_scenes

        out = pipeline.report(a.model, a.shared, thr, a.seed, a.threads, verifier=verifier, zoom_out=a.zoom_out,
                              union=a.merge == "union", grow_min=alone if verifier else 0.0,
                              extra=demo_sample_scenes())
        for name, d in out.items():
            if isinstance(d, dict) and "images" in d:
                cov, small = d.get("coverage_ge64") or {}, d.get("coverage_8_16") or {}
                print(f"{name:32} recall>=16 {d.get('recall_ge16')}  8-16 {d.get('recall_8_16')}  "
                      f"false/img {d.get('false_per_image')}  signs {d.get('signs_detected', '-')}  "
                      f"covered>=64px {cov.get('mean', '-')} (>=95%: {cov.get('share_ge95', '-')})  "
                      f"8-16 covered>=80% {small.get('share_ge80', '-')} (chance {small.get('chance_ge80', '-')})")
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
