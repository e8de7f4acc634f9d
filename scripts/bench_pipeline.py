#!/usr/bin/env python
"""Benchmark the nightly job: frames/s of the serial path and of the Dask job with 1 and 2
local worker processes (1 thread each), the scaling, and the Dask overhead.

    python scripts/bench_pipeline.py [--frames 24] [--repeat 3]

Every measured run starts from an empty publish folder (no cached results) on the same
synthetic session. Both clusters are started first and every process has its detectors
loaded (a warm-up run), so the numbers compare steady-state processing: read, verify,
decode, detect, carry, render, EXIF, write, publish. The modes run in rotation, ``--repeat``
rounds, and medians are reported, so that load from other processes on a shared machine hits
every mode alike. Besides wall time, the CPU seconds of all processes involved (client,
in-process scheduler, workers) are reported: on a busy machine they are the steadier measure
of the work Dask adds. Dask overhead = Dask (1 worker x 1 thread) / serial (1 thread) - 1;
target <= 10 %.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import NightlyConfig, load_config
from pipeline.job import DaskExecutor, JobOptions, dask_client, run_job, run_serial
from pipeline.sample import make_sample_session

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "nightly.toml"


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _measure(run: Callable[[], Any], clients: list[Any]) -> tuple[float, float, int]:
    """(wall s, CPU s of this process and the workers, frames) of one run."""
    def workers_cpu() -> float:
        return sum(sum(c.run(_cpu).values()) for c in clients)

    c0, w0, t0 = _cpu(), workers_cpu(), time.perf_counter()
    s = run()
    wall = time.perf_counter() - t0
    cpu = _cpu() - c0 + workers_cpu() - w0
    c = s.counts()
    if c["failed"]:
        raise SystemExit(f"{c['failed']} frames failed: {s.sessions[0].failures[:3]}")
    return wall, cpu, c["published"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--repeat", type=int, default=3, help="rounds over all modes; medians are reported")
    args = ap.parse_args()
    cfg = load_config(CONFIG, NightlyConfig, kind="nightly")
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    session = make_sample_session(tmp / "sessions", frames=args.frames)
    warm = make_sample_session(tmp / "warm", frames=4, session_id="warmup")
    counter = iter(range(10**6))

    def opts(src: Path, **kw: Any) -> JobOptions:
        return JobOptions(sessions=(str(src),), out=str(tmp / f"out{next(counter)}"), config=cfg,
                          progress=False, **kw)

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; session: "
          f"{args.frames} frames 1280x720; median of {args.repeat} round(s)", flush=True)
    startup: dict[int, float] = {}
    clients: dict[int, Any] = {}
    stack = contextlib.ExitStack()
    for n in (1, 2):  # the job's own cluster set-up (pipeline.job.dask_client), 1 thread per worker
        t = time.perf_counter()
        client = stack.enter_context(dask_client(None, workers=n, threads=1))
        client.wait_for_workers(n)
        startup[n] = time.perf_counter() - t
        clients[n] = client
        for _ in range(2 * n):  # warm every worker: detectors loaded, first inferences done
            run_job(opts(warm), DaskExecutor(client, retries=0))
    run_serial(opts(warm, threads=1))
    modes: dict[str, Callable[[], tuple[float, float, int]]] = {
        "serial, 1 thread": lambda: _measure(lambda: run_serial(opts(session, threads=1)), []),
        "dask, 1 worker x 1 thread": lambda: _measure(
            lambda: run_job(opts(session), DaskExecutor(clients[1], retries=0)), [clients[1]]),
        "dask, 2 workers x 1 thread": lambda: _measure(
            lambda: run_job(opts(session), DaskExecutor(clients[2], retries=0)), [clients[2]]),
    }
    samples: dict[str, list[tuple[float, float, int]]] = {m: [] for m in modes}
    try:
        for r in range(args.repeat):
            for name, fn in modes.items():
                samples[name].append(fn())
                w, c, _ = samples[name][-1]
                print(f"  round {r + 1}: {name:28} wall {w:6.2f} s  cpu {c:6.2f} s", flush=True)
    finally:
        stack.close()
    med = {m: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v), v[0][2])
           for m, v in samples.items()}
    print(f"\n{'mode':28} {'frames':>6} {'wall s':>7} {'frames/s':>9} {'CPU s/frame':>12}")
    for name, (wall, cpu, frames) in med.items():
        print(f"{name:28} {frames:6d} {wall:7.2f} {frames / wall:9.2f} {cpu / frames:12.3f}")
    s, d1, d2 = med["serial, 1 thread"], med["dask, 1 worker x 1 thread"], med["dask, 2 workers x 1 thread"]
    print(f"Dask overhead, 1 worker vs serial: wall {100 * (d1[0] / s[0] - 1):+.1f} %, "
          f"CPU {100 * (d1[1] / s[1] - 1):+.1f} %  (target <= 10 %)")
    print(f"scaling 1 -> 2 workers: x{d1[0] / d2[0]:.2f} frames/s on {os.cpu_count()} cores "
          f"(cluster start-up, not included: {startup[1]:.1f} s / {startup[2]:.1f} s); "
          f"load average at end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
