"""Compositing sprites into real frames: perspective, wear, lighting, camera degradations.

Pure array functions (numpy + OpenCV); the random generator is always passed in so a seed
reproduces every sample.
"""

from __future__ import annotations

import cv2
import numpy as np

from redact.train.render import Sprite

# The viewing angles training draws a plate at (random_quad's defaults); stress conditions
# (data.Condition) start from the same ranges, so validation scenes draw what training does.
MAX_ROT_DEG = 6.0
MAX_YAW = 0.3


def random_quad(cx: float, cy: float, w: float, h: float, rng: np.random.Generator,
                max_rot_deg: float = MAX_ROT_DEG, max_yaw: float = MAX_YAW, max_pitch: float = 0.15,
                min_rot_deg: float = 0.0, min_yaw: float = 0.0) -> np.ndarray:
    """Corners (tl, tr, br, bl) of a w x h plate centred at (cx, cy), seen at a small roll,
    a yaw (one side shorter and the plate narrower) and a pitch (top or bottom narrower).
    ``min_yaw`` / ``min_rot_deg`` keep the magnitude at least that (stress scenes); the draws
    are the same in number either way, so the default stream, and every training sample, is
    unchanged."""
    yaw = _at_least(float(rng.uniform(-max_yaw, max_yaw)), min_yaw, max_yaw)
    pitch = float(rng.uniform(-max_pitch, max_pitch))
    ww = w * (1 - 0.5 * abs(yaw))
    hl, hr = h * (1 + yaw / 2), h * (1 - yaw / 2)
    wt, wb = ww * (1 + pitch / 2), ww * (1 - pitch / 2)
    pts = np.array([[-wt / 2, -hl / 2], [wt / 2, -hr / 2], [wb / 2, hr / 2], [-wb / 2, hl / 2]], np.float64)
    a = np.deg2rad(_at_least(float(rng.uniform(-max_rot_deg, max_rot_deg)), min_rot_deg, max_rot_deg))
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (pts @ rot.T + [cx, cy]).astype(np.float32)


def _at_least(v: float, lo: float, hi: float) -> float:
    """``v``, drawn uniform on [-hi, hi], mapped onto [lo, hi] in magnitude, keeping its sign."""
    if lo <= 0 or hi <= 0:
        return v
    return float(np.sign(v)) * (lo + abs(v) / hi * (hi - lo))


def motion_blur(img: np.ndarray, length: int, angle_deg: float) -> np.ndarray:
    """A straight motion streak of ``length`` pixels at ``angle_deg`` from horizontal."""
    k = max(1, int(length))
    kern: np.ndarray = np.zeros((k, k), np.float32)
    kern[k // 2, :] = 1
    rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), angle_deg, 1.0)
    kern = cv2.warpAffine(kern, rot, (k, k))
    out: np.ndarray = cv2.filter2D(img, -1, kern / max(kern.sum(), 1e-6))
    return out


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """``img`` after one JPEG round trip at ``quality``."""
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if ok else None
    return img if dec is None else dec


def quad_box(quad: np.ndarray) -> np.ndarray:
    """Axis-aligned box (x1, y1, x2, y2) around a quad: how the real labels are drawn."""
    return np.array([quad[:, 0].min(), quad[:, 1].min(), quad[:, 0].max(), quad[:, 1].max()], np.float32)


def wear(sp: Sprite, rng: np.random.Generator) -> Sprite:
    """Dirt, fading, uneven light and a specular streak on a clean sprite."""
    rgb = sp.rgb.astype(np.float32)
    h, w = rgb.shape[:2]
    if rng.random() < 0.6:  # low-frequency dirt / shade
        lo = rng.uniform(0.0, 1.0, (int(rng.integers(2, 6)), int(rng.integers(3, 10)))).astype(np.float32)
        field = cv2.resize(lo, (w, h), interpolation=cv2.INTER_CUBIC)
        strength = float(rng.uniform(0.1, 0.45))
        rgb *= 1 - strength * np.clip(field, 0, 1)[:, :, None]
    if rng.random() < 0.4:  # speckled grime
        n: np.ndarray = rng.uniform(0, 1, (h, w)).astype(np.float32)
        n = cv2.GaussianBlur(n, (0, 0), max(0.6, h / 60))
        rgb *= (1 - float(rng.uniform(0.1, 0.5)) * (n > np.quantile(n, 0.8)))[:, :, None]
    if rng.random() < 0.3:  # faded / sun-bleached
        rgb = rgb * float(rng.uniform(0.6, 0.9)) + float(rng.uniform(20, 70))
    if rng.random() < 0.25:  # specular streak
        x = np.linspace(-1, 1, w, dtype=np.float32)[None, :] + np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None] * float(rng.uniform(-1, 1))
        c = float(rng.uniform(-0.8, 0.8))
        rgb += float(rng.uniform(40, 140)) * np.exp(-((x - c) ** 2) / 0.02)[:, :, None]
    tint = rng.uniform(0.85, 1.1, 3).astype(np.float32)
    rgb *= tint
    return Sprite(np.clip(rgb, 0, 255).astype(np.uint8), sp.alpha, sp.kind)


def paste(canvas: np.ndarray, sp: Sprite, quad: np.ndarray, rng: np.random.Generator,
          light: float = 1.0, soften: float = 0.0) -> np.ndarray:
    """Warp ``sp`` onto ``quad`` of ``canvas`` (HxWx3 uint8, modified in place) and return the
    axis-aligned box of the quad. ``light`` scales the sprite's brightness; ``soften`` is an
    extra Gaussian sigma in canvas pixels (to match a soft background)."""
    box = quad_box(quad)
    qw = max(1.0, float(np.linalg.norm(quad[1] - quad[0])))
    qh = max(1.0, float(np.linalg.norm(quad[3] - quad[0])))
    rgb, alpha = sp.rgb, sp.alpha
    # Area-average down first so tiny plates alias like a real camera, not like point sampling.
    if rgb.shape[1] > 2 * qw or rgb.shape[0] > 2 * qh:
        size = (max(2, round(qw * 1.5)), max(2, round(qh * 1.5)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)
    H, W = canvas.shape[:2]
    x0, y0 = max(0, int(np.floor(box[0])) - 2), max(0, int(np.floor(box[1])) - 2)
    x1, y1 = min(W, int(np.ceil(box[2])) + 3), min(H, int(np.ceil(box[3])) + 3)
    if x1 <= x0 or y1 <= y0:
        return box
    src = np.array([[0, 0], [rgb.shape[1], 0], [rgb.shape[1], rgb.shape[0]], [0, rgb.shape[0]]], np.float32)
    m = cv2.getPerspectiveTransform(src, (quad - [x0, y0]).astype(np.float32))
    size = (x1 - x0, y1 - y0)
    wr: np.ndarray = cv2.warpPerspective(rgb, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT).astype(np.float32)
    wa: np.ndarray = cv2.warpPerspective(alpha, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT).astype(np.float32) / 255
    if soften > 0.3:
        wr = cv2.GaussianBlur(wr, (0, 0), soften)
        wa = cv2.GaussianBlur(wa, (0, 0), soften)
    wr *= light
    roi = canvas[y0:y1, x0:x1].astype(np.float32)
    out = roi * (1 - wa[:, :, None]) + np.clip(wr, 0, 255) * wa[:, :, None]
    canvas[y0:y1, x0:x1] = np.clip(out, 0, 255).astype(np.uint8)
    return box


def night(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark, blue-shifted, noisy frame with a few light blooms."""
    f = img.astype(np.float32) / 255
    f = f ** float(rng.uniform(1.4, 2.6)) * float(rng.uniform(0.35, 0.8))
    f *= np.array([0.85, 0.9, 1.05], np.float32)
    h, w = f.shape[:2]
    for _ in range(int(rng.integers(0, 4))):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.03, 0.2) * min(h, w)
        yy, xx = np.ogrid[:h, :w]
        f += float(rng.uniform(0.2, 0.8)) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[:, :, None] * np.array([1, 0.9, 0.7], np.float32)
    f += rng.normal(0, float(rng.uniform(0.01, 0.04)), f.shape).astype(np.float32)
    return np.clip(f * 255, 0, 255).astype(np.uint8)


def camera(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Global photometric and optical degradations: exposure, contrast, colour cast, defocus,
    motion blur, sensor noise and JPEG re-encoding."""
    f = img.astype(np.float32)
    f = (f - 128) * float(rng.uniform(0.7, 1.3)) + 128 + float(rng.uniform(-35, 35))
    f *= rng.uniform(0.9, 1.1, 3).astype(np.float32)
    out: np.ndarray = np.clip(f, 0, 255).astype(np.uint8)
    r = rng.random()
    if r < 0.2:
        out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.5, 1.6)))
    elif r < 0.35:
        k = int(rng.integers(3, 10))
        out = motion_blur(out, k, float(rng.uniform(-30, 30)))
    if rng.random() < 0.3:
        noise = rng.normal(0, float(rng.uniform(2, 8)), out.shape).astype(np.float32)
        out = np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        out = jpeg(out, int(rng.integers(25, 90)))
    return out
