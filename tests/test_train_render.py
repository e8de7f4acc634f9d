"""The synthetic plate / sign generator: every family and sign kind renders with its real
proportions and real glyphs (no missing-glyph boxes), and missing fonts fail loudly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from redact.errors import ModelError
from redact.train import fonts
from redact.train.render import PLATE_FAMILIES, SIGN_KINDS, render_plate, render_sign

ASPECT = {"eu": (4.5, 5.0), "br": (2.9, 3.2), "us": (1.9, 2.1), "moto": (1.1, 1.9)}


@pytest.mark.parametrize("family", PLATE_FAMILIES)
def test_plate_families_render_with_their_proportions(family: str) -> None:
    rng = np.random.default_rng(3)
    for _ in range(5):
        sp = render_plate(family, rng)
        h, w = sp.alpha.shape
        lo, hi = ASPECT.get(family, (1.95, 2.05))
        assert lo <= w / h <= hi, (family, w / h)
        assert sp.alpha.mean() > 200  # an opaque plate with rounded corners
        # lettering: plates are not flat colour
        assert sp.rgb.reshape(-1, 3).std(axis=0).max() > 30


def test_same_seed_same_plate_different_seed_different_text() -> None:
    a = render_plate("jp_private", np.random.default_rng(7))
    b = render_plate("jp_private", np.random.default_rng(7))
    c = render_plate("jp_private", np.random.default_rng(8))
    assert np.array_equal(a.rgb, b.rgb)
    assert not np.array_equal(a.rgb, c.rgb)


def _glyph(key: str, ch: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.new("L", (80, 80), 0)
    ImageDraw.Draw(img).text((5, 5), ch, font=fonts.font(key, 60), fill=255)
    return np.asarray(img)


@pytest.mark.parametrize("ch", ["品", "川", "わ", "ナ", "한"])
def test_cjk_font_has_the_glyphs_japanese_plates_use(ch: str) -> None:
    # A font without the glyph draws its .notdef box; two different characters would then
    # render identically.
    notdef = _glyph("cjk_bold", "\U000f0000")
    g = _glyph("cjk_bold", ch)
    assert g.sum() > 0
    assert not np.array_equal(g, notdef)


def test_plate_digits_and_dots_are_real_glyphs() -> None:
    notdef = _glyph("sans_bold", "\U000f0000")
    for ch in "0123456789-\u2022ABZ":
        assert not np.array_equal(_glyph("sans_bold", ch), notdef), ch


@pytest.mark.parametrize("kind", SIGN_KINDS)
def test_sign_kinds_render(kind: str) -> None:
    rng = np.random.default_rng(5)
    sp = render_sign(kind, rng)
    assert sp.rgb.shape[:2] == sp.alpha.shape
    assert sp.alpha.max() == 255


def test_unknown_family_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown plate family"):
        render_plate("mars", np.random.default_rng(0))


def test_missing_font_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = dict(fonts.FONTS)
    broken["cjk_bold"] = fonts.FontSpec(Path("/nonexistent/NotoSansCJK-Bold.ttc"), 0, "fonts-noto-cjk", "OFL")
    monkeypatch.setattr(fonts, "FONTS", broken)
    with pytest.raises(ModelError, match="apt-get install fonts-noto-cjk"):
        fonts.check_fonts()
