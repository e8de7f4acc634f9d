"""Camera sources: a video file paced in real time, an image folder, OpenCV capture, and
retry with backoff when the camera is lost (the daemon keeps running)."""

from __future__ import annotations

import itertools
import logging
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from capture_helpers import KARMA

from capture.camera import ImageFolder, OpenCVCamera, PacedVideo, RetryingCamera, open_camera
from capture.errors import CameraError


def test_paced_video_runs_in_real_time(shared: Path) -> None:
    cam = PacedVideo(shared / KARMA, fps=10)
    cam.open()
    t0 = time.monotonic()
    frames = [cam.read() for _ in range(11)]
    elapsed = time.monotonic() - t0
    cam.close()
    assert all(f is not None for f in frames)
    assert elapsed == pytest.approx(1.0, abs=0.25)  # 11 frames at 10 fps: 1 s
    idx = [f.index for f in frames if f is not None]
    assert idx[0] == 0 and all(b > a for a, b in itertools.pairwise(idx))
    assert frames[0] is not None and frames[0].image.shape == (480, 854, 3)


def test_paced_video_end_and_loop(tmp_path: Path) -> None:
    p = tmp_path / "short.mp4"
    w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), 20, (64, 48))
    for i in range(6):
        w.write(np.full((48, 64, 3), i * 40, np.uint8))
    w.release()
    cam = PacedVideo(p)
    cam.open()
    got = []
    while (f := cam.read()) is not None:
        got.append(f.index)
    assert got == list(range(6))
    looped = PacedVideo(p, loop=True)
    looped.open()
    assert len([looped.read() for _ in range(9)]) == 9


def test_image_folder(tmp_path: Path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i:03d}.jpg"), np.full((20, 30, 3), 60 * i, np.uint8))
    (tmp_path / "notes.txt").write_text("x")
    cam = ImageFolder(tmp_path, fps=20)
    cam.open()
    frames = [cam.read() for _ in range(4)]
    assert [f.index for f in frames if f] == [0, 1, 2] and frames[3] is None
    assert frames[0] is not None and frames[0].jpeg is not None  # original bytes kept
    with pytest.raises(CameraError, match="no JPEG or PNG"):
        ImageFolder(_empty(tmp_path)).open()


def _empty(base: Path) -> Path:
    d = base / "empty"
    d.mkdir()
    return d


def test_open_camera_kinds(shared: Path) -> None:
    stop = threading.Event()
    assert isinstance(open_camera("device", "0", width=None, height=None, fps=10, loop=False, stop=stop), OpenCVCamera)
    assert isinstance(open_camera("video", str(shared / KARMA), width=None, height=None, fps=10, loop=False,
                                  stop=stop), PacedVideo)
    with pytest.raises(CameraError, match="cannot open"):
        OpenCVCamera(97).open()  # no such device on this machine


def test_camera_lost_then_back(shared: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An OpenCV 'camera' (a stream URL that is a file here) is missing at start, appears,
    then is lost at the end of its stream and reopened: frames keep coming, failures are
    logged with growing backoff, nothing raises."""
    url = tmp_path / "stream.mp4"
    errors: list[str] = []
    cam = RetryingCamera(OpenCVCamera(str(url)), initial_s=0.1, max_s=0.4, on_error=errors.append)
    timer = threading.Timer(0.5, shutil.copy, (shared / KARMA, url))
    timer.start()
    caplog.set_level(logging.INFO, logger="capture.camera")
    got = 0
    t0 = time.monotonic()
    while got < 450 and time.monotonic() - t0 < 30:  # karma.mp4 has < 400 frames: needs a reopen
        assert cam.read() is not None
        got += 1
    cam.close()
    assert got == 450
    assert cam.failures >= 3 and cam.recoveries >= 2, (cam.failures, cam.recoveries)
    assert any("cannot open" in e for e in errors) and any("grab failed" in e for e in errors)
    assert "retrying in 0.1 s" in caplog.text and "retrying in 0.2 s" in caplog.text
    assert "camera back" in caplog.text


def test_retry_stops_when_told(tmp_path: Path) -> None:
    stop = threading.Event()
    cam = RetryingCamera(OpenCVCamera(str(tmp_path / "never.mp4")), initial_s=0.05, stop=stop)
    threading.Timer(0.3, stop.set).start()
    assert cam.read() is None and cam.failures >= 2
