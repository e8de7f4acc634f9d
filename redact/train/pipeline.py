"""End to end: data split → feature cache → training → threshold calibration → ONNX export →
validation report. ``scripts/train_plates.py`` is the command line for it."""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from redact.train import data, evaluate, export, graph, loop, verify
from redact.train.fonts import check_fonts
from redact.train.render import PLATE_FAMILIES
from redact.verify import Calibration

log = logging.getLogger(__name__)
THRESHOLD_GRID = tuple(round(t, 2) for t in np.arange(0.1, 0.81, 0.05))
# The default threshold maximises F2 (recall weighted 4x precision: a missed plate is a privacy
# failure, a false box a small blur) over plates >= 16 px and every false detection, signs
# included, on calibration scenes built on training frames.
CALIB_BETA = 2.0
# Seed streams: training samples use [seed, i]; calibration and validation scenes their own.
CALIB_STREAM, VAL_STREAM = 1_000_003, 2_000_003


@dataclass(frozen=True, slots=True)
class RunConfig:
    shared: Path
    out: Path
    cache_dir: Path
    cache_size: int = 14_000
    seed: int = 20261126
    train: loop.TrainConfig = field(default_factory=loop.TrainConfig)
    workers: int = 1
    eval_threads: int = 2
    report: Path | None = None
    # int8: the plate branch for the int8 model (redact/models/streetveil-fp-v1-int8.onnx):
    # the shipped int8 CenterFace copy as backbone, the branch fine-tuned from ``init``'s on the
    # taps that backbone computes (its plate recall, trained on fp32 taps, does not survive
    # quantisation: docs/redaction.md).
    int8: bool = False
    init: Path | None = None
    # Shares of hard-view training crops (loop.CacheSpec): angled extra plates, motion streaks.
    angled_views: float | None = None
    streaked_views: float | None = None
    streaked_signs: int | None = None  # more hard negatives in each streaked crop

    def __post_init__(self) -> None:
        if not (self.shared / "plates-dashcam-ro" / "labels.json").is_file():
            raise ValueError(f"{self.shared}: plates-dashcam-ro/labels.json not found")


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


def matched_threshold(table: dict[str, Any], target: float) -> float:
    """The highest grid threshold whose calibration recall >= 16 px reaches ``target``."""
    ok = [float(t) for t, row in table.items() if (row["recall_ge16"] or 0.0) >= target]
    return max(ok) if ok else THRESHOLD_GRID[0]


def calibrate(runner: evaluate.PlateRunner, scenes: list[data.Scene],
              match: tuple[evaluate.PlateRunner, float] | None = None) -> tuple[float, dict[str, Any]]:
    """The threshold maximising F2 on ``scenes`` and the table behind it. With ``match``
    (the model this one stands in for, at its own threshold): instead the highest threshold
    whose recall >= 16 px reaches that model's on the same scenes: a faster variant (int8)
    must not give up recall, whatever it costs in false boxes."""
    rows = evaluate.scene_scores(runner, scenes)
    table: dict[str, Any] = {}
    best, best_f = THRESHOLD_GRID[0], -1.0
    for t in THRESHOLD_GRID:
        tally = evaluate.tally_at(rows, t)
        d = tally.as_dict()
        f = evaluate.f_beta(d["precision"] or 0.0, d["recall_ge16"] or 0.0, CALIB_BETA)
        table[f"{t:.2f}"] = {"recall_ge16": d["recall_ge16"], "found_ge16": tally.found_ge16,
                             "precision": d["precision"], "f2": round(f, 4),
                             "false_per_image": d["false_per_image"], "signs_detected": tally.signs_hit}
        if f > best_f:
            best, best_f = t, f
    if match is not None:
        ref_runner, ref_t = match
        ref_tally = evaluate.tally_at(evaluate.scene_scores(ref_runner, scenes), ref_t)
        ref = ref_tally.as_dict()
        target = ref["recall_ge16"] or 0.0
        best = matched_threshold(table, target)
        # Plates to spare at the chosen step: with 0 or 1, a retrain of the same recipe may land
        # one grid step away, which moves false boxes and signs more than the retrain itself
        # (MODEL_CARD.md, "Retrain variance").
        spare = table[f"{best:.2f}"]["found_ge16"] - ref_tally.found_ge16
        table["matched"] = {"reference_threshold": ref_t, "reference_recall_ge16": target,
                            "reference_found_ge16": ref_tally.found_ge16, "spare_plates": spare,
                            "reference_false_per_image": ref["false_per_image"]}
        if spare < 0:
            log.warning("no threshold reaches the reference recall (the lowest, %.2f, is %d plate(s) short)",
                        best, -spare)
        elif spare <= 1:
            log.warning("threshold %.2f reaches the reference recall with %d plate(s) to spare: a retrain of the "
                        "same recipe may calibrate one grid step away", best, spare)
    return best, table


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


# Car paints for the repainted-surroundings check: the common ones, and the green and blue
# that v1 of the verifier mistook for vegetation and sky.
CAR_PAINTS: dict[str, tuple[int, int, int]] = {
    "white": (235, 235, 232), "black": (22, 24, 26), "silver": (160, 162, 166), "red": (165, 28, 30),
    "blue": (28, 58, 150), "green": (38, 120, 58), "yellow": (228, 196, 40), "light_blue": (120, 170, 225),
}


def repaint_around(rgb: np.ndarray, boxes: np.ndarray, paint: tuple[int, int, int],
                   rng: np.random.Generator) -> np.ndarray:
    """``rgb`` with a car body of colour ``paint`` (light noise) around each plate: 1.5 plate
    widths either side, 2 plate heights above and below; the plates themselves untouched."""
    out = rgb.copy()
    H, W = rgb.shape[:2]
    for x1, y1, x2, y2 in boxes:
        w, h = x2 - x1, y2 - y1
        a, b = int(max(0, x1 - 1.5 * w)), int(max(0, y1 - 2 * h))
        c, d = int(min(W, x2 + 1.5 * w)), int(min(H, y2 + 2 * h))
        body = np.array(paint, np.float32) + rng.normal(0, 4, (d - b, c - a, 3))
        out[b:d, a:c] = np.clip(body, 0, 255).astype(np.uint8)
    for x1, y1, x2, y2 in boxes.astype(int):
        out[y1:y2, x1:x2] = rgb[y1:y2, x1:x2]
    return out


def out_of_distribution_scenes(frames: list[data.Frame], seed: int) -> dict[str, list[data.Scene]]:
    """Plates in surroundings the training never showed, a check a learnt second look must
    pass before it can decide alone: ``car_paint/<paint>``, the real labelled plates of the
    held-out ``frames`` on car bodies of one paint. (The other, plates from another renderer,
    comes from the caller: ``VerifierRunConfig.extra_scenes``.)"""
    rng = np.random.default_rng([seed, VAL_STREAM, 2])
    z = np.zeros((0, 4), np.float32)
    with_plates = [f for f in frames if len(f.boxes)][::2]
    images = {f.key: data.read_rgb(f.path) for f in with_plates}
    return {f"car_paint/{name}": [data.Scene(repaint_around(images[f.key], f.boxes, paint, rng), f.boxes, z, z, f.key)
                                  for f in with_plates]
            for name, paint in CAR_PAINTS.items()}


def plate_free_scenes(shared: Path) -> dict[str, list[data.Scene]]:
    """faces-* images: pedestrians, no labelled plates (every plate detection counts as false,
    an upper bound: some show vehicles)."""
    z = np.zeros((0, 4), np.float32)
    out = {}
    for name in ("faces-street-photos", "faces-group-photos"):
        labels = json.loads((shared / name / "labels.json").read_text())
        out[name] = [data.Scene(data.read_rgb(shared / name / k), z, z, z, k) for k in sorted(labels)]
    return out


def make_runner(onnx_path: Path, threads: int = 2, verifier: tuple[Path, Calibration] | None = None,
                zoom_out: float = 0.0, union: bool = False, grow_min: float = 0.0) -> evaluate.Runner:
    """The model as the engine runs it (``report`` explains the arguments)."""
    plate = evaluate.PlateRunner(onnx_path, threads)
    runner: evaluate.Runner = (evaluate.EngineRunner(plate, zoom_out, union, grow_min=grow_min)
                               if zoom_out or union else plate)
    if verifier is not None:
        from redact.verify import PlateVerifier

        runner = evaluate.VerifiedRunner(runner, PlateVerifier(verifier[0]).scores, verifier[1])
    return runner


# What limits recall (MODEL_CARD.md, "Night, angle, blur"): one capture condition at a time,
# at and beyond the edge of what training draws (data.Condition states training's ranges).
STRESS_CONDITIONS = (
    data.AS_VALIDATION,
    data.Condition("night", night=True),
    data.Condition("angle", yaw=(0.3, 0.6), roll_deg=(6.0, 12.0)),
    data.Condition("motion_blur", motion_px=(9, 17)),
    data.Condition("heavy_jpeg", jpeg_quality=(8, 20)),
    data.Condition("night_motion_blur", night=True, motion_px=(9, 17)),
)
STRESS_STREAM = 3_000_003


def stress_scenes(frames: list[data.Frame], images: Mapping[str, np.ndarray], seed: int, condition: data.Condition,
                  family: str, per_cell: int = 8) -> list[data.Scene]:
    """``per_cell`` scenes of ``family`` per height band from 8 px up, on held-out ``frames``,
    under ``condition``. Scene i draws from its own stream [seed, STRESS_STREAM, family, i] and
    the condition from one of its own, so every condition holds the same frames, plates and
    places: the conditions differ in the condition only."""
    fam_i = PLATE_FAMILIES.index(family)
    cond_i = zlib.crc32(condition.name.encode())  # a stream per condition name, whatever the tuple's order
    out = []
    for b, band in enumerate(data.HEIGHT_BANDS[1:]):
        for j in range(per_cell):
            i = b * per_cell + j
            fr = frames[(fam_i * 7 + i) % len(frames)]
            rng = np.random.default_rng([seed, STRESS_STREAM, fam_i, i])
            crng = np.random.default_rng([seed, STRESS_STREAM, fam_i, i, cond_i])
            out.append(data.synthetic_scene(fr, images[fr.key], family, band, rng, condition=condition,
                                            cond_rng=crng))
    return out


def stress_report(runner: evaluate.Runner, shared: Path, threshold: float, seed: int, per_cell: int = 8,
                  conditions: tuple[data.Condition, ...] = STRESS_CONDITIONS,
                  families: tuple[str, ...] = PLATE_FAMILIES) -> dict[str, Any]:
    """Recall by condition, family and height band on held-out frames (the validation split's
    frames; synthetic plates from a stream of their own)."""
    _, val_f = data.time_split(data.load_dashcam(shared / "plates-dashcam-ro"))
    images = {f.key: data.read_rgb(f.path) for f in val_f}
    res: dict[str, Any] = {"threshold": threshold, "per_cell": per_cell, "conditions": {}}
    for c in conditions:
        t0, whole, fams = time.time(), evaluate.Tally(), {}
        for fam in families:
            tally = evaluate.Tally()
            for sc in stress_scenes(val_f, images, seed, c, fam, per_cell):  # built per family: ~70 MB each
                boxes, scores = runner.detect(sc.image, threshold)
                for t in (tally, whole):
                    t.add(sc.boxes, sc.extra, sc.signs, boxes, scores, sc.image.shape)
            fams[fam] = tally.as_dict()
        d = whole.as_dict()
        res["conditions"][c.name] = {"condition": asdict(c), "all": d, "families": fams}
        log.info("%s: recall>=16 %s, 8-16 %s (%.0f s)", c.name, d["recall_ge16"], d["recall_8_16"], time.time() - t0)
    return res


def report(onnx_path: Path, shared: Path, threshold: float, seed: int, threads: int = 2,
           verifier: tuple[Path, Calibration] | None = None,
           extra: Mapping[str, list[data.Scene]] | None = None, zoom_out: float = 0.0,
           union: bool = False, grow_min: float = 0.0) -> dict[str, Any]:
    """Every validation number of the model card, at ``threshold`` (with ``verifier``: the
    verifier file and the thresholds it runs at, its verify threshold and bypass, with
    proposals at ``threshold``; with ``zoom_out`` and ``union``: plus the engine's zoom-out
    pass at that scale and its union merge, growing boxes only with boxes scoring
    ``grow_min`` or more, see evaluate.EngineRunner); ``extra`` scene sets are reported under
    ``ood/<name>`` too."""
    runner = make_runner(onnx_path, threads, verifier, zoom_out, union, grow_min)
    frames = data.load_dashcam(shared / "plates-dashcam-ro")
    train_f, val_f = data.time_split(frames)
    cal = verifier[1].at(threshold) if verifier else None
    res: dict[str, Any] = {"threshold": threshold, **({"verify": cal.verify} if cal else {}),
                           **({"bypass": cal.bypass} if cal and cal.bypass is not None else {}),
                           **({"zoom_out": zoom_out} if zoom_out else {}), **({"merge": "union"} if union else {})}
    t0 = time.time()
    res["dashcam_train"] = evaluate.evaluate_scenes(runner, real_scenes(train_f), threshold).as_dict()
    res["dashcam_val"] = evaluate.evaluate_scenes(runner, real_scenes(val_f), threshold).as_dict()
    night = [f for f in val_f if f.ride.startswith("night")]
    res["dashcam_val_night"] = evaluate.evaluate_scenes(runner, real_scenes(night), threshold).as_dict()
    log.info("dashcam done (%.0f s)", time.time() - t0)
    for name, scenes in validation_scenes(val_f, seed).items():
        res[f"synthetic_val/{name}"] = evaluate.evaluate_scenes(runner, scenes, threshold).as_dict()
        log.info("%s: %s", name, res[f"synthetic_val/{name}"])
    for name, scenes in plate_free_scenes(shared).items():
        res[f"plate_free/{name}"] = evaluate.evaluate_scenes(runner, scenes, threshold).as_dict()
    for name, scenes in {**out_of_distribution_scenes(val_f, seed), **(extra or {})}.items():
        res[f"ood/{name}"] = evaluate.evaluate_scenes(runner, scenes, threshold).as_dict()
    return res


def run(cfg: RunConfig) -> dict[str, Any]:
    """Reproduce the model: returns the training record (also written next to the model as
    JSON when ``cfg.report`` is set)."""
    check_fonts()
    t_start = time.time()
    frames = data.load_dashcam(cfg.shared / "plates-dashcam-ro")
    train_f, val_f = data.time_split(frames)
    log.info("dashcam: %d train frames, %d validation frames (held out)", len(train_f), len(val_f))
    face, backbone, extra = None, None, {}
    spec = loop.CacheSpec(cfg.cache_size, cfg.seed, angled_views=cfg.angled_views, streaked_views=cfg.streaked_views,
                          streaked_signs=cfg.streaked_signs)
    init, finetune = graph.centerface_path(), False
    training = (f"plate branch trained by scripts/train_plates.py (seed {cfg.seed}): {cfg.cache_size} synthetic "
                f"crops from {len(train_f)} plates-dashcam-ro frames (time split), {cfg.train.epochs} epochs")
    if cfg.int8:
        from redact.centernet import sha256_file
        from redact.detectors import CENTERFACE_INT8, STREETVEIL_MODEL

        init, finetune = cfg.init or STREETVEIL_MODEL, True
        face = graph.int8_face_model(CENTERFACE_INT8, graph.centerface_path())
        backbone = graph.backbone_model(face).SerializeToString()
        spec = replace(spec, backbone=sha256_file(CENTERFACE_INT8))
        # source_sha256 is what the engine checks (int8_model): this file belongs to that fp32 model.
        extra = {"streetveil.quantized": f"backbone and face path: {CENTERFACE_INT8.name}; plate branch fp32",
                 "streetveil.source_sha256": sha256_file(init),
                 "streetveil.backbone_sha256": spec.backbone or ""}
        training = (f"int8 variant by scripts/train_plates.py --int8 (seed {cfg.seed}): plate branch of {init.name} "
                    f"fine-tuned on the taps of {CENTERFACE_INT8.name}, {cfg.cache_size} synthetic crops from "
                    f"{len(train_f)} plates-dashcam-ro frames (time split), {cfg.train.epochs} epochs")
    if cfg.train.seed != cfg.seed:
        training += f"; training seed {cfg.train.seed}"
    if cfg.angled_views:
        training += (f"; {cfg.angled_views:.0%} of crops with extra plates at |yaw| {data.HARD_YAW[0]}-"
                     f"{data.HARD_YAW[1]}, |roll| {data.HARD_ROLL_DEG[0]:g}-{data.HARD_ROLL_DEG[1]:g} deg")
    if cfg.streaked_views:
        training += (f"; {cfg.streaked_views:.0%} of crops streaked by motion "
                     f"({data.HARD_MOTION_PX[0]}-{data.HARD_MOTION_PX[1] - 1} px)")
    if cfg.streaked_signs:
        training += f", each with {cfg.streaked_signs} more hard negatives"
    if cfg.train.separable_fuse:
        training += (f"; plate neck fuse separable (depthwise 3x3, {cfg.train.separable_fuse} per channel, "
                     "+ pointwise 1x1, SVD-initialised)")
    if cfg.train.head_blocks:
        training += f"; plate head with {cfg.train.head_blocks} inverted-residual block(s) (32->64->32, zero-initialised)"
    cache = loop.build_cache(cfg.cache_dir, train_f, spec, workers=cfg.workers, backbone=backbone)
    t_cache = time.time() - t_start
    net = loop.train(cache, init, cfg.train, finetune=finetune)
    t_train = time.time() - t_start - t_cache
    tmp = cfg.out.with_suffix(".uncalibrated.onnx")
    export.export_streetveil(net, tmp, 0.5, training, face=face, extra=extra)
    match = None
    if cfg.int8:
        from redact.detectors import streetveil_plate_threshold

        match = (evaluate.PlateRunner(init, cfg.eval_threads), streetveil_plate_threshold(init))
    threshold, calib = calibrate(evaluate.PlateRunner(tmp, cfg.eval_threads), calibration_scenes(train_f, cfg.seed),
                                 match)
    tmp.unlink()
    for t, row in calib.items():
        log.info("calibration (training frames) t=%s %s", t, row)
    export.export_streetveil(net, cfg.out, threshold, training, face=face, extra=extra)
    record: dict[str, Any] = {
        "config": {**asdict(cfg.train), "cache_size": cfg.cache_size, "seed": cfg.seed, "workers": cfg.workers,
                   "int8": cfg.int8, "init": str(init),
                   "angled_views": spec.angled_views, "streaked_views": spec.streaked_views,
                   "streaked_signs": spec.streaked_signs},
        "cache_seconds": round(t_cache), "train_seconds": round(t_train),
        "train_frames": len(train_f), "val_frames": len(val_f),
        "cache": json.loads((cache / "spec.json").read_text()).get("plates"),
        "threshold": threshold, "calibration": calib,
    }
    log.info("model written to %s (threshold %.2f, cache %.0f s, training %.0f s)", cfg.out, threshold, t_cache, t_train)
    if cfg.report is not None:
        record["validation"] = report(cfg.out, cfg.shared, threshold, cfg.seed, cfg.eval_threads)
        cfg.report.write_text(json.dumps(record, indent=1, default=str))
    return record


@dataclass(frozen=True, slots=True)
class VerifierRunConfig:
    shared: Path
    out: Path
    cache_dir: Path
    scenes: int = 3000
    seed: int = 20261126
    train: verify.TrainConfig = field(default_factory=verify.TrainConfig)
    workers: int = 2
    eval_threads: int = 2
    report: Path | None = None
    # More out-of-distribution scene sets for the report (scripts/train_plates.py: the demo
    # session's frames, whose plate renderer lives in pipeline/, which redact must not import).
    extra_scenes: Callable[[], dict[str, list[data.Scene]]] | None = None
    # The detector whose proposals are harvested (None: the packaged int8 file). A verifier
    # stays valid across detector files; pinning the one it was trained on reproduces it.
    harvest_detector: Path | None = None
    # Keep the verifier at ``out`` and only calibrate it for the packaged detector files.
    calibrate_only: bool = False
    # Harvest scenes seen at night / streaked (verify.NO_VIEWS: v2's recipe).
    views: verify.HardViews = verify.SHIPPED_VIEWS


def run_verifier(cfg: VerifierRunConfig) -> dict[str, Any]:
    """Reproduce ``redact/models/streetveil-plate-verify-v4.onnx``: harvest the default (int8)
    detector's proposals on training scenes (some at night or streaked: ``cfg.views``), train
    the classifier, calibrate its thresholds for the packaged fp32 and int8 detector files on
    the calibration scenes, export; with
    ``cfg.report`` also the validation of both setups. ``cfg.harvest_detector`` harvests
    another detector file's proposals; ``cfg.calibrate_only`` skips harvest and training and
    recalibrates the verifier at ``cfg.out``."""
    from redact.centernet import sha256_file
    from redact.detectors import STREETVEIL_MODEL, int8_path, streetveil_plate_threshold
    from redact.verify import PlateVerifier

    if cfg.calibrate_only and not cfg.out.is_file():
        raise ValueError(f"{cfg.out}: no verifier to calibrate")
    check_fonts()
    t0 = time.time()
    frames = data.load_dashcam(cfg.shared / "plates-dashcam-ro")
    train_f, _ = data.time_split(frames)
    detectors = {"int8": int8_path(STREETVEIL_MODEL), "fp32": STREETVEIL_MODEL}
    net, t_harvest, t_train, record_h = None, 0.0, 0.0, {}
    if cfg.calibrate_only:
        tmp = cfg.out
    else:
        source = cfg.harvest_detector or detectors["int8"]
        h = verify.cached_harvest(cfg.cache_dir, source, train_f, cfg.shared, cfg.scenes, cfg.seed, cfg.workers,
                                  cfg.views)
        t_harvest = time.time() - t0
        net = verify.train(h, cfg.train)
        t_train = time.time() - t0 - t_harvest
        training = (f"plate verifier by scripts/train_plates.py --verifier (seed {cfg.seed}): {len(h.y)} close-ups "
                    f"({int(h.y.sum())} plates) of {source.name}'s proposals on {cfg.scenes} scenes from "
                    f"{len(train_f)} plates-dashcam-ro training frames and plate-free video-gopro frames, "
                    f"{cfg.train.epochs} epochs"
                    + (f", scenes at night {cfg.views.night:g} / streaked {cfg.views.streaked:g}"
                       if cfg.views != verify.NO_VIEWS else ""))
        tmp = cfg.out.with_suffix(".uncalibrated.onnx")
        verify.export(net, tmp, {}, training)
        record_h = {"closeups": len(h.y), "plates": int(h.y.sum()), "harvest_detector": str(source)}
    score_fn = PlateVerifier(tmp).scores
    scenes = calibration_scenes(train_f, cfg.seed)
    cals, record_cal = {}, {}
    for name, path in detectors.items():
        runner = evaluate.PlateRunner(path, cfg.eval_threads)
        own = streetveil_plate_threshold(path)
        rows = verify.scene_rows(runner, score_fn, scenes)
        # The model alone at its own threshold (>= the harvest threshold): the same detections
        # a separate run would give, so the scenes go through the model once.
        target = verify.tally(rows, own, 0.0).as_dict()
        cal, table = verify.calibrate(rows, target["recall_ge16"] or 0.0)
        cal, bypass_table = verify.choose_bypass(rows, cal)
        cals[sha256_file(path)] = cal
        record_cal[name] = {"detector": path.name, "alone": {"threshold": own, **target},
                            "chosen": {"proposal": cal.proposal, "verify": cal.verify,
                                       **table[f"{cal.proposal:.2f}/{cal.verify:.2f}"]},
                            "bypass": {"chosen": cal.bypass, "table": bypass_table}, "table": table}
        log.info("calibration %s: alone %s; chosen %s", name, record_cal[name]["alone"], record_cal[name]["chosen"])
    if cfg.calibrate_only:
        verify.recalibrate(cfg.out, cals)
    else:
        tmp.unlink()
        verify.export(net, cfg.out, cals, training)
    record: dict[str, Any] = {
        "config": {**asdict(cfg.train), "scenes": cfg.scenes, "seed": cfg.seed, "workers": cfg.workers,
                   "calibrate_only": cfg.calibrate_only,
                   "views": {"night": cfg.views.night, "streaked": cfg.views.streaked}},
        "harvest_seconds": round(t_harvest), "train_seconds": round(t_train), **record_h, "calibration": record_cal,
    }
    log.info("verifier written to %s (harvest %.0f s, training %.0f s)", cfg.out, t_harvest, t_train)
    if cfg.report is not None:
        record["validation"] = {}
        extra = cfg.extra_scenes() if cfg.extra_scenes else None
        for name, path in detectors.items():
            cal = cals[sha256_file(path)]
            record["validation"][name] = report(path, cfg.shared, cal.proposal, cfg.seed, cfg.eval_threads,
                                                verifier=(cfg.out, cal), extra=extra)
            cfg.report.write_text(json.dumps(record, indent=1, default=str))
    return record
