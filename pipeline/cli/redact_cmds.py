"""``streetveil redact`` (loose images and folders) and ``streetveil eval`` (detector quality).

Thin: parse, build a RedactConfig, call one library function. The library is imported
inside the command bodies so that ``streetveil --help`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

_THRESHOLD = click.FloatRange(0, 1, min_open=True, max_open=True)


def register(cli: click.Group) -> None:
    cli.add_command(redact_cmd)
    cli.add_command(eval_cmd)


def _load_redact_config(
    config: Path | None, face_threshold: float | None, plate_threshold: float | None, **detector: Any
) -> Any:
    """The RedactConfig from ``--config`` (a redact.toml, or a nightly.toml's [redact]) plus
    command-line overrides, validated again after the overrides."""
    import tomllib

    from pipeline.config import NightlyConfig, load_config
    from redact.config import DetectorSection, RedactConfig

    cfg: RedactConfig
    if config is not None and _is_nightly(config, tomllib):
        cfg = load_config(config, NightlyConfig, kind="nightly").redact
    else:
        cfg = load_config(config, RedactConfig, kind="redact")
    upd = {k: v for k, v in detector.items() if v is not None}
    if face_threshold is not None:
        upd["face_threshold"] = face_threshold
    if plate_threshold is not None:
        upd["plate_threshold"] = plate_threshold
    if upd:
        from pipeline.config import validate_config

        det = validate_config({**cfg.detector.model_dump(), **upd}, DetectorSection, source="command line")
        cfg = cfg.model_copy(update={"detector": det})
    return cfg


def _is_nightly(path: Path, tomllib: Any) -> bool:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # load_config reports the problem with the file name
    return isinstance(data, dict) and "redact" in data


def _is_session(path: Path) -> bool:
    return path.is_dir() and (path / "session.json").is_file()


@click.command("redact")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Output folder; mirrors each input (a folder under its own name, a file by its name).")
@click.option("--report", type=click.Path(path_type=Path, dir_okay=False),
              help="Write a JSON Lines report: one record per image with its detections.")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False),
              help="A redact config (TOML), or a nightly.toml whose [redact] section is used.")
@click.option("--face-threshold", type=_THRESHOLD, help="Face score threshold (overrides the config).")
@click.option("--plate-threshold", type=_THRESHOLD, help="Plate score threshold (overrides the config).")
@click.option("--threads", type=click.IntRange(1, 256), help="CPU threads for detection (default: all given).")
def redact_cmd(inputs: tuple[Path, ...], out_dir: Path, report: Path | None, config: Path | None,
               face_threshold: float | None, plate_threshold: float | None, threads: int | None) -> None:
    """Redact faces and licence plates in image files and folders (recursive).

    Output keeps each image's format, pixel size, orientation and EXIF GPS/time/heading;
    the EXIF thumbnail, maker notes, serial numbers, owner names and XMP are removed. An
    image that fails is reported and not written; the exit code is then 1.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from pipeline.errors import ItemsFailed
    from redact.batch import collect_inputs, redact_files, thread_layout, write_report
    from redact.engine import Redactor, info_line

    sessions = [p for p in inputs if _is_session(p)]
    if sessions:
        # Session directories take the nightly job's serial path (frames.jsonl geotags,
        # temporal carry, publish layout, audit): same per-session function, no Dask.
        if len(sessions) != len(inputs):
            raise click.UsageError("give capture sessions and loose images in separate calls")
        if report is not None:
            raise click.UsageError("--report is for loose images; a session's record is its audit.jsonl")
        from pipeline.cli.job_cmds import redact_sessions

        redact_sessions(sessions, out_dir, config, _load_redact_config(config, face_threshold, plate_threshold),
                        threads)
        return
    cfg = _load_redact_config(config, face_threshold, plate_threshold)
    jobs = collect_inputs(list(inputs), out_dir)
    if not jobs:
        raise click.UsageError("no images found in the inputs (" + ", ".join(sorted(
            ["jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp"])) + ")")
    per_inference, workers = thread_layout(cfg.detector.threads, cfg.detector.runtime, cfg.detector.device, threads)
    redactor = Redactor(cfg, threads=per_inference)
    err = Console(stderr=True)
    err.print(info_line(redactor.info), highlight=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = (TextColumn("redacting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("redact", total=len(jobs))
        summary, records = redact_files(redactor, jobs, out_dir, on_done=lambda _r: progress.advance(task),
                                        workers=workers)
    if report is not None:
        write_report(report, records)
    click.echo(
        f"images: {summary.images}  ok: {summary.ok}  failed: {summary.failed}  faces: {summary.faces}  "
        f"plates: {summary.plates}  time: {summary.seconds:.1f} s  ({summary.fps:.2f} frames/s)"
    )
    click.echo(info_line(redactor.info))
    if summary.failed:
        for _rel, msg in summary.failures:
            click.echo(f"  failed: {msg}", err=True)
        raise ItemsFailed(f"{summary.failed} of {summary.images} images failed (not written)")


@click.command("eval")
@click.argument("labels", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--images", "images_dir", required=True, type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Folder the label keys are relative to.")
@click.option("--class", "cls", type=click.Choice(["face", "plate"]), default="face", show_default=True)
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False), help="A redact config (TOML).")
@click.option("--threshold", "thresholds", multiple=True, type=_THRESHOLD,
              help="Score threshold(s) to report; repeat to sweep (default: the config's).")
@click.option("--split", type=click.Choice(["all", "tune", "holdout"]), default="all", show_default=True,
              help="Fixed half of the labelled images (hash of the label key), for tuning discipline.")
@click.option("--threads", type=click.IntRange(1, 256), help="CPU threads for detection.")
@click.option("--as-large-frame", "frame_ratio", type=click.FloatRange(1.0, 8.0, min_open=True),
              help="Treat each image as a frame RATIO x larger than the network input (e.g. 1.5: a "
                   "1920 px frame at input_size 1280): the whole-frame pass sees it reduced, no "
                   "upscale or tile pass. Evaluates the large-frame regime with small labelled images.")
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write the full result as JSON.")
def eval_cmd(labels: Path, images_dir: Path, cls: str, config: Path | None, thresholds: tuple[float, ...],
             split: str, threads: int | None, frame_ratio: float | None, json_out: Path | None) -> None:
    """Recall and precision (IoU >= 0.3) of the configured detector on a labelled image set,
    overall and by object height band, plus frames/s.

    LABELS is {"images/x.jpg": [[x1, y1, x2, y2], ...]}. Labels are often incomplete:
    unmatched detections are an upper bound on false positives.
    """
    import json

    import numpy as np
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from redact.engine import Redactor, info_line
    from redact.evaluate import (
        as_large_frame,
        evaluate,
        format_table,
        load_labels,
        thresholds_arg,
        widen_refinement,
    )
    from redact.ops import redacted_area
    from redact.types import class_index

    base = _load_redact_config(config, None, None)
    from redact.detectors import plate_threshold

    ths = thresholds_arg(thresholds or [base.detector.face_threshold if cls == "face" else plate_threshold(base.detector)])
    cfg = _load_redact_config(config, ths[0] if cls == "face" else None, ths[0] if cls == "plate" else None)
    redactor = Redactor(cfg, threads=threads)
    widen_refinement(redactor, ths[-1])
    if cls not in redactor.classes:
        raise click.UsageError(f"the configured detectors find no {cls}s")
    ci = class_index(cls)

    def detect(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        img = redactor.decode(data, name=name)
        if frame_ratio is not None:
            as_large_frame(redactor, max(img.width, img.height), frame_ratio)
        d = redactor.detect(img, classes=(cls,))
        return np.array(d.xyxy), np.array(d.score), (img.width, img.height)

    def area(xyxy: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return redacted_area(xyxy, np.full(len(xyxy), ci, np.uint8), redactor.params, size[0], size[1])

    lab = load_labels(labels)
    err = Console(stderr=True)
    err.print(info_line(redactor.info), highlight=False)
    n = sum(1 for _ in lab) if split == "all" else None
    with Progress(TextColumn("eval"), BarColumn(), MofNCompleteColumn(), console=err, transient=True) as progress:
        task = progress.add_task("eval", total=n)
        result = evaluate(lab, images_dir, detect, cls=cls, thresholds=ths, split=split,  # type: ignore[arg-type]
                          area_of=area, progress=lambda: progress.advance(task))
    for th in ths:
        click.echo(format_table(result, th))
        click.echo("")
    if json_out is not None:
        from capture.fsutil import atomic_write_text

        payload = {**result.to_json(), "detectors": redactor.info["detectors"], "labels": str(labels),
                   "as_large_frame": frame_ratio}
        atomic_write_text(json_out, json.dumps(payload, indent=2))
