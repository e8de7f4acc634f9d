#!/usr/bin/env python3
"""Check and time the torch runtime on a GPU against onnxruntime on the CPU.

    python scripts/check_gpu.py [--device cuda] [--frames 48] [--batch-frames 96]
                                [--nightly-frames 96] [--json result.json]

1. Agreement. On real images (faces-group-photos, faces-street-photos, plates-dashcam-ro and
   the 4K images-exif frames at 1080p) the torch runtime on ``--device`` must find the same
   confident boxes as onnxruntime fp32 on the CPU, within 0.5 px and 1e-3 in score, for both
   backends: ``centerface`` (faces) and ``streetveil`` (faces + plates, with the engine's
   default plate passes: zoom-out and union merge), and for ``streetveil`` with the plate
   verifier on (``plate_verify = "on"``: the verifier itself runs on onnxruntime CPU in both,
   on the close-ups of each runtime's proposals). Boxes scoring within 0.05 of the threshold
   may flip either way and are left out, as in tests/test_detect.py.
2. Speed. The same Redactor steps ``streetveil redact`` runs per image (decode, detect,
   redact, encode) over ``--frames`` 1080p JPEGs (bench_redact.py's frames), in one process:
   torch on the device, onnxruntime fp32 and the default precision on all CPU cores; frames/s
   after one warm-up frame, and the detection step alone.
3. Batch. ``streetveil redact``'s batch loop (``pipeline.redact_files``) over
   ``--batch-frames`` frames (as many as the data gives) with 1, 2, ``GPU_IMAGES_AT_ONCE``
   (what it uses) and twice that many images in flight sharing the device (threads sharing
   one Redactor) and, for comparison, onnxruntime with the CPU layout it picks (one
   single-threaded image per core): frames/s, and whether every image's detections equal
   those of one image at a time.
4. Nightly (``--nightly-frames N``, 0 skips it). The nightly job (``pipeline.job.run_job``)
   on its own LocalCluster of the default shape (one worker per two cores) over a synthetic
   1920x1080 session of N frames (``pipeline.sample``), onnxruntime on the CPU (the default)
   against the torch runtime on ``--device``: two warm-up runs on a 16-frame session, then
   ``--nightly-runs`` timed runs from an empty publish folder (wall s each; the first timed
   run on the device has been slow). The rows give the faces and plates published: the
   int8 CPU default and the fp32 GPU model do not find the same boxes.

Exit 1 when any box disagrees, the batch loop's detections depend on the images in flight, or
a frame fails. Needs the ``gpu`` extra (torch) and a CUDA device; on a CPU-only machine
``--device cpu`` runs the same comparison (slowly).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from redact.boxes import iou_matrix  # noqa: E402
from redact.config import DetectorSection, RedactConfig  # noqa: E402
from redact.detectors import build_detectors  # noqa: E402
from redact.engine import Redactor  # noqa: E402
from redact.types import Detections  # noqa: E402

SHARED = Path(os.environ.get("STREETVEIL_SHARED_DATA", ROOT.parent / "shared" / "data"))
MARGIN = 0.05  # scores this close to the threshold may flip between runtimes


def _rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path))
    if img is None:
        raise SystemExit(f"error: {path}: cannot read image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def agreement_images() -> list[tuple[str, np.ndarray]]:
    out = []
    for name, limit in (("faces-group-photos", 6), ("faces-street-photos", 20)):
        labels = json.loads((SHARED / name / "labels.json").read_text())
        out += [(f"{name}/{k}", _rgb(SHARED / name / k)) for k in sorted(labels)[:limit]]
    dash = sorted((SHARED / "plates-dashcam-ro" / "images").rglob("*.jpg"))
    out += [(str(p.relative_to(SHARED)), _rgb(p)) for p in dash[:: max(1, len(dash) // 12)][:12]]
    for p in sorted((SHARED / "images-exif").glob("DSC*.JPG")):
        out.append(
            (
                f"{p.relative_to(SHARED)}@1080p",
                cv2.resize(_rgb(p), (1920, 1080), interpolation=cv2.INTER_AREA),
            )
        )
    return out


def compare(
    a: Detections, b: Detections, threshold: dict[str, float]
) -> tuple[int, float, float, int]:
    """(boxes compared, max coordinate difference, max score difference, confident boxes
    without a partner) for detections of the same image from two runtimes."""
    n, dbox, dscore, missing = 0, 0.0, 0.0, 0
    for cls, thr in threshold.items():
        for x, y, count in ((a.of(cls), b.of(cls), True), (b.of(cls), a.of(cls), False)):
            # Every confident box of one runtime needs a partner among the other's detections.
            sx = x.select(x.score > thr + MARGIN)
            if not len(sx):
                continue
            if not len(y):
                missing += len(sx)
                continue
            iou = iou_matrix(sx.xyxy, y.xyxy)
            j = iou.argmax(axis=1)
            ok = iou[np.arange(len(sx)), j] > 0.5
            missing += int((~ok).sum())
            if count and ok.any():
                dbox = max(dbox, float(np.abs(sx.xyxy[ok] - y.xyxy[j[ok]]).max()))
                dscore = max(dscore, float(np.abs(sx.score[ok] - y.score[j[ok]]).max()))
                n += int(ok.sum())
    return n, dbox, dscore, missing


def agreement(
    images: list[tuple[str, np.ndarray]],
    device: str,
    threads: int,
    backends: tuple[str, ...] = ("centerface", "streetveil", "streetveil verified"),
    tf32: bool = False,
) -> dict[str, Any]:
    label = " (tf32)" if tf32 else ""
    res: dict[str, Any] = {}
    for backend in backends:
        base: dict[str, Any] = {"backend": backend.split()[0], "face_threshold": 0.3}
        if backend.endswith(" verified"):
            base["plate_verify"] = "on"
        ref = build_detectors(
            DetectorSection.model_validate({**base, "precision": "fp32"}), threads
        )
        dut = build_detectors(
            DetectorSection.model_validate({**base, "runtime": "torch", "device": device}), threads
        )
        _tf32(tf32)
        thr = {c: float(x.thresholds[c]) for x in ref for c in x.classes}
        tot = {
            "images": len(images),
            "boxes": 0,
            "max_box_px": 0.0,
            "max_score": 0.0,
            "unmatched": 0,
        }
        for _, img in images:
            a = Detections.concat([d(img) for d in ref])
            b = Detections.concat([d(img) for d in dut])
            n, db, ds, miss = compare(a, b, thr)
            tot["boxes"] += n
            tot["max_box_px"] = round(max(tot["max_box_px"], db), 4)
            tot["max_score"] = round(max(tot["max_score"], ds), 6)
            tot["unmatched"] += miss
        tot["ok"] = (
            tot["boxes"] > 0
            and tot["max_box_px"] <= 0.5
            and tot["max_score"] <= 1e-3
            and not tot["unmatched"]
        )
        res[backend + label] = tot
        print(f"agreement {backend}{label}: {tot}", flush=True)
    return res


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def _tf32(on: bool) -> None:
    """Turn cuDNN's TF32 back on (the engine turns it off when it builds a CUDA net)."""
    if on:
        import torch

        torch.backends.cudnn.allow_tf32 = True


def speed(
    frames: list[Path], setups: dict[str, dict[str, Any]], threads: int, tf32: bool = False
) -> dict[str, Any]:
    data = [(p.name, p.read_bytes()) for p in frames]
    out: dict[str, Any] = {}
    for label, det in setups.items():
        t0 = time.perf_counter()
        r = Redactor(RedactConfig(detector=DetectorSection.model_validate(det)), threads=threads)
        load = time.perf_counter() - t0
        _tf32(tf32)
        r.redact_bytes(data[0][1], name=data[0][0])  # warm-up (CUDA context, cuDNN plans)
        t_det = 0.0
        t0 = time.perf_counter()
        for name, raw in data:
            img = r.decode(raw, name=name)
            t1 = time.perf_counter()
            dets = r.detect(img)
            t_det += time.perf_counter() - t1
            r.render(img, dets)
        wall = time.perf_counter() - t0
        row = {
            "frames": len(data),
            "load_s": round(load, 2),
            "frames_per_s": round(len(data) / wall, 2),
            "detect_ms": round(1000 * t_det / len(data), 1),
            "precision": r.info["precision"],
            "runtime": r.info["runtime"],
            # The plate passes in effect (zoom-out, merge, verifier), as the run record says.
            "plate": {k: d[k]["plate"] for d in r.info["detectors"]
                      for k in ("zoom_out", "merge", "verify") if "plate" in d.get(k, {})},
        }
        row["tf32"] = tf32
        out[label] = row
        print(f"speed {label}: {row}", flush=True)
    return out


def batch(src: Path, setups: dict[str, tuple[dict[str, Any], int, tuple[int, ...]]]) -> dict[str, Any]:
    """frames/s of redact_files per (setup, images in flight); ``same``: detections equal to
    the setup's first row, image by image."""
    from pipeline.redact_files import collect_inputs, redact_files

    jobs = collect_inputs([src])
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (det, per_inference, counts) in setups.items():
            r = Redactor(RedactConfig(detector=DetectorSection.model_validate(det)), threads=per_inference)
            redact_files(r, jobs[:4], Path(tmp) / "warm", workers=max(counts))  # warm-up
            first = None
            for k in counts:
                summary, records = redact_files(r, jobs, Path(tmp) / f"{label}-{k}", workers=k)
                dets = [rec["detections"] for rec in records]
                first = dets if first is None else first
                row = {"images": summary.images, "failed": summary.failed, "frames_per_s": round(summary.fps, 2),
                       "same": dets == first}
                out[f"{label} x{k}"] = row
                print(f"batch {label} x{k}: {row}", flush=True)
    return out


def nightly(device: str, frames: int, runs: int) -> dict[str, Any]:
    """Wall seconds of the nightly job per run, CPU default against torch on ``device``."""
    from pipeline.config import NightlyConfig, load_config
    from pipeline.job import DaskExecutor, JobOptions, dask_client, default_cluster_shape, run_job
    from pipeline.sample import make_sample_session

    cfg0 = load_config(ROOT / "configs" / "nightly.toml", NightlyConfig, kind="nightly")

    def with_detector(**kw: Any) -> Any:
        det = cfg0.redact.detector.model_copy(update=kw)
        return cfg0.model_copy(update={"redact": cfg0.redact.model_copy(update={"detector": det})})

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        session = make_sample_session(tmp / "s", frames=frames, width=1920, height=1080)
        warm = make_sample_session(tmp / "w", frames=16, session_id="warmup", width=1920, height=1080)
        n, t = default_cluster_shape(0, 0)
        k = 0
        for label, cfg in (("onnxruntime cpu (default)", with_detector()),
                           (f"torch {device}", with_detector(runtime="torch", device=device))):
            with dask_client(None, workers=n, threads=t) as client:
                client.wait_for_workers(n)
                walls = []
                for i in range(2 + runs):
                    k += 1
                    opts = JobOptions(sessions=(str(warm if i < 2 else session),), out=str(tmp / f"out{k}"),
                                      config=cfg, progress=False)
                    t0 = time.perf_counter()
                    summary = run_job(opts, DaskExecutor(client, retries=0))
                    if i >= 2:
                        walls.append(round(time.perf_counter() - t0, 2))
                s0 = summary.sessions[0]
                row = {"workers": n, "threads": t, "frames": frames, "wall_s": walls,
                       "frames_per_s_median": round(frames / statistics.median(walls), 2),
                       "published": s0.published, "failed": s0.failed, "faces": s0.faces, "plates": s0.plates}
                out[label] = row
                print(f"nightly {label}: {row}", flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--device", default="cuda")
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--batch-frames", type=int, default=96, help="frames for the batch loop")
    p.add_argument("--nightly-frames", type=int, default=96, help="frames of the nightly job's session (0: skip)")
    p.add_argument("--nightly-runs", type=int, default=4, choices=range(1, 21), metavar="1..20")
    p.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for onnxruntime"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = p.parse_args()
    import torch
    from bench_redact import make_frames

    info: dict[str, Any] = {
        "device": a.device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": _ort_version(),
        "cpus": os.cpu_count(),
        "threads": a.threads,
        "argv": sys.argv[1:],
    }
    if a.device.startswith("cuda"):
        if not torch.cuda.is_available():
            print("error: --device cuda but torch sees no CUDA device", file=sys.stderr)
            return 2
        info["gpu"] = torch.cuda.get_device_name(0)
    print(json.dumps(info), flush=True)
    images = agreement_images()  # read once: the TF32 comparison below reuses them
    res: dict[str, Any] = {"info": info, "agreement": agreement(images, a.device, a.threads)}
    with tempfile.TemporaryDirectory() as tmp:
        frames = make_frames(Path(tmp), a.frames)
        setups = {
            f"streetveil torch {a.device}": {"runtime": "torch", "device": a.device},
            f"streetveil verified torch {a.device}": {
                "runtime": "torch",
                "device": a.device,
                "plate_verify": "on",
            },
            "streetveil onnxruntime fp32 cpu": {"precision": "fp32"},
            "streetveil onnxruntime default cpu": {},
            f"centerface torch {a.device}": {
                "backend": "centerface",
                "runtime": "torch",
                "device": a.device,
            },
        }
        res["speed"] = speed(frames, setups, a.threads)
        from pipeline.redact_files import GPU_IMAGES_AT_ONCE

        at_once = GPU_IMAGES_AT_ONCE
        res["batch"] = batch(frames[0].parent if a.batch_frames <= a.frames else
                             make_frames(Path(tmp) / "batch", a.batch_frames)[0].parent, {
            f"streetveil torch {a.device}": (setups[f"streetveil torch {a.device}"], a.threads,
                                             (1, 2, at_once, 2 * at_once)),
            f"streetveil verified torch {a.device}": (setups[f"streetveil verified torch {a.device}"], a.threads,
                                                      (1, at_once)),
            "streetveil onnxruntime default cpu": ({}, 1, (a.threads,)),
        })
        if a.device.startswith("cuda"):
            # What the engine's TF32-off costs and saves: the same runs with cuDNN's default
            # TF32 turned back on after each build. Informational; not part of the verdict.
            res["agreement_tf32"] = agreement(images, a.device, a.threads, ("streetveil",), tf32=True)
            res["speed"].update(
                speed(
                    frames,
                    {f"streetveil torch {a.device} tf32": setups[f"streetveil torch {a.device}"]},
                    a.threads,
                    tf32=True,
                )
            )
    if a.nightly_frames:
        res["nightly"] = nightly(a.device, a.nightly_frames, a.nightly_runs)
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    ok = all(v["ok"] for v in res["agreement"].values())
    print("agreement:", "OK" if ok else "FAILED")
    same = all(v["same"] and not v["failed"] for v in res["batch"].values())
    print("batch detections independent of images in flight:", "OK" if same else "FAILED")
    nightly_ok = all(not v["failed"] for v in res.get("nightly", {}).values())
    if not nightly_ok:
        print("nightly: some frames FAILED")
    ok = ok and same and nightly_ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
