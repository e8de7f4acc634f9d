"""The file-writing driver of `streetveil redact` (pipeline/redact_files.py): output layout,
concurrent workers, per-image failures as data, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.redact_files import collect_inputs, redact_files, redact_paths, thread_layout
from redact.config import DetectorSection, RedactConfig
from redact.engine import Redactor
from redact.errors import ModelError, RedactError


def test_batch_output_is_the_same_with_concurrent_workers(shared: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for n in sorted((shared / "faces-group-photos" / "images").glob("*.jpg"))[:4]:
        (src / n.name).write_bytes(n.read_bytes())
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    jobs = collect_inputs([src])
    r = Redactor(RedactConfig(), threads=1)
    outs = {}
    for workers in (1, 3):
        summary, records = redact_files(r, jobs, tmp_path / f"out{workers}", workers=workers)
        assert (summary.images, summary.failed) == (5, 1)
        assert [rec["image"] for rec in records] == [j.rel for j in jobs]
        outs[workers] = {p.name: p.read_bytes() for p in (tmp_path / f"out{workers}" / "in").iterdir()}
    assert outs[1] == outs[3] and len(outs[1]) == 4 and "broken.jpg" not in outs[1]
    assert thread_layout(0, "onnxruntime", "cpu", 4) == (1, 4)
    assert thread_layout(3, "onnxruntime", "cpu", None) == (1, 3)
    assert thread_layout(0, "torch", "cuda", 8) == (8, 4)  # GPU_IMAGES_AT_ONCE share one GPU
    assert thread_layout(0, "torch", "cuda", 2) == (2, 2)
    assert thread_layout(0, "torch", "cpu", 4) == (1, 4)


def test_torch_runtime_shares_one_net_between_images_in_flight(shared: Path, tmp_path: Path) -> None:
    """The torch runtime with several images at once (as on a GPU, GPU_IMAGES_AT_ONCE; here
    on the CPU, the only device CI has): one module called from several threads gives the
    same files as one image at a time."""
    src = tmp_path / "in"
    src.mkdir()
    for n in sorted((shared / "plates-dashcam-ro" / "images").rglob("*.jpg"))[::60][:4]:
        (src / n.name).write_bytes(n.read_bytes())
    jobs = collect_inputs([src])
    r = Redactor(RedactConfig(detector=DetectorSection(runtime="torch", device="cpu")), threads=1)
    outs = {}
    for workers in (1, 4):
        summary, _ = redact_files(r, jobs, tmp_path / f"out{workers}", workers=workers)
        assert (summary.images, summary.failed) == (4, 0) and summary.plates > 0
        outs[workers] = {p.name: p.read_bytes() for p in (tmp_path / f"out{workers}" / "in").iterdir()}
    assert outs[1] == outs[4] and len(outs[1]) == 4


def test_batch_fails_only_the_image_an_unexpected_error_hits(shared: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-image errors are data: an error nobody foresaw (a runtime refusing a shape, a bug in
    one path) fails that image, not the batch and its report; a missing model still stops it."""
    src = tmp_path / "in"
    src.mkdir()
    for n in sorted((shared / "faces-group-photos" / "images").glob("*.jpg"))[:3]:
        (src / n.name).write_bytes(n.read_bytes())
    jobs = collect_inputs([src])
    r = Redactor(RedactConfig(detector=DetectorSection(plate_backend="none")), threads=1)
    real = r.detect
    victim = jobs[1].rel

    def detect(image, **kw):  # type: ignore[no-untyped-def]
        if image.name == victim:
            raise RuntimeError("the runtime refused this input")
        return real(image, **kw)

    monkeypatch.setattr(r, "detect", detect)
    summary, records = redact_files(r, jobs, tmp_path / "out", workers=2)
    assert (summary.images, summary.ok, summary.failed) == (3, 2, 1)
    bad = next(rec for rec in records if rec["image"] == victim)
    assert bad["status"] == "failed" and bad["detections"] == []
    assert bad["error"].startswith(victim) and "the runtime refused this input" in bad["error"]
    assert not (tmp_path / "out" / victim).exists()
    assert sorted(p.name for p in (tmp_path / "out" / "in").iterdir()) == sorted(
        Path(j.rel).name for j in jobs if j.rel != victim)

    def no_model(image, **kw):  # type: ignore[no-untyped-def]
        raise ModelError("weights missing")

    monkeypatch.setattr(r, "detect", no_model)
    with pytest.raises(ModelError):
        redact_files(r, jobs, tmp_path / "out2", workers=2)


def test_redact_paths_writes_outputs_and_report_and_says_what_ran(shared: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for n in sorted((shared / "faces-group-photos" / "images").glob("*.jpg"))[:2]:
        (src / n.name).write_bytes(n.read_bytes())
    started: list[tuple[dict, int]] = []
    done: list[dict] = []
    report = tmp_path / "rep" / "report.jsonl"
    run = redact_paths([src], tmp_path / "out", RedactConfig(), report=report, threads=1,
                       on_start=lambda info, n: started.append((info, n)), on_done=done.append)
    assert run.summary.images == run.summary.ok == 2 and run.summary.failed == 0
    assert [n for _, n in started] == [2] and started[0][0] is run.info and len(run.model_hash) == 64
    assert run.info["thresholds"]["face"] == RedactConfig().detector.face_threshold
    records = [json.loads(line) for line in report.read_text().splitlines()]
    assert records == done and [r["image"] for r in records] == [f"in/{p.name}" for p in sorted(src.iterdir())]
    assert sorted(p.name for p in (tmp_path / "out" / "in").iterdir()) == sorted(p.name for p in src.iterdir())
    assert sum(r["detections"] != [] for r in records) == 2  # group photos: faces in each


def test_redact_paths_without_images_is_a_usage_error_before_loading_models(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("no image here")
    with pytest.raises(RedactError, match="no images found") as e:
        redact_paths([tmp_path / "in"], tmp_path / "out", RedactConfig())
    assert e.value.exit_code == 2 and not (tmp_path / "out").exists()


def test_the_redaction_engine_imports_neither_capture_nor_pipeline() -> None:
    """DESIGN.md: imports flow pipeline -> redact and pipeline -> capture, never back."""
    import ast

    root = Path(__file__).resolve().parents[1] / "redact"
    bad = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{path.relative_to(root.parent)}: {n}" for n in names if n.split(".")[0] in ("capture", "pipeline")]
    assert not bad, bad
