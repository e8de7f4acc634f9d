"""``streetveil run`` (the nightly job), ``streetveil audit verify``, ``streetveil purge``.

Thin: parse, build the config object, call one library function, print its summary. The
library (Dask, the detectors) is imported inside the command bodies.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import click


def register(cli: click.Group) -> None:
    cli.add_command(run_cmd)
    cli.add_command(audit_group)
    cli.add_command(purge_cmd)


def load_nightly(config: Path | None) -> Any:
    from pipeline.config import NightlyConfig, load_config

    return load_config(config, NightlyConfig, kind="nightly")


def _sigterm_as_interrupt() -> None:
    """systemd/cron stop the job with SIGTERM: unwind like Ctrl-C (exit 130), so the Dask
    cluster is shut down and no staging folder is left behind."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def echo_summary(summary: Any) -> None:
    """Print a job summary; raise ItemsFailed when frames failed or sessions were unreadable."""
    from pipeline.errors import ItemsFailed

    for s in summary.sessions:
        if s.note:
            click.echo(f"session {s.session_id}: {s.note}")
            continue
        excl = ", ".join(f"{k} {v}" for k, v in sorted(s.excluded.items())) or "none"
        kept = f", kept as published (raw deleted): {s.kept}" if s.kept else ""
        kept += f", failed but earlier publication kept: {s.kept_failed}" if s.kept_failed else ""
        click.echo(f"session {s.session_id}: published {s.published}/{s.frames} frames "
                   f"(failed {s.failed}, excluded: {excl}{kept}) -> {s.publish_dir}")
        for fid, err in s.failures:
            click.echo(f"  failed frame {fid}: {err}", err=True)
    c = summary.counts()
    click.echo(
        f"frames: {c['frames']}  faces: {c['faces']}  plates: {c['plates']}  failed: {c['failed']}  "
        f"published: {c['published']}  skipped (already done): {c['skipped']}  excluded: {c['excluded']}  "
        f"{summary.frames_per_s:.2f} frames/s  wall time: {summary.wall_s:.1f} s")
    vetoed = [s.plates_vetoed for s in summary.sessions if s.plates_vetoed is not None]
    if vetoed:
        click.echo(f"plate verifier: {sum(vetoed)} candidate(s) the detector alone would have blurred were "
                   "vetoed and left unblurred (outlined by `streetveil review`, filter 'Verifier vetoed')")
    click.echo(f"audit: {summary.out}/<session>/audit.jsonl, index {summary.out}/audit-index.jsonl "
               f"(run {summary.run_id})")
    unreadable = [s for s in summary.sessions if s.note and s.note.startswith("cannot read")]
    if c["failed"] or unreadable:
        kept = summary.total("kept_failed")
        raise ItemsFailed(f"{c['failed']} frame(s) failed and {len(unreadable)} session(s) could not be "
                          "read; no new render of them was published"
                          + (f" ({kept} kept the image an earlier run published)" if kept else "")
                          + " (see the audit log)")


@click.command("run")
@click.argument("sessions", nargs=-1, required=True)
@click.option("--out", required=True, help="Publish folder (path or fsspec URL).")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False),
              help="Nightly job config (TOML), e.g. configs/nightly.toml.")
@click.option("--scheduler", help="Address of a running Dask scheduler (tcp://host:8786); "
              "default: start a local cluster.")
@click.option("--workers", type=click.IntRange(1, 1024), help="Local cluster: worker processes.")
@click.option("--threads-per-worker", type=click.IntRange(1, 256), help="Local cluster: threads per worker.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def run_cmd(sessions: tuple[str, ...], out: str, config: Path | None, scheduler: str | None,
            workers: int | None, threads_per_worker: int | None, no_progress: bool) -> None:
    """Redact whole SESSIONs (folders, or folders of sessions; paths or fsspec URLs) on Dask and
    publish them for GIS under OUT/<session-id>/, with an audit hash chain.

    Frames that fail are not published; the exit code is then 1. A rerun skips finished
    frames and redoes failed ones.
    """
    from pipeline.job import JobOptions, run

    if scheduler and (workers or threads_per_worker):
        raise click.UsageError("--workers/--threads-per-worker size a local cluster; not with --scheduler")
    cfg = load_nightly(config)
    _sigterm_as_interrupt()
    opts = JobOptions(sessions=sessions, out=out, config=cfg, config_path=str(config) if config else None,
                      progress=not no_progress)
    echo_summary(run(opts, scheduler=scheduler, workers=workers or 0, threads_per_worker=threads_per_worker or 0))


@click.group("audit")
def audit_group() -> None:
    """Check published sets against their audit chains."""


@audit_group.command("verify")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False, exists=True))
def audit_verify(directory: Path) -> None:
    """Verify a publish folder (or one published session): every audit chain link, every file
    against manifest.json, every image against the audit records. Exit 1 naming the first
    problem."""
    from pipeline.errors import AuditMismatch
    from pipeline.verify import verify_tree

    rep = verify_tree(directory)
    if rep.problems:
        click.echo(f"FIRST PROBLEM: {rep.problems[0]}", err=True)
        for p in rep.problems[1:]:
            click.echo(f"  also: {p}", err=True)
        raise AuditMismatch(f"{directory}: {len(rep.problems)} problem(s); first: {rep.problems[0]}")
    click.echo(f"OK: {len(rep.sessions)} session(s), {rep.records} audit records, {rep.files} files "
               f"verified in {directory}")


@click.command("purge")
@click.argument("sessions_root", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--raw-older-than", "older", help="Age after which raw frames go, e.g. 7d, 36h "
              "(default: [retention] raw_days).")
@click.option("--publish-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Where the sessions were published (default: [retention] publish_dir).")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False), help="Nightly job config (TOML).")
@click.option("--dry-run", is_flag=True, help="Only say what would be deleted.")
@click.option("--unblur-hold", help="How long after it was filed a queued unblur request holds its raw "
              "frame, e.g. 14d (default: [retention] unblur_hold_days).")
def purge_cmd(sessions_root: Path, older: str | None, publish_dir: Path | None, config: Path | None,
              dry_run: bool, unblur_hold: str | None) -> None:
    """Delete the raw frames of sessions older than the retention period whose publication
    verifies and covers every frame (encrypted sessions: destroy session.key too). A frame
    that a queued unblur request needs waits for it (--unblur-hold). Each purge is an audit
    record in the session's published chain."""
    from datetime import timedelta

    from pipeline.errors import ConfigError, ItemsFailed
    from pipeline.retention import parse_age, purge

    cfg = load_nightly(config)
    age = parse_age(older) if older else timedelta(days=cfg.retention.raw_days)
    pub = publish_dir or cfg.retention.publish_dir
    if pub is None:
        raise ConfigError("purge needs the publish folder to verify publications first: "
                          "--publish-dir DIR or [retention] publish_dir")
    hold = parse_age(unblur_hold, "--unblur-hold") if unblur_hold else timedelta(days=cfg.retention.unblur_hold_days)
    outcomes = purge(sessions_root, Path(pub), older_than=age, dry_run=dry_run, unblur_hold=hold)
    for o in outcomes:
        if o.action in ("kept", "error"):
            click.echo(f"{o.action:7} {o.session_id}: {o.reason}")
        else:
            what = f"{o.frames} raw frames, {o.bytes / 1e6:.1f} MB" + (", session key (crypto-shredding)"
                                                                       if o.crypto_shredded else "")
            click.echo(f"{'would purge' if dry_run else 'purged'} {o.session_id}: {what}"
                       + (f"; {o.reason}" if o.held else "")
                       + (f"; queued unblur request(s) {', '.join(o.released)} held their frames for "
                          f"{hold} and no longer do: apply rejects them" if o.released else ""))
    done = [o for o in outcomes if o.action in ("purged", "would-purge")]
    click.echo(f"{len(done)} of {len(outcomes)} session(s) {'would be ' if dry_run else ''}purged")
    errors = [o for o in outcomes if o.action == "error"]
    if errors:
        raise ItemsFailed(f"{len(errors)} session(s) could not be read; their raw frames were left as they are")


def redact_sessions(sessions: list[Path], out_dir: Path, config: Path | None, redact_cfg: Any,
                    threads: int | None) -> None:
    """``streetveil redact SESSION_DIR... --out DIR``: the nightly job's serial path.

    Writes the same publish layout as ``streetveil run`` (and byte-identical images for the
    same frames and config), in this process, without Dask. ``config`` may be a nightly.toml
    (its [publish], [decrypt] are used) or a redact config (then nightly defaults apply).
    """
    from pipeline.config import NightlyConfig, is_nightly_config, load_config
    from pipeline.errors import ConfigError
    from pipeline.job import JobOptions, run_serial

    nightly = config is not None and is_nightly_config(config)
    cfg = load_config(config if nightly else None, NightlyConfig, kind="nightly")
    cfg = cfg.model_copy(update={"redact": redact_cfg})
    if not cfg.publish.notice.exists():
        raise ConfigError(f"{cfg.publish.notice}: privacy notice config not found; sessions are published with "
                          "their notice: pass --config configs/nightly.toml (its [publish] notice)")
    opts = JobOptions(sessions=tuple(str(s) for s in sessions), out=str(out_dir), config=cfg,
                      config_path=str(config) if config else None, progress=True, threads=threads or 0)
    echo_summary(run_serial(opts))
