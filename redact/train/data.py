"""Training and validation data for the plate branch.

- The real dashcam set is split by time within each ride (neighbouring frames are
  near-duplicates): the last ``val_frac`` of every ride is validation and is never used for
  training, calibration or model selection.
- Training samples are 512x320 crops (wide, like plates and street scenes) of training frames at
  a random scale, with synthetic plates of every family painted over the labelled plates
  (perspective-matched, covering the real plate) or elsewhere, plus hard-negative signs.
- Validation scenes composite synthetic plates of one family and one height band into held-out
  frames at full resolution, from a seed stream distinct from training.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from redact.train import compose
from redact.train.render import PLATE_FAMILIES, SIGN_KINDS, Sprite, render_plate, render_sign

CROP_W, CROP_H = 512, 320
# Training share of each family: Japan first (the product's market), then what the real
# data lacks most (2:1 and two-line plates).
FAMILY_WEIGHTS = {"jp_private": 0.13, "jp_commercial": 0.09, "jp_kei": 0.1, "jp_kei_commercial": 0.08,
                  "eu": 0.18, "us": 0.16, "br": 0.11, "moto": 0.15}
HEIGHT_BANDS = ((0, 8), (8, 16), (16, 32), (32, 64), (64, 128), (128, 10_000))
_ASPECT = {"eu": 4.73, "br": 3.08, "us": 2.0, "moto": 1.5}


def band_name(lo: float, hi: float) -> str:
    return f"<{hi}" if lo == 0 else (f">={lo}" if hi >= 10_000 else f"{lo}-{hi}")


@dataclass(frozen=True, slots=True)
class Frame:
    """One labelled dashcam frame: ``boxes`` float32 [N, 4] x1 y1 x2 y2 in pixels."""

    path: Path
    key: str
    ride: str
    t: float
    boxes: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise ValueError(f"{self.path}: boxes must be [N, 4], got {self.boxes.shape}")


def load_dashcam(root: Path) -> list[Frame]:
    """Frames of ``plates-dashcam-ro`` with ride and time parsed from ORIGIN.json
    (``..._<ride>.mp4#t=<seconds>.jpg``)."""
    labels = json.loads((root / "labels.json").read_text())
    origin = json.loads((root / "ORIGIN.json").read_text())
    frames = []
    for key, boxes in labels.items():
        m = re.search(r"/([^/]+)\.mp4#t=([0-9.]+)\.jpg$", origin[key])
        if m is None:
            raise ValueError(f"{root / 'ORIGIN.json'}: cannot parse ride/time from {origin[key]!r}")
        frames.append(Frame(root / key, key, m.group(1), float(m.group(2)),
                            np.asarray(boxes, np.float32).reshape(-1, 4)))
    return sorted(frames, key=lambda f: (f.ride, f.t))


def time_split(frames: list[Frame], val_frac: float = 0.2) -> tuple[list[Frame], list[Frame]]:
    """(train, val): the last ``val_frac`` of each ride by time is validation."""
    train: list[Frame] = []
    val: list[Frame] = []
    for ride in sorted({f.ride for f in frames}):
        fr = sorted((f for f in frames if f.ride == ride), key=lambda f: f.t)
        n_val = max(1, round(len(fr) * val_frac))
        train += fr[: len(fr) - n_val]
        val += fr[len(fr) - n_val:]
    return train, val


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: cannot decode image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def pick_family(rng: np.random.Generator) -> str:
    names = list(FAMILY_WEIGHTS)
    p = np.array([FAMILY_WEIGHTS[n] for n in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _plate_sprite(family: str, rng: np.random.Generator) -> Sprite:
    return compose.wear(render_plate(family, rng), rng)


def _aspect(sp: Sprite) -> float:
    return sp.rgb.shape[1] / sp.rgb.shape[0]


def _target_height(rng: np.random.Generator) -> float:
    r = rng.random()
    # Far plates (7-40 px) are the common case on the road; close and parked ones reach
    # 250 px in a 1280 px wide frame and are the rarest in the real data, so they get a quarter.
    lo, hi = (7, 40) if r < 0.4 else ((20, 110) if r < 0.75 else (70, 280))
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _iou_any(box: np.ndarray, boxes: list[np.ndarray], thr: float) -> bool:
    for b in boxes:
        iw = min(box[2], b[2]) - max(box[0], b[0])
        ih = min(box[3], b[3]) - max(box[1], b[1])
        if iw > 0 and ih > 0:
            inter = iw * ih
            small = min((box[2] - box[0]) * (box[3] - box[1]), (b[2] - b[0]) * (b[3] - b[1]))
            if inter / max(small, 1e-6) > thr:
                return True
    return False


def _cover_quad(box: np.ndarray, sp: Sprite, rng: np.random.Generator) -> np.ndarray:
    """A quad for ``sp`` that hides the real plate ``box``: at least as wide, bottom-aligned
    (plates of another shape sit on the same mount), slight perspective."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    a = _aspect(sp)
    w = max(bw * float(rng.uniform(1.03, 1.15)), bh * a * 1.05)
    h = w / a
    cx = (box[0] + box[2]) / 2
    cy = box[3] + bh * 0.05 - h / 2
    return compose.random_quad(cx, cy, w, h, rng, max_rot_deg=3, max_yaw=0.15, max_pitch=0.08)


# Hard views (``make_sample(angled=..., streaked=...)``): plates seen more from the side and
# frames streaked by motion, past the ranges every crop draws from (yaw 0.3, roll 6 deg,
# streaks of 3-9 px), and short of the stress conditions' (pipeline.STRESS_CONDITIONS), so
# that those still measure beyond what training saw.
HARD_YAW, HARD_ROLL_DEG, HARD_MOTION_PX = (0.2, 0.45), (3.0, 9.0), (7, 14)


def make_sample(frames: list[Frame], images: list[np.ndarray], rng: np.random.Generator, angled_share: float = 0.0,
                streaked_share: float = 0.0, hard_rng: np.random.Generator | None = None, streaked_signs: int = 0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training crop (CROP_H x CROP_W x 3 uint8 RGB), its plate boxes [N, 4] and ignore
    boxes [M, 4] (plates cut by the crop edge, neither positive nor negative). Hard views:
    ``angled_share`` of crops put their extra plates at a strong angle and, independently,
    ``streaked_share`` are streaked by motion, with ``streaked_signs`` more hard negatives in
    them (so that streaks alone do not say "plate"). Those draws come from ``hard_rng`` only,
    so every other crop is the one the shares at 0 give."""
    angled = streaked = False
    if angled_share > 0 or streaked_share > 0:
        if hard_rng is None:
            raise ValueError("hard views draw from a stream of their own: pass hard_rng")
        a, s = hard_rng.random(2)
        angled, streaked = bool(a < angled_share), bool(s < streaked_share)
    i = int(rng.integers(len(frames)))
    fr, img = frames[i], images[i]
    H, W = img.shape[:2]
    real = fr.boxes
    mode = rng.random()
    family = pick_family(rng)
    sp = _plate_sprite(family, rng)
    th = _target_height(rng)
    replace = len(real) > 0 and mode < 0.65
    keep_real = len(real) > 0 and 0.65 <= mode < 0.85
    if replace or keep_real:
        k = int(rng.integers(len(real)))
        anchor = real[k]
        ah = float(np.ptp(_cover_quad(anchor, sp, rng)[:, 1])) if replace else float(anchor[3] - anchor[1])
        if keep_real:  # real Romanian plates keep their own sizes, scaled moderately
            th = float(np.clip(th, 0.5 * ah, 3.0 * ah))
        s = th / max(float(ah), 1.0)
        ax, ay = (anchor[0] + anchor[2]) / 2, (anchor[1] + anchor[3]) / 2
    else:
        s = float(np.exp(rng.uniform(np.log(0.35), np.log(2.5))))
        ax, ay = rng.uniform(0, W), rng.uniform(H * 0.25, H)
    # The crop stays inside the frame: reflected borders would mirror real, unlabelled plates.
    s = float(np.clip(s, max(CROP_W / W, CROP_H / H), 12.0))
    cw, ch = CROP_W / s, CROP_H / s
    x0 = float(np.clip(ax - rng.uniform(0.15, 0.85) * cw, 0, W - cw))
    y0 = float(np.clip(ay - rng.uniform(0.15, 0.85) * ch, 0, H - ch))
    m = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], np.float32)
    crop = cv2.warpAffine(img, m, (CROP_W, CROP_H), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.5:  # mirrored backgrounds are still streets; plates are pasted after
        crop = crop[:, ::-1].copy()
        flip = True
    else:
        flip = False
    boxes = (real.reshape(-1, 2, 2) * s - [x0 * s, y0 * s]).reshape(-1, 4)
    if flip:
        boxes = boxes[:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [CROP_W, 0, CROP_W, 0]
    is_night = fr.ride.startswith("night")
    if not is_night and rng.random() < 0.2:
        crop = compose.night(crop, rng)
        is_night = True
    soft = float(rng.uniform(0.0, 1.0)) * min(1.5, max(0.0, s - 1.0) * 0.5 + 0.4)
    light = float(rng.uniform(0.9, 1.6)) * (0.55 if is_night else 1.0)
    labels: list[np.ndarray] = []
    real_keep = np.ones(len(boxes), bool)
    if replace:
        order = [k] + [j for j in range(len(boxes)) if j != k and rng.random() < 0.5]
        for n, j in enumerate(order):
            spj = sp if n == 0 else _plate_sprite(pick_family(rng), rng)
            q = _cover_quad(boxes[j], spj, rng)
            labels.append(compose.paste(crop, spj, q, rng, light=light, soften=soft))
            real_keep[j] = False
    labels += list(boxes[real_keep])
    # Extra plates elsewhere: other cars, other sizes.
    for _ in range(int(rng.integers(0, 3)) + (0 if replace or keep_real else 1)):
        spx = _plate_sprite(pick_family(rng), rng)
        h = float(np.clip(th * rng.uniform(0.5, 1.6), 6, 0.9 * CROP_H))
        w = h * _aspect(spx)
        if w > 0.95 * CROP_W:
            w = 0.95 * CROP_W
            h = w / _aspect(spx)
        cx, cy = rng.uniform(w / 2, CROP_W - w / 2), rng.uniform(h / 2, CROP_H - h / 2)
        q = (compose.random_quad(cx, cy, w, h, rng, max_yaw=HARD_YAW[1], min_yaw=HARD_YAW[0],
                                 max_rot_deg=HARD_ROLL_DEG[1], min_rot_deg=HARD_ROLL_DEG[0])
             if angled else compose.random_quad(cx, cy, w, h, rng))
        b = compose.quad_box(q)
        if _iou_any(b, labels, 0.05):
            continue
        labels.append(compose.paste(crop, spx, q, rng, light=light, soften=soft))
    # Hard negatives: signs, shop text, km posts, brake lights.
    if rng.random() < 0.6:
        for _ in range(int(rng.integers(1, 4))):
            _paste_negative(crop, labels, rng, light, soft)
    if streaked and streaked_signs:
        assert hard_rng is not None
        for _ in range(streaked_signs):
            _paste_negative(crop, labels, hard_rng, light, soft)
    crop = compose.camera(crop, rng)
    if streaked:
        assert hard_rng is not None
        crop = compose.motion_blur(crop, int(hard_rng.integers(*HARD_MOTION_PX)), float(hard_rng.uniform(-15, 15)))
    return (crop, *_clip_labels(labels))


def _paste_negative(crop: np.ndarray, labels: list[np.ndarray], rng: np.random.Generator, light: float,
                    soft: float) -> None:
    """One hard negative (a sign, shop text, km post, brake lights...) pasted where it overlaps
    no plate; every draw from ``rng``."""
    sg = compose.wear(render_sign(SIGN_KINDS[int(rng.integers(len(SIGN_KINDS)))], rng), rng)
    h = float(np.exp(rng.uniform(np.log(8), np.log(0.8 * CROP_H))))
    w = h * _aspect(sg)
    if w > 0.95 * CROP_W:
        w = 0.95 * CROP_W
        h = w / _aspect(sg)
    cx, cy = rng.uniform(w / 2, CROP_W - w / 2), rng.uniform(h / 2, CROP_H - h / 2)
    q = compose.random_quad(cx, cy, w, h, rng, max_yaw=0.4)
    if not _iou_any(compose.quad_box(q), labels, 0.05):
        compose.paste(crop, sg, q, rng, light=light, soften=soft)


def _clip_labels(labels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    pos, ign = [], []
    for b in labels:
        c = np.array([max(0, b[0]), max(0, b[1]), min(CROP_W, b[2]), min(CROP_H, b[3])], np.float32)
        area = (b[2] - b[0]) * (b[3] - b[1])
        vis = max(0, c[2] - c[0]) * max(0, c[3] - c[1]) / max(area, 1e-6)
        if vis >= 0.6 and c[3] - c[1] >= 3:
            pos.append(c)
        elif vis > 0:
            ign.append(c)
    return (np.array(pos, np.float32).reshape(-1, 4), np.array(ign, np.float32).reshape(-1, 4))


# --- validation scenes -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Scene:
    """A validation image with synthetic plates (``boxes``, the ones scored), the frame's real
    labelled plates (``extra``: matches to them are neither hits nor false detections) and,
    for sign scenes, the pasted signs (``signs``)."""

    image: np.ndarray = field(repr=False)
    boxes: np.ndarray
    extra: np.ndarray
    signs: np.ndarray
    name: str


@dataclass(frozen=True, slots=True)
class Condition:
    """One capture condition held fixed over a stress set: what validation scenes leave to
    chance (night, viewing angle, motion blur, compression), forced on, up to and beyond what
    training draws (training: 20 % night, yaw within +-0.3, roll within +-6 deg, motion streaks
    of 3-9 px in 15 % of crops, JPEG quality 25-90 in half of them)."""

    name: str
    night: bool = False  # a day frame rendered dark (compose.night), plates lit as at night
    yaw: tuple[float, float] = (0.0, compose.MAX_YAW)  # |yaw| range of compose.random_quad
    roll_deg: tuple[float, float] = (0.0, compose.MAX_ROT_DEG)  # |roll| range
    motion_px: tuple[int, int] = (0, 0)  # motion streak length, drawn in [lo, hi), after the camera model
    jpeg_quality: tuple[int, int] = (0, 0)  # one more JPEG round trip at a quality in [lo, hi)


AS_VALIDATION = Condition("as_validation")


def synthetic_scene(fr: Frame, img: np.ndarray, family: str, band: tuple[int, int],
                    rng: np.random.Generator, n: int = 3, condition: Condition = AS_VALIDATION,
                    cond_rng: np.random.Generator | None = None) -> Scene:
    """Plates of ``family`` with heights in ``band``, on a held-out frame at full size:
    painted over the labelled plates when they are in the band, else elsewhere in the lower
    two thirds (roads, cars), after the same wear / light / camera model as training.
    ``condition`` draws what it adds from ``cond_rng`` only, so scenes built from the same
    ``rng`` state under different conditions hold the same plates at the same places (as far
    as a changed angle lets them fit)."""
    out = img.copy()
    H, W = out.shape[:2]
    lo, hi = band
    hi_eff = min(hi, 300)
    is_night = fr.ride.startswith("night")
    c, crng = condition, cond_rng if cond_rng is not None else rng
    if c.night and not is_night:
        out = compose.night(out, crng)
        is_night = True
    placed: list[np.ndarray] = []
    covered = np.zeros(len(fr.boxes), bool)
    for k in range(n):
        sp = _plate_sprite(family, rng)
        a = _aspect(sp)
        h = float(np.exp(rng.uniform(np.log(max(lo, 5)), np.log(hi_eff))))
        w = min(h * a, 0.9 * W)
        h = w / a
        if k == 0 and len(fr.boxes):  # first plate over a real one (scaled to the band)
            j = int(rng.integers(len(fr.boxes)))
            b = fr.boxes[j]
            cx, cy = (b[0] + b[2]) / 2, b[3] - h / 2
            covered[j] = (w >= (b[2] - b[0])) and (h >= (b[3] - b[1]))
        else:
            cx, cy = rng.uniform(w / 2, W - w / 2), rng.uniform(max(H / 3, h / 2), H - h / 2)
        q = compose.random_quad(cx, cy, w, h, rng, max_yaw=c.yaw[1], min_yaw=c.yaw[0],
                                max_rot_deg=c.roll_deg[1], min_rot_deg=c.roll_deg[0])
        bq = compose.quad_box(q)
        if _iou_any(bq, placed, 0.05) or bq[0] < 0 or bq[1] < 0 or bq[2] > W or bq[3] > H:
            continue
        placed.append(compose.paste(out, sp, q, rng, light=float(rng.uniform(0.9, 1.5)) * (0.55 if is_night else 1.0),
                                    soften=float(rng.uniform(0, 0.8))))
    out = compose.camera(out, rng)
    if c.motion_px[1] > 0:
        out = compose.motion_blur(out, int(crng.integers(*c.motion_px)), float(crng.uniform(-10, 10)))
    if c.jpeg_quality[1] > 0:
        out = compose.jpeg(out, int(crng.integers(*c.jpeg_quality)))
    boxes = np.array(placed, np.float32).reshape(-1, 4)
    extra = fr.boxes[~covered]
    tag = "" if c == AS_VALIDATION else f":{c.name}"
    return Scene(out, boxes, extra, np.zeros((0, 4), np.float32), f"{fr.key}:{family}:{band_name(*band)}{tag}")


def sign_scene(fr: Frame, img: np.ndarray, rng: np.random.Generator, n: int = 4) -> Scene:
    """Street signs and other text pasted on a held-out frame; no plate may be detected on them."""
    out = img.copy()
    H, W = out.shape[:2]
    placed: list[np.ndarray] = []
    for _ in range(n):
        kind = SIGN_KINDS[int(rng.integers(len(SIGN_KINDS)))]
        sg = compose.wear(render_sign(kind, rng), rng)
        h = float(np.exp(rng.uniform(np.log(10), np.log(200))))
        w = min(h * _aspect(sg), 0.8 * W)
        h = w / _aspect(sg)
        cx, cy = rng.uniform(w / 2, W - w / 2), rng.uniform(h / 2, H - h / 2)
        q = compose.random_quad(cx, cy, w, h, rng, max_yaw=0.4)
        b = compose.quad_box(q)
        if _iou_any(b, placed + list(fr.boxes), 0.02):
            continue
        placed.append(compose.paste(out, sg, q, rng, soften=float(rng.uniform(0, 0.8))))
    out = compose.camera(out, rng)
    return Scene(out, np.zeros((0, 4), np.float32), fr.boxes, np.array(placed, np.float32).reshape(-1, 4),
                 f"{fr.key}:signs")


def family_aspect(family: str) -> float:
    return 2.0 if family.startswith("jp_") else _ASPECT[family]


__all__ = ["AS_VALIDATION", "CROP_H", "CROP_W", "HEIGHT_BANDS", "PLATE_FAMILIES", "Condition", "Frame", "Scene",
           "load_dashcam", "make_sample", "read_rgb", "sign_scene", "synthetic_scene", "time_split"]
