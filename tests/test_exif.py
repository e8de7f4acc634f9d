"""EXIF hygiene on real camera files: GPS/time/orientation/heading kept; thumbnail, maker
notes, serials, owner names and XMP removed; geotags written from a frame record."""

from __future__ import annotations

import io
import struct
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.ExifTags import IFD

from redact.config import DetectorSection, RedactConfig
from redact.engine import Redactor
from redact.exif import Geotag, clean_exif, read_geotag
from redact.imageio import decode_image, encode_image

XMP_NS = b"http://ns.adobe.com/xap/1.0/"


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(RedactConfig(detector=DetectorSection(plate_backend="none")), threads=1)


def exif_with_thumbnail(thumb_jpeg: bytes, extra_ifd0: dict[int, str] | None = None) -> bytes:
    """A little-endian EXIF block by hand: IFD0 (orientation, Artist...) -> IFD1 holding a
    JPEG thumbnail, the way cameras store their preview."""
    entries0 = [(0x0112, 3, 1, 1)]  # Orientation = 1 (SHORT)
    strings: list[tuple[int, bytes]] = []
    for tag, text in sorted((extra_ifd0 or {}).items()):
        strings.append((tag, text.encode() + b"\0"))
    n0 = len(entries0) + len(strings)
    ifd0_size = 2 + 12 * n0 + 4
    data_off = 8 + ifd0_size
    blobs = b""
    ent = b""
    for tag, typ, count, value in entries0:
        ent += struct.pack("<HHII", tag, typ, count, value)
    for tag, blob in strings:
        ent += struct.pack("<HHII", tag, 2, len(blob), data_off + len(blobs))
        blobs += blob
    ifd1_off = data_off + len(blobs)
    ifd0 = struct.pack("<H", n0) + ent + struct.pack("<I", ifd1_off)
    ifd1_size = 2 + 12 * 3 + 4
    thumb_off = ifd1_off + ifd1_size
    ifd1 = struct.pack("<H", 3) + struct.pack("<HHII", 0x0103, 3, 1, 6)
    ifd1 += struct.pack("<HHII", 0x0201, 4, 1, thumb_off) + struct.pack("<HHII", 0x0202, 4, 1, len(thumb_jpeg))
    ifd1 += struct.pack("<I", 0)
    return b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + ifd0 + blobs + ifd1 + thumb_jpeg


@pytest.fixture(scope="module")
def face_thumbnail_jpeg(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """A street JPEG whose EXIF thumbnail is an unredacted group photo (faces), plus the
    thumbnail's own bytes."""
    group = Image.open(shared / "faces-group-photos" / "images" / "0000.jpg").convert("RGB")
    tb = io.BytesIO()
    group.resize((320, 240)).save(tb, "JPEG", quality=85)
    thumb = tb.getvalue()
    exif = exif_with_thumbnail(thumb, {0x013B: "Jane Owner", 0xA430: "ignored-in-ifd0"})
    main = io.BytesIO()
    group.save(main, "JPEG", quality=90, exif=exif)
    return main.getvalue(), thumb


def test_fixture_thumbnail_really_holds_faces(face_thumbnail_jpeg: tuple[bytes, bytes], redactor: Redactor) -> None:
    data, thumb = face_thumbnail_jpeg
    assert thumb in data
    ex = Image.open(io.BytesIO(data)).getexif()
    assert ex.get_ifd(IFD.IFD1).get(0x0202) == len(thumb)
    assert redactor.redact_bytes(thumb, name="thumb.jpg").detections.count("face") >= 3


def test_thumbnail_with_faces_is_gone_from_the_output(face_thumbnail_jpeg: tuple[bytes, bytes],
                                                      redactor: Redactor) -> None:
    data, thumb = face_thumbnail_jpeg
    out = redactor.redact_bytes(data, name="street.jpg")
    assert out.detections.count("face") >= 3
    assert thumb[:2000] not in out.data and thumb[-2000:] not in out.data
    # Exactly one JPEG image in the file: no second SOI inside the APP1 segment.
    assert out.data.count(b"\xff\xd8\xff") == 1
    ex = Image.open(io.BytesIO(out.data)).getexif()
    assert not ex.get_ifd(IFD.IFD1)
    assert 0x013B not in ex  # Artist (an owner name) dropped
    assert ex.get(0x0112) == 1


@pytest.mark.parametrize("name", ["DSC00001.JPG", "DSC00497.JPG", "test_exif.jpg"])
def test_real_camera_exif_keeps_gps_time_heading_drops_leaks(shared: Path, name: str) -> None:
    raw = Image.open(shared / "images-exif" / name).info["exif"]
    src = Image.Exif()
    src.load(raw)
    cleaned = clean_exif(raw)
    out = Image.Exif()
    out.load(cleaned)
    gps_in, gps_out = src.get_ifd(IFD.GPSInfo), out.get_ifd(IFD.GPSInfo)
    for tag in (1, 2, 3, 4, 6, 7, 0x10, 0x11, 0x1D):  # lat/lon, altitude, time, track, image direction, date
        if tag in gps_in:
            assert gps_out.get(tag) == gps_in[tag], hex(tag)
    ex_in, ex_out = src.get_ifd(IFD.Exif), out.get_ifd(IFD.Exif)
    for tag in (0x9003, 0x9011):  # DateTimeOriginal, OffsetTimeOriginal
        if tag in ex_in:
            assert ex_out.get(tag) == ex_in[tag]
    assert out.get(0x0112) == src.get(0x0112)
    for tag in (0x927C, 0x9286, 0xA431, 0xA430, 0xA435, 0xA420):  # maker note, comment, serials, owner, uid
        assert tag not in ex_out
    assert not out.get_ifd(IFD.IFD1)
    if name.startswith("DSC"):
        assert 0x927C in ex_in  # the Sony files do carry a maker note (with the body serial)
        assert b"DC7303320222000" in raw and b"DC7303320222000" not in cleaned
    assert read_geotag(cleaned) == read_geotag(raw)


def test_real_4k_frame_round_trip_keeps_format_size_quality_and_gps(shared: Path) -> None:
    data = (shared / "images-exif" / "DSC00497.JPG").read_bytes()
    img = decode_image(data, name="DSC00497.JPG")
    out = encode_image(img, img.rgb, exif=clean_exif(img.exif, size=(img.width, img.height)))
    a, b = Image.open(io.BytesIO(data)), Image.open(io.BytesIO(out))
    # The Sony file is an MPO: a JPEG plus a second, full-frame preview picture (another
    # unredacted copy). The output is the plain JPEG, without the preview.
    assert a.format == "MPO" and getattr(a, "n_frames", 1) == 2
    assert (b.format, b.size, b.mode, getattr(b, "n_frames", 1)) == ("JPEG", a.size, a.mode, 1)
    assert out.count(b"\xff\xd8\xff") == 1
    assert b.quantization == a.quantization  # same quantisation tables: about the same quality
    g = read_geotag(b.info["exif"])
    assert g is not None and g.lat == pytest.approx(45.5, abs=0.1) and g.lon == pytest.approx(-122.57, abs=0.05)
    assert g.heading == pytest.approx(271.27, abs=0.005)
    assert g.speed == pytest.approx(16.27 / 3.6, abs=0.01)
    assert g.time.tzinfo is not None


def test_geotag_from_a_frame_record_is_written() -> None:
    g = Geotag(lat=35.681234, lon=139.767125, altitude=12.5, time=datetime(2026, 11, 25, 1, 30, 5, 250000, tzinfo=UTC),
               heading=87.25, speed=8.0)
    raw = clean_exif(None, geotag=g)
    back = read_geotag(raw)
    assert back is not None
    assert back.lat == pytest.approx(g.lat, abs=1e-6) and back.lon == pytest.approx(g.lon, abs=1e-6)
    assert back.altitude == pytest.approx(12.5)
    assert back.time == g.time
    assert back.heading == pytest.approx(87.25) and back.speed == pytest.approx(8.0, abs=0.01)
    ex = Image.Exif()
    ex.load(raw)
    assert ex.get_ifd(IFD.Exif)[0x9003] == "2026:11:25 01:30:05"
    assert Geotag(-33.9, -70.6, None, g.time) == read_geotag(clean_exif(None, geotag=Geotag(-33.9, -70.6, None, g.time)))


def test_image_without_exif_and_xmp_is_stripped(redactor: Redactor) -> None:
    rng = np.random.default_rng(3)
    im = Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    plain, with_xmp = io.BytesIO(), io.BytesIO()
    im.save(plain, "JPEG", quality=80)
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description xmlns:xmpMM="' + XMP_NS + \
          b'mm/"><xmpMM:History>edited by Jane</xmpMM:History></rdf:Description></rdf:RDF></x:xmpmeta>'
    im.save(with_xmp, "JPEG", quality=80, xmp=xmp)
    assert XMP_NS in with_xmp.getvalue()
    for data in (plain.getvalue(), with_xmp.getvalue()):
        out = redactor.redact_bytes(data, name="noexif.jpg")
        assert XMP_NS not in out.data and b"Jane" not in out.data
        assert "exif" not in Image.open(io.BytesIO(out.data)).info
        assert Image.open(io.BytesIO(out.data)).size == (160, 120)
    assert clean_exif(None) == b"" and clean_exif(b"garbage") == b""


@pytest.mark.parametrize(
    ("kw", "msg"),
    [({"lat": 91}, "latitude"), ({"lon": 200}, "longitude"), ({"heading": 400}, "heading"),
     ({"speed": -1}, "speed"), ({"time": datetime(2026, 1, 1)}, "UTC")],
)
def test_geotag_validation(kw: dict, msg: str) -> None:
    base = {"lat": 35.0, "lon": 139.0, "altitude": None, "time": datetime(2026, 1, 1, tzinfo=UTC)}
    with pytest.raises(ValueError, match=msg):
        Geotag(**{**base, **kw})
