"""Camera sources behind one interface, and a wrapper that survives camera loss.

A source's ``read()`` returns the next ``CameraFrame`` (BGR pixels plus the monotonic and
wall-clock time it was delivered), ``None`` at the end of a finite stream (a video file or an
image folder), and raises ``CameraError`` when the camera is lost. ``RetryingCamera`` turns
loss into logged retries with exponential backoff, so the daemon keeps running.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from capture.errors import CameraError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True, slots=True)
class CameraFrame:
    image: np.ndarray  # HxWx3 BGR uint8
    mono: float  # time.monotonic() at delivery
    wall: float  # time.time() at delivery
    index: int  # frame number in the source (video frame index, image number)
    jpeg: bytes | None = None  # original bytes when the source already has a JPEG

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"camera frame must be HxWx3 uint8, got {self.image.shape} {self.image.dtype}")


class CameraSource(Protocol):
    name: str

    def open(self) -> None: ...

    def read(self) -> CameraFrame | None: ...

    def close(self) -> None: ...


def _now() -> tuple[float, float]:
    return time.monotonic(), time.time()


class OpenCVCamera:
    """``cv2.VideoCapture`` on a device index, an RTSP/HTTP URL, or a file (unpaced)."""

    def __init__(self, uri: int | str, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None, finite: bool = False) -> None:
        self.uri = uri
        self.name = f"camera {uri}"
        self.width, self.height, self.fps = width, height, fps
        self.finite = finite
        self._cap: Any = None
        self._index = 0

    def open(self) -> None:
        import cv2

        cap = cv2.VideoCapture(self.uri)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"{self.name}: cannot open")
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if self.fps and not self.finite:
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        self._cap = cap

    def read(self) -> CameraFrame | None:
        if self._cap is None:
            raise CameraError(f"{self.name}: not open")
        ok, img = self._cap.read()
        if not ok or img is None:
            if self.finite:
                return None
            raise CameraError(f"{self.name}: frame grab failed (camera lost?)")
        mono, wall = _now()
        self._index += 1
        return CameraFrame(_bgr(img), mono, wall, self._index - 1)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _bgr(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    if img.shape[2] == 4:
        return np.ascontiguousarray(img[:, :, :3])
    return img


class PacedVideo:
    """A video file delivered in real time, as a camera would: frames are released at their
    presentation times, sub-sampled to ``fps``; when we fall behind, late frames are skipped
    (a live camera does not wait either). Stands in for a camera in tests and demos."""

    def __init__(self, path: Path | str, *, fps: float | None = None, loop: bool = False,
                 stop: threading.Event | None = None) -> None:
        self.path = Path(path)
        self.name = f"video {self.path}"
        self.fps = fps
        self.loop = loop
        self._stop = stop or threading.Event()
        self._cap: Any = None
        self._start = 0.0
        self._next_due = 0.0
        self._src_fps = 30.0
        self._src_index = 0
        self._loop_base = 0.0

    def open(self) -> None:
        import cv2

        if not self.path.is_file():
            raise CameraError(f"{self.path}: video file not found")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"{self.path}: cannot open video")
        self._cap = cap
        self._src_fps = float(cap.get(cv2.CAP_PROP_FPS)) or 30.0
        self._start = time.monotonic()
        self._next_due = 0.0
        self._src_index = 0
        self._loop_base = 0.0

    def read(self) -> CameraFrame | None:
        if self._cap is None:
            raise CameraError(f"{self.name}: not open")
        step = 1.0 / self.fps if self.fps else 0.0
        while True:
            t_src = self._loop_base + self._src_index / self._src_fps
            if not self._cap.grab():
                if not self.loop or self._src_index == 0:
                    return None
                self._cap.set(1, 0)  # CAP_PROP_POS_FRAMES
                self._loop_base = t_src
                self._src_index = 0
                continue
            self._src_index += 1
            elapsed = time.monotonic() - self._start
            if t_src + 1.0 / self._src_fps < elapsed:
                continue  # we are late: this frame is already in the past
            if t_src + 1e-9 < self._next_due:
                continue  # sub-sample to the configured frame rate
            wait = t_src - elapsed
            if wait > 0 and self._stop.wait(wait):
                return None
            ok, img = self._cap.retrieve()
            if not ok:
                continue
            self._next_due = t_src + step
            mono, wall = _now()
            return CameraFrame(_bgr(img), mono, wall, self._src_index - 1)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageFolder:
    """JPEG/PNG files of a folder in name order, delivered at ``fps`` (0: as fast as read)."""

    def __init__(self, folder: Path | str, *, fps: float = 0.0, stop: threading.Event | None = None) -> None:
        self.folder = Path(folder)
        self.name = f"images {self.folder}"
        self.fps = fps
        self._stop = stop or threading.Event()
        self._files: list[Path] = []
        self._i = 0
        self._start = 0.0

    def open(self) -> None:
        if not self.folder.is_dir():
            raise CameraError(f"{self.folder}: image folder not found")
        self._files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise CameraError(f"{self.folder}: no JPEG or PNG images")
        self._i = 0
        self._start = time.monotonic()

    def read(self) -> CameraFrame | None:
        import cv2

        while self._i < len(self._files):
            p = self._files[self._i]
            self._i += 1
            if self.fps:
                wait = self._start + (self._i - 1) / self.fps - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return None
            data = p.read_bytes()
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                log.warning("%s: not a decodable image, skipped", p)
                continue
            mono, wall = _now()
            is_jpeg = p.suffix.lower() in (".jpg", ".jpeg")
            return CameraFrame(img, mono, wall, self._i - 1, data if is_jpeg else None)
        return None

    def close(self) -> None:
        self._files = []


class RetryingCamera:
    """Wraps a source: opening or reading failures are logged and retried with exponential
    backoff (``initial_s`` doubling up to ``max_s``) until ``stop`` is set. End of a finite
    stream (``None``) is passed through."""

    def __init__(self, source: CameraSource, *, initial_s: float = 1.0, max_s: float = 30.0,
                 stop: threading.Event | None = None,
                 on_error: Callable[[str], None] | None = None,
                 on_recover: Callable[[int], None] | None = None) -> None:
        self.source = source
        self.name = source.name
        self.initial_s = initial_s
        self.max_s = max(max_s, initial_s)
        self.stop = stop or threading.Event()
        self.on_error = on_error
        self.on_recover = on_recover
        self.failures = 0
        self.recoveries = 0
        self.last_error: str | None = None
        self._open = False
        self._delay = initial_s

    def read(self) -> CameraFrame | None:
        while not self.stop.is_set():
            try:
                if not self._open:
                    self.source.open()
                    self._open = True
                    if self.failures:
                        self.recoveries += 1
                        log.info("%s: camera back after %d failure(s)", self.name, self.failures)
                        if self.on_recover:
                            self.on_recover(self.failures)
                frame = self.source.read()
                self._delay = self.initial_s
                return frame
            except CameraError as e:
                self._fail(str(e))
            except Exception as e:  # OpenCV backends raise cv2.error and others on a lost device
                self._fail(f"{self.name}: {e!r}")
        return None

    def _fail(self, msg: str) -> None:
        self.failures += 1
        self.last_error = msg
        if self.on_error:
            self.on_error(msg)
        log.warning("%s; retrying in %.1f s", msg, self._delay)
        self.close()
        self.stop.wait(self._delay)
        self._delay = min(self._delay * 2, self.max_s)

    def close(self) -> None:
        if self._open:
            try:
                self.source.close()
            finally:
                self._open = False


class CameraThread:
    """Reads a camera in its own thread into a small queue.

    The capture loop must keep journalling and fsyncing GPS fixes, deciding waiting frames and
    refreshing the status while the camera is down (a ``RetryingCamera`` sleeps out its
    backoff inside ``read()``, and an OpenCV read on a dead stream can block for long), so the
    loop waits on this queue with a timeout instead of calling ``read()`` itself. The queue is
    short and ``put`` blocks: when the loop falls behind, the camera falls behind too (a paced
    source then skips late frames as before) instead of frames piling up in memory. Frame
    times are stamped by the source at delivery, so queueing does not move them.
    """

    def __init__(self, camera: RetryingCamera, *, stop: threading.Event, maxsize: int = 4) -> None:
        self.camera = camera
        self.stop = stop
        self.error: str | None = None  # an unexpected failure of the reading thread
        self._q: queue.Queue[CameraFrame] = queue.Queue(maxsize=maxsize)
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)

    def start(self) -> CameraThread:
        self._thread.start()
        return self

    @property
    def ended(self) -> bool:
        """The stream ended (or the thread stopped) and every frame it read was taken."""
        return self._finished.is_set() and self._q.empty()

    def get(self, timeout: float) -> CameraFrame | None:
        """The next frame, or None when none came within ``timeout`` (see ``ended``)."""
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self, timeout: float = 5.0) -> None:
        """Release the camera once the reading thread has exited: call it after ``stop`` is
        set or the stream ended (a read stuck in a driver is left to the process exit)."""
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s: camera read still blocked after %.0f s; not waiting for it", self.camera.name, timeout)
            return
        self.camera.close()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                frame = self.camera.read()
                if frame is None:
                    return
                while not self.stop.is_set():
                    try:
                        self._q.put(frame, timeout=0.2)
                        break
                    except queue.Full:
                        continue
        except Exception as e:  # RetryingCamera catches camera errors; this is a bug: say so, end cleanly
            log.exception("%s: camera thread failed", self.camera.name)
            self.error = f"camera thread failed: {e!r}"
        finally:
            self._finished.set()


def open_camera(source: str, uri: str, *, width: int | None, height: int | None, fps: float,
                loop: bool, stop: threading.Event) -> CameraSource:
    """The camera a vehicle config names (``device``, ``url``, ``video``, ``images``)."""
    if source == "device":
        try:
            index: int | str = int(uri)
        except ValueError:
            index = uri  # a device path such as /dev/video0
        return OpenCVCamera(index, width=width, height=height, fps=fps)
    if source == "url":
        return OpenCVCamera(uri, width=width, height=height, fps=fps)
    if source == "video":
        return PacedVideo(uri, fps=fps, loop=loop, stop=stop)
    if source == "images":
        return ImageFolder(uri, fps=fps, stop=stop)
    raise CameraError(f"unknown camera source {source!r}")
