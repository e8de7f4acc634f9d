"""Fonts for the synthetic plate and sign generator, all from Debian packages.

- DejaVu (``fonts-dejavu-core``; Bitstream Vera licence + public-domain changes): Latin,
  Cyrillic and Greek plate and sign text.
- Noto Sans CJK (``fonts-noto-cjk``; SIL Open Font License 1.1): Japanese plates (kanji region
  names, hiragana) and CJK / Hangul sign text.

Missing fonts fail loudly with the install command: a generator that silently drew boxes
instead of kanji would train a model that has never seen a Japanese plate.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

from redact.errors import ModelError

_DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
_NOTO = Path("/usr/share/fonts/opentype/noto")


@dataclass(frozen=True, slots=True)
class FontSpec:
    path: Path
    index: int
    package: str
    licence: str

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError("font index must be >= 0")


# Keys are what the renderer asks for; every key must resolve or the generator refuses to run.
FONTS: dict[str, FontSpec] = {
    "sans_bold": FontSpec(_DEJAVU / "DejaVuSans-Bold.ttf", 0, "fonts-dejavu-core", "Bitstream Vera / public domain"),
    "sans": FontSpec(_DEJAVU / "DejaVuSans.ttf", 0, "fonts-dejavu-core", "Bitstream Vera / public domain"),
    "mono_bold": FontSpec(_DEJAVU / "DejaVuSansMono-Bold.ttf", 0, "fonts-dejavu-core", "Bitstream Vera / public domain"),
    "serif_bold": FontSpec(_DEJAVU / "DejaVuSerif-Bold.ttf", 0, "fonts-dejavu-core", "Bitstream Vera / public domain"),
    # Index 0 of the Debian TTC is the Japanese subset (JP glyph forms for shared kanji).
    "cjk_bold": FontSpec(_NOTO / "NotoSansCJK-Bold.ttc", 0, "fonts-noto-cjk", "SIL OFL 1.1"),
    "cjk": FontSpec(_NOTO / "NotoSansCJK-Regular.ttc", 0, "fonts-noto-cjk", "SIL OFL 1.1"),
}

LATIN_FONTS = ("sans_bold", "mono_bold", "serif_bold", "sans")


def check_fonts() -> None:
    """Raise ModelError naming the Debian packages to install if any font is missing."""
    missing = sorted({f.package for f in FONTS.values() if not f.path.is_file()})
    if missing:
        raise ModelError(
            "the synthetic plate generator needs fonts from Debian packages that are not "
            f"installed: apt-get install {' '.join(missing)}"
        )


@lru_cache(maxsize=512)
def font(key: str, size: int) -> ImageFont.FreeTypeFont:
    """A cached PIL font of ``size`` pixels."""
    spec = FONTS[key]
    if not spec.path.is_file():
        check_fonts()
    return ImageFont.truetype(str(spec.path), max(4, int(size)), index=spec.index)
