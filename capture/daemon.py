"""The in-vehicle capture daemon: camera + GPS → crash-safe, geotagged session.

One thread reads the GPS source into a queue; the main thread reads the camera, maps each
frame onto GPS time, waits (briefly) for the fix after it, geotags it, applies privacy zones
and the trigger, and hands kept frames to the session writer. Frames wait at most one fix
interval for the next fix, so a crash loses at most that much; nothing written is lost.

Start-up: the session root is locked (one daemon per root); sessions left ``open`` by a crash
are recovered and *closed* (a new session always starts, so a session never spans a crash).
Stop: SIGINT/SIGTERM, or the end of a finite camera stream (a video file), close cleanly.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import shutil
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from capture.camera import CameraFrame, CameraThread, RetryingCamera, open_camera
from capture.config import VehicleConfig
from capture.errors import CaptureError, GpsError, SessionError
from capture.fsutil import TMP_PREFIX
from capture.geodesy import distance_m
from capture.geotag import Geotag, geotag
from capture.gps import GpsSource, open_gps
from capture.session import SESSION_JSON, SessionMeta, SessionWriter, iter_sessions
from capture.status import Status, StatusDisplay
from capture.trigger import Trigger, TriggerSettings, thumb_difference, thumbnail
from capture.types import Fix, format_time
from capture.zones import Zones, load_zones

log = logging.getLogger(__name__)

LOCK_FILE = ".capture.lock"
_OFFSET_WINDOW_S = 30.0
_KEEP_FIXES = 600
_DISK_CHECK_S = 1.0
# How long the loop waits for a camera frame before it does its other work anyway (GPS
# journal, frames waiting for their fix, fsync, disk guard, status).
_IDLE_TICK_S = 0.1


@dataclass
class CaptureResult:
    session: Path | None
    counters: dict[str, int] = field(default_factory=dict)
    recovered: list[Path] = field(default_factory=list)


@dataclass
class _Pending:
    frame: CameraFrame
    thumb: np.ndarray


def meta_from_config(cfg: VehicleConfig, config_sha256: str | None, *, source: str = "capture") -> SessionMeta:
    return SessionMeta(
        vehicle_id=cfg.vehicle.id,
        operator=cfg.session.operator,
        purpose=cfg.session.purpose,
        notice_version=cfg.session.notice_version,
        camera_model=cfg.camera.model,
        camera_mount=cfg.camera.mount,
        vehicle_description=cfg.vehicle.description,
        width=cfg.camera.width,
        height=cfg.camera.height,
        clock_offset_s=cfg.camera.clock_offset_s,
        config_sha256=config_sha256,
        source=source,
    )


def trigger_settings(cfg: VehicleConfig, every_meters: float | None = None) -> TriggerSettings:
    t = cfg.trigger
    return TriggerSettings(
        every_meters=every_meters if every_meters is not None else t.every_meters,
        every_seconds=t.every_seconds,
        min_speed_mps=t.min_speed_mps,
        max_rate_hz=t.max_rate_hz,
        duplicate_threshold=t.duplicate_threshold,
    )


def load_recipient_key(cfg: VehicleConfig) -> Any | None:
    if not cfg.encryption.enabled:
        return None
    from capture.crypto import load_public_key

    assert cfg.encryption.recipient_public_key is not None
    return load_public_key(cfg.encryption.recipient_public_key)


def load_config_zones(cfg: VehicleConfig) -> Zones:
    return load_zones(cfg.privacy.zones) if cfg.privacy.zones else Zones.empty()


@contextlib.contextmanager
def root_lock(root: Path) -> Any:
    """One daemon per session root: a second one must not 'recover' a live session."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise CaptureError(f"{root}: another capture daemon is running on this session root") from e
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def recover_open_sessions(root: Path) -> list[Path]:
    """Close every session under ``root`` left open by a crash (after repairing it)."""
    import json

    closed: list[Path] = []
    if not root.is_dir():
        return closed
    for tmp in root.glob(TMP_PREFIX + "*"):
        # A session folder still under construction when we crashed: it holds no frames.
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
            log.warning("removed %s, a session folder left half-made by a crash", tmp.name)
    for path in iter_sessions(root):
        try:
            status = json.loads((path / SESSION_JSON).read_text()).get("status")
        except (OSError, ValueError):
            log.error("%s: unreadable session.json; left as it is", path)
            continue
        if status != "open":
            continue
        try:
            w = SessionWriter.recover(path)
            w.close()
            closed.append(path)
            log.warning("recovered and closed session %s left open by a crash", path.name)
        except (SessionError, OSError, ValueError) as e:
            log.error("%s: cannot recover: %s; left as it is", path, e)
    return closed


class GpsClock:
    """Maps the monotonic clock onto GPS time from fix arrivals.

    A fix stamped T arrives a little after T; the smallest delay in a recent window is the
    best estimate, so the offset is the largest (T - arrival) seen in the last 30 s.
    """

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, fix_time: datetime, arrival_mono: float) -> None:
        self._samples.append((arrival_mono, fix_time.timestamp() - arrival_mono))
        while self._samples and self._samples[0][0] < arrival_mono - _OFFSET_WINDOW_S:
            self._samples.popleft()

    @property
    def ready(self) -> bool:
        return bool(self._samples)

    def to_gps(self, mono: float) -> datetime:
        off = max(o for _, o in self._samples)
        return datetime.fromtimestamp(mono + off, UTC)


class CaptureDaemon:
    def __init__(self, cfg: VehicleConfig, *, config_sha256: str | None = None, out: Path | None = None,
                 stop: threading.Event | None = None, install_signals: bool = True,
                 display: bool = True, live_status: bool = True, status_every_s: float = 30.0) -> None:
        self.cfg = cfg
        self.config_sha256 = config_sha256
        self.root = Path(out) if out is not None else cfg.session.root
        self.stop = stop or threading.Event()
        self.install_signals = install_signals
        self.display = display
        self.live_status = live_status
        self.status_every_s = status_every_s
        self.status = Status()
        self._q: queue.Queue[tuple[Fix, float]] = queue.Queue()
        self._gps_done = threading.Event()
        self._fixes: list[Fix] = []
        self._clock = GpsClock()
        self._pending: deque[_Pending] = deque()
        self._to_journal: Fix | None = None
        self._last_journaled: Fix | None = None
        self._last_fix_mono: float | None = None
        self._fix_lost = False
        self._started_mono = time.monotonic()
        self._last_kept_thumb: np.ndarray | None = None
        self._last_time: datetime | None = None
        self._disk_blocked = False
        self._disk_checked = 0.0
        self._disk_free = float("inf")
        self._writer: SessionWriter | None = None

    # -- public

    def run(self) -> CaptureResult:
        cfg = self.cfg
        old: dict[signal.Signals, Any] = {}
        if self.install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, self._on_signal)
        try:
            with root_lock(self.root):
                recovered = recover_open_sessions(self.root)
                zones = load_config_zones(cfg)
                key = load_recipient_key(cfg)
                if zones and cfg.session.keep_frames_without_position:
                    log.warning("frames without a position cannot be checked against privacy zones "
                                "(session.keep_frames_without_position = true)")
                gps = open_gps(cfg.gps)
                cam = RetryingCamera(
                    open_camera(cfg.camera.source, cfg.camera.uri, width=cfg.camera.width,
                                height=cfg.camera.height, fps=cfg.camera.fps, loop=cfg.camera.loop,
                                stop=self.stop),
                    initial_s=cfg.camera.retry_initial_s, max_s=cfg.camera.retry_max_s, stop=self.stop,
                    on_error=self._camera_lost, on_recover=self._camera_back,
                )
                reader = CameraThread(cam, stop=self.stop)
                writer = SessionWriter.create(
                    self.root, meta_from_config(cfg, self.config_sha256), recipient_public_key=key,
                    fsync_interval_s=cfg.session.fsync_interval_s,
                )
                self._writer = writer
                self.status.session_id = writer.session_id
                try:
                    self._loop(gps, reader, zones, writer)
                finally:
                    self.stop.set()
                    reader.close()
                    gps.close()
                    self._flush_journal(writer, zones, final=True)
                    if cam.failures:
                        writer.count("camera_failures", cam.failures)
                    for k, v in getattr(gps, "stats", {}).items():
                        if v and k in ("checksum_errors", "parse_errors", "garbage_bytes", "disconnects"):
                            writer.count(f"gps_{k}", v)
                    path = writer.close()
                return CaptureResult(path, dict(writer.counters), recovered)
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)

    # -- loop

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.warning("received %s: closing the session", signal.Signals(signum).name)
        self.stop.set()

    def _set_error(self, msg: str) -> None:
        self.status.last_error = msg

    def _camera_lost(self, msg: str) -> None:  # called from the camera thread
        self.status.camera_lost = True
        self.status.last_error = msg

    def _camera_back(self, failures: int) -> None:  # called from the camera thread
        self.status.camera_lost = False

    def _loop(self, gps: GpsSource, cam: CameraThread, zones: Zones, writer: SessionWriter) -> None:
        cfg = self.cfg
        gps_thread = threading.Thread(target=self._gps_reader, args=(gps,), name="gps", daemon=True)
        gps_thread.start()
        trigger = Trigger(trigger_settings(cfg))
        max_pending = int(cfg.camera.fps * (cfg.gps.max_gap_s + 2)) + 5
        self.status.state = "recording"
        disp = (StatusDisplay(self.status, log_every_s=self.status_every_s, live=self.live_status)
                if self.display else None)
        self._started_mono = time.monotonic()
        cam.start()
        with disp or contextlib.nullcontext():
            while not self.stop.is_set():
                # Never block on the camera: while it is down (retry backoff) fixes must still
                # be journalled and fsynced, waiting frames decided, the status kept current.
                frame = cam.get(timeout=_IDLE_TICK_S)
                self._drain_gps(writer, zones)
                if frame is None:
                    if cam.ended:
                        if cam.error:
                            self._set_error(cam.error)
                        if not self.stop.is_set():
                            log.warning("%s: end of stream; closing the session", cam.camera.name)
                        break
                    self._process(writer, zones, trigger)
                else:
                    self.status.frames_seen += 1
                    log.debug("frame #%d captured (mono %.3f)", frame.index, frame.mono)
                    self._pending.append(_Pending(frame, thumbnail(frame.image)))
                    self._process(writer, zones, trigger, overflow=len(self._pending) > max_pending)
                self._check_disk(writer)
                writer.sync_if_due()  # also when nothing more is written (camera down)
                self._refresh_status()
                if disp:
                    disp.update()
            # Clean stop: give the GPS up to one more fix interval for the frames still waiting.
            self.status.state = "closing"
            cam.close()  # the stream ended or stop is set: its thread is done or ending
            deadline = time.monotonic() + min(1.5, cfg.gps.max_gap_s)
            while self._pending and time.monotonic() < deadline and not self._gps_done.is_set():
                time.sleep(0.05)
                self._drain_gps(writer, zones)
                self._process(writer, zones, trigger)
            self._drain_gps(writer, zones)
            self._process(writer, zones, trigger, final=True)
        self.status.state = "stopped"

    def _gps_reader(self, gps: GpsSource) -> None:
        try:
            while not self.stop.is_set():
                try:
                    for fix in gps:
                        self._q.put((fix, time.monotonic()))
                        if self.stop.is_set():
                            return
                    if not self.stop.is_set():
                        log.warning("%s: GPS stream ended", gps.name)
                    return
                except GpsError as e:
                    self._set_error(str(e))
                    log.error("%s; retrying in %.1f s", e, self.cfg.gps.reconnect_s)
                    if self.cfg.gps.source in ("nmea-file", "gpx"):
                        return
                    self.stop.wait(self.cfg.gps.reconnect_s)
        except Exception as e:  # a GPS bug must not take the camera down with it
            log.exception("GPS reader failed")
            self._set_error(f"GPS reader failed: {e!r}")
        finally:
            self._gps_done.set()

    def _drain_gps(self, writer: SessionWriter, zones: Zones) -> None:
        while True:
            try:
                fix, mono = self._q.get_nowait()
            except queue.Empty:
                break
            self._add_fix(fix, mono, writer, zones)

    def _add_fix(self, fix: Fix, mono: float, writer: SessionWriter, zones: Zones) -> None:
        fixes = self._fixes
        if fixes and fix.time <= fixes[-1].time:
            if fix.time == fixes[-1].time:
                fixes[-1] = fix  # a later report of the same epoch (more fields filled in)
                self._to_journal = fix
            elif (fixes[-1].time - fix.time).total_seconds() > 60:
                log.warning("GPS time jumped back to %s; starting a new track", format_time(fix.time))
                self._flush_journal(writer, zones)
                fixes.clear()
                self._clock = GpsClock()
            else:
                writer.count("gps_out_of_order")
                return
        if not fixes or fix.time > fixes[-1].time:
            self._flush_journal(writer, zones)
            fixes.append(fix)
            self._to_journal = fix
        if len(fixes) > _KEEP_FIXES:
            del fixes[: len(fixes) - _KEEP_FIXES]
        self._clock.add(fix.time, mono)
        if self._last_fix_mono is None:
            log.info("GPS: first fix (%s)", _fix_words(fix))
        elif self._fix_lost:
            log.info("GPS: fix back after %.0f s (%s)", mono - self._last_fix_mono, _fix_words(fix))
        self._fix_lost = False
        self._last_fix_mono = mono
        self.status.fix_quality = fix.fix_quality
        self.status.hdop = fix.hdop
        self.status.satellites = fix.satellites

    def _flush_journal(self, writer: SessionWriter, zones: Zones, final: bool = False) -> None:
        """Journal the previous epoch's (final) fix; fixes inside privacy zones are not kept."""
        fix = self._to_journal
        self._to_journal = None
        if fix is None:
            return
        if zones and zones.contains(fix.lat, fix.lon):
            writer.count("fixes_in_privacy_zone")
            return
        writer.add_fix(fix)
        prev = self._last_journaled
        if prev is not None and (fix.time - prev.time).total_seconds() <= self.cfg.gps.max_gap_s * 5:
            self.status.distance_m += distance_m(prev.lat, prev.lon, fix.lat, fix.lon)
        self._last_journaled = fix

    def _frame_time(self, frame: CameraFrame) -> datetime | None:
        cam = self.cfg.camera
        if cam.clock == "system":
            t = datetime.fromtimestamp(frame.wall, UTC)
        elif self._clock.ready:
            t = self._clock.to_gps(frame.mono)
        else:
            return None
        return t - timedelta(seconds=cam.clock_offset_s)

    def _process(self, writer: SessionWriter, zones: Zones, trigger: Trigger, *, overflow: bool = False,
                 final: bool = False) -> None:
        cfg = self.cfg
        gap = cfg.gps.max_gap_s
        while self._pending:
            p = self._pending[0]
            t = self._frame_time(p.frame)
            last_fix = self._fixes[-1].time if self._fixes else None
            now_gps = self._clock.to_gps(time.monotonic()) if self._clock.ready else None
            decidable = (
                final or overflow
                or (t is not None and last_fix is not None and last_fix >= t)
                or (t is not None and now_gps is not None and now_gps > t + timedelta(seconds=gap))
                or (t is None and time.monotonic() - p.frame.mono > gap)
            )
            if not decidable:
                return
            overflow = False
            self._pending.popleft()
            if t is None:  # never had a fix: the computer's clock is all we have
                t = datetime.fromtimestamp(p.frame.wall, UTC) - timedelta(seconds=cfg.camera.clock_offset_s)
            self._decide(p, t, writer, zones, trigger)

    def _decide(self, p: _Pending, t: datetime, writer: SessionWriter, zones: Zones, trigger: Trigger) -> None:
        cfg = self.cfg
        idx = p.frame.index
        g: Geotag = geotag(self._fixes, t, max_gap_s=cfg.gps.max_gap_s)
        outcome: str
        if self._last_time is not None and t <= self._last_time:
            outcome = "dropped_time_not_increasing"
        elif g.lat is not None and g.lon is not None and zones and zones.contains(g.lat, g.lon):
            outcome = "dropped_privacy_zone"
        elif not g.has_position and not cfg.session.keep_frames_without_position:
            outcome = "dropped_no_position"
        else:
            diff = thumb_difference(p.thumb, self._last_kept_thumb) if self._last_kept_thumb is not None else None
            d = trigger.decide(t, g.lat, g.lon, g.speed, diff)
            outcome = f"kept_{d.reason}" if d.keep else f"dropped_{d.reason}"
        if outcome.startswith("kept") and self._disk_blocked:
            outcome = "dropped_disk_full"
        log.debug("frame #%d (mono %.3f) t=%s %s: %s", idx, p.frame.mono, format_time(t),
                  g.position_source, outcome)
        if not outcome.startswith("kept"):
            if outcome != "dropped_not_due":
                writer.count(outcome)
            return
        jpeg = self._encode(p.frame)
        h, w = p.frame.image.shape[:2]
        writer.add_frame(
            jpeg, time=t, position_source=g.position_source, lat=g.lat, lon=g.lon, altitude=g.altitude,
            heading=g.heading, speed=g.speed, fix_quality=g.fix_quality, hdop=g.hdop,
            satellites=g.satellites, width=w, height=h, extra={"camera_frame": idx},
        )
        self._disk_free -= len(jpeg)
        self._last_time = t
        self._last_kept_thumb = p.thumb
        self.status.frames_kept = writer.frame_count

    def _encode(self, frame: CameraFrame) -> bytes:
        if frame.jpeg is not None:
            return frame.jpeg
        import cv2

        ok, buf = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.camera.jpeg_quality])
        if not ok:
            raise CaptureError("JPEG encoding failed")
        return bytes(buf.tobytes())

    def _check_disk(self, writer: SessionWriter) -> None:
        now = time.monotonic()
        if now - self._disk_checked >= _DISK_CHECK_S:
            self._disk_checked = now
            try:
                self._disk_free = float(shutil.disk_usage(writer.path).free)
            except OSError as e:
                self._set_error(f"disk check failed: {e}")
                return
        self.status.disk_free_mb = self._disk_free / 2**20
        reserve = self.cfg.session.disk_reserve_mb * 2**20
        blocked = self._disk_free < reserve
        if blocked and not self._disk_blocked:
            msg = (f"disk guard: {self._disk_free / 2**20:.0f} MB free on {writer.path} is below the "
                   f"reserve of {self.cfg.session.disk_reserve_mb:.0f} MB: frame capture paused "
                   "(nothing is deleted; free space to resume)")
            log.error("%s", msg)
            self._set_error(msg)
            self.status.state = "disk full"
            writer.count("disk_guard_pauses")
        elif not blocked and self._disk_blocked:
            log.info("disk guard: %.0f MB free again; frame capture resumed", self._disk_free / 2**20)
            self.status.state = "recording"
        self._disk_blocked = blocked

    def _refresh_status(self) -> None:
        now = time.monotonic()
        if self._last_fix_mono is not None:
            self.status.fix_age_s = now - self._last_fix_mono
        # No fix for longer than geotagging may bridge: frames now get no position (and are
        # dropped unless configured otherwise). Said once per loss; the return is logged by
        # _add_fix.
        since = now - (self._last_fix_mono if self._last_fix_mono is not None else self._started_mono)
        if not self._fix_lost and since > self.cfg.gps.max_gap_s:
            self._fix_lost = True
            what = "no GPS fix yet" if self._last_fix_mono is None else "GPS fix lost"
            keep = "kept without a position" if self.cfg.session.keep_frames_without_position else "dropped"
            log.warning("%s: none for %.0f s (more than gps.max_gap_s); frames are %s until it is back",
                        what, since, keep)


def _fix_words(fix: Fix) -> str:
    parts = [f"quality {fix.fix_quality}"]
    if fix.hdop is not None:
        parts.append(f"hdop {fix.hdop:.1f}")
    if fix.satellites is not None:
        parts.append(f"{fix.satellites} sats")
    return ", ".join(parts)


def run_capture(cfg: VehicleConfig, *, config_sha256: str | None = None, out: Path | None = None,
                stop: threading.Event | None = None, display: bool = True, live_status: bool = True,
                status_every_s: float = 30.0) -> CaptureResult:
    """Run the daemon until SIGINT/SIGTERM (or the end of a finite camera stream). ``display``:
    keep the status at all; ``live_status``: redraw it in place on a terminal (else, and
    without a terminal, log it every ``status_every_s`` seconds)."""
    return CaptureDaemon(cfg, config_sha256=config_sha256, out=out, stop=stop, display=display,
                         live_status=live_status, status_every_s=status_every_s).run()
