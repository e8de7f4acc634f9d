"""A synthetic sample session for the bundled example and for tests.

Everything is drawn here, from packaged material only: streets, buildings, signs and cars are
procedural; licence plates are rendered with Pillow's built-in font; the faces are NASA's
public-domain astronaut portrait shipped by scikit-image (``skimage.data.astronaut``). The
GPS track is a synthetic drive through central Tokyo. Nothing in it is a real capture.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from capture.geodesy import bearing_deg, distance_m, interpolate, offset_m
from capture.session import SessionMeta, SessionWriter
from capture.types import Fix

START = datetime(2026, 11, 25, 1, 30, 0, tzinfo=UTC)
ORIGIN = (35.68120, 139.76710)  # near Tokyo Station


@dataclass(frozen=True, slots=True)
class SampleTruth:
    """Where the generator put faces, plates and signs in one frame (pixels)."""

    faces: tuple[tuple[int, int, int, int], ...]
    plates: tuple[tuple[int, int, int, int], ...]
    signs: tuple[tuple[int, int, int, int], ...]


def _astronaut_bust() -> np.ndarray:
    try:
        from skimage import data
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the sample session needs scikit-image (pip install 'streetveil[demo]')"
        ) from e
    img: np.ndarray = data.astronaut()  # RGB 512x512, public domain (NASA)
    return img[8:300, 110:340].copy()  # head and shoulders


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def render_plate(text_top: str, text_bottom: str, h: int, style: str) -> np.ndarray:
    """A plate image (RGB). style: 'jp-white', 'jp-kei' (yellow), 'eu'."""
    if style == "eu":
        w = int(h * 4.7)
        bg, fg = (245, 245, 245), (20, 20, 20)
    else:
        w = int(h * 2.0)
        bg, fg = ((250, 250, 245), (20, 90, 50)) if style == "jp-white" else ((245, 200, 40), (20, 20, 20))
    im = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(im)
    d.rectangle([1, 1, w - 2, h - 2], outline=fg, width=max(1, h // 20))
    if style == "eu":
        d.rectangle([2, 2, int(h * 0.45), h - 3], fill=(30, 60, 170))
        f = _font(int(h * 0.7))
        d.text((int(h * 0.6), h * 0.12), text_top + " " + text_bottom, fill=fg, font=f)
    else:
        d.text((w * 0.25, h * 0.04), text_top, fill=fg, font=_font(int(h * 0.3)))
        d.text((w * 0.08, h * 0.36), text_bottom, fill=fg, font=_font(int(h * 0.58)))
    return np.asarray(im)


def _paste(dst: np.ndarray, src: np.ndarray, x: int, y: int) -> tuple[int, int, int, int] | None:
    h, w = src.shape[:2]
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + w, dst.shape[1]), min(y + h, dst.shape[0])
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    dst[y1:y2, x1:x2] = src[y1 - y : y2 - y, x1 - x : x2 - x]
    return x1, y1, x2, y2


def draw_frame(i: int, width: int = 1280, height: int = 720, seed: int = 7) -> tuple[np.ndarray, SampleTruth]:
    """Draw street frame ``i`` of the sample drive (RGB uint8) and say where things are."""
    rng = np.random.default_rng(seed * 1000 + i)
    img = np.zeros((height, width, 3), np.uint8)
    horizon = int(height * 0.45)
    sky = np.linspace(200, 150, horizon).astype(np.uint8)
    img[:horizon] = np.stack([sky - 20, sky, np.full_like(sky, 235)], axis=1)[:, None, :]
    img[horizon:] = (150, 146, 140)  # pavement
    # Buildings on both sides, scrolling with the drive.
    for side in (0, 1):
        x = -((i * 37) % 160)
        while x < width // 2:
            bw = int(rng.integers(90, 200))
            bh = int(rng.integers(120, horizon))
            col = tuple(int(c) for c in rng.integers(90, 200, 3))
            bx = x if side == 0 else width - x - bw
            cv2.rectangle(img, (bx, horizon - bh), (bx + bw, horizon + 40), col, -1)
            for wy in range(horizon - bh + 12, horizon + 20, 26):
                for wx in range(bx + 10, bx + bw - 16, 24):
                    cv2.rectangle(img, (wx, wy), (wx + 12, wy + 14), (60, 70, 90), -1)
            x += bw + 6
    # Road with perspective and lane markings.
    road = np.array([[0, height], [width, height], [width // 2 + 60, horizon + 40], [width // 2 - 60, horizon + 40]])
    cv2.fillPoly(img, [road], (85, 85, 90))
    for k in range(6):
        t0 = ((k + (i % 4) / 4) / 6) ** 2
        t1 = min(1.0, t0 + 0.04)
        y0, y1 = int(horizon + 40 + t0 * (height - horizon - 40)), int(horizon + 40 + t1 * (height - horizon - 40))
        cv2.line(img, (width // 2, y0), (width // 2, y1), (235, 235, 235), max(1, int(2 + 10 * t0)))
    truth_faces: list[tuple[int, int, int, int]] = []
    truth_plates: list[tuple[int, int, int, int]] = []
    truth_signs: list[tuple[int, int, int, int]] = []
    # A road sign with text that must stay sharp for the GIS team.
    sx = 80 + (i * 23) % 300
    cv2.rectangle(img, (sx, 150), (sx + 220, 230), (160, 80, 20), -1)
    pil = Image.fromarray(img)
    ImageDraw.Draw(pil).text((sx + 12, 165), "Marunouchi 1 km", fill=(255, 255, 255), font=_font(26))
    img = np.asarray(pil).copy()
    cv2.line(img, (sx + 110, 230), (sx + 110, horizon + 60), (120, 120, 120), 6)
    truth_signs.append((sx, 150, sx + 220, 230))
    # Cars ahead with plates.
    plates = [("TOKYO 500", "12-34", "jp-white"), ("SHINAGAWA 580", "56-78", "jp-kei"), ("AB", "123 CD", "eu")]
    for k in range(1 + i % 3):
        scale = 0.5 + 0.5 * ((i + 2 * k) % 5) / 4
        cw, ch = int(300 * scale), int(200 * scale)
        cx = width // 2 - cw // 2 + (k - 1) * int(380 * scale)
        cy = height - ch - int(60 + 120 * (1 - scale))
        body = tuple(int(c) for c in rng.integers(30, 220, 3))
        cv2.rectangle(img, (cx, cy), (cx + cw, cy + ch), body, -1)
        cv2.rectangle(img, (cx + cw // 10, cy + ch // 8), (cx + cw - cw // 10, cy + ch // 2), (40, 50, 60), -1)
        top, bottom, style = plates[(i + k) % 3]
        ph = max(14, int(48 * scale))
        plate = render_plate(top, bottom, ph, style)
        box = _paste(img, plate, cx + cw // 2 - plate.shape[1] // 2, cy + int(ch * 0.62))
        if box:
            truth_plates.append(box)
    # Pedestrians on the sidewalks: the public-domain astronaut portrait at several sizes.
    bust = _astronaut_bust()
    for k in range(2):
        head_h = int(60 + 70 * ((i * 3 + k * 5) % 7) / 6)  # bust height in pixels
        scale = head_h / bust.shape[0]
        b = cv2.resize(bust, (max(4, int(bust.shape[1] * scale)), head_h), interpolation=cv2.INTER_AREA)
        px = (60 + (i * 41) % 200) if k == 0 else width - 300 + (i * 29) % 160
        py = horizon - head_h // 3
        box = _paste(img, b, px, py)
        if box:
            # The face inside the bust crop (measured on the source image: x 65..165, y 57..177).
            fx1, fy1 = px + int(65 * scale), py + int(57 * scale)
            truth_faces.append((fx1, fy1, fx1 + int(100 * scale), fy1 + int(120 * scale)))
            cv2.rectangle(img, (px, py + head_h), (px + b.shape[1], py + head_h + head_h), (50, 60, 120), -1)
    noise = rng.normal(0, 3, img.shape)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return img, SampleTruth(tuple(truth_faces), tuple(truth_plates), tuple(truth_signs))


def sample_fixes(seconds: int = 20, speed_mps: float = 8.0) -> list[Fix]:
    """A 1 Hz GPS track: a gentle curve heading south-west from ``ORIGIN``."""
    fixes = []
    lat, lon = ORIGIN
    heading = 200.0
    for s in range(seconds + 1):
        fixes.append(
            Fix(
                time=START + timedelta(seconds=s),
                lat=lat,
                lon=lon,
                alt=5.0,
                speed=speed_mps,
                course=heading % 360,
                fix_quality=1,
                hdop=0.9,
                satellites=11,
            )
        )
        heading += 1.5
        rad = math.radians(heading)
        lat, lon = offset_m(lat, lon, speed_mps * math.cos(rad), speed_mps * math.sin(rad))
    return fixes


def make_sample_session(
    root: Path,
    *,
    frames: int = 24,
    every_meters: float = 5.0,
    width: int = 1280,
    height: int = 720,
    operator: str = "Example Road Survey Co., Ltd.",
    purpose: str = "Demonstration of streetveil on a synthetic drive",
    notice_version: str = "2026-11-01",
    recipient_public_key: object | None = None,
    session_id: str | None = None,
) -> Path:
    """Write a synthetic session below ``root`` and return its directory."""
    fixes = sample_fixes(seconds=max(3, int(frames * every_meters / 8.0) + 2))
    meta = SessionMeta(
        vehicle_id="demo-01",
        operator=operator,
        purpose=purpose,
        notice_version=notice_version,
        camera_model="synthetic",
        vehicle_description="synthetic sample drive (procedurally drawn, not a real capture)",
        width=width,
        height=height,
        source="sample",
    )
    w = SessionWriter.create(root, meta, start=START, recipient_public_key=recipient_public_key, session_id=session_id)
    for f in fixes:
        w.add_fix(f)
    # Frames every `every_meters` along the track, positions interpolated between fixes.
    along = 0.0
    kept = 0
    for a, b in itertools.pairwise(fixes):
        seg = distance_m(a.lat, a.lon, b.lat, b.lon)
        while kept < frames and along <= seg:
            frac = along / seg if seg else 0.0
            lat, lon = interpolate(a.lat, a.lon, b.lat, b.lon, frac)
            t = a.time + (b.time - a.time) * frac
            rgb, _ = draw_frame(kept, width, height)
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            assert ok
            w.add_frame(
                buf.tobytes(),
                time=t,
                position_source="fix" if frac == 0.0 else "interpolated",
                lat=lat,
                lon=lon,
                altitude=5.0,
                heading=bearing_deg(a.lat, a.lon, b.lat, b.lon),
                speed=a.speed,
                fix_quality=1,
                hdop=0.9,
                satellites=11,
                width=width,
                height=height,
            )
            kept += 1
            along += every_meters
        along -= seg
    return w.close(end=fixes[-1].time)
