"""Write the combined face + plate ONNX model (the one weights file for both runtimes)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from redact.train import graph

VERSION = "1.0.0"
DECODE = "centerface-v1"


def layer_weights(layers: Any) -> list[tuple[str, list[np.ndarray]]]:
    """(op_type, arrays) of torch layers in the form ``redact.nets.onnx_weight_list`` reads."""
    from torch import nn

    out: list[tuple[str, list[np.ndarray]]] = []
    for m in layers:
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            out.append(("BatchNormalization", [t.detach().cpu().numpy() for t in
                                               (m.weight, m.bias, m.running_mean, m.running_var)]))
        elif isinstance(m, nn.ConvTranspose2d):
            out.append(("ConvTranspose", [m.weight.detach().cpu().numpy()]))
        elif isinstance(m, nn.Conv2d):
            assert m.bias is not None
            out.append(("Conv", [m.weight.detach().cpu().numpy(), m.bias.detach().cpu().numpy()]))
        else:
            raise TypeError(f"unexpected layer {type(m).__name__}")
    return out


def export_streetveil(net: Any, out: Path, plate_threshold: float, training: str,
                      face: onnx.ModelProto | None = None, extra: dict[str, str] | None = None) -> Path:
    """CenterFace's own graph (fixed for speed, opset 13; or ``face``, e.g. its int8 copy from
    ``graph.int8_face_model``) plus ``net``'s plate branch, with the streetveil metadata (and
    ``extra``), written atomically to ``out``."""
    model = graph.append_plate_branch(face if face is not None else graph.fixed_centerface(),
                                      layer_weights(net.plate.onnx_layers()))
    model.producer_name = "streetveil"
    graph.set_metadata(model, {
        "streetveil.version": VERSION,
        "streetveil.decode": DECODE,
        "streetveil.plate_threshold": f"{plate_threshold:.3f}",
        "streetveil.training": training,
        "streetveil.license": "MIT; face path: CenterFace (Star-Clouds, MIT)",
        **(extra or {}),
    })
    return write_model(model, out)


def write_model(model: onnx.ModelProto, out: Path) -> Path:
    """Write ``model`` to ``out`` atomically (a shipped, world-readable file)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".tmp-", suffix=".onnx")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the model is a shipped, readable file
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
