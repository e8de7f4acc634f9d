"""End to end: data split → feature cache → training → threshold calibration → ONNX export →
validation report. ``scripts/train_plates.py`` is the command line for it."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from redact.train import data, evaluate, export, graph, loop
from redact.train.fonts import check_fonts
from redact.train.render import PLATE_FAMILIES

log = logging.getLogger(__name__)
THRESHOLD_GRID = tuple(round(t, 2) for t in np.arange(0.1, 0.81, 0.05))
# The default threshold maximises F2 (recall weighted 4x precision: a missed plate is a privacy
# failure, a false box a small blur) over plates >= 16 px and every false detection, signs
# included, on calibration scenes built on training frames.
CALIB_BETA = 2.0
# Seed streams: training samples use [seed, i]; calibration and validation scenes their own.
CALIB_STREAM, VAL_STREAM = 1_000_003, 2_000_003
# Mining: detections of the round-1 model at this score on plate-free training frames.
MINE_THRESHOLD = 0.15
# The default threshold must also keep false detections on plate-free frames of other cameras
# (calibration: training part of the videos) under this rate.
MAX_FALSE_PER_FRAME = 0.25


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Defaults reproduce the committed model. Stages: v1 crops (``cache_size``) and v2 crops
    (``v2_size``: other cameras, more clutter, larger plates) → round 1 (``train``) → mining of
    the round-1 model's false detections on the plate-free training videos (``mined_size``
    crops centred on them) → fine-tuning (``finetune``) on all three caches, hard chunks of
    round 1 drawn more often."""

    shared: Path
    out: Path
    cache_dir: Path
    cache_size: int = 14_000
    v2_size: int = 10_000
    mined_size: int = 3_000
    seed: int = 20261126
    train: loop.TrainConfig = field(default_factory=loop.TrainConfig)
    finetune: loop.TrainConfig | None = None
    mix: tuple[float, float] = (0.4, 0.6)
    finetune_mix: tuple[float, float, float] = (0.3, 0.4, 0.3)
    workers: int = 1
    eval_threads: int = 2
    report: Path | None = None

    def __post_init__(self) -> None:
        if not (self.shared / "plates-dashcam-ro" / "labels.json").is_file():
            raise ValueError(f"{self.shared}: plates-dashcam-ro/labels.json not found")
        if not (self.shared / "video-gopro").is_dir():
            raise ValueError(f"{self.shared}: video-gopro/ not found (plate-free backgrounds)")


def calibration_scenes(frames: list[data.Frame], seed: int, per_cell: int = 4) -> list[data.Scene]:
    """Synthetic scenes on *training* frames (fresh plates, own seed stream): the threshold is
    chosen here, never on validation."""
    rng = np.random.default_rng([seed, CALIB_STREAM])
    scenes = []
    for fam in PLATE_FAMILIES:
        for band in data.HEIGHT_BANDS[1:]:
            for _ in range(per_cell):
                fr = frames[int(rng.integers(len(frames)))]
                scenes.append(data.synthetic_scene(fr, data.read_rgb(fr.path), fam, band, rng))
    for _ in range(len(PLATE_FAMILIES) * 4):
        fr = frames[int(rng.integers(len(frames)))]
        scenes.append(data.sign_scene(fr, data.read_rgb(fr.path), rng))
    return scenes


def calibrate(runner: evaluate.PlateRunner, scenes: list[data.Scene], free: list[data.Scene] | None = None
              ) -> tuple[float, dict[str, Any]]:
    """The threshold that maximises F2 on ``scenes`` (recall >= 16 px, all false detections)
    among those keeping false detections on the plate-free ``free`` frames (other cameras)
    at or under ``MAX_FALSE_PER_FRAME``; the table of every grid threshold."""
    rows = evaluate.scene_scores(runner, scenes)
    free_rows = evaluate.scene_scores(runner, free or [])
    table = {}
    best, best_f = THRESHOLD_GRID[-1], -1.0
    b2 = CALIB_BETA ** 2
    for t in THRESHOLD_GRID:
        tally = evaluate.tally_at(rows, t)
        d = tally.as_dict()
        r, p = d["recall_ge16"] or 0.0, d["precision"] or 0.0
        f = (1 + b2) * p * r / (b2 * p + r) if p + r > 0 else 0.0
        free_fp = evaluate.tally_at(free_rows, t).as_dict()["false_per_image"] if free_rows else 0.0
        table[f"{t:.2f}"] = {"recall_ge16": d["recall_ge16"], "recall_8_16": d["recall_8_16"], "precision": d["precision"],
                             "f2": round(f, 4), "false_per_image": d["false_per_image"], "signs_detected": tally.signs_hit,
                             "plate_free_false_per_image": free_fp}
        if f > best_f and free_fp <= MAX_FALSE_PER_FRAME:
            best, best_f = t, f
    return best, table


def video_scenes(bgs: list[data.Background], images: list[np.ndarray]) -> list[data.Scene]:
    """Plate-free frames as scenes: every detection on them is false."""
    z = np.zeros((0, 4), np.float32)
    return [data.Scene(img, z, z, z, b.key) for b, img in zip(bgs, images, strict=True)]


def mine(runner: evaluate.PlateRunner, bgs: list[data.Background], images: list[np.ndarray],
         threshold: float = MINE_THRESHOLD) -> list[tuple[int, np.ndarray]]:
    """(background index, box) of every detection on plate-free backgrounds, at full size and
    at half size (boxes in the frame's pixels): the hard negatives of the next round."""
    out: list[tuple[int, np.ndarray]] = []
    for i, (b, img) in enumerate(zip(bgs, images, strict=True)):
        if len(b.boxes):
            continue  # frames with labelled plates may hold unlabelled ones: never mined
        for mw in (None, img.shape[1] // 2):
            dets, _ = runner.detect(img, threshold, max_width=mw)
            out += [(i, d.astype(np.float32)) for d in dets]
    return out


def validation_scenes(frames: list[data.Frame], seed: int, per_cell: int = 10,
                      families: tuple[str, ...] = PLATE_FAMILIES) -> dict[str, list[data.Scene]]:
    """Per family: synthetic plates in every height band on held-out frames; plus sign scenes."""
    rng = np.random.default_rng([seed, VAL_STREAM])
    images = {f.key: data.read_rgb(f.path) for f in frames}
    out: dict[str, list[data.Scene]] = {}
    k = 0
    for fam in families:
        out[fam] = []
        for band in data.HEIGHT_BANDS:
            for _ in range(per_cell):
                fr = frames[k % len(frames)]
                k += 1
                out[fam].append(data.synthetic_scene(fr, images[fr.key], fam, band, rng))
    out["signs"] = [data.sign_scene(fr, images[fr.key], rng) for fr in frames]
    return out


def real_scenes(frames: list[data.Frame]) -> list[data.Scene]:
    z = np.zeros((0, 4), np.float32)
    return [data.Scene(data.read_rgb(f.path), f.boxes, z, z, f.key) for f in frames]


def plate_free_scenes(shared: Path) -> dict[str, list[data.Scene]]:
    """faces-* images: pedestrians, no labelled plates (every plate detection counts as false,
    an upper bound: some show vehicles)."""
    z = np.zeros((0, 4), np.float32)
    out = {}
    for name in ("faces-street-photos", "faces-group-photos"):
        labels = json.loads((shared / name / "labels.json").read_text())
        out[name] = [data.Scene(data.read_rgb(shared / name / k), z, z, z, k) for k in sorted(labels)]
    return out


def report(onnx_path: Path, shared: Path, threshold: float, seed: int, threads: int = 2,
           extra_scales: tuple[float, ...] = ()) -> dict[str, Any]:
    """Every validation number of the model card, at ``threshold`` (``extra_scales``: the
    multi-scale inference option, e.g. (0.5,))."""
    runner = evaluate.PlateRunner(onnx_path, threads)
    frames = data.load_dashcam(shared / "plates-dashcam-ro")
    train_f, val_f = data.time_split(frames)
    res: dict[str, Any] = {"threshold": threshold, "extra_scales": list(extra_scales)}
    t0 = time.time()

    def ev(scenes: list[data.Scene]) -> dict[str, Any]:
        return evaluate.evaluate_scenes(runner, scenes, threshold, extra_scales).as_dict()

    res["dashcam_train"] = ev(real_scenes(train_f))
    res["dashcam_val"] = ev(real_scenes(val_f))
    res["dashcam_val_night"] = ev(real_scenes([f for f in val_f if f.ride.startswith("night")]))
    log.info("dashcam done (%.0f s)", time.time() - t0)
    for name, scenes in validation_scenes(val_f, seed).items():
        res[f"synthetic_val/{name}"] = ev(scenes)
        log.info("%s: %s", name, res[f"synthetic_val/{name}"])
    for name, scenes in plate_free_scenes(shared).items():
        res[f"plate_free/{name}"] = ev(scenes)
    _, held = data.video_backgrounds(shared / "video-gopro")
    res["plate_free/video-gopro-held-out"] = ev(video_scenes(held, data.load_backgrounds(held, shared / "plates-dashcam-ro", shared / "video-gopro")))
    z = np.zeros((0, 4), np.float32)
    exif = [data.Scene(data.read_rgb(p), z, z, z, p.name) for p in sorted((shared / "images-exif").glob("DSC*.JPG"))]
    res["plate_free/images-exif-4k"] = ev(exif)
    return res


def run(cfg: RunConfig) -> dict[str, Any]:
    """Reproduce the model: returns the training record (also written next to the model as
    JSON when ``cfg.report`` is set)."""
    check_fonts()
    t_start = time.time()
    stamps: dict[str, int] = {}

    def stamp(what: str) -> None:
        stamps[what] = round(time.time() - t_start)
        log.info("stage %s done at %d s", what, stamps[what])

    dash_root, video_root = cfg.shared / "plates-dashcam-ro", cfg.shared / "video-gopro"
    frames = data.load_dashcam(dash_root)
    train_f, val_f = data.time_split(frames)
    video_train, _ = data.video_backgrounds(video_root)
    log.info("dashcam: %d train frames, %d validation frames (held out); %d plate-free video frames",
             len(train_f), len(val_f), len(video_train))
    bgs = data.dashcam_backgrounds(train_f) + video_train
    cache_a = loop.build_cache(cfg.cache_dir, train_f, loop.CacheSpec(cfg.cache_size, cfg.seed), workers=cfg.workers)
    stamp("cache_v1")
    cache_b = loop.build_cache(cfg.cache_dir / "v2", loop.V2Sampler(bgs, dash_root, video_root),
                               loop.CacheSpec(cfg.v2_size, cfg.seed, 5), workers=cfg.workers)
    stamp("cache_v2")
    chunk_loss: dict[tuple[int, int], float] = {}
    net = loop.train([cache_a, cache_b], graph.centerface_path(), cfg.train, mix=list(cfg.mix), chunk_loss=chunk_loss)
    stamp("round1")
    training = (f"plate branch trained by scripts/train_plates.py (seed {cfg.seed}): {cfg.cache_size} v1 + {cfg.v2_size} v2 "
                f"synthetic crops from {len(train_f)} plates-dashcam-ro frames (time split) and {len(video_train)} "
                f"plate-free video-gopro frames")
    tmp = cfg.out.with_suffix(".round1.onnx")
    export.export_streetveil(net, tmp, 0.5, training)
    images = data.load_backgrounds(video_train, dash_root, video_root)
    anchors = mine(evaluate.PlateRunner(tmp, cfg.eval_threads), video_train, images)
    tmp.unlink()
    log.info("mined %d false detections on %d plate-free frames", len(anchors), len(video_train))
    caches = [cache_a, cache_b]
    mix = list(cfg.mix)
    if cfg.finetune is not None:
        if anchors:
            off = len(bgs) - len(video_train)  # anchors index ``bgs``
            caches.append(loop.build_cache(cfg.cache_dir / "mined", loop.V2Sampler(
                bgs, dash_root, video_root, [(i + off, b) for i, b in anchors]),
                loop.CacheSpec(cfg.mined_size, cfg.seed, 6), workers=cfg.workers))
            mix = list(cfg.finetune_mix)
        else:
            mix = [cfg.finetune_mix[0], cfg.finetune_mix[1]]
        stamp("cache_mined")
        weights: list[np.ndarray | None] = []
        for c, cache in enumerate(caches[:2]):
            n = np.load(cache / "hm.npy", mmap_mode="r").shape[0] // cfg.finetune.chunk
            w = np.array([chunk_loss.get((c, k), np.nan) for k in range(n)])
            w = np.where(np.isnan(w), np.nanmean(w), w)
            weights.append(w + np.mean(w))  # hard chunks up to ~2x as often as average ones
        weights += [None] * (len(caches) - 2)
        net = loop.train(caches, graph.centerface_path(), cfg.finetune, mix=mix, init=net, chunk_weights=weights)
        stamp("finetune")
        training += f"; fine-tuned with {len(anchors)} mined false detections and hard-example sampling"
    tmp = cfg.out.with_suffix(".uncalibrated.onnx")
    export.export_streetveil(net, tmp, 0.5, training)
    threshold, calib = calibrate(evaluate.PlateRunner(tmp, cfg.eval_threads), calibration_scenes(train_f, cfg.seed),
                                 video_scenes(video_train, images))
    tmp.unlink()
    for t, row in calib.items():
        log.info("calibration (training frames) t=%s %s", t, row)
    export.export_streetveil(net, cfg.out, threshold, training)
    stamp("calibrated")
    record: dict[str, Any] = {
        "config": {"train": asdict(cfg.train), "finetune": asdict(cfg.finetune) if cfg.finetune else None,
                   "cache_size": cfg.cache_size, "v2_size": cfg.v2_size, "mined_size": cfg.mined_size,
                   "mix": cfg.mix, "finetune_mix": cfg.finetune_mix, "seed": cfg.seed, "workers": cfg.workers},
        "stages_seconds": stamps, "train_frames": len(train_f), "val_frames": len(val_f),
        "video_train_frames": len(video_train), "mined": len(anchors),
        "threshold": threshold, "calibration": calib,
    }
    log.info("model written to %s (threshold %.2f) %s", cfg.out, threshold, stamps)
    if cfg.report is not None:
        record["validation"] = report(cfg.out, cfg.shared, threshold, cfg.seed, cfg.eval_threads)
        cfg.report.write_text(json.dumps(record, indent=1, default=str))
    return record
