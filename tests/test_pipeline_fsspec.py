"""fsspec URLs: a session read from and published to ``memory://``.

``memory://`` lives inside one process, so this runs the job on an in-process Dask cluster
(threads, not worker processes); the same code reads and writes any fsspec filesystem that
all workers can reach (s3://, gcs://, ...). ``file://`` with worker processes is covered in
test_pipeline_job.py.
"""

from __future__ import annotations

from pathlib import Path

import fsspec
from conftest import CONFIGS, JOB_FRAMES

from pipeline.config import NightlyConfig, load_config
from pipeline.job import DaskExecutor, JobOptions, run_job
from pipeline.verify import verify_tree


def test_memory_urls_in_process_cluster(job_session: Path, serial_publication: Path, tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    fs = fsspec.filesystem("memory")
    src = f"memory://sessions/{job_session.name}"
    fs.put(str(job_session), f"/sessions/{job_session.name}", recursive=True)
    cfg = load_config(CONFIGS / "nightly.toml", NightlyConfig, kind="nightly", environ={})
    opts = JobOptions(sessions=(src,), out="memory://publish", config=cfg, progress=False)
    try:
        with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as lc, \
                Client(lc) as client:
            summary = run_job(opts, DaskExecutor(client, retries=0))
        assert summary.counts()["published"] == JOB_FRAMES and summary.counts()["failed"] == 0
        sid = job_session.name
        names = sorted(Path(p).name for p in fs.ls(f"/publish/{sid}/images", detail=False))
        assert names == sorted(p.name for p in (serial_publication / "images").iterdir())
        for n in names:
            assert fs.cat_file(f"/publish/{sid}/images/{n}") == (serial_publication / "images" / n).read_bytes()
        assert fs.cat_file(f"/publish/{sid}/manifest.json") == (serial_publication / "manifest.json").read_bytes()
        local = tmp_path / "copy"
        fs.get("/publish/", str(local), recursive=True)
        rep = verify_tree(local)
        assert rep.ok, rep.problems
        assert rep.sessions == (sid,)
    finally:
        for d in ("/sessions", "/publish"):
            if fs.exists(d):
                fs.rm(d, recursive=True)
