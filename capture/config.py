"""Typed, immutable configuration of the capture daemon (``configs/vehicle.toml``).

Loaded by ``pipeline.config.load_config``; the daemon only ever sees these objects.
Relative paths are resolved against the config file's folder by the loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VehicleSection(_Section):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""


class CameraSection(_Section):
    # device: OpenCV device index in ``uri``; url: RTSP/HTTP; video: a file paced in real time
    # (stands in for a camera); images: a folder of JPEGs.
    source: Literal["device", "url", "video", "images"] = "device"
    uri: str = "0"
    model: str = "unknown"
    mount: str = "front"
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    fps: float = Field(default=10.0, gt=0, le=240)
    # How frames get their time. gps: the delivery instant mapped onto GPS time through the
    # arrival of fixes (the vehicle computer's clock may be wrong); system: the computer's
    # clock (keep it GPS/NTP-disciplined).
    clock: Literal["gps", "system"] = "gps"
    # camera clock minus GPS clock, seconds: a frame stamped t by the camera was taken at t - offset.
    # With clock = "gps" this is the camera's delivery latency.
    clock_offset_s: float = 0.0
    jpeg_quality: int = Field(default=92, ge=50, le=100)
    loop: bool = False
    retry_initial_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=30.0, gt=0)


class GpsSection(_Section):
    source: Literal["gpsd", "nmea-serial", "nmea-file", "gpx"] = "gpsd"
    host: str = "localhost"
    port: int = Field(default=2947, ge=1, le=65535)
    device: str = "/dev/ttyUSB0"
    baud: int = Field(default=9600, gt=0)
    path: Path | None = None
    realtime: bool = True
    # Longest gap between fixes that geotagging may bridge by interpolation.
    max_gap_s: float = Field(default=2.0, gt=0, le=60)
    reconnect_s: float = Field(default=2.0, gt=0)


class TriggerSection(_Section):
    every_meters: float = Field(default=5.0, gt=0, le=1000)
    # 0 disables the time trigger; frames are then kept by distance only.
    every_seconds: float = Field(default=0.0, ge=0)
    min_speed_mps: float = Field(default=0.5, ge=0)
    max_rate_hz: float = Field(default=5.0, gt=0, le=60)
    # Mean absolute difference (0-255) of a 64x36 grey thumbnail below which a frame is a
    # near-duplicate of the last kept one.
    duplicate_threshold: float = Field(default=2.0, ge=0, le=255)


class SessionSection(_Section):
    root: Path = Path("sessions")
    operator: str = Field(min_length=1)
    purpose: str = Field(min_length=1)
    notice_version: str = Field(min_length=1)
    keep_frames_without_position: bool = False
    fsync_interval_s: float = Field(default=1.0, gt=0, le=1.0)
    disk_reserve_mb: float = Field(default=512.0, ge=0)


class PrivacySection(_Section):
    # GeoJSON (Multi)Polygons inside which nothing is captured or kept.
    zones: Path | None = None


class EncryptionSection(_Section):
    enabled: bool = False
    recipient_public_key: Path | None = None

    @model_validator(mode="after")
    def _key_when_enabled(self) -> EncryptionSection:
        if self.enabled and self.recipient_public_key is None:
            raise ValueError("recipient_public_key is required when enabled = true")
        return self


class VehicleConfig(_Section):
    vehicle: VehicleSection
    camera: CameraSection = CameraSection()
    gps: GpsSection = GpsSection()
    trigger: TriggerSection = TriggerSection()
    session: SessionSection
    privacy: PrivacySection = PrivacySection()
    encryption: EncryptionSection = EncryptionSection()
