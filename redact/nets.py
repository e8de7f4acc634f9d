"""The CenterFace network in torch (the GPU path, and the base the plate branch trains on).

Needs the ``gpu`` or ``train`` extra (torch). Import this module lazily.

Architecture (measured from the MIT ``centerface.onnx``): torchvision-style MobileNetV2
``features[0..17]`` with batch norms folded into the convolutions and plain ReLU; a neck that
takes the stride-32 map (320 ch) to 24 channels, then three steps of 2x2 transposed conv +
BN + ReLU, each added to a 1x1 conv + ReLU side branch from the stride-16, 8 and 4 taps; a
3x3 conv + ReLU; four 1x1 heads at stride 4: heatmap (sigmoid), log-scale (h, w), offset
(y, x), 10 landmark channels.

Weights load by walking the ONNX graph's nodes in order (``onnx`` package only), so the one
ONNX file is the single source of weights for both runtimes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

# MobileNetV2 inverted-residual settings: expansion t, out channels c, repeats n, stride s.
_MBV2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
# Indices (into features) whose outputs feed the neck: stride 4, 8, 16.
_TAPS = (3, 6, 13)
NECK_CH = 24


def _conv(cin: int, cout: int, k: int, s: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, s, padding=k // 2, groups=groups, bias=True)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = cin * t
        self.expand = _conv(cin, hidden, 1) if t != 1 else None
        self.dw = _conv(hidden, hidden, 3, stride, groups=hidden)
        self.project = _conv(hidden, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.expand(x)) if self.expand is not None else x
        y = self.project(torch.relu(self.dw(y)))
        return x + y if self.residual else y

    def onnx_layers(self) -> Iterator[nn.Module]:
        if self.expand is not None:
            yield self.expand
        yield self.dw
        yield self.project


class Backbone(nn.Module):
    """MobileNetV2 features[0..17]; returns the stride-4, 8, 16 taps and the stride-32 map."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv(3, 32, 3, 2)
        blocks: list[nn.Module] = []
        cin = 32
        for t, c, n, s in _MBV2:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = torch.relu(self.stem(x))
        taps = []
        for i, b in enumerate(self.blocks, start=1):
            x = b(x)
            if i in _TAPS:
                taps.append(x)
        return taps[0], taps[1], taps[2], x

    def onnx_layers(self) -> Iterator[nn.Module]:
        yield self.stem
        for b in self.blocks:
            yield from b.onnx_layers()  # type: ignore[operator]


class Up(nn.Module):
    """2x2 stride-2 transposed conv (no bias) + BN + ReLU."""

    def __init__(self, ch: int = NECK_CH) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(ch, ch, 2, 2, bias=False)
        self.bn = nn.BatchNorm2d(ch, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class Neck(nn.Module):
    """Stride 32 → 4 with side branches; output 24 channels at stride 4.

    ``separable`` > 0: the final 3x3 conv as depthwise 3x3 with that many filters per input
    channel, then pointwise 1x1 back to 24 (no activation between). For a plate branch only, as
    a speed experiment (at stride 4 the full 3x3 is the branch's largest CPU kernel); no shipped
    file uses it (MODEL_CARD.md, "The int8 variant")."""

    def __init__(self, separable: int = 0) -> None:
        super().__init__()
        self.reduce = _conv(320, NECK_CH, 1)
        self.up = nn.ModuleList([Up(), Up(), Up()])
        self.side = nn.ModuleList([_conv(96, NECK_CH, 1), _conv(32, NECK_CH, 1), _conv(24, NECK_CH, 1)])
        self.fuse: nn.Module = _conv(NECK_CH, NECK_CH, 3)
        if separable:
            self.fuse = self._separable(separable)

    @staticmethod
    def _separable(rank: int) -> nn.Sequential:
        return nn.Sequential(_conv(NECK_CH, NECK_CH * rank, 3, groups=NECK_CH), _conv(NECK_CH * rank, NECK_CH, 1))

    @property
    def separable(self) -> int:
        """Depthwise filters per input channel of the fuse layer (0: a full 3x3 conv)."""
        return cast(nn.Conv2d, self.fuse[1]).in_channels // NECK_CH if isinstance(self.fuse, nn.Sequential) else 0

    def make_separable(self, rank: int = 1) -> None:
        """Replace the full 3x3 fuse conv by depthwise 3x3 (``rank`` filters per input channel)
        + pointwise 1x1, initialised with the best rank-``rank`` approximation (SVD) of each
        input channel's 3x3 filters, so that training starts near the full layer's function
        rather than from scratch. On the shipped fp32 branch rank 1 keeps 64 % of the filters'
        energy on average, rank 2 79 %, rank 3 88 %."""
        if self.separable:
            if self.separable != rank:
                raise ValueError(f"the fuse layer is already separable with {self.separable} filters per channel")
            return
        if not 1 <= rank <= 9:
            raise ValueError(f"separable rank {rank}: 1 to 9 (a 3x3 filter has rank 9 at most)")
        full = cast(nn.Conv2d, self.fuse)
        sep = self._separable(rank)
        dw, pw = cast(nn.Conv2d, sep[0]), cast(nn.Conv2d, sep[1])
        w = full.weight.detach().double()
        assert full.bias is not None and dw.bias is not None and pw.bias is not None
        with torch.no_grad():
            for i in range(NECK_CH):  # grouped conv: outputs i*rank .. i*rank+rank-1 read input channel i
                u, s, vt = torch.linalg.svd(w[:, i].reshape(NECK_CH, 9), full_matrices=False)
                for k in range(rank):
                    pw.weight[:, i * rank + k, 0, 0] = (u[:, k] * s[k]).float()
                    dw.weight[i * rank + k, 0] = vt[k].reshape(3, 3).float()
            dw.bias.zero_()
            pw.bias.copy_(full.bias.detach())
        self.fuse = sep

    def forward(self, c4: torch.Tensor, c8: torch.Tensor, c16: torch.Tensor, c32: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.reduce(c32))
        for up, side, tap in zip(self.up, self.side, (c16, c8, c4), strict=True):
            x = up(x) + torch.relu(side(tap))
        return torch.relu(self.fuse(x))

    def onnx_layers(self) -> Iterator[nn.Module]:
        yield self.reduce
        for up, side in zip(self.up, self.side, strict=True):
            yield cast(Up, up).conv
            yield cast(Up, up).bn
            yield side
        if isinstance(self.fuse, nn.Sequential):
            yield from self.fuse
        else:
            yield self.fuse


class FaceHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.heatmap = _conv(NECK_CH, 1, 1)
        self.scale = _conv(NECK_CH, 2, 1)
        self.offset = _conv(NECK_CH, 2, 1)
        self.landmarks = _conv(NECK_CH, 10, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return torch.sigmoid(self.heatmap(x)), self.scale(x), self.offset(x), self.landmarks(x)

    def onnx_layers(self) -> Iterator[nn.Module]:
        yield from (self.heatmap, self.scale, self.offset, self.landmarks)


class CenterFaceNet(nn.Module):
    """Input: RGB float32 0..255, NCHW, H and W multiples of 32, no normalisation.
    Output: (heatmap, scale, offset, landmarks) at stride 4, as the ONNX model."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = Backbone()
        self.neck = Neck()
        self.face = FaceHeads()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.face(self.neck(*self.backbone(x)))

    def onnx_layers(self) -> Iterator[nn.Module]:
        yield from self.backbone.onnx_layers()
        yield from self.neck.onnx_layers()
        yield from self.face.onnx_layers()


def onnx_weight_list(path: Path | str) -> list[tuple[str, list[np.ndarray]]]:
    """(op_type, [weight arrays]) for every Conv / ConvTranspose / BatchNormalization node of
    an ONNX file, in graph order."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose", "BatchNormalization"):
            out.append((node.op_type, [inits[n] for n in node.input[1:] if n in inits]))
    return out


def load_layers(layers: Iterator[nn.Module], weights: list[tuple[str, list[np.ndarray]]]) -> None:
    """Copy weights, in order, into the given layers; shapes and kinds must match exactly."""
    mods = list(layers)
    if len(mods) != len(weights):
        raise ValueError(f"layer count mismatch: torch {len(mods)}, onnx {len(weights)}")
    kinds = {nn.Conv2d: "Conv", nn.ConvTranspose2d: "ConvTranspose", nn.BatchNorm2d: "BatchNormalization"}
    with torch.no_grad():
        for i, (m, (op, arrays)) in enumerate(zip(mods, weights, strict=True)):
            if kinds[type(m)] != op:
                raise ValueError(f"layer {i}: torch {type(m).__name__} vs onnx {op}")
            if isinstance(m, nn.BatchNorm2d):
                scale, bias, mean, var = arrays
                m.weight.copy_(torch.from_numpy(np.array(scale)))
                m.bias.copy_(torch.from_numpy(np.array(bias)))
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(torch.from_numpy(np.array(mean)))
                m.running_var.copy_(torch.from_numpy(np.array(var)))
                continue
            conv = cast(nn.Conv2d | nn.ConvTranspose2d, m)
            params = [conv.weight] + ([conv.bias] if conv.bias is not None else [])
            if len(params) != len(arrays):
                raise ValueError(f"layer {i}: {len(params)} torch tensors vs {len(arrays)} in onnx")
            for p, a in zip(params, arrays, strict=True):
                if tuple(p.shape) != a.shape:
                    raise ValueError(f"layer {i}: shape {tuple(p.shape)} vs onnx {a.shape}")
                p.copy_(torch.from_numpy(np.array(a)))


def centerface_from_onnx(path: Path | str) -> CenterFaceNet:
    """A CenterFaceNet in eval mode with the weights of a CenterFace ONNX file."""
    net = CenterFaceNet()
    load_layers(net.onnx_layers(), onnx_weight_list(path))
    return net.eval()


class PlateBranch(nn.Module):
    """The plate path of the combined model: its own copy of the neck (initialised from the
    face neck), a depthwise 3x3 + pointwise 24->32 refinement, optionally ``blocks`` inverted
    residual blocks on those 32 channels (32->64 expand, depthwise 3x3, 64->32 linear project,
    added back: more capacity at stride 4, where small plates live), and CenterNet heads
    decoded exactly like CenterFace's: heatmap (sigmoid), log-scale (h, w), offset (y, x).

    The deployed heatmap keeps only 3x3 local maxima (CenterNet's peak extraction, zero
    elsewhere): the runtime decodes every cell above threshold as CenterFace does, and a
    plate 5x wider than tall lights a row of cells whose boxes, trained only at the centre,
    overlap too little for NMS at IoU 0.3 to merge them."""

    HEAD_CH = 32
    BLOCK_EXPAND = 2

    def __init__(self, separable: int = 0, blocks: int = 0) -> None:
        super().__init__()
        self.neck = Neck(separable)
        self.dw = _conv(NECK_CH, NECK_CH, 3, groups=NECK_CH)
        self.pw = _conv(NECK_CH, self.HEAD_CH, 1)
        self.blocks = nn.ModuleList()
        self.add_blocks(blocks)
        self.heatmap = _conv(self.HEAD_CH, 1, 1)
        self.scale = _conv(self.HEAD_CH, 2, 1)
        self.offset = _conv(self.HEAD_CH, 2, 1)

    def add_blocks(self, n: int) -> None:
        """Append ``n`` head blocks whose projection starts at zero, so the branch computes
        exactly what it did before them: training grows capacity from a trained branch."""
        if n < 0:
            raise ValueError(f"head blocks {n}: 0 or more")
        for _ in range(n):
            block = InvertedResidual(self.HEAD_CH, self.HEAD_CH, 1, self.BLOCK_EXPAND)
            with torch.no_grad():
                block.project.weight.zero_()
                assert block.project.bias is not None
                block.project.bias.zero_()
            self.blocks.append(block)

    def forward(self, c4: torch.Tensor, c8: torch.Tensor, c16: torch.Tensor, c32: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The deployed form (training uses ``logits``)."""
        logit, scale, offset = self.logits(c4, c8, c16, c32)
        hm = torch.sigmoid(logit)
        peak = torch.nn.functional.max_pool2d(hm, 3, 1, 1) == hm
        return hm * peak.to(hm.dtype), scale, offset

    def logits(self, c4: torch.Tensor, c8: torch.Tensor, c16: torch.Tensor, c32: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.neck(c4, c8, c16, c32)
        x = torch.relu(self.pw(torch.relu(self.dw(x))))
        for block in self.blocks:
            x = block(x)
        return self.heatmap(x), self.scale(x), self.offset(x)

    def onnx_layers(self) -> Iterator[nn.Module]:
        yield from self.neck.onnx_layers()
        yield from (self.dw, self.pw)
        for block in self.blocks:
            yield from cast(InvertedResidual, block).onnx_layers()
        yield from (self.heatmap, self.scale, self.offset)


class StreetveilNet(nn.Module):
    """Faces and plates in one pass: the CenterFace network (backbone, neck and face heads,
    all frozen) plus a plate branch on the same backbone taps.

    Input as CenterFaceNet. Output: (face_heatmap, face_scale, face_offset, face_landmarks,
    plate_heatmap, plate_scale, plate_offset), all at stride 4, as the ONNX model
    ``redact/models/streetveil-fp-v1.onnx``."""

    def __init__(self, separable_plate_fuse: int = 0, plate_blocks: int = 0) -> None:
        super().__init__()
        self.backbone = Backbone()
        self.neck = Neck()
        self.face = FaceHeads()
        self.plate = PlateBranch(separable_plate_fuse, plate_blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        taps = self.backbone(x)
        return (*self.face(self.neck(*taps)), *self.plate(*taps))

    def onnx_layers(self) -> Iterator[nn.Module]:
        yield from self.backbone.onnx_layers()
        yield from self.neck.onnx_layers()
        yield from self.face.onnx_layers()
        yield from self.plate.onnx_layers()

    @classmethod
    def from_centerface(cls, path: Path | str) -> StreetveilNet:
        """CenterFace weights everywhere, the plate neck initialised as a copy of the face neck
        (the starting point of training); the plate heads keep their random init."""
        net = cls()
        face = CenterFaceNet()
        load_layers(face.onnx_layers(), onnx_weight_list(path))
        net.backbone.load_state_dict(face.backbone.state_dict())
        net.neck.load_state_dict(face.neck.state_dict())
        net.face.load_state_dict(face.face.state_dict())
        net.plate.neck.load_state_dict(face.neck.state_dict())
        return net.eval()


def streetveil_from_onnx(path: Path | str) -> StreetveilNet:
    """A StreetveilNet in eval mode with the weights of the combined ONNX file (face and plate
    weights from the one file the onnxruntime backend runs; an fp32 file: the int8 one's face
    path is quantised). The plate neck's fuse layer is separable when the file's is: its
    weights follow the neck's last side conv, and a depthwise one has one input channel per
    group (and 24 x rank outputs). Head blocks (three layers each) are whatever the plate
    branch holds beyond that."""
    weights = onnx_weight_list(path)
    # after the face model's layers, the plate neck's layers up to its fuse
    face_layers = len(list(CenterFaceNet().onnx_layers()))
    fuse = face_layers + len(list(Neck().onnx_layers())) - 1
    w = weights[fuse][1][0] if len(weights) > fuse else None
    separable = w.shape[0] // NECK_CH if w is not None and w.shape[1:] == (1, 3, 3) else 0
    extra = len(weights) - face_layers - len(list(PlateBranch(separable).onnx_layers()))
    if extra < 0 or extra % 3:
        raise ValueError(f"{path}: {len(weights) - face_layers} plate layers fit no plate branch")
    net = StreetveilNet(separable, extra // 3)
    load_layers(net.onnx_layers(), weights)
    return net.eval()
