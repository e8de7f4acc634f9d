"""The nightly job: redact whole sessions and publish them, on Dask or serially.

``run_job`` plans every session, submits phase-1 (detect) and phase-2 (render) batch tasks
(``pipeline.tasks``) to an executor, and publishes each session (``pipeline.publish``) as soon
as all its frames are done, with its audit records. The executor is a Dask client (a
``LocalCluster`` of processes, or any scheduler by address) or ``SerialExecutor``, which runs
the very same task functions in this process, in order: that is the serial path
(``streetveil redact SESSION_DIR``), and the oracle the Dask job's images must equal byte for
byte.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import platform
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from capture.errors import CaptureError
from capture.types import FrameRecord, format_time
from pipeline import audit, qadata
from pipeline.config import NightlyConfig, NoticeConfig, config_hash, load_config
from pipeline.errors import ItemsFailed, PipelineError
from pipeline.geojson import dumps, frame_feature, track_feature
from pipeline.notice import SessionFacts, render_html, render_text
from pipeline.plan import (
    EXCLUDED_DELETED,
    EXCLUDED_NO_POSITION,
    EXCLUDED_REQUEST,
    EXCLUDED_ZONE,
    Override,
    SessionPlan,
    overrides_from,
    plan_session,
    redact_key,
)
from pipeline.publish import (
    TRACK_GEOJSON,
    WORK_DIR,
    PublishError,
    PublishTxn,
    append_index,
    image_path,
)
from pipeline.store import SessionSource, Store, is_session, local_path_of
from pipeline.tasks import (
    CarrySpec,
    DetResult,
    FrameResult,
    ModelSpec,
    TaskContext,
    describe_model,
    detect_batch,
    render_batch,
)
from redact.errors import RedactError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- executors


class Handle(Protocol):
    def result(self) -> Any: ...


class Executor(Protocol):
    """The part of ``distributed.Client`` the job uses (``SerialExecutor`` mimics it)."""

    def submit(self, fn: Callable[..., Any], *args: Any, key: str, priority: int) -> Any: ...

    def as_completed(self, handles: Sequence[Any]) -> Iterator[Any]: ...

    def describe(self) -> dict[str, Any]: ...


class _Lazy:
    """A task of the serial executor: computed (once) when its result is first asked for."""

    __slots__ = ("_args", "_done", "_fn", "_value")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._fn, self._args, self._done, self._value = fn, args, False, None

    def result(self) -> Any:
        if not self._done:
            self._value = self._fn(*[a.result() if isinstance(a, _Lazy) else a for a in self._args])
            self._done, self._args = True, ()
        return self._value


class SerialExecutor:
    """Runs the tasks in this process, one at a time, each when its result is needed (so a
    render batch pulls in the detect batches it depends on, and progress advances batch by
    batch); arguments that are tasks are replaced by their results, as Dask does."""

    def submit(self, fn: Callable[..., Any], *args: Any, key: str, priority: int = 0) -> _Lazy:
        del key, priority
        return _Lazy(fn, args)

    def as_completed(self, handles: Sequence[Any]) -> Iterator[Any]:
        yield from handles

    def describe(self) -> dict[str, Any]:
        return {"executor": "serial", "processes": 1}


class DaskExecutor:
    def __init__(self, client: Any, retries: int) -> None:
        self.client = client
        self.retries = retries

    def submit(self, fn: Callable[..., Any], *args: Any, key: str, priority: int = 0) -> Any:
        return self.client.submit(fn, *args, key=key, retries=self.retries, priority=priority, pure=False)

    def as_completed(self, handles: Sequence[Any]) -> Iterator[Any]:
        from distributed import as_completed

        yield from as_completed(list(handles))

    def describe(self) -> dict[str, Any]:
        import dask
        import distributed

        info = self.client.scheduler_info()
        workers = info.get("workers", {})
        return {"executor": "dask", "dask": dask.__version__, "distributed": distributed.__version__,
                "workers": len(workers), "threads": sum(int(w.get("nthreads", 0)) for w in workers.values())}


def default_cluster_shape(workers: int, threads: int) -> tuple[int, int]:
    """(workers, threads per worker) for a LocalCluster: by default one worker process per two
    cores, the cores shared out as threads."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = workers or max(1, cores // 2)
    t = threads or max(1, cores // n)
    return n, t


# Dask settings for a batch of CPU-bound tasks, applied to the clusters this module starts
# (and to the client and in-process scheduler). Measured on the 2-core dev machine: an idle
# 1-worker cluster burns 0.09 CPU-s per second with the defaults, 0.014 with these, and the
# same frames cost ~25 % more CPU inside a default worker than in a plain process; with these
# settings the difference is within noise. See docs/operations.md for external clusters.
JOB_DASK_CONFIG: dict[str, Any] = {
    # The live diagnostics (statistical profiler every 10 ms, event-loop tick every 20 ms,
    # system monitor) serve an interactive dashboard, not a nightly batch.
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "200ms",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
    # Keep the thread caps but not MALLOC_TRIM_THRESHOLD_: setting it freezes glibc's mmap
    # threshold at 128 KiB, so every decoded frame and blur buffer becomes a fresh mmap and
    # page-faults anew.
    "distributed.nanny.pre-spawn-environ": {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1},
}


@contextlib.contextmanager
def dask_client(scheduler: str | None, *, workers: int = 0, threads: int = 0,
                memory_limit: str = "auto", timeout_s: float = 30.0) -> Iterator[Any]:
    """A client of the scheduler at ``scheduler``, or of a new LocalCluster of processes."""
    import dask
    from distributed import Client, LocalCluster

    # Importing distributed applies its own logging config (INFO); keep it one notch below ours.
    logging.getLogger("distributed").setLevel(max(logging.getLogger().getEffectiveLevel() + 10, logging.WARNING))
    with dask.config.set(JOB_DASK_CONFIG):
        if scheduler:
            try:
                client = Client(scheduler, timeout=timeout_s)
            except OSError as e:
                raise PipelineError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
            try:
                yield client
            finally:
                client.close()
            return
        n, t = default_cluster_shape(workers, threads)
        # Dashboard on a free port (a fixed one clashes with other clusters on the machine).
        with LocalCluster(n_workers=n, threads_per_worker=t, processes=True, memory_limit=memory_limit,
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            log.info("local Dask cluster: %d workers x %d threads; dashboard %s", n, t, client.dashboard_link)
            yield client


# ---------------------------------------------------------------------------- results


@dataclass
class SessionOutcome:
    session_id: str
    source: str
    frames: int = 0
    published: int = 0
    failed: int = 0
    skipped: int = 0  # results reused from the work area (already done)
    kept: int = 0  # published images kept as they were: raw deleted on purpose (in published, skipped)
    kept_failed: int = 0  # failed this run, earlier publication kept (in published and failed)
    faces: int = 0
    plates: int = 0
    # Plate candidates a verifier vetoed (not blurred; pipeline.qadata); None: no verifier ran.
    plates_vetoed: int | None = None
    excluded: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (frame id, error)
    note: str | None = None  # why a session was not processed at all
    publish_dir: str | None = None
    manifest_sha256: str | None = None


@dataclass
class JobSummary:
    run_id: str
    out: str
    sessions: list[SessionOutcome]
    wall_s: float
    executor: dict[str, Any]

    def total(self, name: str) -> int:
        return sum(int(getattr(s, name)) for s in self.sessions)

    @property
    def excluded(self) -> int:
        return sum(sum(s.excluded.values()) for s in self.sessions)

    @property
    def processed(self) -> int:
        return self.total("published") + self.total("failed") - self.total("skipped") - self.total("kept_failed")

    @property
    def frames_per_s(self) -> float:
        return self.processed / self.wall_s if self.wall_s > 0 else 0.0

    def counts(self) -> dict[str, Any]:
        return {
            "sessions": len(self.sessions), "frames": self.total("frames"),
            "published": self.total("published"), "failed": self.total("failed"),
            "skipped": self.total("skipped"), "excluded": self.excluded,
            "faces": self.total("faces"), "plates": self.total("plates"),
        }


# ---------------------------------------------------------------------------- the job


@dataclass(frozen=True, slots=True)
class JobOptions:
    sessions: tuple[str, ...]
    out: str
    config: NightlyConfig
    config_path: str | None = None
    progress: bool = True
    threads: int = 0  # detector threads for the serial path (0 = config or all cores)


def expand_sessions(paths: Sequence[str]) -> list[str]:
    """Session folders from the arguments: a session itself, or a folder of sessions."""
    out: list[str] = []
    for p in paths:
        if is_session(p):
            out.append(p)
            continue
        local = local_path_of(p)
        if local is not None and local.is_dir():
            found = [str(s) for s in sorted(local.iterdir()) if (s / "session.json").is_file()]
            if found:
                out += found
                continue
        raise PipelineError(f"{p}: not a session (no session.json) and no sessions below it")
    seen: set[str] = set()
    return [x for x in out if not (x in seen or seen.add(x))]  # type: ignore[func-returns-value]


def config_zones(cfg: NightlyConfig) -> tuple[Callable[[float, float], bool] | None, str | None]:
    """The ``[publish] exclusion_zones`` test and the sha256 of the file it was read from (one
    read, so the hash is of the zones applied); (None, None) without zones. The one loader of
    the config's zones (the job, and ``request apply`` re-rendering as the job would)."""
    path = cfg.publish.exclusion_zones
    if path is None:
        return None, None
    from capture.errors import ZoneError
    from capture.zones import load_zones

    try:
        zones = load_zones(path)
    except ZoneError as e:  # names the file and the problem
        raise PipelineError(f"[publish] exclusion_zones {e}") from None
    return zones.contains, zones.sha256


def _notice(cfg: NightlyConfig) -> NoticeConfig:
    from pipeline.notice import notice_mismatch

    if not cfg.publish.notice.is_file():
        raise PipelineError(f"[publish] notice {cfg.publish.notice}: privacy notice config not found "
                            "(every published set carries its notice; e.g. --config configs/nightly.toml)")
    notice = load_config(cfg.publish.notice, NoticeConfig, kind="notice")
    why = notice_mismatch(notice, cfg.redact.redaction.method)
    if why:
        log.warning("%s: %s", cfg.publish.notice, why)
    return notice


@dataclass(frozen=True, slots=True)
class Prepared:
    """What is checked before any cluster starts: inputs, notice, zones, the output folder."""

    out: Store
    notice: NoticeConfig
    excluded_at: Callable[[float, float], bool] | None  # config zones and request zones
    sources: tuple[SessionSource, ...]
    config_zones: Callable[[float, float], bool] | None = None
    # sha256 of the zone files read: {"exclusion_zones_sha256": ..., "request_zones_sha256": ...}
    zone_files: Mapping[str, str | None] = field(default_factory=dict)


def prepare(opts: JobOptions) -> Prepared:
    """Validate the job's inputs and configs (usage errors, exit 2) before starting work."""
    cfg = opts.config
    out = Store(opts.out)
    key_path = str(cfg.decrypt.private_key) if cfg.decrypt.private_key else None
    sources = tuple(SessionSource(s, key_path) for s in expand_sessions(opts.sessions))
    seen: dict[str, str] = {}
    for src in sources:
        try:
            sid = src.reader(fresh=True).session_id
        except CaptureError:
            continue  # reported per session by run_job, like any unreadable session
        if sid in seen:
            raise PipelineError(f"{src.url} and {seen[sid]} are both session {sid}; they would publish "
                                "to the same folder")
        seen[sid] = src.url
    notice = _notice(cfg)
    cfg_zones, config_sha = config_zones(cfg)
    # Zones added by residents' requests (`streetveil request add --zone`, kept in the publish
    # tree under .governance/) apply to every later run as well (docs/governance.md).
    from pipeline.requests import either_zone, read_request_zones

    req_zones, req_sha = read_request_zones(out)
    excluded_at = either_zone(cfg_zones, req_zones)
    if key_path is not None and not Path(key_path).is_file():
        raise PipelineError(f"[decrypt] private_key {key_path}: file not found")
    if out.local is not None:
        try:
            out.local.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PipelineError(f"{out.local}: cannot create the publish folder: {e}") from None
    return Prepared(out, notice, excluded_at, sources, cfg_zones,
                    {"exclusion_zones_sha256": config_sha, "request_zones_sha256": req_sha})


def run_job(opts: JobOptions, executor: Executor, prepared: Prepared | None = None) -> JobSummary:
    """Redact and publish ``opts.sessions`` into ``opts.out`` with ``executor``."""
    t0 = time.monotonic()
    cfg = opts.config
    p = prepared or prepare(opts)
    out, notice, excluded_at, sources = p.out, p.notice, p.excluded_at, p.sources
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    spec = ModelSpec(cfg.redact, threads=opts.threads, config_key=redact_key(cfg.redact))
    carry = CarrySpec(cfg.publish.temporal_carry, cfg.publish.carry_expand)

    described = executor.submit(describe_model, spec, key=f"describe-model-{run_id}", priority=10).result()
    model_hash = described["model_hash"]
    run_rec = {
        "type": "run", "run_id": run_id, "time": audit.now_utc(), "who": audit.who(),
        "software": {"name": "streetveil", "version": _version(), "python": platform.python_version()},
        "executor": executor.describe(), "config_sha256": config_hash(cfg), "config_file": opts.config_path,
        "redact_config_key": spec.config_key, "model_hash": model_hash, "detectors": described["info"],
        "temporal_carry": {"frames": carry.frames, "expand": carry.expand},
        "exclusion_zones": str(cfg.publish.exclusion_zones) if cfg.publish.exclusion_zones else None,
        # Which zones decided what was left out: the config's file and the one residents'
        # requests built (.governance/exclusion-zones.geojson); None where there is none.
        **p.zone_files,
        "notice_version": notice.version,
    }
    append_index(out, [{**run_rec, "type": "run-start", "sessions": [s.url for s in sources]}])

    outcomes: list[SessionOutcome] = []
    plans: list[tuple[SessionPlan, TaskContext]] = []
    for src in sources:
        try:
            prev = _previous_records(out, src)
            plan = plan_session(src, batch_size=cfg.job.batch_size, excluded_at=excluded_at,
                                overrides=overrides_from(prev))
        except Exception as e:
            if isinstance(e, PipelineError | MemoryError):
                raise
            outcomes.append(SessionOutcome(session_id=Path(src.url).name, source=src.url,
                                           note=f"cannot read session: {e}"))
            continue
        if plan.frames and not plan.included and all(r == EXCLUDED_DELETED for _, r in plan.excluded):
            outcomes.append(SessionOutcome(session_id=plan.session_id, source=src.url, frames=len(plan.frames),
                                           note="raw frames purged: the published set is final"))
            continue
        ctx = TaskContext(source=src, work=out.child(f"{WORK_DIR}/{plan.session_id}"), model=spec,
                          model_hash=model_hash, carry=carry, extra_boxes=plan.extra_boxes,
                          unblur_areas=plan.unblur_areas, deleted=plan.deleted_ids, stored=stored_detections(out, prev, plan.deleted_ids))
        plans.append((plan, ctx))

    total = sum(len(p.included) for p, _ in plans)
    with _progress(opts.progress, total) as advance:
        # Render tasks: the batches with frames to publish; each needs the detections of the
        # batches around it (frames left out included: they are carry context).
        work: list[list[tuple[int, tuple[str, ...], tuple[int, ...]]]] = [
            [(b, *plan.window(b, carry.frames)) for b in range(len(plan.batches)) if plan.batch_included(b)]
            for plan, _ in plans]
        # Phase 1 for every session first, so workers stay busy across session boundaries; only
        # batches some render needs (a long run of left-out frames is not detected for nothing).
        det: list[dict[int, Any]] = []
        for si, (plan, ctx) in enumerate(plans):
            needed = sorted({j for _, _, need in work[si] for j in need})
            det.append({j: executor.submit(detect_batch, ctx, plan.batch_frames(j),
                                           key=f"detect-{plan.session_id}-{j}-{run_id}", priority=-si)
                        for j in needed})
        renders: dict[int, tuple[Any, int]] = {}  # id(handle) -> (handle, session)
        for si, (plan, ctx) in enumerate(plans):
            for b, ids, need in work[si]:
                h = executor.submit(render_batch, ctx, plan.batch_included(b), ids, *[det[si][j] for j in need],
                                    key=f"render-{plan.session_id}-{b}-{run_id}", priority=-si)
                renders[id(h)] = (h, si)
        pending = {si: len(work[si]) for si in range(len(plans))}
        results: dict[int, list[FrameResult]] = {si: [] for si in range(len(plans))}

        def publish(si: int, res: list[FrameResult]) -> SessionOutcome:
            plan, ctx = plans[si]
            done = [o.session_id for o in outcomes]

            def rerender(frames: Sequence[FrameRecord], fresh: Mapping[str, Override]) -> list[FrameResult]:
                # Frames a request changed during the run, with the same neighbourhood and
                # detections, and the request boxes and areas read under the publish lock.
                c = dataclasses.replace(ctx, extra_boxes={**ctx.extra_boxes, **{k: v.boxes for k, v in fresh.items()}},
                                        unblur_areas={**ctx.unblur_areas, **{k: v.unblur for k, v in fresh.items()}})
                hs = []
                for rec in frames:
                    ids, need = plan.frame_window(rec.frame_id, carry.frames)
                    for j in need:
                        if j not in det[si]:
                            det[si][j] = executor.submit(detect_batch, ctx, plan.batch_frames(j),
                                                         key=f"detect-{plan.session_id}-{j}-{run_id}", priority=10)
                    hs.append(executor.submit(render_batch, c, (rec,), ids, *[det[si][j] for j in need],
                                              key=f"rerender-{plan.session_id}-{rec.frame_id}-{run_id}", priority=10))
                return [r for h in hs for r in _result(h, done=done)]

            return _publish(out, plan, res, run_rec, notice, p.config_zones,
                            context=_context(plan, det[si], done=done), rerender=rerender)

        for si, n in pending.items():
            if n == 0:
                outcomes.append(publish(si, []))
        for h in executor.as_completed([h for h, _ in renders.values()]):
            si = renders[id(h)][1]
            batch_results = _result(h, done=[o.session_id for o in outcomes])
            results[si] += batch_results
            advance(len(batch_results))
            pending[si] -= 1
            if pending[si] == 0:
                outcomes.append(publish(si, results.pop(si)))
    summary = JobSummary(run_id=run_id, out=opts.out, sessions=outcomes, wall_s=time.monotonic() - t0,
                         executor=executor.describe())
    append_index(out, [{"type": "run-end", "run_id": run_id, "time": audit.now_utc(),
                        "counts": summary.counts(), "wall_s": round(summary.wall_s, 3)}])
    return summary


def _result(h: Any, *, done: list[str]) -> Any:
    """A task's result; the cluster failing under the job (a task that keeps killing workers,
    a lost scheduler) ends the run with exit 1 and says what was already published."""
    try:
        return h.result()
    except (PipelineError, CaptureError, RedactError):
        raise
    except Exception as e:
        name = type(e).__name__
        if name in ("KilledWorker", "CommClosedError", "CancelledError", "FutureCancelledError", "TimeoutError"):
            raise ItemsFailed(f"the Dask cluster failed under the job ({name}: {e}); sessions published so far: "
                              f"{', '.join(done) or 'none'}; rerun to finish (finished frames are kept)") from e
        raise


def stored_detections(out: Store, records: Sequence[Mapping[str, Any]],
                       ids: frozenset[str]) -> dict[str, DetResult]:
    """The own detections the session's current publication keeps (pipeline.qadata) for the
    frames ``ids`` (raw deleted on purpose): their carry context once the work cache is gone."""
    ref = qadata.named(records) if ids else None
    if ref is None:
        return {}
    entries, why = qadata.read(out.read_bytes, ref)
    if entries is None:
        log.warning("%s; frames whose raw file was deleted have only the work cache as carry context", why)
        return {}
    kept: dict[str, DetResult] = {}
    for fid in sorted(ids & entries.keys()):
        e = entries[fid]
        xyxy, score, cls = qadata.own_detections(e)
        kept[fid] = DetResult(frame_id=fid, key=str(e.get("detect_key") or ""), status="ok",
                              xyxy=tuple((b[0], b[1], b[2], b[3]) for b in xyxy), score=tuple(score),
                              cls=tuple(cls), width=e.get("width"), height=e.get("height"), cached=True)
    return kept


def _context(plan: SessionPlan, det: Mapping[int, Any], *, done: list[str]) -> dict[str, str]:
    """For each frame left out of the publication: did its detections take part in its
    neighbours' carry? "ok", "failed: <why>", "unavailable" (raw deleted, nothing kept) or
    "not needed" (no published frame within reach)."""
    out: dict[str, str] = {}
    results: dict[int, Mapping[str, Any]] = {}
    batch_of = {r.frame_id: b for b in range(len(plan.batches)) for r in plan.batch_frames(b)}
    for rec, _ in plan.excluded:
        j = batch_of[rec.frame_id]
        if j not in det:
            out[rec.frame_id] = "not needed"
            continue
        if j not in results:
            results[j] = _result(det[j], done=done)
        d = results[j][rec.frame_id]
        out[rec.frame_id] = d.status if d.status != "failed" else f"failed: {d.error}"
    return out


def _version() -> str:
    from capture import __version__

    return __version__


def _previous_records(out: Store, src: SessionSource) -> list[dict[str, Any]]:
    sid = src.reader().session_id
    local = out.local
    if local is not None:
        return audit.read_records(local / sid / audit.AUDIT_FILE)
    import json

    try:
        data = out.read_bytes(f"{sid}/{audit.AUDIT_FILE}")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in data.splitlines() if line.strip()]


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("redacting"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                  transient=False) as prog:
        task = prog.add_task("frames", total=total)
        yield lambda n: prog.advance(task, n)


# ---------------------------------------------------------------------------- publishing


KEPT_NOTE = "previous publication kept"


def _frame_record(rec: FrameRecord, **kw: Any) -> dict[str, Any]:
    """A ``frame`` audit record. It never holds a position: the chain is published with the
    session (PUBLISH_DIR/<session>/audit.jsonl), and a frame's position next to its later
    removal (takedown, zone) would map what residents asked to keep out. Time, ids and hashes
    link it to the session's frames.jsonl, which operations keep (docs/publish-format.md)."""
    return {"type": "frame", "frame_id": rec.frame_id, "capture_time": format_time(rec.time),
            "raw_sha256": rec.sha256, **kw}


# Re-renders frames of one session with new request boxes or unblur areas while the publish
# lock is held: (frames, {frame id: its overrides}) -> their results.
Rerender = Callable[[Sequence[FrameRecord], Mapping[str, Override]], list[FrameResult]]


def _publish(out: Store, plan: SessionPlan, results: list[FrameResult], run_rec: dict[str, Any],
             notice: NoticeConfig, cfg_zones: Callable[[float, float], bool] | None, *,
             context: Mapping[str, str], rerender: Rerender) -> SessionOutcome:
    """Build and swap in the session's new version with its audit records.

    What to publish was decided at planning, before the session's lock was taken; a request
    applied since (``streetveil request apply`` publishes through the same lock) must not be
    undone. So, under the lock, the request state is read again from the session's chain and
    the request zones file, and a frame planned for publication is left out when a request
    removed it or a requested zone now covers it, and re-rendered with its new blur boxes
    (``rerender``); a frame that cannot be re-rendered is not published by this run (failed,
    with the reason), and the next run completes it.
    """
    from pipeline.plan import exclusion
    from pipeline.requests import either_zone, read_request_zones
    from pipeline.verify import audited_outputs

    sid = plan.session_id
    by_id = {r.frame_id: r for r in results}
    oc = SessionOutcome(session_id=sid, source=plan.source.url, frames=len(plan.frames))
    method = run_rec["detectors"].get("method")
    work = out.child(f"{WORK_DIR}/{sid}")
    with PublishTxn.open(out, sid) as txn:
        chain = txn.records()
        known = audited_outputs(chain)
        overrides = overrides_from(chain)
        req_zones, req_sha = read_request_zones(out)
        excluded_at = either_zone(cfg_zones, req_zones)
        session_run = {**run_rec, "session_id": sid, "source": plan.source.url,
                       "session_notice_version": plan.doc.get("notice_version"),
                       "request_zones_sha256": req_sha}  # the zones this publication obeys
        records: list[dict[str, Any]] = [session_run]
        late_out: list[tuple[FrameRecord, str]] = []
        stale: list[FrameRecord] = []
        for rec in plan.included:
            ov = overrides.get(rec.frame_id)
            why = exclusion(rec, ov, excluded_at)
            if why is not None:
                late_out.append((rec, why))
            elif ((ov.boxes, ov.unblur) if ov else ((), ())) != (tuple(plan.extra_boxes.get(rec.frame_id, ())),
                                                                 tuple(plan.unblur_areas.get(rec.frame_id, ()))):
                stale.append(rec)
        late_note = "a request changed this frame while the run was rendering it"
        if stale:
            fresh = {r.frame_id: overrides[r.frame_id] for r in stale}
            for res in rerender(stale, fresh):
                by_id[res.frame_id] = res
            for r in stale:
                res = by_id[r.frame_id]
                if res.status != "ok":
                    by_id[r.frame_id] = FrameResult(frame_id=r.frame_id, key=res.key, status="failed",
                                                    error=f"{late_note}; re-rendering it with the new request "
                                                          f"failed ({res.error}); the next run retries")
        late_ids = {r.frame_id for r, _ in late_out}
        stale_ids = {r.frame_id for r in stale}
        for rec in plan.included:
            if rec.frame_id in late_ids:
                continue
            res = by_id[rec.frame_id]
            late = {"note": f"{late_note}: re-rendered at publication"} if rec.frame_id in stale_ids else {}
            if res.status == "ok" and res.image and res.sha256:
                feature = frame_feature(rec, session_id=sid, image=image_path(rec.frame_id), sha256=res.sha256,
                                        faces=res.faces, plates=res.plates, width=res.width, height=res.height)
                qa = qadata.entry(rec.frame_id, image_sha256=res.sha256, width=res.width, height=res.height,
                                  detect_key=res.det_key, boxes=res.boxes,
                                  vetoed=res.vetoed, unblurred=res.unblurred)
                try:
                    if work.local is not None:
                        txn.put_image(rec.frame_id, feature, source=work.local / res.image, sha256=res.sha256, qa=qa)
                    else:
                        txn.put_image(rec.frame_id, feature, data=work.read_bytes(res.image), sha256=res.sha256,
                                      qa=qa)
                except (PublishError, OSError) as e:
                    res = FrameResult(frame_id=rec.frame_id, key=res.key, status="failed",
                                      error=f"publish: {e}")
            if res.status != "ok":
                oc.failed += 1
                # Fail closed means this run's render is not published, not that an image an
                # earlier run published (and the audit chain vouches for) is taken down: a raw
                # frame gone bad or a new config that fails on it would otherwise make a
                # rerun silently shrink the published set. Only requests and zones remove
                # published frames (handled above, before this loop).
                if txn.keep_from_published(rec.frame_id):
                    props = txn.features[rec.frame_id]["properties"]
                    oc.published += 1
                    oc.kept_failed += 1
                    oc.faces += int(props.get("faces", 0))
                    oc.plates += int(props.get("plates", 0))
                    oc.failures.append((rec.frame_id, f"{res.error or 'unknown error'} ({KEPT_NOTE})"))
                    records.append(_frame_record(rec, status="failed", error=res.error, output_sha256=None,
                                                 kept_output_sha256=props.get("sha256"), note=KEPT_NOTE))
                    continue
                oc.failures.append((rec.frame_id, res.error or "unknown error"))
                records.append(_frame_record(rec, status="failed", error=res.error, output_sha256=None))
                continue
            oc.published += 1
            oc.skipped += int(res.cached)
            oc.faces += res.faces
            oc.plates += res.plates
            vetoed = {} if res.vetoed is None else {"plates_vetoed": len(res.vetoed)}
            unblurred = {"plates_unblurred": len(res.unblurred)} if res.unblurred else {}
            if vetoed:
                oc.plates_vetoed = (oc.plates_vetoed or 0) + vetoed["plates_vetoed"]
            if res.sha256 in known and not late:
                continue  # already in the chain from an earlier publication
            records.append(_frame_record(
                rec, status="ok", error=None, output_sha256=res.sha256, output_size=res.size,
                image=image_path(rec.frame_id), faces=res.faces, plates=res.plates,
                faces_carried=res.faces_carried, plates_carried=res.plates_carried, request_boxes=res.extra,
                method=method, cached=res.cached, **vetoed, **unblurred, **late))
        for rec, why in late_out:
            oc.excluded[why] = oc.excluded.get(why, 0) + 1
            done_res = by_id[rec.frame_id]
            records.append(_frame_record(rec, status="excluded", reason=why,
                                         context_detection="ok" if done_res.status == "ok"
                                         else f"failed: {done_res.error}",
                                         note=f"{late_note}: left out at publication"))
        for rec, why in plan.excluded:
            # Raw deleted on purpose: it cannot be rendered again, so its published image (if
            # the current version has one, and no request or zone since says otherwise) stays
            # as it is, as do its QA detections: the carry context of its neighbours.
            if why == EXCLUDED_DELETED and exclusion(rec, overrides.get(rec.frame_id), excluded_at) is None \
                    and txn.keep_from_published(rec.frame_id):
                props = txn.features[rec.frame_id]["properties"]
                oc.published += 1
                oc.skipped += 1
                oc.kept += 1
                oc.faces += int(props.get("faces", 0))
                oc.plates += int(props.get("plates", 0))
                continue
            oc.excluded[why] = oc.excluded.get(why, 0) + 1
            # ``context_detection`` says whether its detections were carried to its neighbours.
            records.append(_frame_record(rec, status="excluded", reason=why,
                                         context_detection=context.get(rec.frame_id, "not needed")))
        track = track_feature(plan.source.reader().fixes(), session_id=sid, frames=plan.frames, exclude=excluded_at)
        txn.write_file(TRACK_GEOJSON, dumps(track))
        facts = SessionFacts(session_id=sid, captured_span=_span(plan.frames), published=oc.published,
                             session_notice_version=str(plan.doc.get("notice_version", "unknown")),
                             method=str(method or "blur"))
        txn.write_file("notice.html", render_html(notice, facts).encode())
        txn.write_file("notice.txt", render_text(notice, facts).encode())
        counts = {"frames": oc.frames, "published": oc.published, "failed": oc.failed, "skipped": oc.skipped,
                  "faces": oc.faces, "plates": oc.plates,
                  "excluded_zone": oc.excluded.get(EXCLUDED_ZONE, 0),
                  "excluded_no_position": oc.excluded.get(EXCLUDED_NO_POSITION, 0),
                  "excluded_deleted": oc.excluded.get(EXCLUDED_DELETED, 0),
                  "removed_by_request": oc.excluded.get(EXCLUDED_REQUEST, 0),
                  "kept_raw_deleted": oc.kept, "kept_failed": oc.kept_failed}
        committed = txn.commit(records, {"run_id": run_rec["run_id"], "counts": counts},
                               index={"run_id": run_rec["run_id"], "counts": counts})
    oc.manifest_sha256 = committed.manifest_sha256
    oc.publish_dir = out.display(sid)
    return oc


def _span(frames: Sequence[FrameRecord]) -> str:
    if not frames:
        return "no frames"
    return f"{format_time(frames[0].time)} to {format_time(frames[-1].time)}"


# ---------------------------------------------------------------------------- entry points


def run(opts: JobOptions, *, scheduler: str | None = None, workers: int = 0, threads_per_worker: int = 0) -> JobSummary:
    """The nightly job on Dask (``streetveil run``)."""
    cfg = opts.config
    prepared = prepare(opts)
    with dask_client(scheduler or cfg.job.scheduler, workers=workers or cfg.job.workers,
                     threads=threads_per_worker or cfg.job.threads_per_worker,
                     memory_limit=cfg.job.memory_limit) as client:
        return run_job(opts, DaskExecutor(client, cfg.job.retries), prepared)


def run_serial(opts: JobOptions) -> JobSummary:
    """The same job without Dask, in this process (``streetveil redact SESSION_DIR``)."""
    return run_job(opts, SerialExecutor())
