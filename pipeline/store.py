"""Where the job reads sessions and writes results: local paths or fsspec URLs.

``Store`` is a directory addressed by a path or URL (``/data/pub``, ``file:///data/pub``,
``s3://bucket/pub``, ``memory://pub``). It is picklable (it holds the URL only), so Dask tasks
take it as an argument and reopen the filesystem on the worker. Local stores (plain paths and
``file://``) get the full guarantees: atomic writes (temp + rename) and fsync. Remote stores
write each object whole (object stores never show a partial object) but cannot rename a
directory atomically: see ``pipeline.publish`` and docs/operations.md.

``memory://`` lives inside one Python process: it works for inputs and outputs only when the
Dask workers run in the client's process (an in-process cluster), which the tests use.

``SessionSource`` opens a session from such a URL: local sessions through
``capture.session.SessionReader`` directly; remote ones by copying the small metadata files
(no pixels) to a per-process cache and streaming frame bytes through fsspec.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capture.fsutil import atomic_write_bytes

log = logging.getLogger(__name__)


def _is_url(s: str) -> bool:
    return "://" in s


def local_path_of(url: str) -> Path | None:
    """The local path behind ``url`` (plain path or ``file://``), else None."""
    if not _is_url(url):
        return Path(url).expanduser().resolve()
    if url.startswith("file://"):
        return Path(url[len("file://"):]).expanduser().resolve()
    return None


@dataclass(frozen=True, slots=True)
class Store:
    """A directory on a local disk or behind an fsspec URL."""

    url: str
    _fs: list[Any] = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.url:
            raise ValueError("empty path")
        object.__setattr__(self, "url", self.url.rstrip("/") or "/")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Store, (self.url,))

    @property
    def local(self) -> Path | None:
        return local_path_of(self.url)

    def _fs_root(self) -> tuple[Any, str]:
        if not self._fs:
            import fsspec

            self._fs.append(fsspec.core.url_to_fs(self.url))
        fs, root = self._fs[0]
        return fs, str(root)

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (remote stores only)."""
        return self._fs_root()[0]

    def _remote(self, rel: str) -> str:
        root = self._fs_root()[1].rstrip("/")
        return f"{root}/{rel}" if rel else root

    def child(self, rel: str) -> Store:
        return Store(f"{self.url}/{rel}")

    def display(self, rel: str = "") -> str:
        return f"{self.url}/{rel}" if rel else self.url

    # -- reads

    def read_bytes(self, rel: str) -> bytes:
        p = self.local
        if p is not None:
            return (p / rel).read_bytes()
        try:
            data: bytes = self.fs.cat_file(self._remote(rel))
        except FileNotFoundError:
            raise FileNotFoundError(self.display(rel)) from None
        return data

    def exists(self, rel: str) -> bool:
        p = self.local
        if p is not None:
            return (p / rel).exists()
        return bool(self.fs.exists(self._remote(rel)))

    def listdir(self, rel: str = "") -> list[str]:
        """Names directly below ``rel`` (empty when it does not exist)."""
        p = self.local
        if p is not None:
            d = p / rel if rel else p
            return sorted(x.name for x in d.iterdir()) if d.is_dir() else []
        try:
            return sorted(Path(x).name for x in self.fs.ls(self._remote(rel), detail=False))
        except FileNotFoundError:
            return []

    # -- writes

    def write_bytes(self, rel: str, data: bytes, *, durable: bool = True) -> None:
        """Write a whole file so that readers see the old content or the new, never a part."""
        p = self.local
        if p is not None:
            target = p / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, data, durable=durable)
            return
        # Object stores publish an object only when its upload completes.
        path = self._remote(rel)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(path, data)

    def remove(self, rel: str) -> None:
        p = self.local
        if p is not None:
            t = p / rel
            if t.is_dir() and not t.is_symlink():
                shutil.rmtree(t, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    t.unlink()
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._remote(rel), recursive=True)


# ---------------------------------------------------------------------------- sessions

_META_FILES = ("session.json", "frames.jsonl", "track.jsonl", "track.gpx", "session.key", "deletions.jsonl")
_cache_lock = threading.Lock()
_meta_cache: dict[str, Path] = {}


def _materialize(url: str, *, fresh: bool = False) -> Path:
    """Copy a remote session's metadata (no frames) into a per-process temporary folder."""
    with _cache_lock:
        hit = _meta_cache.get(url)
        if hit is not None and hit.is_dir() and not fresh:
            return hit
        store = Store(url)
        d = Path(tempfile.mkdtemp(prefix="streetveil-session-"))
        for name in _META_FILES:
            with contextlib.suppress(FileNotFoundError):
                (d / name).write_bytes(store.read_bytes(name))
        os.chmod(d, 0o700)
        if hit is not None:
            shutil.rmtree(hit, ignore_errors=True)
        _meta_cache[url] = d
        return d


@dataclass(frozen=True, slots=True)
class SessionSource:
    """A session to read, by local path or fsspec URL, and the private key that opens it.

    Picklable: workers reopen it. The key path comes from the job config or the environment,
    never from the session.
    """

    url: str
    private_key: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", self.url.rstrip("/"))

    @property
    def local(self) -> Path | None:
        return local_path_of(self.url)

    def reader(self, *, fresh: bool = False) -> Any:
        """A ``capture.session.SessionReader``, cached per process and per source (workers only
        decrypt through it); ``fresh`` re-reads the session as it is now (planning)."""
        return _reader(self, fresh=fresh)

    def read_raw(self, rec: Any) -> bytes:
        """The stored bytes of a frame (ciphertext when encrypted)."""
        if self.local is not None:
            return bytes(self.reader().read_raw(rec))
        from capture.errors import SessionError

        try:
            return Store(self.url).read_bytes(rec.file)
        except (OSError, FileNotFoundError) as e:
            raise SessionError(f"{self.url}/{rec.file}: cannot read frame: {e}") from e


_readers: dict[SessionSource, Any] = {}


def _reader(src: SessionSource, *, fresh: bool = False) -> Any:
    from capture.session import SessionReader

    with _cache_lock:
        r = _readers.get(src)
    if r is not None and not fresh:
        return r
    key = None
    if src.private_key:
        from capture.crypto import load_private_key

        key = load_private_key(Path(src.private_key))
    path = src.local if src.local is not None else _materialize(src.url, fresh=fresh)
    r = SessionReader(path, private_key=key)
    with _cache_lock:
        _readers[src] = r
    return r


def is_session(url: str) -> bool:
    return Store(url).exists("session.json")
