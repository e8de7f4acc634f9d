"""The one configuration loader: TOML file + ``STREETVEIL_`` environment overrides →
validated, immutable, typed objects.

Environment overrides address a key by kind and path, sections separated by ``__``:
``STREETVEIL_VEHICLE__TRIGGER__EVERY_METERS=10``, ``STREETVEIL_NIGHTLY__DECRYPT__PRIVATE_KEY=/k.pem``.
Values are read as TOML literals when they parse as one (``10``, ``true``, ``[1, 2]``), else as
strings. An override naming an unknown key is an error, like an unknown key in the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from capture.config import VehicleConfig
from pipeline.errors import ConfigError
from redact.config import RedactConfig

ENV_PREFIX = "STREETVEIL_"
M = TypeVar("M", bound=BaseModel)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------------------- nightly job


class JobSection(_Section):
    batch_size: int = Field(default=8, ge=1, le=1024)
    # 0 = choose from the machine: one worker process per 2 cores, threads = cores / workers.
    workers: int = Field(default=0, ge=0, le=1024)
    threads_per_worker: int = Field(default=0, ge=0, le=256)
    memory_limit: str = "auto"
    retries: int = Field(default=2, ge=0, le=10)
    # Address of a running Dask scheduler (tcp://host:8786); empty = start a LocalCluster.
    # `streetveil run --scheduler` overrides it.
    scheduler: str | None = None


class DecryptSection(_Section):
    # The cluster's private key for encrypted sessions; never stored in a session.
    private_key: Path | None = None


class PublishSection(_Section):
    notice: Path = Path("notice.toml")
    # GeoJSON polygons: frames inside are not published (residents' requests after capture).
    exclusion_zones: Path | None = None
    # Carry detections to this many neighbouring frames each way (a plate hidden in one frame
    # is often readable in the next).
    temporal_carry: int = Field(default=1, ge=0, le=10)
    # Carried boxes grow by this factor about their centre (objects move between frames).
    carry_expand: float = Field(default=1.25, ge=1.0, le=4.0)


class RetentionSection(_Section):
    raw_days: float = Field(default=7.0, gt=0, le=3650)
    # A queued unblur request holds its frame's raw file (and an encrypted session's key) past
    # raw_days until it is applied, for at most this long after it was filed.
    unblur_hold_days: float = Field(default=14.0, ge=0, le=365)
    # Where the nightly job publishes (purge deletes raw frames only of sessions whose
    # publication there verifies); `streetveil purge --publish-dir` overrides it.
    publish_dir: Path | None = None


class NightlyConfig(_Section):
    job: JobSection = JobSection()
    redact: RedactConfig = RedactConfig()
    decrypt: DecryptSection = DecryptSection()
    publish: PublishSection = PublishSection()
    retention: RetentionSection = RetentionSection()


# ---------------------------------------------------------------------------- notice


class NoticeConfig(_Section):
    """The privacy notice (guidebook 4.6): on-vehicle minimum items plus advance notice."""

    version: str = Field(min_length=1)
    operator: str = Field(min_length=1)
    contact: str = Field(min_length=1)
    details_url: str = Field(min_length=1)
    purpose: str = Field(min_length=1)
    area: str = Field(min_length=1)
    period: str = Field(min_length=1)
    captured: str = Field(min_length=1)
    processing: str = Field(min_length=1)
    retention: str = Field(min_length=1)
    third_parties: str = Field(min_length=1)
    requests: str = Field(min_length=1)
    security_measures: tuple[str, ...] = Field(min_length=1)
    language: str = "en"


KINDS: dict[str, type[BaseModel]] = {
    "vehicle": VehicleConfig,
    "nightly": NightlyConfig,
    "notice": NoticeConfig,
    "redact": RedactConfig,
}
Kind = Literal["vehicle", "nightly", "notice", "redact"]


# ---------------------------------------------------------------------------- loader


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _apply_env(data: dict[str, Any], kind: str, environ: Mapping[str, str]) -> list[str]:
    """Merge ``STREETVEIL_<KIND>__A__B=value`` into ``data``; returns the variables applied."""
    prefix = f"{ENV_PREFIX}{kind.upper()}__"
    applied = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(prefix):
            continue
        path = [p.lower() for p in name[len(prefix):].split("__") if p]
        if not path:
            continue
        node = data
        for p in path[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment {name}: {'.'.join(path[:-1])} is not a section")
            node = child
        node[path[-1]] = _parse_env_value(raw)
        applied.append(name)
    return applied


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    cur: Any = model
    for part in loc[:-1]:
        field = cur.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return []
        ann = field.annotation
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        cur = ann
    return sorted(cur.model_fields)


def _describe(err: Mapping[str, Any], model: type[BaseModel]) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        return f"unknown key '{key}'" + (f" (expected one of: {', '.join(allowed)})" if allowed else "")
    if err["type"] == "missing":
        return f"missing required key '{key}'"
    got = err.get("input")
    got_s = "" if isinstance(got, dict) else f", got {got!r}"
    return f"key '{key}': {err['msg'].lower()}{got_s}"


def _resolve_paths(obj: BaseModel, base: Path) -> BaseModel:
    """Return ``obj`` with every relative Path field made relative to ``base``."""
    updates: dict[str, Any] = {}
    for name in type(obj).model_fields:
        v = getattr(obj, name)
        if isinstance(v, Path) and not v.is_absolute():
            updates[name] = (base / v).resolve()
        elif isinstance(v, BaseModel):
            nv = _resolve_paths(v, base)
            if nv is not v:
                updates[name] = nv
    return obj.model_copy(update=updates) if updates else obj


def validate_config(
    data: dict[str, Any], model: type[M], *, source: str, base_dir: Path | None = None
) -> M:
    """Validate a mapping into ``model``; errors name ``source`` and every bad key."""
    try:
        obj = model.model_validate(data)
    except ValidationError as e:
        lines = [_describe(err, model) for err in e.errors()]
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None
    return _resolve_paths(obj, base_dir) if base_dir is not None else obj  # type: ignore[return-value]


def load_config(
    path: Path | str | None,
    model: type[M],
    *,
    kind: str,
    environ: Mapping[str, str] | None = None,
) -> M:
    """Load ``path`` (TOML) as ``model``, with ``STREETVEIL_<KIND>__...`` overrides applied.

    ``path`` None means defaults plus environment only. Raises ConfigError (exit 2) naming the
    file, the key and what was expected.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    base = Path.cwd()
    source = "(defaults)"
    if path is not None:
        p = Path(path)
        source = str(p)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{p}: config file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: cannot read config: {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from None
        base = p.resolve().parent
    applied = _apply_env(data, kind, environ)
    if applied:
        source += f" (with {', '.join(applied)})"
    return validate_config(data, model, source=source, base_dir=base)


def load_kind(path: Path | str, kind: str | None = None, environ: Mapping[str, str] | None = None) -> BaseModel:
    """Load a config whose kind is given or guessed from the file name (``vehicle*.toml``...)."""
    if kind is None:
        stem = Path(path).stem.lower()
        kind = next((k for k in KINDS if stem.startswith(k)), None)
        if kind is None:
            raise ConfigError(f"{path}: cannot tell the config kind from its name; pass --kind ({', '.join(KINDS)})")
    if kind not in KINDS:
        raise ConfigError(f"unknown config kind {kind!r} (expected one of: {', '.join(KINDS)})")
    return load_config(path, KINDS[kind], kind=kind, environ=environ)


def is_nightly_config(path: Path | str) -> bool:
    """Whether ``path`` is a nightly config (it has a ``[redact]`` table) rather than a redact
    config (``[detector]``... at the top). Unreadable files count as not nightly: loading them
    reports the problem with the file name."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    return isinstance(data.get("redact"), dict)


def config_hash(obj: BaseModel) -> str:
    """sha256 of the canonical JSON form of a config object (keys sorted, paths as strings)."""
    blob = json.dumps(obj.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()
