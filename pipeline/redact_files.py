"""``streetveil redact`` on loose image files and folders: the file-writing driver around the
Redactor, with I/O overlapped.

Output layout (like ``cp -r``): a file input is written as ``OUT/<its name>``, a folder input
as ``OUT/<folder name>/<path inside it>``; names and formats are kept. Two inputs that would
write the same output path are a usage error. A failed image is reported and not written.

Several images are processed at once, each in its own thread (OpenCV, Pillow and
onnxruntime release the GIL), so decoding and encoding overlap inference.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from capture.fsutil import atomic_write_bytes, atomic_write_text
from redact.errors import ImageError, RedactError, is_fatal
from redact.imageio import SUFFIXES, DecodedImage
from redact.types import Detections

if TYPE_CHECKING:
    from redact.config import RedactConfig
    from redact.engine import Redactor

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ImageJob:
    src: Path
    rel: str  # output path relative to the output folder (also the report's "image")


@dataclass
class BatchSummary:
    images: int = 0
    ok: int = 0
    failed: int = 0
    faces: int = 0
    plates: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


# Images in flight on one GPU: scripts/check_gpu.py's batch loop on an H100 with 16 cores (74
# 1080p frames, 2026-11-27): 1 -> 21.3 frames/s, 2 -> 30.5, 4 -> 34.5, 8 -> 33.0 (on an earlier
# lease 16 with the same data: 27.4, below 4's 31.3). Memory is not what limits it: one process
# holds about 1.3 GB with 4 in flight, 1.9 GB with 8 (H200, docs/operations.md).
GPU_IMAGES_AT_ONCE = 4


def thread_layout(detector_threads: int, runtime: str, device: str, threads: int | None) -> tuple[int, int]:
    """(threads per inference, images at once) for ``threads`` CPUs (None: config, else all).

    On CPU, N single-threaded inferences side by side beat one N-threaded inference for
    batch throughput (no intra-op synchronisation; decode/encode overlap). On a GPU the
    network is no longer the cost: one image at a time leaves it idle while that image is
    decoded, blurred and encoded, so ``GPU_IMAGES_AT_ONCE`` images share it (more only
    contend for Python's lock in the host-side steps).
    """
    from redact.centernet import default_threads

    n = threads or detector_threads or default_threads()
    if runtime == "torch" and device != "cpu":
        return n, min(GPU_IMAGES_AT_ONCE, n)
    return 1, n


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in SUFFIXES and not p.name.startswith(".")


def collect_inputs(inputs: Sequence[Path], out_dir: Path | None = None) -> list[ImageJob]:
    """Image files named or found (recursively, sorted) under the inputs; see the module doc.

    Files under ``out_dir`` are skipped, so writing the output inside an input folder works.
    """
    jobs: list[ImageJob] = []
    seen: dict[str, Path] = {}
    out_abs = out_dir.resolve() if out_dir is not None else None
    for inp in inputs:
        if inp.is_dir():
            base = inp.resolve()
            files: Iterator[Path] = (p for p in sorted(base.rglob("*")) if p.is_file() and _is_image(p))
            for p in files:
                if out_abs is not None and out_abs in p.parents:
                    continue
                jobs.append(ImageJob(p, (Path(base.name) / p.relative_to(base)).as_posix()))
        elif inp.is_file():
            jobs.append(ImageJob(inp, inp.name))
        else:
            raise RedactError(f"{inp}: no such file or folder")
    for j in jobs:
        if j.rel in seen and seen[j.rel] != j.src.resolve():
            raise RedactError(f"two inputs would both be written as {j.rel}: {seen[j.rel]} and {j.src}")
        seen[j.rel] = j.src.resolve()
        if out_abs is not None and (out_abs / j.rel).resolve() == seen[j.rel]:
            # The original would be replaced by its redacted copy: choose another --out.
            raise RedactError(f"{j.src}: the output {out_abs / j.rel} is this input itself; "
                              "give an --out folder that does not hold the inputs")
    return jobs


def _read_decode(redactor: Redactor, job: ImageJob) -> DecodedImage:
    try:
        data = job.src.read_bytes()
    except OSError as e:
        raise ImageError(f"{job.rel}: cannot read: {e.strerror or e}") from None
    return redactor.decode(data, name=job.rel)


def _render_write(redactor: Redactor, image: DecodedImage, dets: Detections, dst: Path) -> None:
    data = redactor.render(image, dets)
    dst.parent.mkdir(parents=True, exist_ok=True)
    # Not fsynced per image: a rerun rewrites it; the report is what records completion.
    atomic_write_bytes(dst, data, durable=False)


def redact_files(
    redactor: Redactor,
    jobs: Sequence[ImageJob],
    out_dir: Path,
    *,
    on_done: Callable[[dict[str, Any]], None] | None = None,
    workers: int = 1,
) -> tuple[BatchSummary, list[dict[str, Any]]]:
    """Redact every job into ``out_dir``; returns the summary and one report record per image
    (DESIGN.md report format), in input order. Per-image errors are records, not exceptions.

    ``workers`` images are processed at once, each end to end (read, decode, detect, render,
    write) in its own thread on the shared Redactor (onnxruntime sessions are safe to call
    concurrently). With a Redactor built for one thread per inference this is the
    throughput-friendly layout: one image's decoding and encoding overlap another's
    inference, and no inference waits for a second, descheduled intra-op thread.
    """
    summary = BatchSummary()
    records: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def process(job: ImageJob) -> tuple[Detections | None, str | None]:
        try:
            image = _read_decode(redactor, job)
            dets = redactor.detect(image)
            _render_write(redactor, image, dets, out_dir / job.rel)
            return dets, None
        except Exception as e:  # per-image errors are data; the batch and its report go on
            if is_fatal(e):
                raise
            return None, _message(job, e)

    def finish(job: ImageJob, dets: Detections | None, error: str | None) -> None:
        rec = {
            "image": job.rel,
            "detections": dets.to_json() if dets is not None and error is None else [],
            "status": "failed" if error else "ok",
            "error": error,
        }
        summary.images += 1
        if error:  # printed once, by the caller, from summary.failures
            summary.failed += 1
            summary.failures.append((job.rel, error))
        else:
            summary.ok += 1
            assert dets is not None
            summary.faces += dets.count("face")
            summary.plates += dets.count("plate")
        records.append(rec)
        if on_done:
            on_done(rec)

    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sv-redact")
    pending: deque[tuple[ImageJob, Future[tuple[Detections | None, str | None]]]] = deque()
    it = iter(jobs)
    try:
        while True:
            # Bounded look-ahead: at most 2 images per worker decoded or in flight.
            while len(pending) < 2 * max(1, workers):
                job = next(it, None)
                if job is None:
                    break
                pending.append((job, pool.submit(process, job)))
            if not pending:
                break
            job, fut = pending.popleft()
            finish(job, *fut.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        summary.seconds = time.perf_counter() - t0
    return summary, records


def _message(job: ImageJob, e: BaseException) -> str:
    if isinstance(e, ImageError):
        msg = str(e)
    elif isinstance(e, OSError):
        msg = f"{job.rel}: {e.strerror or e}"
    else:  # unforeseen: keep the type, it is what a bug report needs
        msg = f"{job.rel}: {type(e).__name__}: {e}"
    return msg if msg.startswith(job.rel) else f"{job.rel}: {msg}"


def write_report(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """The report as JSON Lines, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in records)
    atomic_write_text(path, text)


@dataclass(frozen=True, slots=True)
class RedactRun:
    """What ``redact_paths`` did: the counts and what ran (Redactor.info, model hash)."""

    summary: BatchSummary
    info: dict[str, Any]
    model_hash: str


def redact_paths(
    inputs: Sequence[Path],
    out_dir: Path,
    config: RedactConfig,
    *,
    report: Path | None = None,
    threads: int | None = None,
    on_start: Callable[[dict[str, Any], int], None] | None = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> RedactRun:
    """``streetveil redact INPUT... --out DIR``: collect the images, load the detectors once,
    redact every image into ``out_dir`` and write the report (if asked).

    ``on_start(info, total)`` is called once the detectors are loaded; ``on_done(record)``
    after each image. With ``report``, the run record goes beside it (``run_record_path``). Per-image failures are in the summary; a usage problem (no images,
    colliding outputs, an output that is an input) raises RedactError before anything is written.
    """
    from redact.engine import Redactor

    jobs = collect_inputs(list(inputs), out_dir)
    if not jobs:
        raise RedactError("no images found in the inputs (" + ", ".join(sorted(s.lstrip(".") for s in SUFFIXES))
                          + ")")
    d = config.detector
    per_inference, workers = thread_layout(d.threads, d.runtime, d.device, threads)
    redactor = Redactor(config, threads=per_inference)
    if on_start:
        on_start(redactor.info, len(jobs))
    out_dir.mkdir(parents=True, exist_ok=True)
    summary, records = redact_files(redactor, jobs, out_dir, on_done=on_done, workers=workers)
    if report is not None:
        write_report(report, records)
        write_run_record(run_record_path(report), summary, redactor, config)
    return RedactRun(summary, redactor.info, redactor.model_hash)


def run_record_path(report: Path) -> Path:
    """``REPORT.jsonl`` → ``REPORT.run.json`` beside it."""
    return report.with_name(report.stem + ".run.json")


def write_run_record(path: Path, summary: BatchSummary, redactor: Redactor, config: RedactConfig) -> None:
    """What ran, beside the per-image report (like the nightly job's run record): counts,
    the config hash, the model hash and Redactor.info (detectors and weights hashes, the
    thresholds in effect, the measured recall of this setup)."""
    from pipeline.config import config_hash

    rec = {
        "type": "run", "images": summary.images, "ok": summary.ok, "failed": summary.failed,
        "faces": summary.faces, "plates": summary.plates, "seconds": round(summary.seconds, 3),
        "config_sha256": config_hash(config), "model_hash": redactor.model_hash, "detectors": redactor.info,
    }
    atomic_write_text(path, json.dumps(rec, indent=2, ensure_ascii=False) + "\n")

