#!/usr/bin/env python3
"""The evaluation matrix of docs/redaction.md: face and plate recall of the redaction engine's
default configuration (and variants) on the shared labelled sets, in both operating regimes.

    python scripts/eval_redact.py [--variant NAME=KEY=VALUE[,KEY=VALUE...]] [--only face|plate]
                                  [--threads 2] [--json OUT] [--record]

Rows (each ``redact.evaluate.run_eval``, the function behind ``streetveil eval``, at the
threshold in effect):

- faces-street-photos, split tune and holdout (``all`` = the two merged: counts add), as the
  small photos they are (1x + 2x passes) and "as 1080p frames" (``--as-large-frame 1.5``: the
  whole-frame pass sees them at 2/3, with the close-up second look, as a 1080p frame is seen);
- faces-group-photos, all;
- plates-dashcam-ro, the plate model's time split train and val (``all`` merged), native
  (1280x720 frames fit the 1280 input) and as 1080p frames.

``--variant fp32=precision=fp32`` adds a run with detector keys changed (DetectorSection
field names). ``--record`` writes the held-out rows (holdout, val, group photos) of the
default configuration and of every variant run with it to
``redact/models/measured-recall.json`` (see ``redact/recall.py``; the file then holds that
run's setups only), from where every Redactor with one of those detection setups puts them
into ``Redactor.info``, and so into ``streetveil redact``'s summary and the nightly run
record. The shipped file: ``--record --variant fp32=precision=fp32 --variant verified=plate_verify=on
--variant verified_all=plate_verify=on,plate_verify_bypass=1 --variant nozoom=plate_zoom_out=0
--variant nomerge=plate_merge=nms --variant nozoom_nms=plate_zoom_out=0,plate_merge=nms``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from capture.fsutil import atomic_write_text  # noqa: E402
from redact.config import DetectorSection, RedactConfig  # noqa: E402
from redact.evaluate import EvalResult, merge, run_eval  # noqa: E402

SHARED = Path(os.environ.get("STREETVEIL_SHARED_DATA", ROOT.parent / "shared" / "data"))
LARGE = 1.5  # a 1920 px frame at input_size 1280
# (class, set, splits merged into "all" (None: the set is one part), regimes)
MATRIX: tuple[tuple[str, str, tuple[str, ...] | None, tuple[float | None, ...]], ...] = (
    ("face", "faces-street-photos", ("tune", "holdout"), (None, LARGE)),
    ("face", "faces-group-photos", None, (None,)),
    ("plate", "plates-dashcam-ro", ("train", "val"), (None, LARGE)),
)


def regime_name(ratio: float | None) -> str:
    return "as loaded" if ratio is None else f"as 1080p frames (--as-large-frame {ratio:g})"


def variant_config(spec: str) -> tuple[str, RedactConfig]:
    name, _, rest = spec.partition("=")
    upd: dict[str, Any] = {}
    for kv in filter(None, rest.split(",")):
        k, _, v = kv.partition("=")
        try:
            upd[k] = json.loads(v)
        except ValueError:
            upd[k] = v
    det = DetectorSection.model_validate({**DetectorSection().model_dump(), **upd})
    return name, RedactConfig(detector=det)


def row(name: str, set_name: str, r: EvalResult, ratio: float | None, cfg: RedactConfig) -> dict[str, Any]:
    (th,) = r.by_threshold
    bands = {b["band"]: b for b in r.table(th)}
    t = r.by_threshold[th]
    return {
        "variant": name, "class": r.cls, "set": set_name, "split": r.split, "regime": regime_name(ratio),
        "as_large_frame": ratio, "images": r.images, "threshold": th,
        "labels": bands["all"]["labels"], "labels_ge16": bands[">=16"]["labels"],
        "recall_ge16": bands[">=16"]["recall"], "recall_all": bands["all"]["recall"],
        "recall_bands": {b: bands[b]["recall"] for b in ("<16", "16-32", "32-64", "64-128", ">=128")},
        "precision_ge16": bands[">=16"]["precision"], "precision_all": bands["all"]["precision"],
        "redacted_outside_labels": t.redacted_outside / t.images if t.images else 0.0,
        "fps": round(r.fps, 2), "detectors": r.info["detectors"] if r.info else None,
        # The variant's detector settings (before the regime's input_scale), so --record can
        # refuse rows of any other setup (plan, second look, ...), whatever the variant's name.
        "detector_config": cfg.detector.model_dump(mode="json"),
    }


def fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.2f} %" if pct else f"{v:.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", default=[], help="NAME=KEY=VALUE[,KEY=VALUE]")
    ap.add_argument("--only", choices=["face", "plate"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write every row as JSON")
    ap.add_argument("--record", action="store_true",
                    help="write the held-out rows of every setup run to redact/models/measured-recall.json")
    args = ap.parse_args()
    if args.record and args.only:  # before the matrix runs (it takes many minutes)
        ap.error("--record needs both classes (leave out --only)")
    # --record takes the rows named "default": a variant of that name would be recorded as the
    # default setup (its plan or second look are not in the rows, so nothing else catches it).
    if any(v.partition("=")[0] == "default" for v in args.variant):
        ap.error("--variant: the name 'default' is the default configuration's; choose another")

    variants = [("default", RedactConfig())] + [variant_config(v) for v in args.variant]
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for name, cfg in variants:
        for cls, set_name, parts, ratios in MATRIX:
            if args.only and cls != args.only:
                continue
            d = SHARED / set_name
            for ratio in ratios:
                got = [run_eval(d / "labels.json", d, cfg, cls=cls, split=p, threads=args.threads,  # type: ignore[arg-type]
                                frame_ratio=ratio) for p in (parts or ("all",))]
                for r in got + ([merge(got, "all")] if parts else []):
                    rows.append(row(name, set_name, r, ratio, cfg))
                    x = rows[-1]
                    print(f"{name:10} {cls:5} {set_name:20} {r.split:8} {x['regime'][:14]:14} recall>=16 "
                          f"{fmt(x['recall_ge16'])} all {fmt(x['recall_all'])} ({x['images']} images, "
                          f"{x['fps']} frames/s)", file=sys.stderr, flush=True)
    print(f"{len(rows)} rows in {time.perf_counter() - t0:.0f} s, threads {args.threads}, "
          f"load average {os.getloadavg()[0]:.2f}", file=sys.stderr)

    print("| variant | class | set (split) | regime | images | threshold | recall >=16 | <16 | 16-32 | 32-64 | "
          "64-128 | >=128 | all | precision >=16 | precision all | redacted outside labels | frames/s |")
    print("|" + "---|" * 17)
    for x in rows:
        b = x["recall_bands"]
        print(f"| {x['variant']} | {x['class']} | {x['set']} ({x['split']}) | {x['regime']} | {x['images']} | "
              f"{x['threshold']:g} | {fmt(x['recall_ge16'])} | {fmt(b['<16'])} | {fmt(b['16-32'])} | "
              f"{fmt(b['32-64'])} | {fmt(b['64-128'])} | {fmt(b['>=128'])} | {fmt(x['recall_all'])} | "
              f"{fmt(x['precision_ge16'])} | {fmt(x['precision_all'])} | "
              f"{fmt(x['redacted_outside_labels'], pct=True)} | {x['fps']} |")
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=2) + "\n")
    if args.record:
        from redact.engine import Redactor
        from redact.recall import RECALL_FILE, recorded_rows

        when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        command = "python scripts/eval_redact.py --record" + "".join(f" --variant {v}" for v in args.variant)
        rec: list[dict[str, Any]] = []
        for name, cfg in variants:
            info = Redactor(cfg, threads=1).info
            rec += recorded_rows([x for x in rows if x["variant"] == name], info, measured=when, command=command,
                                 detector_config=cfg.detector.model_dump(mode="json"))
        doc = {"about": "Recall measured by scripts/eval_redact.py --record for the default configuration and "
                        "the variants run with it; a Redactor reports the rows whose key is its own "
                        "detection_key (redact/recall.py).",
               "rows": rec}
        atomic_write_text(RECALL_FILE, json.dumps(doc, indent=2) + "\n")
        print(f"recorded {len(rec)} rows in {RECALL_FILE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
