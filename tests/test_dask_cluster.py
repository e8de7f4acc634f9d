"""The nightly job on a real multi-process Dask cluster: a `dask scheduler` and two `dask
worker` processes on loopback, started here. A worker killed mid-run and a client killed
mid-run must not lose or duplicate anything, nor leave a partial file in the publish tree."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import CONFIGS, JOB_FRAMES, ROOT, run_cli

from pipeline import audit

NIGHTLY = str(CONFIGS / "nightly.toml")
DASK = str(Path(sys.executable).with_name("dask"))
# Small tasks, so that a kill lands while work is still queued.
ENV = {"STREETVEIL_NIGHTLY__JOB__BATCH_SIZE": "2"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kill(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
    p.wait(30)


@dataclass
class Cluster:
    address: str
    logs: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(self, *args: str, name: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen([DASK, *args], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                             start_new_session=True)
        log.close()
        self.procs.append(p)
        return p

    def start_worker(self) -> None:
        n = len(self.workers)
        self.workers.append(self.spawn("worker", self.address, "--nthreads", "1", "--nworkers", "1",
                                       "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "3GiB",
                                       "--name", f"w{n}", name=f"worker{n}"))

    def alive_workers(self) -> int:
        from distributed import Client

        with Client(self.address, timeout=30) as c:
            return len(c.scheduler_info()["workers"])

    def wait_for_workers(self, n: int, timeout: float = 90) -> None:
        from distributed import Client

        with Client(self.address, timeout=30) as c:
            c.wait_for_workers(n, timeout=timeout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    port = _free_port()
    cl = Cluster(f"tcp://127.0.0.1:{port}", tmp_path_factory.mktemp("dask-logs"))
    try:
        cl.spawn("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard", name="scheduler")
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("dask scheduler did not start") from None
                time.sleep(0.2)
        cl.start_worker()
        cl.start_worker()
        cl.wait_for_workers(2)
        yield cl
    finally:
        for p in cl.procs:
            _kill(p)


def _client(session: Path, out: Path, cluster: Cluster) -> subprocess.Popen[bytes]:
    env = dict(os.environ, **ENV)
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", str(session), "--out", str(out), "--scheduler", cluster.address,
         "--config", NIGHTLY, "--no-progress"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _count(d: Path, pattern: str) -> int:
    return len(list(d.glob(pattern))) if d.is_dir() else 0


def _wait_for(pred, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"client ended before the kill point: {out.decode()}{err.decode()}")
        if time.monotonic() > deadline:
            raise AssertionError("kill point not reached in time")
        time.sleep(0.02)


def _images(sdir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((sdir / "images").iterdir())}


def test_worker_killed_mid_run(cluster: Cluster, job_session: Path, serial_publication: Path, tmp_path: Path) -> None:
    out = tmp_path / "pub"
    work = out / ".work" / job_session.name
    proc = _client(job_session, out, cluster)
    try:
        _wait_for(lambda: _count(work / "det", "*.json") >= 1, proc)
        victim = cluster.workers[0]
        _kill(victim)
        rendered_at_kill = _count(work / "out", "*.json")
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        _kill(proc)
    assert rendered_at_kill < JOB_FRAMES, "the job finished before the worker was killed"
    assert proc.returncode == 0, stdout.decode() + stderr.decode()
    assert f"published {JOB_FRAMES}/{JOB_FRAMES}".encode() in stdout
    assert cluster.alive_workers() == 1
    r = run_cli("audit", "verify", str(out))
    assert r.returncode == 0, r.stderr
    assert _images(out / job_session.name) == _images(serial_publication)


def test_client_killed_mid_run_then_rerun(cluster: Cluster, job_session: Path, serial_publication: Path,
                                          tmp_path: Path) -> None:
    if cluster.alive_workers() < 2:
        cluster.start_worker()
        cluster.wait_for_workers(2)
    out = tmp_path / "pub"
    work = out / ".work" / job_session.name
    proc = _client(job_session, out, cluster)
    try:
        _wait_for(lambda: _count(work / "det", "*.json") >= 2, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        _kill(proc)
    # Nothing half-published: no session folder, no temporary files outside the work area.
    assert not (out / job_session.name).exists()
    visible = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                     if p.is_file() and p.relative_to(out).parts[0] not in (".work", ".locks"))
    assert visible == ["audit-index.jsonl"]  # the run-start record only
    time.sleep(1.0)  # let the scheduler forget the dead client's tasks
    r = subprocess.run([sys.executable, "-m", "pipeline", "run", str(job_session), "--out", str(out),
                        "--scheduler", cluster.address, "--config", NIGHTLY, "--no-progress"],
                       cwd=ROOT, env=dict(os.environ, **ENV), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    sdir = out / job_session.name
    # The same manifest (so the same bytes of every file) as a clean run, no duplicates.
    assert (sdir / "manifest.json").read_bytes() == (serial_publication / "manifest.json").read_bytes()
    assert _images(sdir) == _images(serial_publication)
    recs = audit.read_records(sdir / "audit.jsonl")
    ok = [x["frame_id"] for x in recs if x.get("type") == "frame" and x.get("status") == "ok"]
    assert sorted(ok) == [f"{i:06d}" for i in range(1, JOB_FRAMES + 1)]
    assert run_cli("audit", "verify", str(out)).returncode == 0
    index = audit.read_records(out / "audit-index.jsonl")
    assert [x["type"] for x in index].count("session-published") == 1
    assert json.loads((sdir / "manifest.json").read_bytes())["session_id"] == job_session.name
    shutil.rmtree(out / ".work")  # the work area is a cache: verify does not need it
    assert run_cli("audit", "verify", str(out)).returncode == 0
