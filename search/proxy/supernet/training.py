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
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import random
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler

from search_space.errors import NotFoundError, UsageError
from search_space.io import canonical_json, save_torch_atomic
from search_space.space import DEFAULT_SPACE, SearchSpace
from search_space.spec import ArchSpec

from ..data import ProxyData
from ..fidelity import Fidelity
from ..train import NonFiniteLoss, _amp, augment_batch, normalize, resolve_device
from .config import SupernetConfig, proxy_space
from .model import Supernet

__all__ = ["train_supernet", "load_supernet", "kd_loss", "step_seconds", "CHECKPOINT_NAME",
           "space_key"]

CHECKPOINT_NAME = "supernet.pt"
CHECKPOINT_FORMAT = 1


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
                 space: SearchSpace, seed: int, dev: torch.device, channels_last: bool) -> None:
        self.config, self.fidelity, self.data, self.seed, self.dev = config, fidelity, data, seed, dev
        self.channels_last = channels_last
        self.pspace = proxy_space(space, data.num_classes, fidelity.resolution, config.width_divisor)
        torch.manual_seed(seed)
        self.net = Supernet(self.pspace, config.conv_layer_scale_init).to(dev)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        n = len(data.train_y)
        self.bs = min(config.batch_size, n)
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
                "history": self.history}

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
    return loss_max.detach(), others / max(len(subnets), 1)


def _train_epoch(run: _Run) -> dict[str, Any]:
    cfg, net, data, fid = run.config, run.net, run.data, run.fidelity
    net.train()
    t0, c0 = time.perf_counter(), time.process_time()
    n = len(run.labels)
    perm = torch.randperm(n, generator=run.gen).numpy()
    losses: list[tuple[torch.Tensor, torch.Tensor]] = []
    for b in range(run.steps_per_epoch):
        idx = np.sort(perm[b * run.bs:(b + 1) * run.bs])
        xb = torch.from_numpy(np.ascontiguousarray(data.train_x[idx])).to(run.dev, non_blocking=True)
        yb = run.labels[idx].to(run.dev, non_blocking=True)
        x = normalize(augment_batch(xb, run.gen, fid.crop_padding, fid.hflip), run.channels_last)
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
    if cfg.reorder == "l1":
        net.reorder_hidden_units(run.opt)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
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
    epoch's metrics (after the checkpoint is written)."""
    if data.resolution != fidelity.resolution:
        raise UsageError(f"data resolution {data.resolution} != fidelity.resolution "
                         f"{fidelity.resolution}: prepare_data with this fidelity")
    dev = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(int(threads))
    run = _Run(config, fidelity, data, space, seed, dev, True if channels_last is None else channels_last)
    path = os.path.join(checkpoint_dir, CHECKPOINT_NAME) if checkpoint_dir else None
    if path and os.path.isfile(path):
        # on the CPU: the generator state must stay a CPU tensor; load_state_dict moves the rest
        run.restore(torch.load(path, map_location="cpu", weights_only=True), path)
    resumed_at = run.epoch
    t0 = time.perf_counter()
    while run.epoch < config.epochs:
        m = _train_epoch(run)
        run.history.append(m)
        if path:
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
        "history": run.history, **run.meta()}


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
