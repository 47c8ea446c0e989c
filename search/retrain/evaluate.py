"""Top-1/top-5 of a model on an ImageFolder split (official ``dist_test.sh`` counterpart).

Each rank evaluates a disjoint stride of the images and the counts are summed, so the result
is exact at any world size. Official SwiftFormer checkpoints, timm's and ours all load
(``search_space.checkpoint`` reads them weights-only and converts official key names).
"""
from __future__ import annotations

import os
import time
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from search_space.errors import UsageError
from search_space.io import check_input_file, check_writable_file, write_json_atomic
from search_space.spec import ArchSpec
from search_space.checkpoint import load_state_dict_checked, read_file, state_dict_of
from search_space.swiftformer import build_model

from ..distributed import (DistContext, all_reduce_sum, check_torch_device, launcher_shard, log,
                           run_on_ranks, setup_distributed)
from .config import EvaluateConfig, load_arch
from .data import ClassDirsImageFolder, check_split_images, eval_loader, eval_transform, split_root


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, ctx: DistContext, amp: bool) -> dict[str, float]:
    """Top-1/top-5 (%) and mean cross-entropy over the whole (sharded) val set."""
    model.eval()
    correct1 = correct5 = loss_sum = 0.0
    n = 0
    for x, y in loader:
        x = x.to(ctx.device, non_blocking=True)
        y = y.to(ctx.device, non_blocking=True)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        k = min(5, logits.shape[1])
        hit = logits.topk(k, dim=1).indices.eq(y[:, None])
        correct1 += hit[:, :1].any(dim=1).sum().item()
        correct5 += hit.any(dim=1).sum().item()
        n += y.numel()
    c1, c5, ls, total = all_reduce_sum([correct1, correct5, loss_sum, float(n)], ctx)
    total = max(total, 1.0)
    return {"top1": 100.0 * c1 / total, "top5": 100.0 * c5 / total, "val_loss": ls / total,
            "val_images": int(total)}


def prepare_evaluate(cfg: EvaluateConfig) -> tuple[ArchSpec, str]:
    """The spec and the split directory; bad input is one line, before any process starts."""
    spec = load_arch(cfg.arch)
    check_input_file(cfg.checkpoint, "--checkpoint")
    root = split_root(cfg.data, cfg.split)
    check_torch_device(cfg.processes.torch_device)
    if cfg.json:
        check_writable_file(cfg.json, "--json")
    return spec, root


def evaluate_main(cfg: EvaluateConfig) -> int:
    _, root = prepare_evaluate(cfg)
    check_split_images(cfg.data, [root], shard=launcher_shard())  # every image, up front
    run_on_ranks(_evaluate_entry, cfg, cfg.processes)
    return 0


def _evaluate_entry(cfg: EvaluateConfig) -> None:
    evaluate_worker(cfg)


def _load_weights(model: nn.Module, cfg: EvaluateConfig) -> None:
    source = f"--checkpoint {cfg.checkpoint}"
    obj = read_file(cfg.checkpoint, "--checkpoint")
    if cfg.ema:
        if not isinstance(obj, dict) or not isinstance(obj.get("model_ema"), dict):
            raise UsageError(f"{source}: has no EMA weights (drop --ema)")
        obj = obj["model_ema"]
    load_state_dict_checked(model, state_dict_of(obj, source), source)


def evaluate_worker(cfg: EvaluateConfig, device: torch.device | None = None) -> dict[str, Any]:
    """Top-1/top-5 of a checkpoint on this rank's share; rank 0 prints (and writes) the total."""
    spec, root = prepare_evaluate(cfg)
    ctx = setup_distributed(cfg.processes.torch_device, device)
    ds = ClassDirsImageFolder(root, transform=eval_transform(spec.resolution, cfg.crop_pct,
                                                             cfg.interpolation))
    if spec.num_classes != len(ds.classes):
        log(f"note: the spec has {spec.num_classes} classes, {root} has {len(ds.classes)}; "
            "labels are the sorted class-directory indices", ctx.rank)
    model = build_model(spec)
    _load_weights(model, cfg)
    model.to(ctx.device).eval()
    amp = cfg.processes.amp and ctx.device.type == "cuda"
    t0 = time.time()
    metrics = evaluate(model, eval_loader(ds, ctx, cfg.batch_size, cfg.processes.workers), ctx, amp)
    metrics.update(arch_hash=spec.arch_hash, checkpoint=os.path.abspath(cfg.checkpoint),
                   ema=cfg.ema, seconds=time.time() - t0, world_size=ctx.world_size)
    if ctx.is_main:
        print(f"{metrics['val_images']} images: top-1 {metrics['top1']:.2f}%  "
              f"top-5 {metrics['top5']:.2f}%  loss {metrics['val_loss']:.4f}", flush=True)
        if cfg.json:
            write_json_atomic(cfg.json, metrics)
    return metrics
