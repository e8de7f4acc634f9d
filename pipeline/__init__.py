"""Nightly batch job on Dask, publishing, audit chain, retention and the CLI root."""

from __future__ import annotations
