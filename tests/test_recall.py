"""Measured recall in run records: only rows measured for exactly the setup in use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from redact.config import DetectorSection, RedactConfig
from redact.engine import Redactor
from redact.recall import detection_key, measured_recall, recall_line, recorded_rows


@pytest.fixture(scope="module")
def info() -> dict[str, Any]:
    return Redactor(RedactConfig(), threads=1).info


def _eval_row(info: dict[str, Any], cls: str, **kw: Any) -> dict[str, Any]:
    row = {"class": cls, "set": "plates-dashcam-ro", "split": "val", "regime": "as loaded",
           "threshold": info["thresholds"][cls], "images": 85, "labels_ge16": 110, "recall_ge16": 0.97,
           "recall_all": 0.97, "precision_ge16": 0.3, "detectors": info["detectors"]}
    return {**row, **kw}


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"rows": rows}))
    return path


def test_a_recorded_row_is_reported_only_for_its_own_setup(info: dict[str, Any], tmp_path: Path) -> None:
    rows = recorded_rows([_eval_row(info, "plate"), _eval_row(info, "plate", split="train")], info,
                         measured="2026-11-26T00:00:00Z", command="test")
    assert [r["split"] for r in rows] == ["val"]  # the tuned-on part is never recorded
    f = _write(tmp_path / "m.json", rows)
    got = measured_recall(info, None, f)
    assert got["plate"][0]["recall_ge16"] == 0.97 and got["face"] is None
    assert "plate 0.970 (plates-dashcam-ro val, as loaded)" in recall_line({**info, "measured_recall": got})
    assert "face not measured for this setup" in recall_line({**info, "measured_recall": got})

    # Another plate threshold is another setup: the row no longer describes it.
    other = Redactor(RedactConfig.model_validate({"detector": {"plate_threshold": 0.6}}), threads=1).info
    assert detection_key(other, "plate") != detection_key(info, "plate")
    assert measured_recall(other, None, f)["plate"] is None
    # The face key does not move with the plate threshold.
    assert detection_key(other, "face") == detection_key(info, "face")


def test_rows_measured_with_other_weights_or_thresholds_are_refused(info: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="not the setup to record"):
        recorded_rows([_eval_row(info, "plate", threshold=0.9)], info, measured="x", command="t")
    det = [{**d, "weights_sha256": "0" * 64} for d in info["detectors"]]
    with pytest.raises(ValueError, match="not the setup to record"):
        recorded_rows([_eval_row(info, "face", detectors=det)], info, measured="x", command="t")


def test_an_unreadable_recall_file_means_not_measured(info: dict[str, Any], tmp_path: Path) -> None:
    bad = tmp_path / "m.json"
    bad.write_text("{not json")
    got = measured_recall(info, None, bad)
    assert got["face"] is None and got["plate"] is None


def test_redact_report_has_a_run_record_with_thresholds_and_recall(shared: Path, tmp_path: Path) -> None:
    from pipeline.redact_files import redact_paths, run_record_path

    img = sorted((shared / "plates-dashcam-ro" / "images").glob("*.jpg"))[0]
    report = tmp_path / "report.jsonl"
    cfg = RedactConfig(detector=DetectorSection())
    run = redact_paths([img], tmp_path / "out", cfg, report=report, threads=1)
    rec = json.loads(run_record_path(report).read_text())
    assert rec["images"] == 1 and rec["ok"] == 1 and rec["model_hash"] == run.model_hash
    assert rec["detectors"]["thresholds"] == run.info["thresholds"]
    assert set(rec["detectors"]["measured_recall"]) >= {"face", "plate", "source"}


def test_the_default_setup_has_its_recall_recorded(info: dict[str, Any]) -> None:
    """redact/models/measured-recall.json must describe the default detection setup: after a
    change of weights, thresholds or plan, rerun `python scripts/eval_redact.py --record`."""
    mr = info["measured_recall"]
    assert mr["face"] and mr["plate"], "stale: python scripts/eval_redact.py --record"
    assert {(r["set"], r["split"]) for r in mr["plate"]} == {("plates-dashcam-ro", "val")}
    assert all(0.0 <= r["recall_ge16"] <= 1.0 for r in mr["face"] + mr["plate"])


@pytest.mark.parametrize("args, msg", [
    (["--record", "--only", "face"], "--record needs both classes"),
    (["--record", "--variant", "default=refine=false"], "the name 'default'"),
])
def test_eval_script_refuses_a_record_that_would_misdescribe_the_default_before_running(
        args: list[str], msg: str) -> None:
    """Checked before the matrix runs (minutes): a variant named "default" would otherwise be
    recorded as the default setup's recall."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "scripts" / "eval_redact.py"), *args],
                       capture_output=True, text=True, cwd=root, timeout=120)
    assert r.returncode == 2 and msg in r.stderr, r.stderr


def test_the_torch_runtime_is_not_reported_as_the_measured_onnxruntime_setup(
        info: dict[str, Any], tmp_path: Path) -> None:
    assert info["runtime"] == "onnxruntime"
    f = _write(tmp_path / "m.json", recorded_rows([_eval_row(info, "plate")], info, measured="x", command="t"))
    assert measured_recall(info, None, f)["plate"]
    torch_info = {**info, "runtime": "torch:cuda"}
    assert detection_key(torch_info, "plate") != detection_key(info, "plate")
    assert measured_recall(torch_info, None, f)["plate"] is None


def test_the_models_own_recall_is_not_claimed_for_its_int8_copy(tmp_path: Path) -> None:
    """streetveil.measured_recall in the model's metadata describes its fp32 weights."""
    import hashlib

    import onnx

    from redact.detectors import STREETVEIL_MODEL, int8_path

    model = onnx.load(str(STREETVEIL_MODEL))
    model.metadata_props.add(key="streetveil.measured_recall", value='{"plate": 0.99}')
    fp32 = tmp_path / "sv.onnx"
    onnx.save(model, str(fp32))
    # A stand-in "int8 copy" (the fp32 graph, another file) that the engine's source check accepts.
    for p in list(model.metadata_props):
        if p.key == "streetveil.measured_recall":
            model.metadata_props.remove(p)
    model.metadata_props.add(key="streetveil.source_sha256", value=hashlib.sha256(fp32.read_bytes()).hexdigest())
    onnx.save(model, str(int8_path(fp32)))

    def cfg(precision: str) -> RedactConfig:
        return RedactConfig(detector=DetectorSection(weights=fp32, precision=precision, refine=False))  # type: ignore[arg-type]

    assert Redactor(cfg("fp32"), threads=1).info["measured_recall"]["model_metadata"] == {"plate": 0.99}
    assert "model_metadata" not in Redactor(cfg("int8"), threads=1).info["measured_recall"]


def test_rows_without_a_recall_value_read_as_not_measured(info: dict[str, Any]) -> None:
    mr = {"face": [{"set": "s", "split": "holdout", "regime": "as loaded", "recall_ge16": None}], "plate": None}
    line = recall_line({**info, "measured_recall": mr})
    assert "face not measured for this setup" in line and "plate not measured for this setup" in line


def test_rows_of_other_detector_settings_are_refused_whatever_their_name(info: dict[str, Any]) -> None:
    """A row measured without the second look (same weights and thresholds) is not the default's."""
    default = DetectorSection().model_dump(mode="json")
    other = DetectorSection(refine=False).model_dump(mode="json")
    ok = recorded_rows([_eval_row(info, "face", split="holdout", detector_config=default)], info,
                       measured="x", command="t", detector_config=default)
    assert len(ok) == 1
    with pytest.raises(ValueError, match="other detector settings \\(refine\\)"):
        recorded_rows([_eval_row(info, "face", split="holdout", detector_config=other)], info,
                      measured="x", command="t", detector_config=default)
