"""Proxy training: train one candidate at a stated Fidelity on a ProxyData cache.

The loop is deliberately plain (no DataLoader, no worker processes): the cache is a uint8
memmap already at the training resolution, so a batch is one fancy-index copy, and the
augmentation (random crop after zero padding + horizontal flip) is done in torch on the whole
uint8 batch, on the training device. bench/bench_proxy.py measures that this is never the
bottleneck. Optimiser, schedule and loss are timm's (AdamW without weight decay on norms and
biases, per-step cosine with linear warmup, label-smoothing cross-entropy).
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler

from search_space.spec import ArchSpec
from search_space.swiftformer import build_model

from .data import ProxyData
from .fidelity import Fidelity

__all__ = ["NonFiniteLoss", "train_proxy", "evaluate", "recalibrate_bn", "augment_batch", "normalize",
           "resolve_device", "proxy_spec"]


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite (the candidate diverged at this fidelity)."""


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"device={device!r}: allowed 'auto', 'cpu', 'cuda', 'cuda:N'") from None


def proxy_spec(spec: ArchSpec, data: ProxyData, fidelity: Fidelity) -> ArchSpec:
    """The spec as the proxy trains it: the data's class count, the fidelity's resolution."""
    return spec.replace(num_classes=data.num_classes, resolution=fidelity.resolution)


def augment_batch(x: torch.Tensor, gen: torch.Generator, padding: int, hflip: bool) -> torch.Tensor:
    """Random crop after zero padding + random horizontal flip of a uint8 NHWC batch.

    One gather for the whole batch (per-sample offsets via advanced indexing), no Python loop
    over images. Random numbers come from the CPU generator ``gen`` so results do not depend
    on the device.
    """
    b, h, w, _ = x.shape
    if padding > 0:
        xp = F.pad(x, (0, 0, padding, padding, padding, padding))  # pads W and H of NHWC
        dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen).to(x.device)
        dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # B,H,1
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # B,1,W
        if hflip:
            flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
            # Flipping = reading columns right-to-left; folded into the same gather.
            cols = torch.where(flip[:, None, None], cols.flip(-1), cols)
        return xp[torch.arange(b, device=x.device)[:, None, None], rows, cols]
    if hflip:
        flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
        return torch.where(flip[:, None, None, None], x.flip(2), x)
    return x


_MEAN = torch.tensor(IMAGENET_DEFAULT_MEAN) * 255
_STD = torch.tensor(IMAGENET_DEFAULT_STD) * 255


def normalize(x: torch.Tensor, channels_last: bool, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW (channels_last strides come for free from NHWC)."""
    x = (x.to(dtype) - _MEAN.to(x.device, dtype)) / _STD.to(x.device, dtype)
    x = x.permute(0, 3, 1, 2)
    return x if channels_last else x.contiguous()


def _batch(arr: np.ndarray, idx: np.ndarray) -> torch.Tensor:
    # Sorted indices read the memmap in file order (page-cache friendly); order within a
    # batch does not matter to the gradient.
    return torch.from_numpy(np.ascontiguousarray(arr[np.sort(idx)]))


def _amp(device: torch.device):
    """(autocast context factory, GradScaler or None): bf16 if supported, else fp16 + scaler."""
    if device.type != "cuda":
        return contextlib.nullcontext, None
    if torch.cuda.is_bf16_supported():
        return (lambda: torch.autocast("cuda", dtype=torch.bfloat16)), None
    return (lambda: torch.autocast("cuda", dtype=torch.float16)), torch.amp.GradScaler("cuda")


@torch.no_grad()
def recalibrate_bn(model: torch.nn.Module, data: ProxyData, n_images: int, batch_size: int,
                   device: torch.device, channels_last: bool = False) -> None:
    """Re-estimate BatchNorm running stats from ``n_images`` train images (cumulative mean).

    The images are evenly spaced over the class-grouped train array, so every class is in.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns or n_images <= 0:
        return
    n = len(data.train_y)
    idx = np.unique(np.linspace(0, n - 1, min(n_images, n)).round().astype(np.int64))
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the recalibration batches
    model.train()
    autocast, _ = _amp(device)
    try:
        # Batches are shuffled across classes (a class-pure batch would skew batch statistics).
        order = idx[np.random.default_rng(0).permutation(len(idx))]
        for s in range(0, len(order), batch_size):
            xb = torch.from_numpy(np.array(data.train_x[np.sort(order[s:s + batch_size])])).to(device)
            with autocast():
                model(normalize(xb, channels_last))
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: ProxyData, fidelity: Fidelity, device: torch.device,
             channels_last: bool = False) -> tuple[float, float]:
    """(top-1 %, mean cross-entropy without smoothing) on the cached val split."""
    model.eval()
    autocast, _ = _amp(device)
    vx, vy = data.val_x, data.val_y
    n, correct, loss_sum = len(vy), 0, 0.0
    for s in range(0, n, fidelity.eval_batch_size):
        xb = torch.from_numpy(np.array(vx[s:s + fidelity.eval_batch_size])).to(device)
        yb = torch.from_numpy(np.array(vy[s:s + fidelity.eval_batch_size])).to(device)
        with autocast():
            out = model(normalize(xb, channels_last))
        out = out.float()
        loss_sum += F.cross_entropy(out, yb, reduction="sum").item()
        correct += (out.argmax(1) == yb).sum().item()
    return 100.0 * correct / n, loss_sum / n


def train_proxy(spec: ArchSpec, fidelity: Fidelity, data: ProxyData, *, seed: int,
                device: str = "auto", report: Callable[[dict], None] | None = None,
                threads: int | None = None, channels_last: bool | None = None) -> dict:
    """Train ``spec`` at ``fidelity`` on ``data``; return the final metrics.

    The model is built with num_classes = data.num_classes and resolution = fidelity.resolution.
    After every epoch ``report`` gets {"epoch", "top1", "val_loss", "train_loss", "img_per_s",
    "seconds", "epoch_seconds", "lr"} (seconds = wall time since training started; img_per_s =
    training images per second of that epoch, eval excluded). Raises NonFiniteLoss as soon as a
    training loss is NaN/inf. ``threads`` sets torch's intra-op threads for this process.
    channels_last None = on (CUDA and CPU alike: on 2 CPU cores it trained XS/S/L1/L3 1.25/1.21/
    1.15/1.03x faster per CPU-second, notes/search_proxy.md; the uint8 NHWC batch becomes a
    channels_last tensor without a copy).
    """
    if data.resolution != fidelity.resolution:
        raise ValueError(f"data resolution {data.resolution} != fidelity.resolution "
                         f"{fidelity.resolution}: prepare_data with this fidelity")
    dev = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(int(threads))
    if channels_last is None:
        channels_last = True
    torch.manual_seed(seed)
    pspec = proxy_spec(spec, data, fidelity)
    model = build_model(pspec).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in model.parameters())

    tx, ty = data.train_x, data.train_y
    n = len(ty)
    bs = min(fidelity.batch_size, n)
    steps_per_epoch = n // bs  # drop the ragged last batch: BN hates a batch of 1-3 images
    total_steps = steps_per_epoch * fidelity.epochs
    warmup_steps = min(int(round(fidelity.warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))

    opt = create_optimizer_v2(model, "adamw", lr=fidelity.lr, weight_decay=fidelity.weight_decay)
    sched = CosineLRScheduler(opt, t_initial=total_steps, lr_min=fidelity.min_lr,
                              warmup_t=warmup_steps, warmup_lr_init=fidelity.warmup_lr,
                              t_in_epochs=False)
    loss_fn = LabelSmoothingCrossEntropy(fidelity.label_smoothing) if fidelity.label_smoothing > 0 \
        else torch.nn.CrossEntropyLoss()
    autocast, scaler = _amp(dev)
    gen = torch.Generator().manual_seed(seed)  # shuffles + augmentation, independent of init
    labels = torch.from_numpy(np.array(ty, dtype=np.int64))  # small; a writable copy

    history: list[dict] = []
    t_start = time.perf_counter()
    cpu_start = time.process_time()  # this process's CPU time: robust to a shared machine's load
    step = 0
    train_time = 0.0
    train_loss = float("nan")
    for epoch in range(1, fidelity.epochs + 1):
        model.train()
        t_ep = time.perf_counter()
        c_ep = time.process_time()
        perm = torch.randperm(n, generator=gen).numpy()
        loss_sum = torch.zeros((), device=dev)
        for b in range(steps_per_epoch):
            idx = perm[b * bs:(b + 1) * bs]
            idx = np.sort(idx)
            xb = torch.from_numpy(np.ascontiguousarray(tx[idx])).to(dev, non_blocking=True)
            yb = labels[idx].to(dev, non_blocking=True)
            xb = augment_batch(xb, gen, fidelity.crop_padding, fidelity.hflip)
            with autocast():
                out = model(normalize(xb, channels_last))
                loss = loss_fn(out.float(), yb)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"arch {spec.arch_hash}: training loss {loss.item()} at epoch "
                                    f"{epoch}, step {b + 1}/{steps_per_epoch} (lr {opt.param_groups[0]['lr']:.3g})")
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            step += 1
            sched.step_update(step)
            loss_sum += loss.detach()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        ep_train = time.perf_counter() - t_ep
        ep_cpu = time.process_time() - c_ep
        train_time += ep_train
        train_loss = loss_sum.item() / max(steps_per_epoch, 1)
        recalibrate_bn(model, data, fidelity.bn_recal_images, fidelity.eval_batch_size, dev,
                       channels_last)
        top1, val_loss = evaluate(model, data, fidelity, dev, channels_last)
        if not math.isfinite(val_loss):
            # Eval-mode BN with diverged running stats can blow up even if the last loss was finite.
            raise NonFiniteLoss(f"arch {spec.arch_hash}: validation loss {val_loss} at epoch {epoch}")
        now = time.perf_counter()
        m = {"epoch": epoch, "top1": top1, "val_loss": val_loss, "train_loss": train_loss,
             "img_per_s": steps_per_epoch * bs / max(ep_train, 1e-9), "seconds": now - t_start,
             "epoch_seconds": now - t_ep, "train_cpu_seconds": ep_cpu,
             "lr": opt.param_groups[0]["lr"]}
        history.append(m)
        if report is not None:
            report(dict(m))

    last = history[-1]
    return {"top1": last["top1"], "val_loss": last["val_loss"], "train_loss": train_loss,
            "epochs_done": len(history), "train_seconds": time.perf_counter() - t_start,
            "cpu_seconds": time.process_time() - cpu_start,
            "img_per_s": steps_per_epoch * bs * len(history) / max(train_time, 1e-9),
            "params": n_params, "device": str(dev), "threads": torch.get_num_threads(),
            "channels_last": bool(channels_last), "seed": seed, "arch_hash": spec.arch_hash,
            "fidelity_key": fidelity.key, "dataset_id": data.dataset_id, "history": history}
