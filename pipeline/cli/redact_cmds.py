"""``streetveil redact`` (loose images and folders) and ``streetveil eval`` (detector quality).

Thin: parse, build a RedactConfig, call one library function (``pipeline.redact_files.
redact_paths``, ``redact.evaluate.run_eval``). The library is imported inside the command
bodies so that ``streetveil --help`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

_THRESHOLD = click.FloatRange(0, 1, min_open=True, max_open=True)


def register(cli: click.Group) -> None:
    cli.add_command(redact_cmd)
    cli.add_command(eval_cmd)


def _load_redact_config(config: Path | None, face_threshold: float | None, plate_threshold: float | None) -> Any:
    """The RedactConfig from ``--config`` (a redact.toml, or a nightly.toml's [redact]) plus
    command-line overrides, validated again after the overrides."""
    from pipeline.config import NightlyConfig, is_nightly_config, load_config, validate_config
    from redact.config import DetectorSection, RedactConfig

    cfg: RedactConfig
    if config is not None and is_nightly_config(config):
        cfg = load_config(config, NightlyConfig, kind="nightly").redact
    else:
        cfg = load_config(config, RedactConfig, kind="redact")
    upd = {k: v for k, v in (("face_threshold", face_threshold), ("plate_threshold", plate_threshold))
           if v is not None}
    if upd:
        det = validate_config({**cfg.detector.model_dump(), **upd}, DetectorSection, source="command line")
        cfg = cfg.model_copy(update={"detector": det})
    return cfg


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
@click.option("--plate-threshold", type=_THRESHOLD,
              help="Plate score threshold (overrides the config; default: the plate model's calibrated one).")
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
        TaskID,
        TextColumn,
        TimeRemainingColumn,
    )

    from pipeline.errors import ItemsFailed
    from pipeline.redact_files import redact_paths
    from redact.engine import info_line
    from redact.recall import recall_line

    cfg = _load_redact_config(config, face_threshold, plate_threshold)
    sessions = [p for p in inputs if _is_session(p)]
    if sessions:
        # Session directories take the nightly job's serial path (frames.jsonl geotags,
        # temporal carry, publish layout, audit): same per-session function, no Dask.
        if len(sessions) != len(inputs):
            raise click.UsageError("give capture sessions and loose images in separate calls")
        if report is not None:
            raise click.UsageError("--report is for loose images; a session's record is its audit.jsonl")
        from pipeline.cli.job_cmds import redact_sessions

        redact_sessions(sessions, out_dir, config, cfg, threads)
        return
    err = Console(stderr=True)
    columns = (TextColumn("redacting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task: list[TaskID] = []

        def on_start(info: dict[str, Any], total: int) -> None:
            err.print(info_line(info), highlight=False)
            task.append(progress.add_task("redact", total=total))

        run = redact_paths(list(inputs), out_dir, cfg, report=report, threads=threads, on_start=on_start,
                           on_done=lambda _r: progress.advance(task[0]))
    s = run.summary
    click.echo(f"images: {s.images}  ok: {s.ok}  failed: {s.failed}  faces: {s.faces}  plates: {s.plates}  "
               f"time: {s.seconds:.1f} s  ({s.fps:.2f} frames/s)")
    click.echo(info_line(run.info))
    click.echo(recall_line(run.info))
    if s.failed:
        for _rel, msg in s.failures:
            click.echo(f"  failed: {msg}", err=True)
        raise ItemsFailed(f"{s.failed} of {s.images} images failed (not written)")


@click.command("eval")
@click.argument("labels", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--images", "images_dir", required=True, type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Folder the label keys are relative to.")
@click.option("--class", "cls", type=click.Choice(["face", "plate"]), default="face", show_default=True)
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False),
              help="A redact config (TOML), or a nightly.toml whose [redact] section is used.")
@click.option("--threshold", "thresholds", multiple=True, type=_THRESHOLD,
              help="Score threshold(s) to report; repeat to sweep (default: the one in effect).")
@click.option("--split", type=click.Choice(["all", "tune", "holdout", "train", "val"]), default="all",
              show_default=True,
              help="tune/holdout: fixed halves by a hash of the label key (tuning discipline); "
                   "train/val: the plate model's time split of a dashcam set (needs ORIGIN.json).")
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

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from capture.fsutil import atomic_write_text
    from redact.engine import info_line
    from redact.evaluate import format_table, run_eval

    err = Console(stderr=True)
    with Progress(TextColumn("eval"), BarColumn(), MofNCompleteColumn(), console=err, transient=True) as progress:
        task = progress.add_task("eval", total=None)
        result = run_eval(labels, images_dir, _load_redact_config(config, None, None), cls=cls,
                          thresholds=thresholds, split=split, threads=threads,  # type: ignore[arg-type]
                          frame_ratio=frame_ratio,
                          progress=lambda done, total: progress.update(task, completed=done, total=total))
    assert result.info is not None
    err.print(info_line(result.info), highlight=False)
    for th in result.by_threshold:
        click.echo(format_table(result, th))
        click.echo("")
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(result.to_json(), indent=2))
