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
HARD_STREAM = 4_000_003  # sample i's hard-view draws: [seed, i, HARD_STREAM]


@dataclass(frozen=True, slots=True)
class CacheSpec:
    n: int
    seed: int
    version: int = 4  # bump when the generator changes
    # Which backbone computed the taps: None = fp32 CenterFace, else the int8 file's sha256
    # (features differ, so caches must not mix).
    backbone: str | None = None
    # Shares of hard-view crops (data.make_sample): angled extra plates, motion streaks. None =
    # none, so caches written before the fields existed still match.
    angled_views: float | None = None
    streaked_views: float | None = None
    # More hard negatives in each streaked crop (None = none).
    streaked_signs: int | None = None

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ValueError("cache size must be positive")
        for share in (self.angled_views, self.streaked_views):
            if share is not None and not 0 < share <= 1:
                raise ValueError(f"hard-view share {share}: in (0, 1], or None for none")
        if self.streaked_signs is not None and not (self.streaked_views and 1 <= self.streaked_signs <= 8):
            raise ValueError(f"streaked signs {self.streaked_signs}: 1 to 8, and only with streaked views")


def _ort_session(model_bytes: bytes, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def build_cache(cache: Path, frames: list[data.Frame], spec: CacheSpec, threads: int = 1,
                batch: int = 8, workers: int = 1, backbone: bytes | None = None) -> Path:
    """Render ``spec.n`` training crops from ``frames`` and store backbone taps + targets under
    ``cache``; an existing complete cache with the same spec is reused. ``workers`` processes
    fill disjoint sample indices (the result does not depend on their number). ``backbone``:
    the tap model (``graph.backbone_model``) when not fp32 CenterFace's; ``spec.backbone``
    must name it."""
    if (backbone is None) != (spec.backbone is None):
        raise ValueError("cache spec: backbone model and spec.backbone go together")
    cache.mkdir(parents=True, exist_ok=True)
    meta = cache / "spec.json"
    # Unset fields are left out, so an fp32 cache written before ``backbone`` existed still matches.
    want = {**{k: v for k, v in asdict(spec).items() if v is not None}, "frames": [f.key for f in frames]}
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
    jobs = [(cache, frames, spec, threads, batch, w, workers, backbone) for w in range(workers)]
    if workers == 1:
        n_plates = _fill_cache(*jobs[0])
    else:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            n_plates = sum(pool.starmap(_fill_cache, jobs))
    meta.write_text(json.dumps({**want, "plates": n_plates, "seconds": round(time.time() - t0)}))
    return cache


def _fill_cache(cache: Path, frames: list[data.Frame], spec: CacheSpec, threads: int, batch: int,
                worker: int, workers: int, backbone: bytes | None) -> int:
    """Fill samples ``worker, worker + workers, ...`` of an allocated cache; returns the number
    of plates drawn."""
    from redact.train import graph

    if backbone is None:
        backbone = graph.backbone_model(graph.fixed_centerface()).SerializeToString()
    sess = _ort_session(backbone, threads)
    images = [data.read_rgb(f.path) for f in frames]
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
            rng = np.random.default_rng([spec.seed, i])
            crop, boxes, ignore = data.make_sample(frames, images, rng, spec.angled_views or 0.0,
                                                   spec.streaked_views or 0.0,
                                                   np.random.default_rng([spec.seed, i, HARD_STREAM]),
                                                   spec.streaked_signs or 0)
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
    epochs: int = 4
    batch: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    # The cache copied into the device's memory first (None: on a GPU when it fits in half of
    # its free memory). Read from the memory maps step by step, a GPU waits on the host:
    # measured on an H200 (4,000 crops, 250 steps of 16), 0.062 s per step from the maps,
    # 0.011 resident (docs/plate-model.md).
    resident: bool | None = None
    # > 0: the plate neck's last 3x3 conv as depthwise (this many filters per channel) + pointwise
    # (nets.Neck.make_separable: from the starting weights' full conv by SVD); cheaper on the CPU.
    separable_fuse: int = 0
    # > 0: the plate head with this many inverted-residual blocks (nets.PlateBranch.add_blocks;
    # the ones the starting weights lack start at zero, i.e. from the starting branch's function).
    head_blocks: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch < 1 or self.lr <= 0:
            raise ValueError("epochs and batch must be >= 1 and lr > 0")
        if not 0 <= self.head_blocks <= 8:
            raise ValueError(f"head blocks {self.head_blocks}: 0 (as the starting weights have) to 8")
        if not 0 <= self.separable_fuse <= 9:  # a 3x3 filter has rank 9 at most
            raise ValueError(f"separable fuse rank {self.separable_fuse}: 0 (full conv) to 9")


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


def _keep_resident(cfg: TrainConfig, arrays: list[np.ndarray], dev: Any) -> bool:
    import torch

    if cfg.resident is not None:
        return cfg.resident
    if dev.type != "cuda":
        return False
    need = sum(a.nbytes for a in arrays)
    free, _ = torch.cuda.mem_get_info(dev)
    log.info("feature cache %.1f GB, %.1f GB free on %s", need / 1e9, free / 1e9, dev)
    return need < free / 2


def _resident_fetch(taps: list[np.ndarray], tg: dict[str, np.ndarray], dev: Any) -> Any:
    """The cache copied to ``dev`` in chunks (never whole in host memory); returns the batch
    getter. Batches hold the same values as from the memory maps (float16 -> float32 is exact)."""
    import torch

    def upload(a: np.ndarray) -> Any:
        out = torch.empty(a.shape, dtype=torch.from_numpy(a[:1].copy()).dtype, device=dev)
        for k in range(0, a.shape[0], 256):
            out[k:k + 256] = torch.from_numpy(np.array(a[k:k + 256])).to(dev)  # a writable copy
        return out

    t0 = time.time()
    taps_d = [upload(t) for t in taps]
    tg_d = {k: upload(v) for k, v in tg.items()}
    log.info("feature cache resident on %s (%.0f s)", dev, time.time() - t0)

    def fetch(idx: np.ndarray) -> tuple[list[Any], dict[str, Any]]:
        i = torch.from_numpy(idx).to(dev)
        return [t[i].float() for t in taps_d], {k: v[i] for k, v in tg_d.items()}

    return fetch


def train(cache: Path, init_onnx: Path, cfg: TrainConfig, log_every: int = 50, finetune: bool = False) -> Any:
    """Train the plate branch on a feature cache; returns the trained ``StreetveilNet``.
    ``init_onnx``: CenterFace (a new branch, its neck a copy of the face neck) or, with
    ``finetune``, a combined streetveil model whose plate branch training continues from."""
    import torch

    from redact.nets import StreetveilNet, streetveil_from_onnx

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    dev = torch.device(cfg.device)
    net = streetveil_from_onnx(init_onnx) if finetune else StreetveilNet.from_centerface(init_onnx)
    if cfg.separable_fuse:
        net.plate.neck.make_separable(cfg.separable_fuse)
    if cfg.head_blocks:
        have = len(net.plate.blocks)
        if have > cfg.head_blocks:
            raise ValueError(f"{init_onnx}: its plate head has {have} blocks, more than the {cfg.head_blocks} asked for")
        net.plate.add_blocks(cfg.head_blocks - have)
    branch = net.plate.to(dev)
    assert branch.heatmap.bias is not None and branch.scale.bias is not None
    if not finetune:
        with torch.no_grad():
            # Bias the heatmap towards "no plate" (prior 0.01) as CenterNet does, for a stable start.
            branch.heatmap.bias.fill_(-4.6)
            # Start the size head at a typical plate (24 x 80 px) rather than at 4 x 4 px.
            branch.scale.bias.copy_(torch.tensor([math.log(24 / 4), math.log(80 / 4)]))
    branch.eval()  # BN layers of the neck copy act as fixed affine maps (stats from CenterFace)
    params = [p for p in branch.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    taps = [np.load(cache / f"tap{s}.npy", mmap_mode="r") for s in TAP_STRIDE]
    tg = {k: np.load(cache / f"{k}.npy", mmap_mode="r") for k in TARGET_KEYS}
    n = taps[0].shape[0]
    fetch = _resident_fetch(taps, tg, dev) if _keep_resident(cfg, [*taps, *tg.values()], dev) else None
    steps_per_epoch = n // cfg.batch
    total = steps_per_epoch * cfg.epochs
    warmup = min(200, total // 10)
    rng = np.random.default_rng(cfg.seed)
    step = 0
    t0 = time.time()
    running: dict[str, float] = {}
    for epoch in range(cfg.epochs):
        perm = rng.permutation(n)
        for s in range(steps_per_epoch):
            idx = np.sort(perm[s * cfg.batch:(s + 1) * cfg.batch])
            lr = cfg.lr * (step + 1) / warmup if step < warmup else \
                cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
            for g in opt.param_groups:
                g["lr"] = lr
            if fetch is not None:
                x, b = fetch(idx)
            else:
                x = [torch.from_numpy(np.asarray(t[idx], np.float32)).to(dev) for t in taps]
                b = {k: torch.from_numpy(np.asarray(v[idx])).to(dev) for k, v in tg.items()}
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
            step += 1
            for k, v in (("loss", loss), ("hm", l_hm), ("scale", l_scale), ("off", l_off)):
                running[k] = 0.98 * running.get(k, v.item()) + 0.02 * v.item()
            if step % log_every == 0:
                log.info("epoch %d step %d/%d lr %.2e %s (%.0f s)", epoch, step, total, lr,
                         " ".join(f"{k} {v:.3f}" for k, v in running.items()), time.time() - t0)
    return net.cpu().eval()
