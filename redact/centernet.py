"""CenterNet-style detectors (CenterFace and our combined face+plate model) on any runtime.

A *net function* maps an NCHW float32 RGB 0–255 batch to, per class name, the stride-4
``(heatmap [N,H,W], log-scale [N,2,H,W], offset [N,2,H,W])``. ``CenterNetDetector`` runs it
over the windows of a tiling plan, decodes, maps boxes back to source pixels and merges them.
The ONNX and torch runtimes are adapters that produce a net function.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from redact.boxes import clip_boxes, decode_centernet, iou_matrix, nms, nms_union
from redact.config import REFINE_PX
from redact.errors import ModelError
from redact.tiling import STRIDE, PlanParams, Window, plan, wrap_margin
from redact.types import Detections

log = logging.getLogger(__name__)

Maps = tuple[np.ndarray, np.ndarray, np.ndarray]
NetFn = Callable[[np.ndarray], Mapping[str, Maps]]
# (rgb, boxes [N, 4]) -> [N] probability that each box is an object of the class.
VerifyFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

NMS_IOU = 0.3
# Boxes this close to a tile's inner edge (network px) may be cut objects: the neighbouring
# tile or the whole-frame pass sees them whole, so they are dropped from this tile.
_EDGE_MARGIN = 4


def default_threads() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prepare_onnx(path: Path, *, input_dims: tuple[str, ...] = ("N", "C", "H", "W")) -> bytes:
    """The model with dynamic input/output dims and initializers removed from the graph inputs.

    The shipped CenterFace file has a fixed [10,3,32,32] input and lists all weights as graph
    inputs, which stops onnxruntime from folding and fusing them (2.3× slower at 1080p).
    Unused initializers are dropped too (onnxruntime warns about each one).
    """
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - onnx is a core dependency
        raise ModelError("the onnx package is missing: pip install onnx") from e
    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise ModelError(f"{path}: not a readable ONNX model: {e}") from None
    g = model.graph
    inits = {i.name for i in g.initializer}
    real_inputs = [i for i in g.input if i.name not in inits]
    del g.input[:]
    g.input.extend(real_inputs)
    used = {name for n in g.node for name in n.input}
    kept = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    for v in list(g.input) + list(g.output):
        dims = v.type.tensor_type.shape.dim
        if len(dims) == 4:
            for k, name in zip((0, 2, 3), (input_dims[0], input_dims[2], input_dims[3]), strict=True):
                dims[k].ClearField("dim_value")
                dims[k].dim_param = name
    return bytes(model.SerializeToString())


def ort_session(model: bytes | Path, threads: int) -> Any:
    """An onnxruntime CPU session with explicit thread counts (never oversubscribe)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    # Spinning workers burn the cores that decode/encode threads need between inferences.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    src = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ModelError(f"onnxruntime cannot load the model: {e}") from None


@dataclass(frozen=True, slots=True)
class ClassHead:
    """Where one class's maps are in a net's outputs and how to threshold them."""

    name: str
    threshold: float
    # Second look (see ``Refine``) for candidates scoring in [refine.low, refine.high).
    refine: Refine | None = None
    # Verification (redact/verify.py): a candidate at or above ``threshold`` is kept only when
    # the detector's verifier scores its close-up at ``verify`` or more.
    verify: float | None = None
    # ...unless the detector scores it at ``verify_bypass`` or more (None: never;
    # redact.verify.Calibration.skip_from).
    verify_bypass: float | None = None
    # The class's threshold without verification: vetoed candidates scoring below it are not
    # reported (``detect_with_vetoes``), since unverified they would not be redacted either.
    unverified: float | None = None
    # > 0: one more whole-frame pass, for this class only, at this fraction of the plan's
    # whole-frame scale, keeping only its boxes of at least ZOOM_MIN_NET_PX network pixels.
    # For objects larger than the net's training crops (close plates), which the plan's own
    # scale finds in pieces or not at all; the small ones stay with the finer passes.
    zoom_out: float = 0.0
    # Merge overlapping candidates by NMS, each kept box at least UNION_MIN_NET_PX tall grown
    # to the union of the boxes it suppressed (``redact.boxes.nms_union``): a close plate's
    # best box may cover only part of it while another box covers the rest. Scores and
    # verification stay those of the kept box as found; only what is redacted grows.
    union: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.zoom_out < 1.0:
            raise ValueError(f"zoom_out must be in [0, 1), got {self.zoom_out}")
        if self.union and self.refine is not None:
            # A close-up replaces the box it re-scores: the grown box would no longer match it.
            raise ValueError("a head cannot both refine and union-merge its boxes")


# The union merge (ClassHead.union) grows only boxes at least this tall in the whole-frame
# pass's network pixels: plates that large (an EU plate 48 px tall is 225 px wide) outgrow
# the branch's training crops and are found in pieces. Smaller ones are found whole, and
# growing their looser boxes only blurs more car (measured on the dashcam frames as 1080p:
# recall at IoU >= 0.3 of 32-64 px plates 0.991 plain, 0.927 growing all, 0.972 from 48 up).
UNION_MIN_NET_PX = 48.0


def union_rows(xyxy: np.ndarray, scale: float) -> np.ndarray:
    """Mask of the boxes (source pixels) the union merge grows, for a whole-frame pass at ``scale``."""
    return np.asarray((xyxy[:, 3] - xyxy[:, 1]) * scale >= UNION_MIN_NET_PX)


# Boxes a zoom-out pass keeps: at least this tall in network pixels (smaller ones are in the
# range where the net is weak, and the finer passes see them larger).
ZOOM_MIN_NET_PX = 16.0


@dataclass(frozen=True, slots=True)
class Refine:
    """Re-score uncertain candidates on a close-up crop (promote only).

    The whole-frame pass sees a 1080p frame at 2/3 scale, where a 16-32 px face is 11-21 px:
    the network still *proposes* it (score 0.1-0.3) but scores it low. Each candidate with a
    score in [low, high) (high = the class threshold) is cut out with ``context`` x its size
    around it, resized so it is ``target_px`` tall, and run again (all crops in one batch);
    it takes the close-up's score and box when that is higher (never demoted: a large face
    may not fit the crop). Recall measured in docs/redaction.md.
    """

    low: float = 0.1
    high: float = 0.3  # the class threshold: candidates at or above it need no second look
    target_px: int = REFINE_PX
    context: float = 4.0
    max_candidates: int = 64

    @property
    def crop_px(self) -> int:
        return max(STRIDE, int(self.target_px * self.context) // STRIDE * STRIDE)


class CenterNetDetector:
    """Runs a CenterNet net function over a tiling plan; returns merged Detections."""

    def __init__(
        self,
        net: NetFn,
        heads: tuple[ClassHead, ...],
        params: PlanParams,
        *,
        name: str,
        version: str,
        weights_sha256: str,
        refine_net: NetFn | None = None,
        verifier: VerifyFn | None = None,
    ) -> None:
        self.net = net
        # The close-ups may run on a more exact net (fp32 beside an int8 whole-frame pass):
        # they are few and decide the uncertain cases.
        self.refine_net = refine_net or net
        self.heads = heads
        self.params = params
        self.name = name
        self.version = version
        self.weights_sha256 = weights_sha256
        self.verifier = verifier
        if verifier is None and any(h.verify is not None for h in heads):
            raise ValueError("a head with a verify threshold needs a verifier")

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.heads)

    @property
    def thresholds(self) -> dict[str, float]:
        return {h.name: h.threshold for h in self.heads}

    def with_wrap(self) -> CenterNetDetector:
        """The same detector (same loaded net) for 360° panoramas wrapped at the seam."""
        from dataclasses import replace

        return CenterNetDetector(self.net, self.heads, replace(self.params, wrap=True), name=self.name,
                                 version=self.version, weights_sha256=self.weights_sha256,
                                 refine_net=self.refine_net, verifier=self.verifier)

    def __call__(self, rgb: np.ndarray) -> Detections:
        return self.detect_with_vetoes(rgb)[0]

    def detect_with_vetoes(self, rgb: np.ndarray) -> tuple[Detections, Detections]:
        """The detections, and the candidates a verifier vetoed that the detector alone would
        have kept (at or above the head's ``unverified`` threshold): not redacted, and what a
        reviewer judging the verifier on their own camera needs to see. Without verification
        the second part is empty."""
        h, w = rgb.shape[:2]
        margin = wrap_margin(w, self.params)
        src = np.concatenate([rgb, rgb[:, :margin]], axis=1) if margin else rgb
        windows = plan(w, h, self.params)
        # Only frames seen below native resolution everywhere need a second look; small
        # images already get an upscaled pass, large ones native tiles.
        reduced = max(win.scale for win in windows) < 1.0
        # (window, the one class it is for or None for all): the plan's windows, then each
        # class's zoom-out pass over the plan's whole-frame window (always its first).
        passes: list[tuple[Window, str | None]] = [(win, None) for win in windows]
        whole = windows[0]
        assert (whole.x0, whole.y0) == (0, 0) and whole.y1 == h, "plan() must put the whole frame first"
        passes += [(Window(whole.x0, whole.y0, whole.x1, whole.y1, whole.scale * hd.zoom_out), hd.name)
                   for hd in self.heads if hd.zoom_out > 0]
        per_class: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {hd.name: [] for hd in self.heads}
        # Windows with the same padded size run as one batch.
        groups: dict[tuple[int, int], list[tuple[Window, str | None]]] = {}
        for win, only in passes:
            groups.setdefault(win.padded_size, []).append((win, only))
        whole_px = window_pixels(src, whole)
        for (ph, pw), wins in groups.items():
            batch = np.zeros((len(wins), 3, ph, pw), np.float32)
            for i, (win, _) in enumerate(wins):
                nh, nw = win.net_size
                batch[i, :, :nh, :nw] = pass_pixels(src, win, whole, whole_px).transpose(2, 0, 1)
            outputs = self.net(batch)
            for hd in self.heads:
                heat, scale, offset = outputs[hd.name]
                for i, (win, only) in enumerate(wins):
                    if only is not None and only != hd.name:
                        continue
                    xyxy, score = decode_centernet(heat[i], scale[i], offset[i], _decode_threshold(hd))
                    if only is not None:
                        tall = xyxy[:, 3] - xyxy[:, 1] >= ZOOM_MIN_NET_PX
                        xyxy, score = xyxy[tall], score[tall]
                    if not len(score):
                        continue
                    keep = _not_cut(xyxy, win, w + margin, h)
                    xyxy, score = xyxy[keep], score[keep]
                    sx = (win.x1 - win.x0) / win.net_size[1]
                    sy = (win.y1 - win.y0) / win.net_size[0]
                    xyxy = xyxy * np.array([sx, sy, sx, sy], np.float32) + np.array(
                        [win.x0, win.y0, win.x0, win.y0], np.float32
                    )
                    per_class[hd.name].append((xyxy, score))
        out, vetoed = [], []
        for hd in self.heads:
            parts = per_class[hd.name]
            if not parts:
                continue
            xyxy = np.concatenate([p[0] for p in parts])
            score = np.concatenate([p[1] for p in parts])
            if margin:
                xyxy, score = unwrap(xyxy, score, w)
            xyxy = clip_boxes(xyxy, w, h)
            ok = (xyxy[:, 2] - xyxy[:, 0] >= 1) & (xyxy[:, 3] - xyxy[:, 1] >= 1)
            xyxy, score = xyxy[ok], score[ok]
            # keep: the same either way; shown: what is redacted (a verifier judges xyxy, as found).
            # A verified head proposes below its own threshold: only boxes the detector alone
            # would have had (``unverified``) grow a box, so a vetoed candidate is reported as
            # the detector alone would have blurred it.
            keep, grown = (nms_union(xyxy, score, NMS_IOU, grow_min=hd.unverified or hd.threshold) if hd.union
                           else (nms(xyxy, score, NMS_IOU), None))
            xyxy, score = xyxy[keep], score[keep]
            shown = xyxy if grown is None else np.where(union_rows(xyxy, whole.scale)[:, None], grown, xyxy)
            if hd.refine is not None and reduced:
                xyxy, score = self._refine(rgb, xyxy, score, hd)
                keep = nms(xyxy, score, NMS_IOU)
                xyxy, score = xyxy[keep], score[keep]
                shown = xyxy
            final = score >= hd.threshold
            if hd.verify is not None and final.any():
                assert self.verifier is not None
                idx = np.flatnonzero(final)
                if hd.verify_bypass is not None:
                    idx = idx[score[idx] < hd.verify_bypass]  # kept on the detector's word
                veto = idx[self.verifier(rgb, xyxy[idx]) < hd.verify] if idx.size else idx
                final[veto] = False
                if hd.unverified is not None:
                    veto = veto[score[veto] >= hd.unverified]
                vetoed.append(Detections.of_class(shown[veto], score[veto], hd.name))
            out.append(Detections.of_class(shown[final], score[final], hd.name))
        return Detections.concat(out), Detections.concat(vetoed)

    def _refine(self, rgb: np.ndarray, xyxy: np.ndarray, score: np.ndarray, hd: ClassHead) -> tuple[np.ndarray, np.ndarray]:
        """Re-score candidates in [low, high) on close-up crops (see ``Refine``)."""
        r = hd.refine
        assert r is not None
        idx = np.flatnonzero((score >= r.low) & (score < r.high))
        if not idx.size:
            return xyxy, score
        # The most likely first: a frame full of texture must not cost unbounded time.
        idx = idx[np.argsort(-score[idx], kind="stable")][: r.max_candidates]
        n = r.crop_px
        h, w = rgb.shape[:2]
        batch = np.zeros((len(idx), 3, n, n), np.float32)
        affine = []
        for k, i in enumerate(idx):
            x1, y1, x2, y2 = (float(v) for v in xyxy[i])
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            f = n / (r.context * max(x2 - x1, y2 - y1, 1.0))
            m = np.array([[f, 0, n / 2 - f * cx], [0, f, n / 2 - f * cy]], np.float32)
            crop = cv2.warpAffine(rgb, m, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            batch[k] = crop.transpose(2, 0, 1)
            affine.append((f, cx, cy))
        heat, scale, offset = self.refine_net(batch)[hd.name]
        new_xyxy, new_score = xyxy.copy(), score.copy()
        half = np.float32(n / 2)
        for k, i in enumerate(idx):
            b, sc = decode_centernet(heat[k], scale[k], offset[k], r.low / 2)
            f, cx, cy = affine[k]
            if not len(sc):
                continue
            b = (b - half) / np.float32(f) + np.array([cx, cy, cx, cy], np.float32)
            iou = iou_matrix(xyxy[i : i + 1], b)[0]
            best = int(np.argmax(np.where(iou >= NMS_IOU, sc, -1.0)))
            # Promote only: a close-up that scores lower never demotes a candidate (a large
            # face may not fit the crop; privacy errs on the side of redacting).
            if iou[best] >= NMS_IOU and sc[best] > score[i]:
                new_score[i] = sc[best]
                new_xyxy[i] = np.clip(b[best], [0, 0, 0, 0], [w, h, w, h])
        return new_xyxy, new_score


def window_pixels(src: np.ndarray, win: Window) -> np.ndarray:
    """The RGB pixels the network sees for ``win`` of ``src``: the crop resized to
    ``win.net_size`` (before padding to ``win.padded_size``)."""
    nh, nw = win.net_size
    crop = src[win.y0 : win.y1, win.x0 : win.x1]
    if (nh, nw) == crop.shape[:2]:
        return crop
    # Area averaging costs ~9 ms more than bilinear for a 1080p frame at 2/3, but bilinear
    # aliasing cost 0.9 points of small-face recall (holdout, measured).
    return cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_AREA if win.scale < 1 else cv2.INTER_LINEAR)


def pass_pixels(src: np.ndarray, win: Window, whole: Window, whole_px: np.ndarray) -> np.ndarray:
    """``window_pixels(src, win)``, but a pass over the whole-frame window at a smaller scale
    (the zoom-out pass) shrinks ``whole_px``, the whole-frame pass's pixels, instead of the
    source: for a 1080p frame area averaging from 1280x720 costs less than half of averaging
    from 1920x1080 (cv2.resize alone, one core: 6.6 vs 14.7 ms), and the two differ by a
    third of a grey level on average. Frames the whole-frame pass sees unscaled are unchanged."""
    if win == whole:
        return whole_px
    if (win.x0, win.y0, win.x1, win.y1) == (whole.x0, whole.y0, whole.x1, whole.y1) and win.scale < whole.scale:
        nh, nw = win.net_size
        return cv2.resize(whole_px, (nw, nh), interpolation=cv2.INTER_AREA)
    return window_pixels(src, win)


def _decode_threshold(hd: ClassHead) -> float:
    return min(hd.threshold, hd.refine.low) if hd.refine is not None else hd.threshold


def _not_cut(xyxy: np.ndarray, win: Window, width: int, height: int) -> np.ndarray:
    """Mask of boxes not touching an edge of ``win`` that lies inside the image (a tile edge)."""
    nh, nw = win.net_size
    keep = np.ones(len(xyxy), bool)
    m = _EDGE_MARGIN
    if win.x0 > 0:
        keep &= xyxy[:, 0] > m
    if win.y0 > 0:
        keep &= xyxy[:, 1] > m
    if win.x1 < width:
        keep &= xyxy[:, 2] < nw - m
    if win.y1 < height:
        keep &= xyxy[:, 3] < nh - m
    return keep


def unwrap(xyxy: np.ndarray, score: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Map boxes from a panorama extended past its right edge back into [0, width).

    A box wholly past the edge moves left by ``width``; a box across the seam becomes two
    (its right part at the image's right edge, its left part at the left edge), so both
    halves get redacted.
    """
    past = xyxy[:, 0] >= width
    across = (xyxy[:, 0] < width) & (xyxy[:, 2] > width)
    inside = ~past & ~across
    shifted = xyxy[past] - np.array([width, 0, width, 0], np.float32)
    right = xyxy[across].copy()
    right[:, 2] = width
    left = xyxy[across].copy()
    left[:, 0] = 0
    left[:, 2] -= width
    boxes = np.concatenate([xyxy[inside], shifted, right, left])
    scores = np.concatenate([score[inside], score[past], score[across], score[across]])
    return boxes.astype(np.float32), scores.astype(np.float32)
