"""The measured recall of the detection setup a Redactor runs, for run records (GUIDEBOOK,
"evidence per run": the model's measured recall).

Two sources, both reported in ``Redactor.info["measured_recall"]``:

- ``redact/models/measured-recall.json``, written by ``python scripts/eval_redact.py --record``:
  recall measured by this engine (``redact.evaluate.run_eval``) on the shared labelled sets'
  held-out parts. Each row carries the ``detection_key`` of the setup it was measured with
  (detector weights and version, the class's threshold, the multi-scale plan, the face
  second look); a Redactor reports only rows whose key equals its own, so a row never
  describes other weights (a new model, a stale int8 copy) or other thresholds. No matching
  row: ``null`` for that class, which says the setup in use was not measured.
- the streetveil model's own metadata ``streetveil.measured_recall`` (the model card's
  validation numbers for its fp32 weights), copied as the model states it, when present.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RECALL_FILE = Path(__file__).resolve().parent / "models" / "measured-recall.json"
SOURCE = "redact/models/measured-recall.json (python scripts/eval_redact.py --record)"
# The parts of a labelled set that nothing was tuned on (and the small group-photo set).
RECORDED_SPLITS = ("holdout", "val")
_ROW_FIELDS = ("set", "split", "regime", "threshold", "images", "labels_ge16", "recall_ge16", "recall_all",
               "precision_ge16", "measured")


def detection_key(info: Mapping[str, Any], cls: str) -> str:
    """sha256 of what decides the detections of ``cls`` (from ``Redactor.info``): the detectors
    that report it (name, version, weights hash, classes), its threshold, the multi-scale
    plan, for faces the second look, the runtime when it is not onnxruntime and the verifier
    threshold when the class is verified."""
    blob = {
        "class": cls,
        "detectors": [[d["name"], d["version"], d["weights_sha256"], d["classes"]]
                      for d in info["detectors"] if cls in d["classes"]],
        "threshold": info["thresholds"][cls],
        "plan": info["plan"],
        "refine": info["refine"] if cls == "face" else None,
    }
    # Only when not onnxruntime, so the keys of the rows recorded before this field existed
    # (all onnxruntime) still match.
    if info.get("runtime", "onnxruntime") != "onnxruntime":
        blob["runtime"] = info["runtime"]
    # Likewise only when the class is verified (redact/verify.py): the verifier's threshold.
    verify = [d["verify"][cls] for d in info["detectors"] if cls in (d.get("verify") or {})]
    if verify:
        blob["verify"] = verify
    # And the detector score that skips the verifier (ClassHead.verify_bypass), where there is one.
    bypass = [d["verify_bypass"][cls] for d in info["detectors"] if cls in (d.get("verify_bypass") or {})]
    if bypass:
        blob["verify_bypass"] = bypass
    # And only with a zoom-out pass for the class (redact/centernet.py ClassHead.zoom_out).
    zoom = [d["zoom_out"][cls] for d in info["detectors"] if cls in (d.get("zoom_out") or {})]
    if zoom:
        blob["zoom_out"] = zoom
    # And only where its boxes merge to their union (ClassHead.union).
    merge = [d["merge"][cls] for d in info["detectors"] if cls in (d.get("merge") or {})]
    if merge:
        blob["merge"] = merge
    return hashlib.sha256(json.dumps(blob, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def load_rows(path: Path = RECALL_FILE) -> list[dict[str, Any]]:
    """The recorded rows; none when the file is absent. An unreadable file is logged and
    counts as none: it must not stop redaction, and the record then says "not measured"."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data["rows"]
        if not isinstance(rows, list):
            raise ValueError("rows is not a list")
        return [r for r in rows if isinstance(r, dict)]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("%s: cannot read the measured recall (%s); run records will say 'not measured'", path, e)
        return []


def measured_recall(info: Mapping[str, Any], model_metadata: str | None = None,
                    path: Path = RECALL_FILE) -> dict[str, Any]:
    """``Redactor.info["measured_recall"]``: per class the rows measured for exactly this
    setup (``None``: not measured), their source, and the model's own statement if any."""
    rows = load_rows(path)
    out: dict[str, Any] = {}
    for cls in info["thresholds"]:
        key = detection_key(info, cls)
        got = [{k: r.get(k) for k in _ROW_FIELDS} for r in rows if r.get("key") == key and r.get("class") == cls]
        out[cls] = got or None
    out["source"] = SOURCE
    if model_metadata:
        try:
            out["model_metadata"] = json.loads(model_metadata)
        except ValueError:
            out["model_metadata"] = model_metadata
    return out


def recall_line(info: Mapping[str, Any]) -> str:
    """One line for people: recall of objects >= 16 px measured for this setup, per class."""
    mr = info.get("measured_recall") or {}
    parts = []
    for cls in info.get("thresholds", {}):
        rows = [r for r in mr.get(cls) or () if r.get("recall_ge16") is not None]
        if not rows:
            parts.append(f"{cls} not measured for this setup")
            continue
        parts.append(f"{cls} " + ", ".join(f"{r['recall_ge16']:.3f} ({r['set']} {r['split']}, {r['regime']})"
                                           for r in rows))
    return "measured recall >= 16 px: " + ("; ".join(parts) or "none")


def recorded_rows(rows: Sequence[Mapping[str, Any]], info: Mapping[str, Any], *, measured: str,
                  command: str, detector_config: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The rows of ``scripts/eval_redact.py`` (default configuration) to record for the setup
    ``info`` describes (a Redactor of that configuration, not the evaluation's own: the
    large-frame regime changes the plan only for the measurement). Rows measured with other
    weights or thresholds are refused, and with ``detector_config`` (the setup's
    ``DetectorSection`` as JSON) rows whose ``detector_config`` differs in any key."""
    out = []
    for r in rows:
        if r["split"] not in RECORDED_SPLITS and r["set"] != "faces-group-photos":
            continue
        if detector_config is not None and r.get("detector_config") != dict(detector_config):
            diff = sorted(k for k in set(detector_config) | set(r.get("detector_config") or {})
                          if (r.get("detector_config") or {}).get(k) != detector_config.get(k))
            raise ValueError(f"{r['set']} {r['split']}: measured with other detector settings ({', '.join(diff)}), "
                             "not the setup to record")
        cls = r["class"]
        mine = [[d["name"], d["version"], d["weights_sha256"]] for d in info["detectors"] if cls in d["classes"]]
        theirs = [[d["name"], d["version"], d["weights_sha256"]] for d in r["detectors"] if cls in d["classes"]]
        if mine != theirs or r["threshold"] != info["thresholds"][cls]:
            raise ValueError(f"{r['set']} {r['split']}: measured with {theirs} at {r['threshold']}, "
                             f"not the setup to record ({mine} at {info['thresholds'][cls]})")
        out.append({"key": detection_key(info, cls), "class": cls, **{k: r.get(k) for k in _ROW_FIELDS
                                                                       if k != "measured"},
                    "measured": measured, "command": command})
    return out
