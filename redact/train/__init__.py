"""Training of the streetveil plate branch (the ``train`` extra: torch, imported lazily).

``render`` draws synthetic plates and hard-negative signs, ``compose`` puts them into real
frames, ``data`` splits the real dashcam set by time and makes training crops and validation
scenes, ``targets`` encodes CenterFace-style targets, ``loop`` caches backbone features and
trains, ``graph`` / ``export`` write the combined ONNX model, ``evaluate`` scores it, and
``pipeline`` runs it all (``scripts/train_plates.py``).
"""

from __future__ import annotations
