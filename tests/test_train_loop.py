"""The training path end to end on a tiny budget: feature cache → a few optimiser steps →
ONNX export; the exported plate branch computes what the torch module computes, and the face
outputs stay CenterFace's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from redact.train import data, export, graph, loop

pytestmark = pytest.mark.needs_torch


@pytest.fixture(scope="module")
def tiny_cache(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    frames, _ = data.time_split(data.load_dashcam(shared / "plates-dashcam-ro"))
    cache = tmp_path_factory.mktemp("cache")
    return loop.build_cache(cache, frames[:6], loop.CacheSpec(n=12, seed=5), batch=4)


def test_cache_is_reused_and_holds_targets(tiny_cache: Path, shared: Path) -> None:
    hm = np.load(tiny_cache / "hm.npy")
    mask = np.load(tiny_cache / "mask.npy")
    assert hm.shape == (12, 1, data.CROP_H // 4, data.CROP_W // 4)
    assert int(mask.sum()) == int((hm == 1).sum()) > 0  # one peak per plate
    tap = np.load(tiny_cache / "tap32.npy", mmap_mode="r")
    assert tap.shape == (12, 320, data.CROP_H // 32, data.CROP_W // 32) and np.abs(tap[0]).max() > 0
    before = (tiny_cache / "tap4.npy").stat().st_mtime_ns
    frames, _ = data.time_split(data.load_dashcam(shared / "plates-dashcam-ro"))
    loop.build_cache(tiny_cache, frames[:6], loop.CacheSpec(n=12, seed=5), batch=4)
    assert (tiny_cache / "tap4.npy").stat().st_mtime_ns == before


def test_focal_loss_prefers_the_right_heatmap() -> None:
    import torch

    gt = torch.zeros(1, 1, 8, 8)
    gt[0, 0, 4, 4] = 1
    w = torch.ones_like(gt)
    good = torch.full_like(gt, -6.0)
    good[0, 0, 4, 4] = 6.0
    bad = torch.full_like(gt, 6.0)
    bad[0, 0, 4, 4] = -6.0
    assert loop.focal_loss(good, gt, w) < 0.01 < loop.focal_loss(bad, gt, w)
    # ignored cells do not count
    assert loop.focal_loss(bad, gt, torch.zeros_like(gt)) < loop.focal_loss(bad, gt, w)


def test_train_then_export_round_trip(tiny_cache: Path, tmp_path: Path) -> None:
    import torch

    from redact.nets import streetveil_from_onnx

    net = loop.train(tiny_cache, graph.centerface_path(), loop.TrainConfig(epochs=1, batch=4, seed=1), log_every=1)
    out = export.export_streetveil(net, tmp_path / "m.onnx", 0.42, "unit test")
    m = onnx.load(str(out))
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["streetveil.plate_threshold"] == "0.420" and meta["streetveil.decode"] == "centerface-v1"
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 128, 192)).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    o = ort.InferenceSession(str(out), so).run(None, {"input": x})
    face = ort.InferenceSession(graph.fixed_centerface().SerializeToString(), so).run(None, {"input": x})
    for a, b in zip(o[:4], face, strict=True):
        assert np.array_equal(a, b)
    with torch.no_grad():
        t = [v.numpy() for v in net(torch.from_numpy(x))]
        t2 = [v.numpy() for v in streetveil_from_onnx(out)(torch.from_numpy(x))]
    for a, b, c in zip(t, o, t2, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-3, rtol=1e-3)
        assert np.array_equal(a, c)  # the same weights came back from the file
    # training moved the plate branch away from its face-neck initialisation
    assert not np.allclose(o[4], face[0])


def test_training_is_reproducible_with_a_fixed_seed(tiny_cache: Path) -> None:
    cfg = loop.TrainConfig(epochs=1, batch=4, seed=3)
    a = loop.train(tiny_cache, graph.centerface_path(), cfg)
    b = loop.train(tiny_cache, graph.centerface_path(), cfg)
    c = loop.train(tiny_cache, graph.centerface_path(), loop.TrainConfig(epochs=1, batch=4, seed=4))
    sa, sb, sc = (n.plate.state_dict() for n in (a, b, c))
    assert all(np.array_equal(sa[k].numpy(), sb[k].numpy()) for k in sa)
    assert not all(np.array_equal(sa[k].numpy(), sc[k].numpy()) for k in sa)
