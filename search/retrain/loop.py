"""The retrain loop: one function per stage, the same on every launcher.

``retrain_main`` checks the job and starts the ranks; ``retrain_worker`` runs on each rank:
build (model, data, objective, optimiser, EMA), resume, then epochs of train / evaluate /
checkpoint, then the final weights, exports and the result record. The data pipeline,
augmentation, mixup, losses, scheduler, optimiser, EMA and clipping are timm's; what lives here
is the glue the official ``main.py`` / ``engine.py`` has.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
from timm.data import Mixup
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, NativeScaler, dispatch_clip_grad
from torch.utils.data import DataLoader, Sampler

from search_space.io import json_safe, write_json_atomic, write_text_atomic
from search_space.swiftformer import build_model

from .checkpoints import (CHECKPOINT_NAME, FINAL_NAME, Progress, TrainState, export_final,
                          read_resumable, restore, resume_path, save_checkpoint, save_final)
from .config import RetrainJob, scaled_lr
from .data import check_split_images, eval_loader, retrain_datasets, train_loader
from ..distributed import (DistContext, all_reduce_sum, barrier, launcher_shard, log,
                          param_digest, run_on_ranks, setup_distributed, will_spawn)
from .evaluate import evaluate
from .losses import DistillationLoss, label_loss, load_teacher
from .prepare import PreparedRun, prepare_retrain
from .record import finish_recorded_run, job_settings, start_recorded_run

EpochHook = Callable[[dict[str, Any]], None]


@dataclass
class Run:
    """One rank's training run: what it trains, on what, with what, and how far it got."""

    job: RetrainJob
    prep: PreparedRun
    ctx: DistContext
    amp: bool  # autocast + grad scaler (CUDA only)
    lr: float  # the peak lr after scaling to the global batch
    sampler: Sampler
    train_loader: DataLoader
    val_loader: DataLoader
    mixup: Mixup | None
    criterion: DistillationLoss
    state: TrainState  # unwrapped model, optimizer, scheduler, EMA, scaler
    forward: nn.Module  # the model the steps call: DDP-wrapped when distributed
    progress: Progress
    rank_log: dict[str, Any]  # this rank's steps, images and weight digest (rank_logs/)

    @property
    def out(self) -> Path:
        return self.prep.output


# -- entry points -------------------------------------------------------------------------------
def retrain_main(job: RetrainJob) -> int:
    """Check the job (bad input: one line, exit 2, before any process starts), then train."""
    prep = prepare_retrain(job)
    # Every image, before any training: a broken one is refused now, not mid-epoch (or never,
    # when the sampler does not draw it). Ranks a launcher started each check their share.
    check_split_images(job.data, [os.path.join(job.data, s) for s in ("train", "val")],
                       shard=launcher_shard())
    resume = prep.output / CHECKPOINT_NAME if job.resume == "auto" else job.resume
    if resume is not None and os.path.isfile(resume):  # unreadable: refused before any write
        read_resumable(str(resume), prep.spec.canonical_json())
    if prep.distillation != "none" and will_spawn(job.processes):
        # A teacher file that does not fit would otherwise fail inside N spawned processes.
        load_teacher(job.recipe.teacher_model, job.teacher_checkpoint, prep.spec.num_classes,
                     torch.device("cpu"))
    run_on_ranks(_retrain_entry, job, job.processes)
    return 0


def _retrain_entry(job: RetrainJob) -> None:
    retrain_worker(job)


def retrain_worker(job: RetrainJob, device: torch.device | None = None,
                   on_epoch_end: EpochHook | None = None) -> dict[str, Any]:
    """Train on this rank (the process group is joined here unless the launcher did it).

    Returns the run summary on rank 0 when this call finished the schedule, else the metrics
    of the last epoch trained ({} when none)."""
    prep = prepare_retrain(job)
    ctx = setup_distributed(job.processes.torch_device, device)
    run = _start(job, prep, ctx)
    try:
        result = _train_epochs(run, on_epoch_end)
    except BaseException as e:
        if ctx.is_main and job.record:
            finish_recorded_run(job.db, run.progress.run_id, "FAILED",
                                error=f"{type(e).__name__}: {e}"[:2000])
        raise
    history = run.progress.history
    finished = bool(history) and history[-1]["epoch"] == job.recipe.epochs - 1
    if finished and result and ctx.is_main:
        result = _finish(run)
    barrier(ctx)
    return result


# -- building -----------------------------------------------------------------------------------
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _announce(job: RetrainJob, prep: PreparedRun, ctx: DistContext, amp: bool) -> None:
    r = prep.recipe
    log(f"retrain {prep.arch_hash} on {ctx.world_size} process(es), device {ctx.device}, "
        f"amp {'on' if amp else 'off'}; recipe as {r.nearest_preset} (aa={r.aa or 'none'}, "
        f"mixup={r.mixup}, cutmix={r.cutmix})", ctx.rank)
    if job.recipe.distillation_type != "none" and prep.distillation == "none":
        log("no --teacher-checkpoint given: distillation is off (both heads learn from the labels)",
            ctx.rank)


def _objective(job: RetrainJob, prep: PreparedRun, ctx: DistContext,
               model: nn.Module) -> tuple[Mixup | None, DistillationLoss]:
    """Mixup and the loss; with a teacher, the model trains its distillation head on it."""
    cfg = job.recipe
    mixup, base = label_loss(cfg, prep.recipe, prep.spec.num_classes)
    teacher = None
    if prep.distillation != "none":
        teacher = load_teacher(cfg.teacher_model, job.teacher_checkpoint, prep.spec.num_classes,
                               ctx.device)
        model.set_distilled_training(True)
        log(f"distillation {prep.distillation} from {cfg.teacher_model} "
            f"({job.teacher_checkpoint}), alpha {cfg.distillation_alpha}", ctx.rank)
    return mixup, DistillationLoss(base, teacher, prep.distillation, cfg.distillation_alpha,
                                   cfg.distillation_tau)


def _train_state(job: RetrainJob, model: nn.Module, lr: float, amp: bool) -> TrainState:
    cfg = job.recipe
    optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=lr, weight_decay=cfg.weight_decay,
                                    eps=cfg.opt_eps)
    scheduler, _ = create_scheduler_v2(optimizer, sched=cfg.sched, num_epochs=cfg.epochs,
                                       warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.warmup_lr,
                                       min_lr=cfg.min_lr, cooldown_epochs=0)
    scaler = NativeScaler(device="cuda") if amp else None
    # EMA after .to(device), before the DDP wrapper (as timm/official code require).
    ema = ModelEmaV3(model, decay=cfg.model_ema_decay) if cfg.model_ema else None
    return TrainState(model=model, optimizer=optimizer, scheduler=scheduler, ema=ema,
                      scaler=scaler)


def _resume(job: RetrainJob, prep: PreparedRun, ctx: DistContext, state: TrainState) -> Progress:
    path = resume_path(job.resume, prep.output, ctx.rank) if job.resume else None
    if path is None:
        return Progress()
    progress = restore(path, prep.spec.canonical_json(), state)
    log(f"resumed from {path} at epoch {progress.start_epoch}", ctx.rank)
    return progress


def _start(job: RetrainJob, prep: PreparedRun, ctx: DistContext) -> Run:
    """Everything a rank needs before its first step (in the order that fixes the weights)."""
    if ctx.is_main:
        prep.output.mkdir(parents=True, exist_ok=True)
    amp = job.processes.amp and ctx.device.type == "cuda"
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    _announce(job, prep, ctx, amp)
    # Same seed on every rank for the weights (DDP also broadcasts rank 0's at wrap time).
    _seed_everything(job.recipe.seed)
    model = build_model(prep.spec).to(ctx.device)
    train_ds, val_ds = retrain_datasets(job.data, job.recipe, prep.spec.resolution, prep.recipe.aa)
    workers = job.processes.workers
    sampler, loader = train_loader(train_ds, ctx, job.recipe, workers, job.data)
    val_loader = eval_loader(val_ds, ctx, int(1.5 * job.recipe.batch_size), workers)
    mixup, criterion = _objective(job, prep, ctx, model)
    lr = scaled_lr(job.recipe, ctx.world_size)
    state = _train_state(job, model, lr, amp)
    progress = _resume(job, prep, ctx, state)
    forward = model
    if ctx.distributed:
        forward = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if ctx.is_main and job.record and progress.run_id is None:
        progress.run_id = start_recorded_run(job, prep)
    rank_log = {"rank": ctx.rank, "world_size": ctx.world_size, "steps": 0, "samples": 0}
    return Run(job=job, prep=prep, ctx=ctx, amp=amp, lr=lr, sampler=sampler,
               train_loader=loader, val_loader=val_loader, mixup=mixup, criterion=criterion,
               state=state, forward=forward, progress=progress, rank_log=rank_log)


# -- epochs -------------------------------------------------------------------------------------
def _train_epochs(run: Run, on_epoch_end: EpochHook | None) -> dict[str, Any]:
    """Epochs from the resumed one to the end (or stop_after_epochs); the last one's metrics."""
    job, start = run.job, run.progress.start_epoch
    epochs = job.recipe.epochs
    end = epochs if job.stop_after_epochs is None else min(epochs, start + job.stop_after_epochs)
    if start >= epochs:
        log(f"{run.out / CHECKPOINT_NAME}: all {epochs} epochs already trained; nothing to do "
            "(see result.json, or raise --epochs to train further)", run.ctx.rank)
    metrics: dict[str, Any] = {}
    for epoch in range(start, end):
        metrics = _epoch(run, epoch)
        if on_epoch_end is not None:
            on_epoch_end(metrics)
        barrier(run.ctx)  # nobody races ahead of the checkpoint of this epoch
    return metrics


def _epoch(run: Run, epoch: int) -> dict[str, Any]:
    t0 = time.time()
    # Per-epoch, per-rank seeding: augmentation/mixup randomness does not depend on where a
    # run was interrupted, so a resumed run takes exactly the steps an uninterrupted one takes.
    _seed_everything(run.job.recipe.seed + 1_000_003 * epoch + 7919 * run.ctx.rank)
    run.sampler.set_epoch(epoch)
    if run.state.scheduler is not None:
        run.state.scheduler.step(epoch)  # lr for this epoch (idempotent, so resume-safe)
    loss_sum, n_seen = _train_steps(run, epoch)
    metrics = _epoch_metrics(run, epoch, loss_sum, n_seen)
    metrics["epoch_seconds"] = time.time() - t0
    run.progress.history.append(metrics)
    run.rank_log.update(epoch=epoch, steps=run.rank_log["steps"] + len(run.train_loader),
                        samples=run.rank_log["samples"] + n_seen,
                        param_sha256=param_digest(run.state.model))
    # Every rank writes its own log (a non-zero rank may get here before rank 0 made the dir).
    write_json_atomic(run.out / "rank_logs" / f"rank{run.ctx.rank}.json", run.rank_log)
    if run.ctx.is_main:
        _save_epoch(run, epoch, metrics)
    return metrics


def _step(run: Run, x: torch.Tensor, y: torch.Tensor, epoch: int) -> float:
    """One optimizer step on one batch; returns the batch's loss."""
    state, cfg = run.state, run.job.recipe
    if run.mixup is not None:
        x, y = run.mixup(x, y)
    with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=run.amp):
        outputs = run.forward(x)
        loss = run.criterion(x, outputs, y)
    value = loss.item()
    if not math.isfinite(value):
        raise FloatingPointError(f"loss is {value} at epoch {epoch}, step "
                                 f"{run.progress.global_step}")
    state.optimizer.zero_grad(set_to_none=True)
    clip = cfg.clip_grad if cfg.clip_grad and cfg.clip_grad > 0 else None
    if state.scaler is not None:
        state.scaler(loss, state.optimizer, clip_grad=clip, clip_mode=cfg.clip_mode,
                     parameters=state.model.parameters())
    else:
        loss.backward()
        if clip is not None:
            dispatch_clip_grad(state.model.parameters(), clip, mode=cfg.clip_mode)
        state.optimizer.step()
    run.progress.global_step += 1
    if state.ema is not None:
        state.ema.update(state.model, step=run.progress.global_step)
    return value


def _train_steps(run: Run, epoch: int) -> tuple[float, int]:
    """One epoch of steps on this rank's share; its loss sum and image count."""
    run.forward.train()
    loss_sum, n_seen = 0.0, 0
    for x, y in run.train_loader:
        x = x.to(run.ctx.device, non_blocking=True)
        y = y.to(run.ctx.device, non_blocking=True)
        loss_sum += _step(run, x, y, epoch) * x.shape[0]
        n_seen += x.shape[0]
    if run.ctx.device.type == "cuda":
        torch.cuda.synchronize()
    return loss_sum, n_seen


def _epoch_metrics(run: Run, epoch: int, loss_sum: float, n_seen: int) -> dict[str, Any]:
    """Train loss over every rank; val (and EMA) accuracy on evaluation epochs."""
    ls, ns = all_reduce_sum([loss_sum, float(n_seen)], run.ctx)
    metrics: dict[str, Any] = {"epoch": epoch, "train_loss": ls / max(ns, 1.0),
                               "lr": run.state.optimizer.param_groups[0]["lr"],
                               "train_images": int(ns), "global_step": run.progress.global_step}
    cfg = run.job.recipe
    if epoch == cfg.epochs - 1 or (epoch + 1) % cfg.eval_interval == 0:
        metrics.update(evaluate(run.state.model, run.val_loader, run.ctx, run.amp))
        if run.state.ema is not None:
            m = evaluate(run.state.ema.module, run.val_loader, run.ctx, run.amp)
            metrics.update(top1_ema=m["top1"], top5_ema=m["top5"])
    return metrics


def _save_epoch(run: Run, epoch: int, metrics: dict[str, Any]) -> None:
    """Rank 0: the checkpoint, metrics.jsonl (one line per epoch so far) and the log line."""
    save_checkpoint(run.out / CHECKPOINT_NAME, run.state, run.progress, epoch,
                    spec_json=run.prep.spec.canonical_json(), arch_hash=run.prep.arch_hash,
                    job=job_settings(run.job))
    write_text_atomic(run.out / "metrics.jsonl", "".join(
        json.dumps(json_safe(m), sort_keys=True) + "\n" for m in run.progress.history))
    shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in metrics.items() if k != "epoch")
    log(f"epoch {epoch + 1}/{run.job.recipe.epochs}: {shown}")


# -- the end --------------------------------------------------------------------------------------
def _finish(run: Run) -> dict[str, Any]:
    """Rank 0, after the last epoch: final.pth, exports, result.json and the completed record."""
    job, prep, out = run.job, run.prep, run.out
    final = run.progress.history[-1]
    spec_json = prep.spec.canonical_json()
    save_final(out / FINAL_NAME, run.state, spec_json=spec_json, arch_hash=prep.arch_hash)
    summary = {"arch_hash": prep.arch_hash, "spec": json.loads(spec_json),
               "epochs": job.recipe.epochs, "world_size": run.ctx.world_size,
               "global_batch": job.recipe.batch_size * run.ctx.world_size, "lr": run.lr,
               "distillation": prep.distillation, "data": os.path.abspath(job.data),
               "top1": final.get("top1"), "top5": final.get("top5"),
               "top1_ema": final.get("top1_ema"), "top5_ema": final.get("top5_ema"),
               "checkpoint": str((out / FINAL_NAME).resolve())}
    if job.export:
        summary["exports"] = export_final(run.state.model, prep.spec, out)
    write_json_atomic(out / "result.json", summary)
    if job.record:
        finish_recorded_run(job.db, run.progress.run_id, "COMPLETED", top1=final.get("top1"),
                            top5=final.get("top5"), checkpoint=summary["checkpoint"])
        summary.update(run_id=run.progress.run_id, db=job.db)
        write_json_atomic(out / "result.json", summary)
    return summary
