"""Synthetic licence plates (the positives) and street text (the hard negatives).

Every renderer returns a ``Sprite``: an RGB image and an alpha mask at a base resolution
(plates ~100-170 px tall), drawn flat and clean; wear, lighting and perspective are applied
by ``compose``. Real plate proportions (ISO/national specs) drive the layouts:

- Japan 330x165 mm (2:1), two lines: region name in kanji + class number on top, a hiragana
  and the 4-digit number "12-34" below. Private white/green, commercial green/white, kei
  yellow/black, kei commercial black/yellow.
- EU 520x110 mm (4.7:1), blue band with a ring of stars and the country code.
- US 12x6 in (2:1), state name on top, varied colours and a slogan line.
- Brazil Mercosur 400x130 mm (3.1:1), blue top band "BRASIL".
- Two-line plates: motorcycles (EU, Japan, US) and square EU car plates.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from redact.train.fonts import LATIN_FONTS, font

PLATE_FAMILIES = ("jp_private", "jp_commercial", "jp_kei", "jp_kei_commercial", "eu", "us", "br", "moto")
SIGN_KINDS = ("street", "shop", "km_post", "round", "brake_light", "house_number", "price")

RGB = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Sprite:
    rgb: np.ndarray  # HxWx3 uint8
    alpha: np.ndarray  # HxW uint8
    kind: str

    def __post_init__(self) -> None:
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3 or self.alpha.shape != self.rgb.shape[:2]:
            raise ValueError(f"sprite shapes rgb {self.rgb.shape} alpha {self.alpha.shape}")


JP_REGIONS = (
    "品川", "練馬", "足立", "多摩", "八王子", "横浜", "川崎", "湘南", "相模", "大宮", "所沢", "熊谷",
    "千葉", "習志野", "袖ヶ浦", "野田", "柏", "札幌", "函館", "旭川", "仙台", "宮城", "福島", "水戸",
    "土浦", "宇都宮", "群馬", "新潟", "長野", "松本", "富山", "石川", "金沢", "福井", "山梨", "静岡",
    "浜松", "沼津", "名古屋", "豊橋", "三河", "岡崎", "豊田", "尾張小牧", "一宮", "岐阜", "三重",
    "鈴鹿", "滋賀", "京都", "大阪", "なにわ", "和泉", "堺", "神戸", "姫路", "奈良", "和歌山", "岡山",
    "広島", "福山", "山口", "徳島", "香川", "愛媛", "高知", "福岡", "北九州", "久留米", "佐賀", "長崎",
    "熊本", "大分", "宮崎", "鹿児島", "沖縄", "世田谷", "杉並", "葛飾", "江東", "板橋",
)
JP_KANA = "あいうえかきくけこさすせそたちつてとなにぬねのはひふほまみむめもやゆよらりるろれわを"
JP_CLASS = ("300", "330", "331", "500", "501", "580", "530", "100", "400", "800", "33", "50", "58", "5")
US_STATES = (
    "CALIFORNIA", "TEXAS", "NEW YORK", "FLORIDA", "OREGON", "WASHINGTON", "ARIZONA", "NEVADA",
    "OHIO", "GEORGIA", "ILLINOIS", "MICHIGAN", "COLORADO", "VIRGINIA", "UTAH", "IDAHO", "MAINE",
    "NEW JERSEY", "MONTANA", "ALASKA", "HAWAII", "KANSAS", "INDIANA", "TENNESSEE", "VERMONT",
)
US_SLOGANS = (
    "DMV.CA.GOV", "SUNSHINE STATE", "EMPIRE STATE", "THE LONE STAR STATE", "LAND OF LINCOLN",
    "GREAT LAKES", "LIVE FREE", "PURE MICHIGAN", "GARDEN STATE", "COLORFUL", "", "",
)
EU_CODES = ("RO", "D", "F", "I", "E", "NL", "PL", "CZ", "A", "B", "H", "P", "S", "GB", "BG", "SK", "HR")


def _letters(rng: np.random.Generator, n: int, alphabet: str = string.ascii_uppercase) -> str:
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), n))


def _digits(rng: np.random.Generator, n: int) -> str:
    return _letters(rng, n, string.digits)


def _ink(text: str, key: str, size: int, fill: RGB | tuple[int, int, int, int]) -> Image.Image:
    """Text drawn on a transparent layer, cropped to its ink."""
    f = font(key, size)
    x0, y0, x1, y1 = f.getbbox(text)
    layer = Image.new("RGBA", (max(1, int(x1 - x0) + 2), max(1, int(y1 - y0) + 2)), (0, 0, 0, 0))
    ImageDraw.Draw(layer).text((-x0 + 1, -y0 + 1), text, font=f, fill=fill)
    bbox = layer.getbbox()
    return layer.crop(bbox) if bbox else layer


def _put(img: Image.Image, layer: Image.Image, box: tuple[float, float, float, float],
         keep_aspect: bool = False) -> None:
    """Paste ``layer`` scaled into ``box`` (x0, y0, x1, y1): stretched to fill it like plate
    lettering, or fitted and centred when ``keep_aspect``."""
    x0, y0, x1, y1 = box
    bw, bh = max(1, round(x1 - x0)), max(1, round(y1 - y0))
    if keep_aspect:
        s = min(bw / layer.width, bh / layer.height)
        w, h = max(1, round(layer.width * s)), max(1, round(layer.height * s))
    else:
        w, h = bw, bh
    scaled = layer.resize((w, h), Image.Resampling.LANCZOS)
    img.alpha_composite(scaled, (round(x0 + (bw - w) / 2), round(y0 + (bh - h) / 2)))


def _finish(img: Image.Image, kind: str, radius: float = 0.0) -> Sprite:
    """Rounded-corner alpha and conversion to arrays."""
    arr = np.asarray(img.convert("RGBA"))
    alpha = arr[:, :, 3].copy()
    if radius > 0:
        mask = Image.new("L", img.size, 0)
        ImageDraw.Draw(mask).rounded_rectangle((0, 0, img.width - 1, img.height - 1), radius=radius, fill=255)
        alpha = np.minimum(alpha, np.asarray(mask))
    return Sprite(np.ascontiguousarray(arr[:, :, :3]), alpha, kind)


def _bolts(draw: ImageDraw.ImageDraw, w: int, h: int, rng: np.random.Generator, ys: float = 0.14) -> None:
    if rng.random() < 0.7:
        r = h * 0.035
        shade = tuple(int(v) for v in rng.integers(90, 200, 3))
        for fx in (0.22, 0.78):
            cx, cy = w * fx, h * ys
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=shade)


def _jp_number(rng: np.random.Generator) -> str:
    n = int(rng.integers(1, 10000))
    s = str(n)
    if len(s) == 4:
        return f"{s[:2]}-{s[2:]}"
    return "\u2022" * (4 - len(s)) + s  # the centred dots of JP plates


def render_jp(kind: str, rng: np.random.Generator, h: int = 128) -> Sprite:
    """Japanese car plate, 2:1, two lines."""
    bg, fg = {
        "jp_private": ((238, 240, 236), (0, 98, 62)),
        "jp_commercial": ((0, 104, 66), (242, 244, 240)),
        "jp_kei": ((242, 206, 20), (20, 20, 20)),
        "jp_kei_commercial": ((22, 22, 22), (240, 200, 20)),
    }[kind]
    w = 2 * h
    img = Image.new("RGBA", (w, h), (*bg, 255))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle((1, 1, w - 2, h - 2), radius=h * 0.06, outline=fg, width=max(1, h // 60))
    _bolts(d, w, h, rng)
    region = JP_REGIONS[int(rng.integers(len(JP_REGIONS)))]
    klass = JP_CLASS[int(rng.integers(len(JP_CLASS)))]
    kana = JP_KANA[int(rng.integers(len(JP_KANA)))]
    top = (0.07 * h, 0.32 * h)
    rw = min(0.42, 0.11 * len(region) + 0.04) * w
    _put(img, _ink(region, "cjk_bold", 64, fg), (0.5 * w - rw - 0.01 * w, top[0], 0.5 * w - 0.01 * w, top[1]))
    _put(img, _ink(klass, "sans_bold", 64, fg), (0.52 * w, top[0], 0.52 * w + 0.07 * w * len(klass), top[1]))
    _put(img, _ink(kana, "cjk_bold", 64, fg), (0.05 * w, 0.55 * h, 0.17 * w, 0.83 * h), keep_aspect=True)
    _put(img, _ink(_jp_number(rng), "sans_bold", 96, fg), (0.2 * w, 0.38 * h, 0.95 * w, 0.92 * h))
    return _finish(img, kind, radius=h * 0.06)


def render_eu(rng: np.random.Generator, h: int = 96) -> Sprite:
    w = int(h * 4.73)
    yellow = rng.random() < 0.15
    bg = (246, 196, 0) if yellow else (236, 238, 236)
    img = Image.new("RGBA", (w, h), (*bg, 255))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle((1, 1, w - 2, h - 2), radius=h * 0.08, outline=(20, 20, 20), width=max(1, h // 40))
    x_text = 0.04 * w
    if rng.random() < 0.85:
        bw = 0.085 * w
        d.rectangle((2, 2, bw, h - 3), fill=(0, 51, 153))
        for k in range(12):
            a = 2 * np.pi * k / 12
            cx, cy = bw / 2 + 0.16 * h * np.cos(a), 0.3 * h + 0.16 * h * np.sin(a)
            r = 0.025 * h
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 204, 0))
        code = EU_CODES[int(rng.integers(len(EU_CODES)))]
        _put(img, _ink(code, "sans_bold", 48, (255, 255, 255)), (0.12 * bw, 0.55 * h, 0.88 * bw, 0.88 * h), keep_aspect=True)
        x_text = bw + 0.03 * w
    fmt = int(rng.integers(6))
    text = [
        f"{_letters(rng, 1)} {_digits(rng, 3)} {_letters(rng, 3)}",
        f"{_letters(rng, 2)}-{_digits(rng, 3)}-{_letters(rng, 2)}",
        f"{_letters(rng, 2)} {_letters(rng, 2)} {_digits(rng, 4)}",
        f"{_letters(rng, 2)}{_digits(rng, 2)} {_letters(rng, 3)}",
        f"{_digits(rng, 4)} {_letters(rng, 3)}",
        f"{_letters(rng, 2)} {_digits(rng, 3)}{_letters(rng, 2)}",
    ][fmt]
    key = LATIN_FONTS[int(rng.integers(2))]
    _put(img, _ink(text, key, 96, (15, 15, 15)), (x_text, 0.14 * h, 0.965 * w, 0.86 * h))
    return _finish(img, "eu", radius=h * 0.08)


def _rand_colour(rng: np.random.Generator, lo: int, hi: int) -> RGB:
    c = rng.integers(lo, hi, 3)
    return int(c[0]), int(c[1]), int(c[2])


def render_us(rng: np.random.Generator, h: int = 128) -> Sprite:
    w = 2 * h
    light = rng.random() < 0.75
    bg = _rand_colour(rng, 190, 256) if light else _rand_colour(rng, 0, 90)
    fg = _rand_colour(rng, 0, 110) if light else _rand_colour(rng, 200, 256)
    img = Image.new("RGBA", (w, h), (*bg, 255))
    d = ImageDraw.Draw(img)
    if rng.random() < 0.5:  # scenic gradient / band
        band = _rand_colour(rng, 60, 256)
        y0 = float(rng.uniform(0.55, 0.8)) * h
        d.rectangle((0, y0, w, h), fill=band)
    d.rounded_rectangle((1, 1, w - 2, h - 2), radius=h * 0.07, outline=fg, width=max(1, h // 50))
    _bolts(d, w, h, rng, ys=0.12)
    state = US_STATES[int(rng.integers(len(US_STATES)))]
    top_col = _rand_colour(rng, 0, 200)
    _put(img, _ink(state, LATIN_FONTS[int(rng.integers(4))], 48, top_col), (0.2 * w, 0.05 * h, 0.8 * w, 0.24 * h), keep_aspect=True)
    n = int(rng.integers(5, 8))
    chars = _letters(rng, n, string.ascii_uppercase + string.digits * 2)
    text = chars if rng.random() < 0.5 else f"{chars[:3]} {chars[3:]}"
    _put(img, _ink(text, LATIN_FONTS[int(rng.integers(3))], 96, fg), (0.07 * w, 0.28 * h, 0.93 * w, 0.8 * h))
    slogan = US_SLOGANS[int(rng.integers(len(US_SLOGANS)))]
    if slogan:
        _put(img, _ink(slogan, "sans", 40, top_col), (0.25 * w, 0.84 * h, 0.75 * w, 0.95 * h), keep_aspect=True)
    if rng.random() < 0.5:  # registration sticker
        sx = 0.05 * w if rng.random() < 0.5 else 0.82 * w
        d.rectangle((sx, 0.06 * h, sx + 0.13 * w, 0.22 * h), fill=_rand_colour(rng, 0, 256))
    return _finish(img, "us", radius=h * 0.07)


def render_br(rng: np.random.Generator, h: int = 110) -> Sprite:
    w = int(h * 3.08)
    img = Image.new("RGBA", (w, h), (240, 241, 240, 255))
    d = ImageDraw.Draw(img)
    d.rectangle((0, 0, w, 0.24 * h), fill=(0, 56, 168))
    d.rounded_rectangle((1, 1, w - 2, h - 2), radius=h * 0.06, outline=(20, 20, 20), width=max(1, h // 45))
    _put(img, _ink("BRASIL", "sans_bold", 40, (255, 255, 255)), (0.38 * w, 0.03 * h, 0.62 * w, 0.21 * h), keep_aspect=True)
    d.rectangle((0.88 * w, 0.05 * h, 0.95 * w, 0.19 * h), fill=(0, 150, 60))
    d.ellipse((0.04 * w, 0.04 * h, 0.1 * w, 0.2 * h), outline=(255, 255, 255), width=max(1, h // 60))
    text = f"{_letters(rng, 3)}{_digits(rng, 1)}{_letters(rng, 1)}{_digits(rng, 2)}"
    fg = [(10, 10, 10), (10, 10, 10), (10, 10, 10), (180, 20, 20), (20, 110, 40), (20, 40, 160)][int(rng.integers(6))]
    _put(img, _ink(text, LATIN_FONTS[int(rng.integers(2))], 96, fg), (0.06 * w, 0.33 * h, 0.94 * w, 0.9 * h))
    if rng.random() < 0.6:
        _put(img, _ink("BR", "sans_bold", 30, (10, 10, 10)), (0.02 * w, 0.6 * h, 0.07 * w, 0.8 * h), keep_aspect=True)
    return _finish(img, "br", radius=h * 0.06)


def render_moto(rng: np.random.Generator, h: int = 150) -> Sprite:
    """Two-line plates: EU / US motorcycle, Japanese motorcycle, square EU car plates."""
    style = int(rng.integers(4))
    if style == 0:  # EU motorcycle / square two-line
        w = int(h * float(rng.uniform(1.15, 1.6)))
        bg = (246, 196, 0) if rng.random() < 0.2 else (236, 238, 236)
        img = Image.new("RGBA", (w, h), (*bg, 255))
        d = ImageDraw.Draw(img)
        d.rounded_rectangle((1, 1, w - 2, h - 2), radius=h * 0.06, outline=(20, 20, 20), width=max(1, h // 50))
        x0 = 0.05 * w
        if rng.random() < 0.7:
            d.rectangle((2, 2, 0.14 * w, h - 3), fill=(0, 51, 153))
            _put(img, _ink(EU_CODES[int(rng.integers(len(EU_CODES)))], "sans_bold", 40, (255, 255, 255)),
                  (0.02 * w, 0.65 * h, 0.12 * w, 0.85 * h), keep_aspect=True)
            x0 = 0.18 * w
        key = LATIN_FONTS[int(rng.integers(2))]
        _put(img, _ink(f"{_letters(rng, 2)} {_digits(rng, 2)}", key, 96, (15, 15, 15)), (x0, 0.08 * h, 0.95 * w, 0.47 * h))
        _put(img, _ink(f"{_letters(rng, 1)}{_digits(rng, 3)}", key, 96, (15, 15, 15)), (x0, 0.53 * h, 0.95 * w, 0.92 * h))
        return _finish(img, "moto", radius=h * 0.06)
    if style == 1:  # Japanese motorcycle (white, green text) / municipal scooter (pink, yellow, white)
        w = int(h * float(rng.uniform(1.3, 1.85)))
        bg, fg = [((238, 240, 236), (0, 98, 62)), ((240, 170, 190), (40, 40, 40)), ((242, 206, 20), (20, 20, 20)),
                  ((238, 240, 236), (40, 40, 120))][int(rng.integers(4))]
        img = Image.new("RGBA", (w, h), (*bg, 255))
        d = ImageDraw.Draw(img)
        d.rounded_rectangle((1, 1, w - 2, h - 2), radius=h * 0.08, outline=fg, width=max(1, h // 50))
        region = JP_REGIONS[int(rng.integers(len(JP_REGIONS)))]
        _put(img, _ink(region, "cjk_bold", 64, fg), (0.25 * w, 0.06 * h, 0.75 * w, 0.32 * h), keep_aspect=True)
        _put(img, _ink(JP_KANA[int(rng.integers(len(JP_KANA)))], "cjk_bold", 64, fg), (0.06 * w, 0.5 * h, 0.22 * w, 0.8 * h), keep_aspect=True)
        _put(img, _ink(_jp_number(rng), "sans_bold", 96, fg), (0.25 * w, 0.38 * h, 0.95 * w, 0.93 * h))
        return _finish(img, "moto", radius=h * 0.08)
    # US motorcycle (7x4 in) or square US-style plate
    w = int(h * 1.75)
    bg = _rand_colour(rng, 180, 256)
    fg = _rand_colour(rng, 0, 110)
    img = Image.new("RGBA", (w, h), (*bg, 255))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle((1, 1, w - 2, h - 2), radius=h * 0.07, outline=fg, width=max(1, h // 50))
    _put(img, _ink(US_STATES[int(rng.integers(len(US_STATES)))], "sans_bold", 48, fg), (0.15 * w, 0.05 * h, 0.85 * w, 0.22 * h), keep_aspect=True)
    key = LATIN_FONTS[int(rng.integers(3))]
    if style == 2:
        _put(img, _ink(_letters(rng, int(rng.integers(4, 7)), string.ascii_uppercase + string.digits), key, 96, fg), (0.08 * w, 0.3 * h, 0.92 * w, 0.85 * h))
    else:
        _put(img, _ink(_letters(rng, 3), key, 96, fg), (0.15 * w, 0.26 * h, 0.85 * w, 0.57 * h))
        _put(img, _ink(_digits(rng, 3), key, 96, fg), (0.15 * w, 0.62 * h, 0.85 * w, 0.93 * h))
    return _finish(img, "moto", radius=h * 0.07)


def render_plate(family: str, rng: np.random.Generator) -> Sprite:
    """A clean plate sprite of ``family`` (one of PLATE_FAMILIES)."""
    if family.startswith("jp_"):
        return render_jp(family, rng)
    if family == "eu":
        return render_eu(rng)
    if family == "us":
        return render_us(rng)
    if family == "br":
        return render_br(rng)
    if family == "moto":
        return render_moto(rng)
    raise ValueError(f"unknown plate family {family!r}; expected one of {PLATE_FAMILIES}")


# --- hard negatives: text and lights that are not plates --------------------------------------

SIGN_WORDS = {
    "latin": ("MAIN ST", "Strada Victoriei", "PHARMACY", "BAKERY", "Hotel Central", "OPEN 24H", "PARKING",
              "Bd. Unirii", "EXIT", "City Centre", "Station", "Museum", "CAFE", "Supermarket", "BANK",
              "Rue de la Paix", "Hauptstraße", "One Way", "STOP", "Taxi", "Pizza", "Dentist", "SALE 50%"),
    "jp": ("駐車場", "コンビニ", "ラーメン", "薬局", "銀座通り", "出口", "東京", "国道", "案内", "歯科",
           "居酒屋", "本町", "中央通", "月極駐車場", "不動産", "クリーニング", "新宿駅", "市役所", "営業中"),
    "ko": ("편의점", "약국", "주차장", "은행", "카페"),
    "cyr": ("АПТЕКА", "МАГАЗИН", "ул. Ленина", "КАФЕ", "Банк"),
    "el": ("ΦΑΡΜΑΚΕΙΟ", "Οδός Ερμού", "ΚΑΦΕ"),
}


def _sign_text(rng: np.random.Generator) -> tuple[str, str]:
    script = ("latin", "latin", "jp", "jp", "ko", "cyr", "el")[int(rng.integers(7))]
    words = SIGN_WORDS[script]
    text = words[int(rng.integers(len(words)))]
    key = "cjk_bold" if script in ("jp", "ko") else LATIN_FONTS[int(rng.integers(4))]
    return text, key


def render_sign(kind: str, rng: np.random.Generator, h: int = 96) -> Sprite:
    """A hard-negative sprite: street and shop signs, kilometre posts, round traffic signs,
    brake-light bars, house numbers, price boards."""
    if kind == "street":
        text, key = _sign_text(rng)
        w = int(h * float(rng.uniform(2.5, 7.0)))
        bg = [(0, 70, 160), (0, 110, 60), (240, 240, 240), (120, 70, 30), (20, 20, 20)][int(rng.integers(5))]
        fg = (20, 20, 20) if sum(bg) > 500 else (245, 245, 245)
        img = Image.new("RGBA", (w, h), (*bg, 255))
        d = ImageDraw.Draw(img)
        d.rectangle((h * 0.05, h * 0.05, w - h * 0.05, h * 0.95), outline=fg, width=max(1, h // 25))
        if rng.random() < 0.5:
            rom, _ = _sign_text(rng)
            _put(img, _ink(text, key, 64, fg), (0.08 * w, 0.12 * h, 0.92 * w, 0.58 * h), keep_aspect=True)
            _put(img, _ink(rom, "sans_bold", 48, fg), (0.08 * w, 0.64 * h, 0.92 * w, 0.88 * h), keep_aspect=True)
        else:
            _put(img, _ink(text, key, 64, fg), (0.06 * w, 0.15 * h, 0.94 * w, 0.85 * h), keep_aspect=True)
        return _finish(img, kind)
    if kind == "shop":
        text, key = _sign_text(rng)
        w = int(h * float(rng.uniform(1.5, 8.0)))
        bg = _rand_colour(rng, 0, 256)
        fg = _rand_colour(rng, 0, 90) if sum(bg) > 380 else _rand_colour(rng, 170, 256)
        img = Image.new("RGBA", (w, h), (*bg, 255))
        d = ImageDraw.Draw(img)
        if rng.random() < 0.5:
            d.rectangle((0, 0, w - 1, h - 1), outline=_rand_colour(rng, 0, 256), width=max(1, h // 15))
        lines = 1 + int(rng.random() < 0.4)
        for li in range(lines):
            t = text if li == 0 else (f"TEL {_digits(rng, 3)}-{_digits(rng, 4)}" if rng.random() < 0.5 else _sign_text(rng)[0])
            k = key if li == 0 else "cjk_bold"
            y0, y1 = (0.12 * h, 0.88 * h) if lines == 1 else ((0.08 * h, 0.55 * h) if li == 0 else (0.6 * h, 0.92 * h))
            _put(img, _ink(t, k, 64, fg), (0.05 * w, y0, 0.95 * w, y1), keep_aspect=True)
        return _finish(img, kind, radius=float(rng.uniform(0, 0.2)) * h)
    if kind == "km_post":
        vertical = rng.random() < 0.6
        w = int(h * (float(rng.uniform(0.35, 0.7)) if vertical else float(rng.uniform(1.2, 2.2))))
        bg, fg = [((240, 240, 240), (20, 20, 20)), ((0, 110, 60), (245, 245, 245)), ((0, 70, 160), (245, 245, 245)),
                  ((250, 210, 0), (20, 20, 20))][int(rng.integers(4))]
        img = Image.new("RGBA", (w, h), (*bg, 255))
        d = ImageDraw.Draw(img)
        d.rectangle((0, 0, w - 1, h - 1), outline=fg, width=max(1, h // 30))
        km = f"{int(rng.integers(0, 400))}" + (f".{int(rng.integers(10))}" if rng.random() < 0.5 else "")
        if vertical:
            _put(img, _ink("km" if rng.random() < 0.5 else "K", "sans_bold", 40, fg), (0.15 * w, 0.08 * h, 0.85 * w, 0.3 * h), keep_aspect=True)
            _put(img, _ink(km, "sans_bold", 64, fg), (0.1 * w, 0.35 * h, 0.9 * w, 0.9 * h), keep_aspect=True)
        else:
            _put(img, _ink(f"{km} km", "sans_bold", 64, fg), (0.08 * w, 0.2 * h, 0.92 * w, 0.8 * h), keep_aspect=True)
        return _finish(img, kind)
    if kind == "round":
        img = Image.new("RGBA", (h, h), (0, 0, 0, 0))
        d = ImageDraw.Draw(img)
        if rng.random() < 0.6:
            d.ellipse((0, 0, h - 1, h - 1), fill=(200, 20, 30))
            d.ellipse((h * 0.12, h * 0.12, h * 0.88, h * 0.88), fill=(240, 240, 240))
            _put(img, _ink(str(int(rng.integers(2, 13)) * 10), "sans_bold", 64, (20, 20, 20)), (0.25 * h, 0.3 * h, 0.75 * h, 0.7 * h), keep_aspect=True)
        else:
            d.polygon([(h / 2, 0), (h - 1, h - 1), (0, h - 1)], fill=(200, 20, 30))
            d.polygon([(h / 2, h * 0.2), (h * 0.85, h * 0.9), (h * 0.15, h * 0.9)], fill=(250, 220, 0))
            _put(img, _ink("!", "sans_bold", 64, (20, 20, 20)), (0.4 * h, 0.4 * h, 0.6 * h, 0.85 * h), keep_aspect=True)
        return _finish(img, kind)
    if kind == "brake_light":
        w = int(h * float(rng.uniform(3, 14)))
        hh = max(4, h // 4)
        img = Image.new("RGBA", (w, hh), (60, 0, 0, 255))
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 4))):
            x0 = float(rng.uniform(0, 0.7)) * w
            d.rectangle((x0, hh * 0.2, x0 + float(rng.uniform(0.2, 0.5)) * w, hh * 0.8), fill=(255, int(rng.integers(40, 140)), 60))
        return _finish(img, kind, radius=hh * 0.4)
    if kind == "house_number":
        w = int(h * float(rng.uniform(1.2, 2.2)))
        bg = [(0, 60, 150), (240, 240, 240), (30, 30, 30), (150, 30, 30)][int(rng.integers(4))]
        fg = (20, 20, 20) if sum(bg) > 500 else (245, 245, 245)
        img = Image.new("RGBA", (w, h), (*bg, 255))
        d = ImageDraw.Draw(img)
        d.rectangle((h * 0.05, h * 0.05, w - h * 0.05, h * 0.95), outline=fg, width=max(1, h // 20))
        _put(img, _ink(str(int(rng.integers(1, 300))), "serif_bold" if rng.random() < 0.5 else "sans_bold", 64, fg),
              (0.15 * w, 0.15 * h, 0.85 * w, 0.85 * h), keep_aspect=True)
        return _finish(img, kind, radius=float(rng.uniform(0, 0.3)) * h)
    if kind == "price":
        rows = int(rng.integers(2, 5))
        w = int(h * float(rng.uniform(0.8, 1.6)))
        hh = int(h * rows * 0.5)
        img = Image.new("RGBA", (w, hh), (*_rand_colour(rng, 0, 80), 255))
        digit_col = [(255, 40, 30), (40, 255, 80), (255, 200, 40)][int(rng.integers(3))]
        for r in range(rows):
            y0 = r * hh / rows
            _put(img, _ink(f"{_digits(rng, 3)}", "mono_bold", 64, digit_col), (0.1 * w, y0 + 0.1 * hh / rows, 0.9 * w, y0 + 0.9 * hh / rows), keep_aspect=True)
        return _finish(img, kind)
    raise ValueError(f"unknown sign kind {kind!r}; expected one of {SIGN_KINDS}")
