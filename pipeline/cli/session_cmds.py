"""``streetveil session ...`` and ``streetveil config ...``: check what is on disk."""

from __future__ import annotations

from pathlib import Path

import click


def register(cli: click.Group) -> None:
    cli.add_command(session)
    cli.add_command(config)


@click.group()
def session() -> None:
    """Inspect capture sessions."""


@session.command("check")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--no-hashes", is_flag=True, help="Skip re-hashing frame files (faster).")
def session_check(directory: Path, no_hashes: bool) -> None:
    """Validate a session and print a summary; exit 1 listing the problems if invalid."""
    from capture.session import check_session
    from capture.types import format_time

    s = check_session(directory, verify_hashes=not no_hashes)
    span = f"{format_time(s.first)} .. {format_time(s.last)}" if s.first and s.last else "-"
    click.echo(f"session {s.session_id}: OK ({s.status}{', encrypted' if s.encrypted else ''})")
    click.echo(f"  frames:                   {s.frames}")
    click.echo(f"  time span:                {span} ({s.duration_s:.1f} s)")
    click.echo(f"  distance:                 {s.distance_m / 1000:.3f} km")
    click.echo(f"  frames without position:  {s.frames_without_position}")
    click.echo(f"  GPS fixes:                {s.fixes}")
    for k, v in sorted(s.counters.items()):
        if k not in ("frames", "fixes"):
            click.echo(f"  {k + ':':<25} {v}")
    if s.deleted_frames:
        click.echo(f"  deleted raw frames:       {s.deleted_frames} (see deletions.jsonl)")
    if s.key_shredded:
        click.echo("  session key shredded:     raw frames are unreadable for good")
    if s.torn_tail:
        click.echo("  note: the last line of frames.jsonl was torn (power cut) and was ignored")


@session.command("sample")
@click.argument("root", type=click.Path(path_type=Path, file_okay=False))
@click.option("--frames", default=24, show_default=True, type=click.IntRange(1, 10000))
@click.option("--encrypt-for", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Encrypt frames for this public key (PEM).")
def session_sample(root: Path, frames: int, encrypt_for: Path | None) -> None:
    """Write a synthetic sample session below ROOT (drawn streets, public-domain faces,
    rendered plates, a synthetic GPS track in Tokyo). Nothing in it is a real capture."""
    from capture.crypto import load_public_key
    from pipeline.sample import make_sample_session

    key = load_public_key(encrypt_for) if encrypt_for else None
    path = make_sample_session(root, frames=frames, recipient_public_key=key)
    click.echo(f"sample session written: {path}")


@click.group()
def config() -> None:
    """Validate configuration files."""


@config.command("check")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--kind",
    type=click.Choice(["vehicle", "nightly", "notice", "redact"]),
    help="Config kind (default: from the file name).",
)
def config_check(file: Path, kind: str | None) -> None:
    """Load FILE with environment overrides and print the validated result."""
    import json

    from pipeline.config import config_hash, load_kind

    cfg = load_kind(file, kind)
    click.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))
    click.echo(f"# {file}: OK, config sha256 {config_hash(cfg)}", err=True)
