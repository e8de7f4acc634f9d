"""On-vehicle capture: camera + GPS sources, trigger, geotagging, crash-safe sessions.

Must stay light: never imports torch, dask or ``redact``.
"""

from __future__ import annotations

__all__ = ["__version__"]

try:
    from importlib.metadata import version as _version

    __version__ = _version("streetveil")
except Exception:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
