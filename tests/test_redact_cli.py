"""`streetveil redact` and `streetveil eval` in a subprocess, as a user runs them."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from conftest import run_cli
from PIL import Image


@pytest.fixture()
def inputs(shared: Path, tmp_path: Path) -> dict[str, Path]:
    g = shared / "faces-group-photos" / "images"
    shots = tmp_path / "in" / "shots"
    (shots / "sub").mkdir(parents=True)
    shutil.copy(g / "0000.jpg", shots / "sub" / "a.jpg")
    Image.open(g / "0001.jpg").save(shots / "b.png")
    data = (g / "0002.jpg").read_bytes()
    (shots / "sub" / "c.jpg").write_bytes(data[: len(data) // 2])  # truncated
    (shots / "notes.txt").write_text("not an image")
    single = tmp_path / "in" / "d.jpg"
    shutil.copy(shared / "images-exif" / "test_exif.jpg", single)
    return {"shots": shots, "single": single, "root": tmp_path}


def test_redact_mirrors_inputs_reports_and_fails_only_the_broken_image(inputs: dict[str, Path]) -> None:
    out = inputs["root"] / "out"
    report = inputs["root"] / "report.jsonl"
    r = run_cli("redact", str(inputs["shots"]), str(inputs["single"]), "--out", str(out), "--report", str(report))
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.count("shots/sub/c.jpg: truncated JPEG") == 1  # reported once
    assert "images: 4" in r.stdout and "failed: 1" in r.stdout and "frames/s" in r.stdout
    # The summary names the thresholds in effect (plates: the model's calibrated default).
    from redact.config import DetectorSection
    from redact.detectors import plate_threshold

    cfg = DetectorSection()
    assert (f"thresholds: face {cfg.face_threshold:g} (config), plate {plate_threshold(cfg):g} (model default)"
            in r.stdout)
    assert "verified at" not in r.stdout  # plate verification is opt-in
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["d.jpg", "shots/b.png", "shots/sub/a.jpg"]
    for rel, src in (("shots/sub/a.jpg", inputs["shots"] / "sub" / "a.jpg"), ("shots/b.png", inputs["shots"] / "b.png"),
                     ("d.jpg", inputs["single"])):
        a, b = Image.open(src), Image.open(out / rel)
        assert (b.format, b.size) == (a.format, a.size)
    records = [json.loads(line) for line in report.read_text().splitlines()]
    assert [r["image"] for r in records] == ["shots/b.png", "shots/sub/a.jpg", "shots/sub/c.jpg", "d.jpg"]
    by = {r["image"]: r for r in records}
    assert by["shots/sub/c.jpg"]["status"] == "failed" and "truncated" in by["shots/sub/c.jpg"]["error"]
    ok = by["shots/sub/a.jpg"]
    assert ok["status"] == "ok" and ok["error"] is None
    faces = [d for d in ok["detections"] if d["class"] == "face"]
    assert len(faces) >= 5
    assert set(faces[0]) == {"class", "box", "score"} and len(faces[0]["box"]) == 4


def test_output_never_overwrites_an_input(inputs: dict[str, Path]) -> None:
    single = inputs["single"]
    before = single.read_bytes()
    r = run_cli("redact", str(single), "--out", str(single.parent))
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{single}: the output" in r.stderr and "is this input itself" in r.stderr
    assert single.read_bytes() == before


def test_thresholds_from_flags_and_config(inputs: dict[str, Path]) -> None:
    src = inputs["shots"] / "sub" / "a.jpg"
    cfg = inputs["root"] / "redact.toml"
    cfg.write_text('[detector]\nplate_backend = "none"\nface_threshold = 0.99\n')
    counts = {}
    for name, extra in (("config", ["--config", str(cfg)]), ("flag", ["--config", str(cfg), "--face-threshold", "0.3"])):
        rep = inputs["root"] / f"{name}.jsonl"
        r = run_cli("redact", str(src), "--out", str(inputs["root"] / name), "--report", str(rep), *extra)
        assert r.returncode == 0, r.stderr
        counts[name] = len(json.loads(rep.read_text())["detections"])
    assert counts["config"] < counts["flag"] and counts["flag"] >= 5


def test_config_errors_are_usage_errors(inputs: dict[str, Path]) -> None:
    cfg = inputs["root"] / "redact.toml"
    cfg.write_text("[detector]\nface_treshold = 0.5\n")
    r = run_cli("redact", str(inputs["single"]), "--out", str(inputs["root"] / "o"), "--config", str(cfg))
    assert r.returncode == 2 and "face_treshold" in r.stderr and "redact.toml" in r.stderr
    r = run_cli("redact", str(inputs["single"]), "--out", str(inputs["root"] / "o"), "--face-threshold", "1.5")
    assert r.returncode == 2


def test_eval_prints_recall_and_precision_by_height_band(shared: Path, tmp_path: Path) -> None:
    d = shared / "faces-group-photos"
    labels = json.loads((d / "labels.json").read_text())
    subset = {k: labels[k] for k in sorted(labels)[:3]}
    lab = tmp_path / "labels.json"
    lab.write_text(json.dumps(subset))
    js = tmp_path / "eval.json"
    r = run_cli("eval", str(lab), "--images", str(d), "--class", "face", "--threshold", "0.3",
                "--threshold", "0.5", "--json", str(js))
    assert r.returncode == 0, r.stderr
    for band in ("<16", "16-32", "32-64", "64-128", ">=128", "all", ">=16"):
        assert f"\n{band} " in r.stdout
    assert "threshold 0.3," in r.stdout and "threshold 0.5," in r.stdout and "frames/s" in r.stdout
    result = json.loads(js.read_text())
    rows = {row["band"]: row for row in result["thresholds"]["0.3"]["bands"]}
    assert rows["all"]["labels"] == sum(len(v) for v in subset.values())
    assert rows["all"]["recall"] >= 0.8
    assert result["detectors"][0]["name"] == "streetveil"


def test_eval_of_plates_needs_a_plate_detector(shared: Path, tmp_path: Path) -> None:
    d = shared / "plates-dashcam-ro"
    labels = json.loads((d / "labels.json").read_text())
    lab = tmp_path / "labels.json"
    lab.write_text(json.dumps({k: labels[k] for k in sorted(labels)[:2]}))
    r = run_cli("eval", str(lab), "--images", str(d), "--class", "plate")
    assert r.returncode == 0, r.stderr
    assert "class plate" in r.stdout
    buf = io.StringIO(r.stdout)
    assert any(line.startswith("all ") for line in buf)
