"""``streetveil capture run`` (the in-vehicle daemon) and ``streetveil capture import``."""

from __future__ import annotations

from pathlib import Path

import click


def register(cli: click.Group) -> None:
    cli.add_command(capture)


@click.group()
def capture() -> None:
    """Capture sessions: the in-vehicle daemon, and import of existing video or photos."""


@capture.command("run")
@click.option("--config", "config_path", required=True,
              type=click.Path(path_type=Path, dir_okay=False), help="Vehicle config (TOML).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              help="Session root (default: [session] root of the config).")
@click.option("--no-status", is_flag=True, help="Do not redraw the status line in place; log it every "
              "--status-every seconds instead (as without a terminal, e.g. under systemd).")
@click.option("--status-every", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Without a terminal (or with --no-status): log the status line every S seconds (0: never).")
def capture_run(config_path: Path, out: Path | None, no_status: bool, status_every: float) -> None:
    """Capture until SIGINT/SIGTERM: camera + GPS into a crash-safe, geotagged session.

    Sessions left open by a crash are recovered and closed first. The status line shows
    frames kept, distance, fix quality, free disk and the last error. GPS fix lost and back,
    camera lost and back and the disk guard are logged when they happen.
    """
    import logging

    from capture.config import VehicleConfig
    from capture.daemon import run_capture
    from pipeline.config import config_hash, load_config

    root = click.get_current_context().find_root().params
    if not root.get("verbose") and not root.get("quiet"):
        # The daemon's INFO lines (the periodic status, a fix or camera coming back) are its
        # normal output in the journal; the default level (WARNING) would hide them.
        logging.getLogger("capture").setLevel(logging.INFO)
    cfg = load_config(config_path, VehicleConfig, kind="vehicle")
    result = run_capture(cfg, config_sha256=config_hash(cfg), out=out, live_status=not no_status,
                         status_every_s=status_every)
    kept = result.counters.get("frames", 0)
    click.echo(f"session closed: {result.session} ({kept} frames)")


@capture.command("import")
@click.argument("video", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--gpx", type=click.Path(path_type=Path, dir_okay=False),
              help="GPS track (GPX) covering the recording. Required for video.")
@click.option("--images", type=click.Path(path_type=Path, file_okay=False),
              help="Import a folder of JPEGs with EXIF times instead of a video "
                   "(positions from --gpx, else from each image's EXIF GPS).")
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Session root; the session is written in a new folder below it.")
@click.option("--every-meters", type=click.FloatRange(min=0, min_open=True),
              help="Keep a frame every M metres (default: config, else 5).")
@click.option("--time-offset", type=float,
              help="Seconds added to the camera clock to get UTC (e.g. 28800 for a camera "
                   "that wrote local UTC-8 time as UTC). Default 0 for video; photos whose EXIF time has "
                   "no zone need it (0 if the camera clock is UTC) or --timezone.")
@click.option("--timezone", "timezone",
              help="Photos: the IANA time zone of a camera clock whose EXIF times carry no zone (no "
                   "OffsetTimeOriginal/OffsetTime, no GPS time stamps), e.g. Asia/Tokyo. Never guessed.")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Vehicle config for metadata, trigger, zones and encryption.")
@click.option("--vehicle", help="Vehicle id (overrides the config).")
@click.option("--operator", help="Operator (overrides the config; required without --config).")
@click.option("--purpose", help="Purpose of the capture (overrides the config; required without --config).")
@click.option("--notice-version", help="Privacy notice version in force (overrides the config; required "
              "without --config).")
def capture_import(video: Path | None, gpx: Path | None, images: Path | None, out: Path,
                   every_meters: float | None, time_offset: float | None, timezone: str | None,
                   config_path: Path | None, vehicle: str | None, operator: str | None, purpose: str | None,
                   notice_version: str | None) -> None:
    """Build a session from VIDEO + --gpx TRACK (frame times: container creation_time +
    frame pts + --time-offset), or from --images DIR. The operator, purpose and notice version
    come from --config or --operator/--purpose/--notice-version (required). If no frame falls
    inside the track, nothing is written and a time offset is suggested (exit 2)."""
    from capture.importer import ImportSettings, import_images, import_video
    from capture.session import SessionMeta
    from capture.trigger import TriggerSettings

    if (video is None) == (images is None):
        raise click.UsageError("give either VIDEO (with --gpx) or --images DIR")
    if video is not None and gpx is None:
        raise click.UsageError("importing a video needs --gpx TRACK.gpx")
    if timezone is not None:
        from capture.importer import zone_info

        if video is not None:
            raise click.UsageError("--timezone reads photos' EXIF times; a video's creation_time is UTC: "
                                   "correct a mislabelled one with --time-offset")
        try:
            zone_info(timezone)
        except ValueError as e:
            raise click.UsageError(f"--timezone: {e}") from None
    cfg = None
    sha = None
    if config_path is not None:
        from capture.config import VehicleConfig
        from pipeline.config import config_hash, load_config

        cfg = load_config(config_path, VehicleConfig, kind="vehicle")
        sha = config_hash(cfg)
    source = "import-video" if video is not None else "import-images"
    # The guidebook's basic stance: session.json records who captured, why, and under which
    # notice. No placeholder defaults: a session that cannot say so is not written.
    given = {
        "--operator": operator or (cfg.session.operator if cfg else None),
        "--purpose": purpose or (cfg.session.purpose if cfg else None),
        "--notice-version": notice_version or (cfg.session.notice_version if cfg else None),
    }
    missing = [opt for opt, value in given.items() if not (value and value.strip())]
    if missing:
        raise click.UsageError(
            f"session.json must record the operator, the purpose and the privacy notice version: "
            f"missing {', '.join(missing)} (give them, or --config vehicle.toml with [session] "
            "operator, purpose and notice_version)")
    meta = SessionMeta(
        vehicle_id=vehicle or (cfg.vehicle.id if cfg else "import"),
        operator=str(given["--operator"]).strip(),
        purpose=str(given["--purpose"]).strip(),
        notice_version=str(given["--notice-version"]).strip(),
        camera_model=cfg.camera.model if cfg else "unknown",
        camera_mount=cfg.camera.mount if cfg else "unknown",
        vehicle_description=cfg.vehicle.description if cfg else "",
        clock_offset_s=-(time_offset or 0.0),
        config_sha256=sha,
        source=source,
    )
    if cfg is not None:
        from capture.daemon import load_config_zones, load_recipient_key, trigger_settings

        trig = trigger_settings(cfg, every_meters)
        zones = load_config_zones(cfg)
        key = load_recipient_key(cfg)
        settings = ImportSettings(trigger=trig, time_offset_s=time_offset, timezone=timezone,
                                  max_gap_s=cfg.gps.max_gap_s,
                                  keep_frames_without_position=cfg.session.keep_frames_without_position,
                                  jpeg_quality=cfg.camera.jpeg_quality)
    else:
        zones, key = None, None
        settings = ImportSettings(trigger=TriggerSettings(every_meters=every_meters or 5.0),
                                  time_offset_s=time_offset, timezone=timezone)
    if video is not None:
        assert gpx is not None
        res = import_video(video, gpx, out, meta, settings, zones=zones, recipient_public_key=key)
    else:
        assert images is not None
        res = import_images(images, out, meta, settings, gpx=gpx, zones=zones, recipient_public_key=key)
    dropped = {k: v for k, v in res.counters.items() if k.startswith("dropped_") and v}
    click.echo(f"session written: {res.session} ({res.frames} frames"
               + (f"; {', '.join(f'{k[8:]} {v}' for k, v in sorted(dropped.items()))} dropped" if dropped else "")
               + ")")
