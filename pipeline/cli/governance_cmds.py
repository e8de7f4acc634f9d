"""``streetveil review``, ``streetveil request add|apply|list``, ``streetveil find``: residents'
requests, QA and leak reports (docs/governance.md). Thin: parse, call one library function,
print; the library is imported inside the command bodies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def register(cli: click.Group) -> None:
    cli.add_command(review_cmd)
    cli.add_command(request_group)
    cli.add_command(find_cmd)


@click.command("review")
@click.argument("session_dir", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="Where to write the page (default: ./review-<session>.html).")
@click.option("--low-margin", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.15,
              show_default=True, help="Flag detections scoring less than this above their class threshold.")
@click.option("--low-margin-face", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="The margin for faces (default: --low-margin).")
@click.option("--low-margin-plate", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="The margin for plates (default: --low-margin; the int8 plate scores are compressed, "
                   "so a narrower one such as 0.02 singles out fewer frames).")
@click.option("--busy-window", type=click.IntRange(1, 50), default=2, show_default=True,
              help="Frames either side that make an area busy.")
@click.option("--busy-min", type=click.IntRange(1, 100), default=2, show_default=True,
              help="Neighbours with detections needed to flag a frame without any.")
@click.option("--thumb-width", type=click.IntRange(32, 1024), default=320, show_default=True,
              help="Thumbnail width in pixels.")
def review_cmd(session_dir: Path, out: Path | None, low_margin: float, low_margin_face: float | None,
               low_margin_plate: float | None, busy_window: int, busy_min: int, thumb_width: int) -> None:
    """Write the QA sheet of a published session (PUBLISH_DIR/<session>): one self-contained HTML
    page with the track, every published image with its redaction areas, filters and counts.
    Built from the published images only; needs no network to view."""
    from pipeline.review import ReviewOptions, write_review

    r = write_review(session_dir, out, ReviewOptions(low_margin=low_margin, low_margin_face=low_margin_face,
                                                     low_margin_plate=low_margin_plate, busy_window=busy_window,
                                                     busy_min=busy_min, thumb_width=thumb_width))
    click.echo(f"{r.path}: {r.published} published, {r.failed} failed, {r.low_confidence} low confidence "
               f"({r.low_confidence_faces} with a face, {r.low_confidence_plates} with a plate), "
               f"{r.busy_empty} without detections in a busy area, {r.edited} edited by request, "
               f"{r.vetoed} with a plate the verifier vetoed, "
               f"{r.no_detection_data} without detection data ({r.size / 1e6:.1f} MB)")


@click.group("request")
def request_group() -> None:
    """Residents' requests and QA fixes: extra blur, unblur a false plate box, takedown,
    exclusion zones (all audited)."""


@request_group.command("add")
@click.argument("target", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--frame", "frame_id", help="Frame id (blur / unblur / remove).")
@click.option("--blur", "boxes", multiple=True, metavar="X1,Y1,X2,Y2",
              help="Area to blur in published-image pixels (repeatable).")
@click.option("--unblur", "unblur", multiple=True, metavar="X1,Y1,X2,Y2",
              help="Area whose plate redactions are false (a sign, lettering): re-render the frame from raw "
              "without the plate boxes lying wholly inside it (repeatable; faces stay blurred).")
@click.option("--remove", is_flag=True, help="Take the frame's image and GeoJSON feature down.")
@click.option("--zone", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="GeoJSON (Multi)Polygon: remove every frame inside, in every session of TARGET "
              "(the publish folder), and keep it out of all later runs.")
@click.option("--reason", required=True, help="Why (no personal data: no names, addresses, e-mail).")
@click.option("--requester-ref", help="Opaque reference of the request in your case system.")
def request_add(target: Path, frame_id: str | None, boxes: tuple[str, ...], unblur: tuple[str, ...], remove: bool,
                zone: Path | None, reason: str, requester_ref: str | None) -> None:
    """Queue a request against TARGET: PUBLISH_DIR/<session> for --blur/--unblur/--remove,
    PUBLISH_DIR for --zone. Nothing published changes until `streetveil request apply`."""
    from pipeline.requests import RequestSpec, add_request, parse_box, zone_geometry

    if sum((bool(boxes), bool(unblur), remove, zone is not None)) != 1:
        raise click.UsageError("give exactly one of --blur BOX..., --unblur BOX..., --remove, --zone FILE")
    if zone is not None:
        spec = RequestSpec("zone", reason, zone=zone_geometry(zone), requester_ref=requester_ref)
    elif unblur:
        spec = RequestSpec("unblur", reason, session_id=target.name, frame_id=frame_id,
                           boxes=tuple(parse_box(b, "--unblur") for b in unblur), requester_ref=requester_ref)
    else:
        spec = RequestSpec("blur" if boxes else "remove", reason, session_id=target.name, frame_id=frame_id,
                           boxes=tuple(parse_box(b) for b in boxes), requester_ref=requester_ref)
    rec = add_request(target, spec)
    click.echo(f"queued {rec['action']} request {rec['request_id']}; run `streetveil request apply {target}`")


@request_group.command("apply")
@click.argument("target", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Nightly config the session was published with (default: the run's recorded file).")
@click.option("--sessions-root", type=click.Path(path_type=Path, file_okay=False),
              help="Where the raw sessions are (default: the run's recorded source).")
def request_apply(target: Path, config: Path | None, sessions_root: Path | None) -> None:
    """Apply the pending requests of TARGET (PUBLISH_DIR/<session>, or PUBLISH_DIR for all,
    zones included) and re-publish each affected session atomically. Exit 1 if any was rejected."""
    from pipeline.errors import ItemsFailed
    from pipeline.requests import ApplyOptions, apply_requests

    cfg: Any = None
    if config is not None:
        from pipeline.cli.job_cmds import load_nightly

        cfg = load_nightly(config)
    rep = apply_requests(target, ApplyOptions(config=cfg, config_path=str(config) if config else None,
                                              sessions_root=sessions_root))
    if not rep.outcomes:
        click.echo("no pending requests")
        return
    for o in rep.outcomes:
        where = "/".join(x for x in (o.session_id, o.frame_id) if x) or "all sessions"
        click.echo(f"{o.status:8} {o.request_id} {o.action} {where}: {o.detail}")
    if rep.rejected:
        raise ItemsFailed(f"{len(rep.rejected)} request(s) rejected (recorded in the audit log)")


@request_group.command("list")
@click.argument("target", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--all", "show_all", is_flag=True, help="Also requests already applied or rejected.")
def request_list(target: Path, show_all: bool) -> None:
    """List pending (or all) requests of a publish folder or session."""
    from pipeline.requests import queue_records, resolve_target

    publish_dir, sid = resolve_target(target)
    recs = queue_records(publish_dir)
    outcome = {r["request_id"]: r for r in recs if r.get("type") == "request-outcome"}
    n = 0
    for r in recs:
        if r.get("type") != "request" or (sid is not None and r.get("session_id") != sid):
            continue
        o = outcome.get(r["request_id"])
        if o is not None and not show_all:
            continue
        n += 1
        where = "/".join(x for x in (r.get("session_id"), r.get("frame_id")) if x) or "all sessions"
        state = "pending" if o is None else f"{o['status']} {o.get('time', '')}"
        click.echo(f"{r['request_id']} {r['action']:6} {where} ({r['time']}, ref {r.get('requester_ref') or '-'}): "
                   f"{state}")
    if n == 0:
        click.echo("no requests" if show_all else "no pending requests")


@click.command("find")
@click.argument("sessions_root", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--near", help="LAT,LON (WGS84 degrees).")
@click.option("--radius", default="30m", show_default=True, help="Around --near, e.g. 30m, 0.5km.")
@click.option("--between", nargs=2, metavar="T1 T2",
              help="ISO 8601 times with a zone (Z or +09:00), inclusive.")
@click.option("--publish-dir", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Also list published copies (and record deletions in their audit chains).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--delete", is_flag=True, help="Delete the raw frames found (journalled and audited).")
@click.option("--reason", help="Why (required with --delete; no personal data).")
@click.option("--requester-ref", help="Opaque reference of the request in your case system.")
def find_cmd(sessions_root: Path, near: str | None, radius: str, between: tuple[str, str] | None,
             publish_dir: Path | None, as_json: bool, delete: bool, reason: str | None,
             requester_ref: str | None) -> None:
    """List raw and published frames captured near a place and/or in a time window; with
    --delete, delete the raw ones. Frames without a GPS position are never near anything."""
    from pipeline.find import (
        FindQuery,
        delete_raw,
        find_frames,
        parse_point,
        parse_radius,
        parse_when,
    )

    if delete and not reason:
        raise click.UsageError("--delete needs --reason")
    q = FindQuery(near=parse_point(near) if near else None, radius_m=parse_radius(radius) if near else None,
                  start=parse_when(between[0], "--between T1") if between else None,
                  end=parse_when(between[1], "--between T2") if between else None)
    res = find_frames(sessions_root, q, publish_dir=publish_dir)
    deleted = None
    if delete:
        deleted = delete_raw(sessions_root, q, res.frames, reason=str(reason), requester_ref=requester_ref,
                             publish_dir=publish_dir)
    if as_json:
        doc = {"frames": [f.to_json() for f in res.frames], "sessions_scanned": res.sessions_scanned,
               "frames_without_position_in_window": res.no_position_in_window,
               "deleted": None if deleted is None else deleted.deleted}
        click.echo(json.dumps(doc, indent=1))
        return
    click.echo(f"{'session':34} {'frame':>8} {'time (UTC)':24} {'lat':>11} {'lon':>12} {'dist m':>7} "
               f"{'raw':4} published")
    for f in res.frames:
        lat = "-" if f.lat is None else f"{f.lat:.6f}"
        lon = "-" if f.lon is None else f"{f.lon:.6f}"
        dist = "-" if f.distance_m is None else f"{f.distance_m:.1f}"
        click.echo(f"{f.session_id:34} {f.frame_id:>8} {f.time:24} {lat:>11} {lon:>12} {dist:>7} "
                   f"{'yes' if f.raw_present else 'no':4} {f.published or '-'}")
    click.echo(f"{len(res.frames)} frame(s) in {res.sessions_scanned} session(s); "
               f"{sum(f.raw_present for f in res.frames)} raw present, "
               f"{sum(f.published is not None for f in res.frames)} published")
    if res.no_position_in_window:
        click.echo(f"note: {res.no_position_in_window} frame(s) in the time window have no GPS position and "
                   "cannot be placed; they are not listed (use --between without --near to see them)")
    if deleted is not None:
        click.echo(f"deleted {deleted.deleted} raw frame(s) in {len(deleted.sessions)} session(s); recorded in "
                   f"{sessions_root}/audit.jsonl" + (f" and {publish_dir}/<session>/audit.jsonl" if publish_dir else ""))
