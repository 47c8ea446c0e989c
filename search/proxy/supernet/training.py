"""Supernet training: the sandwich rule with in-place distillation, checkpointed every epoch.

Per step, on one augmented batch (BigNAS, Yu et al. 2020; AttentiveNAS, Wang et al. 2021;
slimmable networks' in-place distillation, Yu & Huang 2019):

1. the largest subnet is trained on the labels (label-smoothed CE);
2. the smallest and ``num_random`` uniformly sampled subnets are trained on the largest's
   detached soft predictions (KD), optionally mixed with the label loss;
3. the gradients of all of them, accumulated on the shared weights, take one AdamW step.

Data, augmentation, AMP and BatchNorm helpers are search/proxy/train.py's (the same batches
and pixels as stand-alone proxy training). On CUDA: bf16 autocast (fp16 + GradScaler where bf16
is missing) and channels_last. On CPU with a fixed seed the run is deterministic, and a run
resumed from its checkpoint after a kill continues with identical weights, optimizer state,
batches, sampled subnets and losses (tests/test_supernet.py).

Data parallel (DDP). Called inside a process group (torchrun, Ray Train's TorchTrainer, or
``search.distributed.run_on_ranks`` spawning local gloo / NCCL processes), ``train_supernet``
trains on every rank; alone, it takes the single-process path, unchanged. The rules, and why:

* **Same subnets, different images.** Every rank holds the same seeded batch/augmentation
  generator and subnet RNG, so every rank draws the same permutation, the same augmentation
  and the same sandwich of subnets every step (checked once per epoch: ranks whose RNG state
  or weights disagree stop with an error instead of silently averaging unlike gradients). The
  global batch is ``config.batch_size``, split evenly: rank r trains on the r-th contiguous
  slice of the (sorted, augmented) global batch. So the lr, the schedule, the steps per epoch,
  the pixels and the checkpoint mean the same at any world size; only the BatchNorm batch
  statistics (per rank, see below) and the float summation order differ.
* **Gradients averaged exactly once per optimizer step**, after all the sandwich's backward
  passes, over their accumulated sum: one bucketed all-reduce (flattened buffers of at most
  BUCKET_BYTES, as DDP's buckets) of every gradient the step produced, divided by the world
  size -- what DDP computes, written out. Not DDP itself: a subnet uses a slice of the
  store's weights, and at a position that holds both encoders even the largest subnet skips
  one of them, so DDP would need ``find_unused_parameters`` (a graph walk per forward) plus
  ``no_sync()`` on all passes but the last; it would overlap communication with the backward
  of the last pass only (1 of the 2 + num_random passes). A parameter no pass used keeps
  ``grad=None`` on every rank (the ranks ran the same subnets), so AdamW skips it exactly as
  in one process. The all-reduce comes before GradScaler's unscale / inf check (the scaled
  sums are identical on all ranks, so every rank skips or takes the step alike) and before
  clipping (the clip norm is the global gradient's). The step's two losses ride in the same
  collective, so every rank reports (and checks for NaN) the global batch's mean.
* **BatchNorm: per-rank statistics** while training (each rank normalises its slice, as OFA /
  BigNAS / AttentiveNAS train their supernets; SyncBN does not apply to the functional,
  sliced BN of the store). The running statistics are averaged over the ranks at every epoch
  end (timm's ``distribute_bn``), before the checkpoint, so every rank holds the same state.
  Scoring recalibrates every subnet's BN anyway (``recal_images``).
* **Rank 0 alone writes** ``supernet.pt`` (``save_torch_atomic``); on resume rank 0 reads it
  and broadcasts it (no shared file system needed). Resumed with the world size it was
  written with, the run continues exactly as an uninterrupted one (tests/test_supernet_ddp.py);
  with another world size it continues the same optimisation with another per-rank BN batch.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pickle
import random
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import distribute_bn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from search_space.errors import NotFoundError, UsageError
from search_space.io import canonical_json, json_safe, save_torch_atomic
from search_space.space import DEFAULT_SPACE, SearchSpace
from search_space.spec import ArchSpec

from ...distributed import (DistContext, all_reduce_sum, launched_externally, param_digest,
                           run_on_ranks, setup_distributed, will_spawn)
from ..data import ProxyData
from ..fidelity import Fidelity
from ..train import NonFiniteLoss, _amp, augment_batch, normalize, resolve_device
from .config import SupernetConfig, proxy_space
from .model import Supernet

__all__ = ["train_supernet", "train_supernet_ranks", "average_gradients", "load_supernet",
           "kd_loss", "step_seconds", "CHECKPOINT_NAME", "space_key"]

CHECKPOINT_NAME = "supernet.pt"
CHECKPOINT_FORMAT = 1
# Gradient all-reduce bucket size (DDP's default bucket_cap_mb is 25): bounds the extra memory
# of the flattened copies while keeping the number of collectives per step small.
BUCKET_BYTES = 25 * 2 ** 20


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Soft cross-entropy to the teacher's softmax (in-place distillation), scaled by T^2."""
    t = F.softmax(teacher / temperature, dim=-1)
    return -(t * F.log_softmax(student / temperature, dim=-1)).sum(-1).mean() * temperature ** 2


def space_key(space: SearchSpace) -> str:
    return hashlib.sha256(canonical_json(dataclasses.asdict(space)).encode()).hexdigest()[:16]


def _space_from_dict(d: dict[str, Any]) -> SearchSpace:
    """Inverse of json_space (lists back to tuples)."""
    return SearchSpace(depths=_as_tuple(d["depths"]), widths=_as_tuple(d["widths"]),
                       mlp_ratios=_as_tuple(d["mlp_ratios"]), attn_modes=_as_tuple(d["attn_modes"]),
                       resolutions=_as_tuple(d["resolutions"]), num_classes=d["num_classes"],
                       distillation=d["distillation"], fixed=dict(d["fixed"]))


class _Run:
    """Everything a training run carries from step to step (and into its checkpoint)."""

    def __init__(self, config: SupernetConfig, fidelity: Fidelity, data: ProxyData,
                 space: SearchSpace, seed: int, dev: torch.device, channels_last: bool,
                 ctx: DistContext | None = None) -> None:
        self.config, self.fidelity, self.data, self.seed, self.dev = config, fidelity, data, seed, dev
        self.channels_last, self.ctx = channels_last, ctx
        self.rank, self.world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
        self.pspace = proxy_space(space, data.num_classes, fidelity.resolution, config.width_divisor)
        torch.manual_seed(seed)
        self.net = Supernet(self.pspace, config.conv_layer_scale_init).to(dev)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        n = len(data.train_y)
        self.bs = min(config.batch_size, n)  # the global batch, split evenly over the ranks
        if self.bs % self.world:
            raise UsageError(f"supernet batch_size {self.bs} (at most the {n} train images) is not "
                             f"divisible by the {self.world} processes: the global batch is split "
                             "evenly over the ranks")
        self.rank_bs = self.bs // self.world
        self.steps_per_epoch = n // self.bs  # drop the ragged last batch, as train_proxy
        total = self.steps_per_epoch * config.epochs
        warm = min(int(round(config.warmup_epochs * self.steps_per_epoch)), max(total - 1, 0))
        self.opt = create_optimizer_v2(self.net, "adamw", lr=config.lr,
                                       weight_decay=config.weight_decay)
        self.sched = CosineLRScheduler(self.opt, t_initial=total, lr_min=config.min_lr,
                                       warmup_t=warm, warmup_lr_init=config.warmup_lr,
                                       t_in_epochs=False)
        self.ce = LabelSmoothingCrossEntropy(config.label_smoothing) \
            if config.label_smoothing > 0 else torch.nn.CrossEntropyLoss()
        self.autocast, self.scaler = _amp(dev)
        self.gen = torch.Generator().manual_seed(seed)  # batches + augmentation
        self.arch_rng = random.Random(seed)  # sampled subnets
        self.labels = torch.from_numpy(np.array(data.train_y, dtype=np.int64))
        self.epoch, self.step, self.cpu_seconds, self.history = 0, 0, 0.0, []

    def meta(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "config_key": self.config.key,
                "fidelity_key": self.fidelity.key, "dataset_id": self.data.dataset_id,
                "seed": self.seed, "space": json_space(self.pspace),
                "space_key": space_key(self.pspace)}

    def state(self) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "meta": self.meta(), "model": self.net.state_dict(),
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "generator": self.gen.get_state(), "arch_rng": self.arch_rng.getstate(),
                "epoch": self.epoch, "step": self.step, "cpu_seconds": self.cpu_seconds,
                "history": self.history, "world_size": self.world}

    def restore(self, ck: dict[str, Any], path: str) -> None:
        mine = self.meta()
        for k in ("config_key", "fidelity_key", "dataset_id", "seed", "space_key"):
            if ck["meta"].get(k) != mine[k]:
                raise UsageError(f"supernet checkpoint {path}: was trained with a different "
                                 f"{k.replace('_key', '')} ({ck['meta'].get(k)} != {mine[k]}); "
                                 "remove it or use another directory")
        self.net.load_state_dict(ck["model"], strict=True)
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        if self.scaler is not None and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.gen.set_state(ck["generator"])
        self.arch_rng.setstate(_as_tuple(ck["arch_rng"]))
        self.epoch, self.step = int(ck["epoch"]), int(ck["step"])
        self.cpu_seconds, self.history = float(ck["cpu_seconds"]), list(ck["history"])


def json_space(space: SearchSpace) -> dict[str, Any]:
    return dataclasses.asdict(space) | {"fixed": dict(space.fixed)}


def _as_tuple(v: Any) -> Any:
    return tuple(_as_tuple(x) for x in v) if isinstance(v, (list, tuple)) else v


def _sandwich_step(run: _Run, x: torch.Tensor, y: torch.Tensor,
                   subnets: list[ArchSpec]) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step of the sandwich rule; returns (largest's loss, mean of the others)."""
    cfg, net, scaler = run.config, run.net, run.scaler
    backward = (lambda loss: scaler.scale(loss).backward()) if scaler is not None \
        else (lambda loss: loss.backward())
    run.opt.zero_grad(set_to_none=True)
    net.set_active(net.max_spec)
    with run.autocast():
        out = net(x)
        loss_max = run.ce(out.float(), y)
    backward(loss_max)
    teacher = out.detach().float()
    others = torch.zeros((), device=x.device)
    for spec in subnets:
        net.set_active(spec)
        with run.autocast():
            o = net(x).float()
            loss = cfg.kd_weight * kd_loss(o, teacher, cfg.kd_temperature)
            if cfg.kd_weight < 1:
                loss = loss + (1 - cfg.kd_weight) * run.ce(o, y)
        backward(loss)
        others = others + loss.detach()
    losses = torch.stack([loss_max.detach().float(), others / max(len(subnets), 1)])
    if run.world > 1:  # before unscale_: see the module docstring
        losses = average_gradients(net, losses, run.world)
    if scaler is not None:
        scaler.unscale_(run.opt)
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
    if scaler is not None:
        scaler.step(run.opt)
        scaler.update()
    else:
        run.opt.step()
    net.set_active(net.max_spec)
    return losses[0], losses[1]


def _buckets(tensors: list[torch.Tensor], cap: int) -> list[list[torch.Tensor]]:
    """Consecutive runs of same-dtype, same-device tensors of at most ``cap`` bytes each (a
    tensor larger than ``cap`` is a bucket of its own)."""
    out: list[list[torch.Tensor]] = []
    size = 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        last = out[-1][-1] if out else None
        if last is None or (last.dtype, last.device) != (t.dtype, t.device) or size + nbytes > cap:
            out.append([])
            size = 0
        out[-1].append(t)
        size += nbytes
    return out


def average_gradients(net: torch.nn.Module, extra: torch.Tensor, world: int,
                      bucket_bytes: int = BUCKET_BYTES) -> torch.Tensor:
    """Every gradient ``net``'s parameters hold (the sum of this step's backward passes)
    replaced by its mean over the ``world`` ranks: one all-reduce per bucket of flattened
    gradients. ``extra`` (float32, e.g. the step's losses) travels in the last bucket and is
    returned averaged. Parameters without a gradient are left alone; the ranks must agree on
    which those are (they do: every rank runs the same subnets)."""
    tensors = [p.grad for p in net.parameters() if p.grad is not None] + [extra]
    for bucket in _buckets(tensors, bucket_bytes):
        flat = _flatten_dense_tensors(bucket)
        dist.all_reduce(flat)
        flat.div_(world)
        for t, mean in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
            t.copy_(mean)
    return extra


def _check_in_step(run: _Run) -> None:
    """Ranks stop with an error unless they hold the same weights, step and RNG states (the
    same subnets and batches every step follow from these): a rank that drifted would
    otherwise have its unlike gradients averaged in silently, or hang the all-reduce."""
    h = hashlib.sha256(pickle.dumps((run.step, run.arch_rng.getstate())))
    h.update(run.gen.get_state().numpy().tobytes())
    h.update(param_digest(run.net).encode())
    mine = int.from_bytes(h.digest()[:7], "big")
    t = torch.tensor([mine, -mine], dtype=torch.int64, device=run.dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if int(t[0]) != -int(t[1]):
        raise RuntimeError(f"supernet DDP: rank {run.rank} disagrees with another rank on the "
                           f"weights or RNG state at step {run.step}")


def _train_epoch(run: _Run) -> dict[str, Any]:
    cfg, net, data, fid = run.config, run.net, run.data, run.fidelity
    net.train()
    if run.world > 1:
        _check_in_step(run)
    t0, c0 = time.perf_counter(), time.process_time()
    n = len(run.labels)
    share = slice(run.rank * run.rank_bs, (run.rank + 1) * run.rank_bs)  # this rank's share
    perm = torch.randperm(n, generator=run.gen).numpy()
    losses: list[tuple[torch.Tensor, torch.Tensor]] = []
    for b in range(run.steps_per_epoch):
        idx = np.sort(perm[b * run.bs:(b + 1) * run.bs])
        xb = torch.from_numpy(np.ascontiguousarray(data.train_x[idx])).to(run.dev, non_blocking=True)
        yb = run.labels[idx][share].to(run.dev, non_blocking=True)
        # The whole global batch is augmented on every rank (the shared generator stays in
        # step); one process takes all of it, bit for bit as before DDP existed.
        x = normalize(augment_batch(xb, run.gen, fid.crop_padding, fid.hflip)[share],
                      run.channels_last)
        subnets = [net.min_spec] + [run.pspace.sample(run.arch_rng) for _ in range(cfg.num_random)]
        lm, lo = _sandwich_step(run, x, yb, subnets)
        if not (torch.isfinite(lm) and torch.isfinite(lo)):
            raise NonFiniteLoss(f"supernet: training loss {lm.item()} (largest) / {lo.item()} "
                                f"(others) at epoch {run.epoch + 1}, step {b + 1}")
        losses.append((lm, lo))
        run.step += 1
        run.sched.step_update(run.step)
    if run.dev.type == "cuda":
        torch.cuda.synchronize(run.dev)
    if run.world > 1:
        distribute_bn(net, run.world, reduce=True)  # every rank: the same running statistics
    if cfg.reorder == "l1":
        net.reorder_hidden_units(run.opt)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if run.world > 1:
        (cpu,) = all_reduce_sum([cpu], run.ctx)  # the epoch's CPU cost over every rank
    pairs = torch.stack([torch.stack(p) for p in losses]).tolist() if losses else []
    run.epoch += 1
    run.cpu_seconds += cpu
    imgs = run.steps_per_epoch * run.bs
    return {"epoch": run.epoch, "loss_largest": float(np.mean([p[0] for p in pairs])),
            "loss_subnets": float(np.mean([p[1] for p in pairs])), "step_losses": pairs,
            "lr": run.opt.param_groups[0]["lr"], "seconds": wall, "cpu_seconds": cpu,
            "img_per_s": imgs / max(wall, 1e-9),
            "subnet_img_per_s": imgs * (2 + cfg.num_random) / max(wall, 1e-9)}


def train_supernet(config: SupernetConfig, fidelity: Fidelity, data: ProxyData, *, seed: int,
                   space: SearchSpace = DEFAULT_SPACE, device: str = "auto",
                   threads: int | None = None, channels_last: bool | None = None,
                   checkpoint_dir: str | None = None,
                   report: Callable[[dict], None] | None = None) -> tuple[Supernet, dict]:
    """Train a supernet over ``space`` (at the data's class count and the fidelity's
    resolution, widths / config.width_divisor) for config.epochs epochs; return it and a
    summary. With ``checkpoint_dir``, ``<dir>/supernet.pt`` is written after every epoch and a
    run finds it and continues from there (a finished run just loads). ``report`` gets each
    epoch's metrics (after the checkpoint is written).

    Data parallel when this process is one rank of several: inside an initialised process
    group (Ray Train, run_on_ranks) or started by a launcher (torchrun / srun env: the group
    is joined here, NCCL on CUDA -- ``device`` auto or cuda picks cuda:LOCAL_RANK -- gloo on
    the CPU). Every rank calls this with the same arguments and gets the same weights;
    rank 0 alone writes the checkpoint; ``report`` is called on every rank with the same
    losses (the global batch's) and CPU-seconds (summed over the ranks), and its own wall time."""
    if data.resolution != fidelity.resolution:
        raise UsageError(f"data resolution {data.resolution} != fidelity.resolution "
                         f"{fidelity.resolution}: prepare_data with this fidelity")
    ctx = _process_group(device)
    dev = ctx.device if ctx is not None else resolve_device(device)
    if threads is not None:
        torch.set_num_threads(int(threads))
    run = _Run(config, fidelity, data, space, seed, dev, True if channels_last is None else channels_last,
               ctx)
    path = os.path.join(checkpoint_dir, CHECKPOINT_NAME) if checkpoint_dir else None
    ck = _read_checkpoint(run, path) if path else None
    if ck is not None:
        run.restore(ck, path)
    resumed_at = run.epoch
    t0 = time.perf_counter()
    while run.epoch < config.epochs:
        m = _train_epoch(run)
        run.history.append(m)
        if path and run.rank == 0:
            save_torch_atomic(run.state(), path)
        if report is not None:
            report(dict(m))
    last = run.history[-1] if run.history else {}
    return run.net, {
        "epochs_done": run.epoch, "resumed_at_epoch": resumed_at, "steps": run.step,
        "cpu_seconds": run.cpu_seconds, "train_seconds": time.perf_counter() - t0,
        "loss_largest": last.get("loss_largest", math.nan),
        "loss_subnets": last.get("loss_subnets", math.nan),
        "params": sum(p.numel() for p in run.net.parameters()), "device": str(dev),
        "threads": torch.get_num_threads(), "channels_last": run.channels_last,
        "world_size": run.world, "history": run.history, **run.meta()}


@dataclasses.dataclass(frozen=True)
class _Ranks:
    """What ``search.distributed.run_on_ranks`` needs to know to spawn the ranks."""

    torch_device: str
    nproc: int


@dataclasses.dataclass(frozen=True)
class EpochLog:
    """A ``report`` for the ranks of :func:`train_supernet_ranks` (picklable, unlike a
    closure): rank 0 appends each epoch's metrics to ``path`` as one JSON line, after the
    epoch's checkpoint is written, so the process that started the ranks can follow them
    (:func:`read_epoch_log`)."""

    path: str

    def __call__(self, metrics: dict) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        line = json.dumps(json_safe({k: v for k, v in metrics.items() if k != "step_losses"}))
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def read_epoch_log(path: str) -> list[dict]:
    """The complete lines of an :class:`EpochLog` so far (a line still being written is not)."""
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return [json.loads(ln) for ln in text.split("\n")[:-1] if ln]


def train_supernet_ranks(nproc: int, config: SupernetConfig, fidelity: Fidelity,
                         data: ProxyData, *, seed: int, checkpoint_dir: str,
                         space: SearchSpace = DEFAULT_SPACE, device: str = "auto",
                         channels_last: bool | None = None, threads: int | None = None,
                         report: EpochLog | None = None) -> None:
    """``train_supernet`` data-parallel on ``nproc`` local processes (torch.multiprocessing:
    one GPU each with NCCL on CUDA; gloo on the CPU, the cores shared), or on this rank when a
    launcher (torchrun, srun) started the ranks. The result is the checkpoint in
    ``checkpoint_dir``: ``load_supernet`` it, or call ``train_supernet`` with the same
    arguments (a finished run just loads). ``threads``: torch threads of each rank (None:
    torch's default, which on the CPU oversubscribes the cores N ranks share). ``report``: an
    :class:`EpochLog` rank 0 appends every epoch to."""
    if nproc < 1:
        raise UsageError(f"--nproc {nproc}: allowed >= 1")
    if nproc > 1 and ":" in device:
        raise UsageError(f"--torch-device {device} with --nproc {nproc}: use cuda or auto "
                         "(rank r takes cuda:r)")
    ranks = _Ranks(device, nproc)
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if will_spawn(ranks) and cuda and nproc > torch.cuda.device_count():
        raise UsageError(f"--nproc {nproc}: this machine has {torch.cuda.device_count()} CUDA "
                         "device(s) (one process per GPU)")
    kwargs = dict(seed=seed, space=space, device=device, channels_last=channels_last,
                  checkpoint_dir=checkpoint_dir, threads=threads, report=report)
    run_on_ranks(_rank_entry, (config, fidelity, data, kwargs), ranks)


def _rank_entry(payload: tuple) -> None:
    config, fidelity, data, kwargs = payload
    train_supernet(config, fidelity, data, **kwargs)


def _process_group(device: str) -> DistContext | None:
    """This rank's place when the run is one of several processes, else None (one process:
    no collective anywhere, the path as before DDP)."""
    if not (dist.is_available() and (dist.is_initialized() or launched_externally())):
        return None
    ctx = setup_distributed(device)
    return ctx if ctx.distributed else None


def _read_checkpoint(run: _Run, path: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if there is one: read by rank 0 and broadcast to the others
    (no shared file system needed; a read error is raised on every rank, none waits forever)."""
    ck, error = None, None
    if run.rank == 0 and os.path.isfile(path):
        try:
            # on the CPU: the generator state must stay a CPU tensor; load_state_dict moves the rest
            ck = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # re-raised below, on every rank
            if run.world == 1:
                raise
            error = e
    if run.world > 1:
        box = [(ck, error)]
        dist.broadcast_object_list(box, src=0, device=run.dev)
        ck, error = box[0]
    if error is not None:
        raise error
    return ck


def checkpoint_epoch(path: str) -> int | None:
    """The epoch a supernet checkpoint holds (None: no such file), read without loading its
    tensors (``mmap``: the weights stay on disk)."""
    if not os.path.isfile(path):
        return None
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])


def load_supernet(path: str, device: str = "cpu") -> tuple[Supernet, dict[str, Any]]:
    """A trained supernet from its checkpoint (weights only), with the checkpoint's meta."""
    if not os.path.isfile(path):
        raise NotFoundError(f"supernet checkpoint {path}: no such file")
    ck = torch.load(path, map_location="cpu", weights_only=True)
    meta = ck["meta"]
    cfg = SupernetConfig.from_dict(meta["config"])
    net = Supernet(_space_from_dict(meta["space"]), cfg.conv_layer_scale_init)
    net.load_state_dict(ck["model"], strict=True)
    return net.to(resolve_device(device)), {**meta, "epoch": ck["epoch"], "history": ck["history"]}


def step_seconds(config: SupernetConfig, fidelity: Fidelity, data: ProxyData, *, steps: int = 5,
                 space: SearchSpace = DEFAULT_SPACE, device: str = "auto",
                 channels_last: bool = True, seed: int = 0) -> float:
    """Median wall seconds of one sandwich step at this setting (after one warm-up step), on
    real batches: for sizing a run to a time budget before starting it."""
    dev = resolve_device(device)
    run = _Run(config, fidelity, data, space, seed, dev, channels_last)
    times = []
    for b in range(steps + 1):
        idx = np.arange(b * run.bs, (b + 1) * run.bs) % len(run.labels)
        xb = torch.from_numpy(np.ascontiguousarray(data.train_x[np.sort(idx)])).to(dev)
        x = normalize(augment_batch(xb, run.gen, fidelity.crop_padding, fidelity.hflip), channels_last)
        subnets = [run.net.min_spec] + [run.pspace.sample(run.arch_rng) for _ in range(config.num_random)]
        t = time.perf_counter()
        _sandwich_step(run, x, run.labels[np.sort(idx)].to(dev), subnets)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t)
    return float(np.median(times[1:]))
