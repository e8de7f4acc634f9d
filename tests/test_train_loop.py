"""The training path end to end on a tiny budget: feature cache → a few optimiser steps →
ONNX export; the exported plate branch computes what the torch module computes, and the face
outputs stay CenterFace's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def test_a_resident_cache_trains_exactly_as_the_memory_maps(tiny_cache: Path) -> None:
    """The GPU path copies the cache into the device's memory first (TrainConfig.resident);
    forced here on the CPU, the batches and so the weights must be bit for bit those of the
    memory-mapped path."""
    a = loop.train(tiny_cache, graph.centerface_path(), loop.TrainConfig(epochs=2, batch=4, seed=3, resident=False))
    b = loop.train(tiny_cache, graph.centerface_path(), loop.TrainConfig(epochs=2, batch=4, seed=3, resident=True))
    sa, sb = a.plate.state_dict(), b.plate.state_dict()
    assert all(np.array_equal(sa[k].numpy(), sb[k].numpy()) for k in sa)
    # and not trivially: training moved the weights away from their start
    start = loop.train(tiny_cache, graph.centerface_path(), loop.TrainConfig(epochs=1, batch=12, seed=3, lr=1e-9))
    assert not np.array_equal(sa["pw.weight"].numpy(), start.plate.state_dict()["pw.weight"].numpy())


def test_int8_variant_trains_on_the_int8_taps_and_keeps_the_int8_face_path(
        tiny_cache: Path, shared: Path, tmp_path: Path) -> None:
    """--int8: the cache holds the taps the int8 backbone computes, training continues from the
    shipped plate branch, and the exported model's face outputs are the int8 CenterFace's."""
    import torch

    from redact.detectors import CENTERFACE_INT8, STREETVEIL_MODEL
    from redact.nets import streetveil_from_onnx

    face = graph.int8_face_model(CENTERFACE_INT8, graph.centerface_path())
    dq = {n.output[0] for n in face.graph.node if n.op_type == "DequantizeLinear"}
    assert set(graph.tap_names(face)) <= dq  # the dequantised activations the face path uses
    backbone = graph.backbone_model(face).SerializeToString()
    frames, _ = data.time_split(data.load_dashcam(shared / "plates-dashcam-ro"))
    with pytest.raises(ValueError, match="go together"):
        loop.build_cache(tmp_path / "bad", frames[:6], loop.CacheSpec(n=8, seed=5), backbone=backbone)
    cache = loop.build_cache(tmp_path / "c", frames[:6], loop.CacheSpec(n=8, seed=5, backbone="int8"), batch=4,
                             backbone=backbone)
    # Same seed, same crops as tiny_cache; int8 taps follow the fp32 ones but are far from
    # equal (correlation 0.81 at stride 4 down to 0.66 at stride 32: why the fp32-trained
    # plate branch loses recall on them).
    for s in loop.TAP_STRIDE:
        a, b = (np.load(c / f"tap{s}.npy")[:8].astype(np.float32) for c in (cache, tiny_cache))
        assert not np.array_equal(a, b) and np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.5, s
    assert np.array_equal(np.load(cache / "hm.npy"), np.load(tiny_cache / "hm.npy")[:8])

    start = streetveil_from_onnx(STREETVEIL_MODEL).plate.state_dict()
    net = loop.train(cache, STREETVEIL_MODEL, loop.TrainConfig(epochs=1, batch=4, seed=1, lr=1e-4), finetune=True)
    moved = [k for k, v in net.plate.state_dict().items() if not torch.equal(v, start[k])]
    assert moved and all(torch.allclose(v, start[k], atol=0.05) for k, v in net.plate.state_dict().items())

    out = export.export_streetveil(net, tmp_path / "m-int8.onnx", 0.3, "unit test", face=face,
                                   extra={"streetveil.backbone_sha256": "b"})
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["streetveil.backbone_sha256"] == "b" and meta["streetveil.plate_threshold"] == "0.300"
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 128, 192)).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    o = ort.InferenceSession(str(out), so).run(None, {"input": x})
    ref = ort.InferenceSession(str(CENTERFACE_INT8), so).run(None, {"input.1": x})
    for got, want in zip(o[:4], ref, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    taps = ort.InferenceSession(backbone, so).run(None, {"input": x})
    with torch.no_grad():
        plate = [t.numpy() for t in net.plate(*(torch.from_numpy(t) for t in taps))]
    for got, want in zip(o[4:], plate, strict=True):
        np.testing.assert_allclose(got, want, atol=2e-3, rtol=1e-3)


def _same_outputs(net: Any, out: Path, back: Any, x: np.ndarray) -> None:
    """The trained module, its exported file under onnxruntime and the module loaded back from
    that file compute the same outputs (the loaded one bit for bit)."""
    import torch

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    o = ort.InferenceSession(str(out), so).run(None, {"input": x})
    with torch.no_grad():
        t = [v.numpy() for v in net(torch.from_numpy(x))]
        t2 = [v.numpy() for v in back(torch.from_numpy(x))]
    for want, got, loaded in zip(t, o, t2, strict=True):
        np.testing.assert_allclose(got, want, atol=2e-3, rtol=1e-3)
        assert np.array_equal(want, loaded)


@pytest.mark.parametrize("rank", [1, 2])
def test_the_separable_fuse_starts_from_the_full_conv_and_round_trips(tiny_cache: Path, tmp_path: Path,
                                                                       rank: int) -> None:
    """Neck.make_separable(rank): exact where each input channel's 3x3 filters have that rank
    (its SVD initialisation), and a branch trained with it exports to ONNX and loads back
    with the same layers."""
    import torch

    from redact.detectors import STREETVEIL_MODEL
    from redact.nets import NECK_CH, Neck, streetveil_from_onnx

    neck = Neck().eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # per input channel, a sum of `rank` outer products (output column x 3x3 kernel)
        a, k = torch.randn(rank, NECK_CH, NECK_CH, generator=g), torch.randn(rank, NECK_CH, 3, 3, generator=g)
        neck.fuse.weight.copy_((a[..., None, None] * k[:, None]).sum(0))
    taps = [torch.rand(1, c, 64 // s, 96 // s, generator=g) for c, s in ((24, 4), (32, 8), (96, 16), (320, 32))]
    with torch.no_grad():
        full = neck(*taps)
        neck.make_separable(rank)
        sep = neck(*taps)
        if rank > 1:  # one filter per channel is not enough for these weights
            one = Neck().eval()
            one.load_state_dict({k: v for k, v in neck.state_dict().items() if not k.startswith("fuse.")}, strict=False)
            one.fuse.weight.copy_((a[..., None, None] * k[:, None]).sum(0))
            one.make_separable(1)
            assert not torch.allclose(one(*taps), full, atol=1e-2)
    assert neck.separable == rank and len(list(neck.onnx_layers())) == 1 + 3 * 3 + 2
    torch.testing.assert_close(sep, full, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="already separable"):
        neck.make_separable(rank + 1)

    net = loop.train(tiny_cache, STREETVEIL_MODEL,
                     loop.TrainConfig(epochs=1, batch=4, seed=1, lr=1e-4, separable_fuse=rank), finetune=True)
    assert net.plate.neck.separable == rank
    out = export.export_streetveil(net, tmp_path / "sep.onnx", 0.3, "unit test")
    convs = [n for n in onnx.load(str(out)).graph.node if n.op_type == "Conv" and n.name.startswith("plate/")]
    assert len(convs) == 4 + 2 + 5  # reduce + 3 sides, fuse as two, dw, pw and three heads
    back = streetveil_from_onnx(out)
    assert back.plate.neck.separable == rank and streetveil_from_onnx(STREETVEIL_MODEL).plate.neck.separable == 0
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 128, 192)).astype(np.float32)
    _same_outputs(net, out, back, x)


def test_head_blocks_start_from_the_branch_they_extend_and_round_trip(tiny_cache: Path, tmp_path: Path) -> None:
    """PlateBranch.add_blocks: a zero-started block leaves every output as it was; a branch
    trained with one exports to ONNX (three more convs and an Add per block), and loads back
    with its blocks, computing what onnxruntime computes."""
    import torch

    from redact.detectors import STREETVEIL_MODEL
    from redact.nets import streetveil_from_onnx

    shipped = streetveil_from_onnx(STREETVEIL_MODEL)
    assert len(shipped.plate.blocks) == 0
    x = np.random.default_rng(1).uniform(0, 255, (1, 3, 128, 192)).astype(np.float32)
    with torch.no_grad():
        before = shipped(torch.from_numpy(x))
        shipped.plate.add_blocks(2)
        after = shipped(torch.from_numpy(x))
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))

    net = loop.train(tiny_cache, STREETVEIL_MODEL,
                     loop.TrainConfig(epochs=1, batch=4, seed=1, lr=1e-3, head_blocks=1), finetune=True)
    assert len(net.plate.blocks) == 1
    project = net.plate.blocks[0].project.weight
    assert float(project.detach().abs().max()) > 0  # the block trained
    out = export.export_streetveil(net, tmp_path / "blocks.onnx", 0.3, "unit test")
    plate = [n for n in onnx.load(str(out)).graph.node if n.name.startswith("plate/")]
    assert sum(n.op_type == "Conv" for n in plate) == 4 + 1 + 2 + 3 + 3  # neck, dw, pw, one block, heads
    assert sum(n.op_type == "Add" for n in plate) == 3 + 1  # the neck's three, the block's one
    back = streetveil_from_onnx(out)
    assert len(back.plate.blocks) == 1
    two = export.export_streetveil(shipped, tmp_path / "two.onnx", 0.3, "unit test")
    with pytest.raises(ValueError, match="has 2 blocks, more than the 1"):
        loop.train(tiny_cache, two, loop.TrainConfig(epochs=1, batch=4, head_blocks=1), finetune=True)
    _same_outputs(net, out, back, x)


def test_the_training_benchmark_prints_seconds_per_step(shared: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_train", Path(__file__).parents[1] / "scripts" / "bench_train.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--shared", str(shared), "--cache-size", "32", "--cache-dir", str(tmp_path), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "32 crops" in out and "2 steps in" in out and "s per step" in out
    import torch

    if not torch.cuda.is_available():  # asked for a GPU it does not have: a clear refusal
        assert bench.main(["--shared", str(shared), "--device", "cuda", "--cache-dir", str(tmp_path)]) == 2
