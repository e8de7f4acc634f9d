"""Feature cache and training loop for the plate branch.

The backbone is frozen (the face path must not move), so each synthetic training crop goes
through it once: onnxruntime computes the four backbone taps (about 4x faster than torch on
this CPU) and they are stored as float16 memory maps with the CenterNet targets. Training
then runs only the plate branch (neck copy + heads, ~40 k parameters) for several epochs over
the cache. Each sample i is drawn from ``default_rng([seed, i])``: the cache is the same
whatever the batch size or the order it is built in.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from redact.train import data, targets

log = logging.getLogger(__name__)
TAP_CH = (24, 32, 96, 320)
TAP_STRIDE = (4, 8, 16, 32)
TARGET_KEYS = ("hm", "weight", "index", "mask", "scale", "offset")


@dataclass(frozen=True, slots=True)
class CacheSpec:
    n: int
    seed: int
    version: int = 4  # the sample recipe: 4 = v1 crops (data.make_sample), 5 = v2 crops, 6 = mined

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ValueError("cache size must be positive")


class V1Sampler:
    """v1's training crops (``data.make_sample``) on dashcam training frames."""

    version = 4

    def __init__(self, frames: list[data.Frame]) -> None:
        self.frames = frames
        self.images: list[np.ndarray] = []

    def keys(self) -> list[Any]:
        return [f.key for f in self.frames]

    def load(self) -> None:
        self.images = [data.read_rgb(f.path) for f in self.frames]

    def __call__(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return data.make_sample(self.frames, self.images, rng)


class V2Sampler:
    """v2 crops (``data.make_sample_v2``) on several cameras' backgrounds; with ``anchors``
    (background index, box) every crop is centred on one of them (mined false detections)."""

    def __init__(self, bgs: list[data.Background], dashcam_root: Path, video_root: Path,
                 anchors: list[tuple[int, np.ndarray]] | None = None) -> None:
        self.bgs, self.dashcam_root, self.video_root = bgs, dashcam_root, video_root
        self.anchors = anchors
        self.version = 5 if anchors is None else 6
        self.images: list[np.ndarray] = []

    def keys(self) -> list[Any]:
        keys: list[Any] = [b.key for b in self.bgs]
        if self.anchors is not None:
            keys += [[i, [round(float(v), 1) for v in b]] for i, b in self.anchors]
        return keys

    def load(self) -> None:
        self.images = data.load_backgrounds(self.bgs, self.dashcam_root, self.video_root)

    def __call__(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        anchor = None
        if self.anchors is not None:
            anchor = self.anchors[int(rng.integers(len(self.anchors)))]
        return data.make_sample_v2(self.bgs, self.images, rng, anchor)


Sampler = V1Sampler | V2Sampler


def _ort_session(model_bytes: bytes, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def build_cache(cache: Path, frames: list[data.Frame] | Sampler, spec: CacheSpec, threads: int = 1,
                batch: int = 8, workers: int = 1) -> Path:
    """Render ``spec.n`` training crops (v1 crops of dashcam ``frames``, or those of a sampler)
    and store backbone taps + targets under ``cache``; an existing complete cache with the
    same spec is reused. ``workers`` processes fill disjoint sample indices (the result does not
    depend on their number)."""
    sampler = V1Sampler(frames) if isinstance(frames, list) else frames
    if sampler.version != spec.version:
        raise ValueError(f"cache {cache}: spec version {spec.version} but sampler makes version {sampler.version}")
    cache.mkdir(parents=True, exist_ok=True)
    meta = cache / "spec.json"
    want = {**asdict(spec), "frames": sampler.keys()}
    if meta.is_file() and {k: v for k, v in json.loads(meta.read_text()).items() if k in want} == want:
        log.info("reusing feature cache %s", cache)
        return cache
    meta.unlink(missing_ok=True)
    n, H, W = spec.n, data.CROP_H, data.CROP_W
    open_mm = np.lib.format.open_memmap
    for c, s in zip(TAP_CH, TAP_STRIDE, strict=True):
        open_mm(cache / f"tap{s}.npy", "w+", np.float16, (n, c, H // s, W // s)).flush()
    oh, ow, k = H // 4, W // 4, targets.MAX_OBJECTS
    for key, dtype, shape in (("hm", np.float16, (n, 1, oh, ow)), ("weight", np.uint8, (n, 1, oh, ow)),
                              ("index", np.int32, (n, k)), ("mask", np.uint8, (n, k)),
                              ("scale", np.float32, (n, k, 2)), ("offset", np.float32, (n, k, 2))):
        open_mm(cache / f"{key}.npy", "w+", dtype, shape).flush()
    t0 = time.time()
    jobs = [(cache, sampler, spec, threads, batch, w, workers) for w in range(workers)]
    if workers == 1:
        n_plates = _fill_cache(*jobs[0])
    else:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            n_plates = sum(pool.starmap(_fill_cache, jobs))
    meta.write_text(json.dumps({**want, "plates": n_plates, "seconds": round(time.time() - t0)}))
    return cache


def _fill_cache(cache: Path, sampler: Sampler, spec: CacheSpec, threads: int, batch: int,
                worker: int, workers: int) -> int:
    """Fill samples ``worker, worker + workers, ...`` of an allocated cache; returns the number
    of plates drawn."""
    from redact.train import graph

    sess = _ort_session(graph.backbone_model(graph.fixed_centerface()).SerializeToString(), threads)
    sampler.load()
    H, W = data.CROP_H, data.CROP_W
    taps = [np.load(cache / f"tap{s}.npy", mmap_mode="r+") for s in TAP_STRIDE]
    tg = {k: np.load(cache / f"{k}.npy", mmap_mode="r+") for k in TARGET_KEYS}
    mine = list(range(worker, spec.n, workers))
    n_plates = 0
    t0 = time.time()
    for start in range(0, len(mine), batch):
        idx = mine[start:start + batch]
        crops = []
        for i in idx:
            # v1 crops keep their stream (the v1 cache stays valid); later recipes get their own.
            rng = np.random.default_rng([spec.seed, i] if spec.version == 4 else [spec.seed, spec.version, i])
            crop, boxes, ignore = sampler(rng)
            crops.append(crop)
            n_plates += len(boxes)
            for key, arr in zip(TARGET_KEYS, targets.encode(boxes, ignore, H, W), strict=True):
                tg[key][i] = arr
        x = np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32)
        for t, out in zip(taps, sess.run(None, {"input": x}), strict=True):
            t[idx] = out.astype(np.float16)
        if (start // batch) % 50 == 0:
            done = start + len(idx)
            log.info("cache worker %d: %d/%d (%.1f samples/s)", worker, done, len(mine),
                     done / max(time.time() - t0, 1e-6))
    for arr in [*taps, *tg.values()]:
        arr.flush()
    return n_plates


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """``epochs`` counts passes over the first (or only) cache; with several caches each batch
    comes from one cache drawn by ``mix`` weights (default: by size)."""

    epochs: int = 4
    batch: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    steps: int = 0  # > 0: train this many steps instead of ``epochs``
    warmup: int = 200
    chunk: int = 8  # contiguous samples read together (the cache is already in random order)
    # Train on a random window of the cached maps, in stride-32 cells (0, 0: the whole crop).
    # The taps were computed on the whole crop, so a window keeps its context; 12 x 8 cells
    # (384 x 256 px) cost ~60 % of a whole 512 x 320 crop per step.
    window: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch < 1 or self.lr <= 0 or self.steps < 0:
            raise ValueError("epochs and batch must be >= 1, lr > 0, steps >= 0")
        if self.batch % self.chunk:
            raise ValueError(f"batch {self.batch} must be a multiple of chunk {self.chunk}")


def focal_loss(logits: Any, gt: Any, weight: Any) -> Any:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4), per positive."""
    import torch
    import torch.nn.functional as F

    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = gt.eq(1).float()
    neg = (1 - pos) * weight
    pos_loss = F.logsigmoid(logits) * (1 - p) ** 2 * pos
    neg_loss = F.logsigmoid(-logits) * p ** 2 * (1 - gt) ** 4 * neg
    n = pos.sum().clamp(min=1)
    return -(pos_loss.sum() + neg_loss.sum()) / n


def _gather(maps: Any, index: Any) -> Any:
    """maps [B, C, h, w], index [B, K] → [B, K, C]."""
    b, c = maps.shape[:2]
    flat = maps.view(b, c, -1).permute(0, 2, 1)
    return flat.gather(1, index.long().unsqueeze(-1).expand(-1, -1, c))


class _Rows:
    """Rows of a .npy file read with pread, and dropped from the page cache after reading: the
    caches (~20 GB) do not fit in RAM, and page faults on a memory map thrashing the page
    cache tripled the step time here."""

    def __init__(self, path: Path) -> None:
        mm = np.load(path, mmap_mode="r")
        self.n, self.shape, self.dtype, self.offset = mm.shape[0], mm.shape[1:], mm.dtype, mm.offset
        self.row = int(np.prod(self.shape)) * mm.dtype.itemsize
        del mm
        self.fd = os.open(path, os.O_RDONLY)

    def read(self, start: int, count: int) -> np.ndarray:
        pos = self.offset + start * self.row
        buf = os.pread(self.fd, count * self.row, pos)
        if len(buf) != count * self.row:
            raise ValueError(f"short read at row {start} of a feature cache file")
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self.fd, pos, count * self.row, os.POSIX_FADV_DONTNEED)
        return np.frombuffer(buf, self.dtype).reshape(count, *self.shape)


class _Batches:
    """Batches of ``cfg.batch`` samples assembled from contiguous chunks of the caches (reading
    a memory map contiguously is ~10x faster than gathering), prepared one ahead on a thread."""

    def __init__(self, caches: list[Path], mix: list[float] | None, cfg: TrainConfig, total: int,
                 chunk_weights: list[np.ndarray | None] | None = None) -> None:
        import queue
        import threading

        self.taps = [[_Rows(c / f"tap{s}.npy") for s in TAP_STRIDE] for c in caches]
        self.tg = [{k: _Rows(c / f"{k}.npy") for k in TARGET_KEYS} for c in caches]
        sizes = [t[0].n // cfg.chunk for t in self.taps]
        w = np.array(mix if mix is not None else sizes, np.float64)
        rng = np.random.default_rng(cfg.seed)
        per = cfg.batch // cfg.chunk
        # Per cache, chunks in a fresh random order each pass; each batch takes ``per`` chunks
        # of one cache chosen by weight.
        orders = [list(rng.permutation(n)) for n in sizes]
        self.plan: list[tuple[int, list[int]]] = []
        cw = chunk_weights or [None] * len(caches)
        for _ in range(total):
            c = int(rng.choice(len(caches), p=w / w.sum()))
            picks = []
            for _ in range(per):
                wc = cw[c]
                if wc is not None:  # hard-example mining: chunks drawn by their last loss
                    picks.append(int(rng.choice(sizes[c], p=wc / wc.sum())))
                    continue
                if not orders[c]:
                    orders[c] = list(rng.permutation(sizes[c]))
                picks.append(int(orders[c].pop()))
            self.plan.append((c, sorted(picks)))
        self.chunk = cfg.chunk
        self.q: queue.Queue[Any] = queue.Queue(maxsize=3)
        self.thread = threading.Thread(target=self._fill, daemon=True)
        self.thread.start()

    def _read(self, c: int, picks: list[int]) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
        x = [np.concatenate([t.read(p * self.chunk, self.chunk) for p in picks]).astype(np.float32) for t in self.taps[c]]
        b = {k: np.concatenate([v.read(p * self.chunk, self.chunk) for p in picks]) for k, v in self.tg[c].items()}
        return x, b

    def _fill(self) -> None:
        for c, picks in self.plan:
            self.q.put((c, picks, *self._read(c, picks)))

    def __iter__(self) -> Any:
        for _ in self.plan:
            yield self.q.get()


def _window(xs: list[np.ndarray], bs: dict[str, np.ndarray], window: tuple[int, int], rng: np.random.Generator
            ) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """The same random window (``window`` = (w, h) stride-32 cells) of every tap and target of
    a batch; objects whose centre cell leaves the window are dropped from the regression
    targets (their heatmap tails stay, as soft negatives)."""
    ww, wh = window
    full_w, full_h = xs[3].shape[3], xs[3].shape[2]
    if ww > full_w or wh > full_h:
        raise ValueError(f"window {window} larger than the cached maps ({full_w} x {full_h} cells)")
    ox, oy = int(rng.integers(0, full_w - ww + 1)), int(rng.integers(0, full_h - wh + 1))
    out = []
    for t, s in zip(xs, TAP_STRIDE, strict=True):
        k = 32 // s
        out.append(t[:, :, oy * k:(oy + wh) * k, ox * k:(ox + ww) * k])
    k = 32 // targets.STRIDE
    ow_full = bs["hm"].shape[3]
    r, c = bs["index"] // ow_full - oy * k, bs["index"] % ow_full - ox * k
    inside = (r >= 0) & (r < wh * k) & (c >= 0) & (c < ww * k)
    b = dict(bs)
    b["hm"] = bs["hm"][:, :, oy * k:(oy + wh) * k, ox * k:(ox + ww) * k]
    b["weight"] = bs["weight"][:, :, oy * k:(oy + wh) * k, ox * k:(ox + ww) * k]
    b["index"] = np.where(inside, r * (ww * k) + c, 0).astype(bs["index"].dtype)
    b["mask"] = (bs["mask"] * inside).astype(bs["mask"].dtype)
    return out, b


def train(cache: Path | list[Path], init_onnx: Path, cfg: TrainConfig, log_every: int = 50,
          mix: list[float] | None = None, init: Any = None, chunk_loss: dict[tuple[int, int], float] | None = None,
          chunk_weights: list[np.ndarray | None] | None = None) -> Any:
    """Train the plate branch on one or more feature caches; returns the trained
    ``StreetveilNet``. ``init``: a StreetveilNet to continue from (fine-tuning) instead of
    CenterFace's weights. ``chunk_loss``, when given, collects the last heatmap loss of every
    (cache, chunk) seen, and ``chunk_weights`` (per cache, one weight per chunk, or None)
    draws chunks by those weights: hard-example mining."""
    import torch

    from redact.nets import StreetveilNet

    caches = [cache] if isinstance(cache, Path) else list(cache)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    dev = torch.device(cfg.device)
    if init is None:
        net = StreetveilNet.from_centerface(init_onnx)
        branch = net.plate.to(dev)
        # Bias the heatmap towards "no plate" (prior 0.01) as CenterNet does, for a stable start.
        assert branch.heatmap.bias is not None and branch.scale.bias is not None
        with torch.no_grad():
            branch.heatmap.bias.fill_(-4.6)
            # Start the size head at a typical plate (24 x 80 px) rather than at 4 x 4 px.
            branch.scale.bias.copy_(torch.tensor([math.log(24 / 4), math.log(80 / 4)]))
    else:
        net = init
        branch = net.plate.to(dev)
    branch.eval()  # BN layers of the neck copy act as fixed affine maps (stats from CenterFace)
    params = [p for p in branch.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n0 = np.load(caches[0] / "hm.npy", mmap_mode="r").shape[0]
    total = cfg.steps if cfg.steps > 0 else (n0 // cfg.batch) * cfg.epochs
    warmup = min(cfg.warmup, total // 10)
    batches = _Batches(caches, mix, cfg, total, chunk_weights)
    win_rng = np.random.default_rng([cfg.seed, 7])
    t0 = time.time()
    running: dict[str, float] = {}
    per = cfg.batch // cfg.chunk
    for step, (c, picks, xs, bs) in enumerate(batches):
        lr = cfg.lr * (step + 1) / warmup if step < warmup else \
            cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
        for g in opt.param_groups:
            g["lr"] = lr
        if cfg.window != (0, 0):
            xs, bs = _window(xs, bs, cfg.window, win_rng)
        x = [torch.from_numpy(np.ascontiguousarray(t)).to(dev) for t in xs]
        b = {k: torch.from_numpy(np.ascontiguousarray(v)).to(dev) for k, v in bs.items()}
        hm_logit, scale, offset = branch.logits(*x)
        mask = b["mask"].float().unsqueeze(-1)
        nobj = mask.sum().clamp(min=1)
        l_hm = focal_loss(hm_logit, b["hm"].float(), b["weight"].float())
        l_scale = (torch.abs(_gather(scale, b["index"]) - b["scale"]) * mask).sum() / nobj
        l_off = (torch.abs(_gather(offset, b["index"]) - b["offset"]) * mask).sum() / nobj
        loss = l_hm + l_scale + l_off
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        if chunk_loss is not None:
            with torch.no_grad():  # per-chunk heatmap loss, for mining hard chunks later
                per_chunk = [focal_loss(hm_logit[k * cfg.chunk:(k + 1) * cfg.chunk].detach(),
                                        b["hm"][k * cfg.chunk:(k + 1) * cfg.chunk].float(),
                                        b["weight"][k * cfg.chunk:(k + 1) * cfg.chunk].float()).item()
                             for k in range(per)]
            for p_, v in zip(picks, per_chunk, strict=True):
                chunk_loss[(c, p_)] = v
        for k, v in (("loss", loss), ("hm", l_hm), ("scale", l_scale), ("off", l_off)):
            running[k] = 0.98 * running.get(k, v.item()) + 0.02 * v.item()
        if (step + 1) % log_every == 0:
            log.info("step %d/%d lr %.2e %s (%.0f s)", step + 1, total, lr,
                     " ".join(f"{k} {v:.3f}" for k, v in running.items()), time.time() - t0)
    return net.cpu().eval()
