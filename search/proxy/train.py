"""Proxy training: train one candidate at a stated Fidelity on a ProxyData cache.

The loop is deliberately plain (no DataLoader, no worker processes): the cache is a uint8
memmap already at the training resolution, so a batch is one fancy-index copy (on CUDA into a
pinned staging buffer, then an asynchronous copy), and the augmentation (random crop after zero
padding + horizontal flip) is done in torch on the whole uint8 batch, on the training device.
Optimiser, schedule and loss are timm's (AdamW without weight decay on norms and biases, fused
kernel; per-step cosine with linear warmup; label-smoothing cross-entropy).

How it runs on a device -- autocast dtype, GradScaler, memory format, pinned staging, fused
AdamW, convolutions as matrix products, how often the host syncs -- is one decision,
:func:`choose_engine`, a pure function of the device type and CUDA capability (tested with
fakes on machines without a GPU). These choices change speed, not what a proxy accuracy means,
so they are not part of the Fidelity key (see fidelity.py). Measurements: notes/search_proxy.md,
bench/bench_proxy.py (CPU, against timm in a plain loop), bench/gpu_engine.py (GPU).
"""
from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler

from search_space.spec import ArchSpec
from search_space.swiftformer import build_model

from .data import ProxyData
from .fidelity import Fidelity
from .memory import release_memory

__all__ = ["NonFiniteLoss", "train_proxy", "evaluate", "recalibrate_bn", "augment_batch", "normalize",
           "resolve_device", "proxy_spec", "EngineChoice", "choose_engine", "engine_for",
           "prepare_model", "MatmulConv2d", "release_memory"]


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


# -- how the loop runs on a device ---------------------------------------------------------------
@dataclass(frozen=True)
class EngineChoice:
    """Execution settings for one device (speed only: none of them is part of the Fidelity)."""

    # Autocast dtype; None = plain float32. bf16 needs no loss scaling; fp16 does.
    autocast_dtype: torch.dtype | None
    grad_scaler: bool
    # NHWC activations: on CUDA what tensor cores want; on CPU measured faster too (oneDNN),
    # and the uint8 NHWC batch becomes a channels_last tensor without a copy.
    channels_last: bool
    # Batches gathered into page-locked host buffers and copied asynchronously.
    pin_memory: bool
    # One fused AdamW kernel (torch >= 2.4 on CPU and CUDA) instead of a per-tensor loop.
    fused_adamw: bool
    # Convolutions oneDNN is slow at on CPU (1x1, tiny inputs) as matrix products (MatmulConv2d).
    conv_matmul: bool
    # Steps between host syncs for the non-finite-loss check (1 = every step; on CPU a sync
    # is free, on CUDA each one drains the launch queue).
    check_every: int
    # cuDNN autotuning per new convolution shape (every trial is a new architecture).
    cudnn_benchmark: bool = False
    # AdamW steps taken during backward, chunk by chunk, each chunk's gradients freed at once
    # (_StepInBackward): the full gradient set is never alive (-1x parameters at the backward
    # peak: L3 ~100 MB of a CPU worker's peak). Same numbers (per-tensor fused kernel). On
    # CUDA one multi-tensor kernel per step is cheaper and memory is not what limits.
    step_in_backward: bool = False


def choose_engine(device_type: str, capability: tuple[int, int] | None = None) -> EngineChoice:
    """The execution settings for a device type ("cpu", "cuda", "mps") and, for CUDA, its
    compute capability (major, minor).

    * CUDA >= 8.0 (Ampere, Hopper, ...): bf16 autocast, no scaler -- bf16 has float32's range.
    * older CUDA (Volta 7.0, Turing 7.5): fp16 autocast + GradScaler (bf16 would be emulated).
    * CPU: float32 (bf16 autocast on CPU changes the numbers of the default search), 1x1 and
      tiny-input convolutions as matrix products (measured faster, notes/search_proxy.md),
      fused AdamW stepped during backward (memory, see EngineChoice.step_in_backward).
    * MPS: float32, no fused optimizer (kept conservative: never measured here).
    """
    if device_type == "cuda":
        if capability is None:
            raise ValueError("choose_engine('cuda') needs the device's compute capability")
        bf16 = tuple(capability) >= (8, 0)
        return EngineChoice(autocast_dtype=torch.bfloat16 if bf16 else torch.float16,
                            grad_scaler=not bf16, channels_last=True, pin_memory=True,
                            fused_adamw=True, conv_matmul=False, check_every=50)
    if device_type == "cpu":
        return EngineChoice(autocast_dtype=None, grad_scaler=False, channels_last=True,
                            pin_memory=False, fused_adamw=True, conv_matmul=True, check_every=1,
                            step_in_backward=True)
    return EngineChoice(autocast_dtype=None, grad_scaler=False, channels_last=True,
                        pin_memory=False, fused_adamw=False, conv_matmul=False, check_every=1)


def engine_for(device: torch.device) -> EngineChoice:
    """:func:`choose_engine` for a real device (queries the CUDA capability)."""
    cap = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    return choose_engine(device.type, cap)


def _autocast(device: torch.device, engine: EngineChoice):
    if engine.autocast_dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=engine.autocast_dtype)


def _amp(device: torch.device):
    """(autocast context factory, GradScaler or None) for ``device`` (see :func:`choose_engine`)."""
    engine = engine_for(device)
    scaler = torch.amp.GradScaler(device.type) if engine.grad_scaler else None
    return _autocast(device, engine), scaler


@functools.lru_cache(maxsize=None)
def _depthwise_taps(h: int, w: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For a k x k, stride-1, 'same'-padded depthwise conv on an h x w input: the kernel tap
    linking input pixel p to output pixel o, as (index[o, p], mask[o, p]) over h*w pixels."""
    r, hw = k // 2, h * w
    index = torch.zeros(hw, hw, dtype=torch.long)
    mask = torch.zeros(hw, hw)
    for o in range(hw):
        for p in range(hw):
            a, b = p // w - o // w + r, p % w - o % w + r
            if 0 <= a < k and 0 <= b < k:
                index[o, p], mask[o, p] = a * k + b, 1.0
    return index, mask


class MatmulConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that computes the shapes oneDNN handles slowly on CPU as matrix products.

    Three exact rewrites (the same linear map; floats differ in the last bits, another
    summation order), each on channels_last input only, where the pixels x channels matrix is a
    permuted view without a copy; any other case runs the convolution:

    * 1x1, stride 1 (the MLPs' pointwise layers): ``F.linear`` over the pixels.
    * one output pixel (the last downsampling of a 32-px proxy, 2x2 -> 1x1): ``F.linear`` of the
      flattened input with the kernel taps that touch it.
    * depthwise 'same' conv on at most 2x2 pixels (the last two stages at 32 px): each output
      pixel is a per-channel weighted sum of the input pixels, one broadcast product + sum.

    Same parameters, buffers and state_dict keys as the Conv2d it replaces (only the class of an
    existing module is swapped, see :func:`prepare_model`). Measured per step: notes/search_proxy.md.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.stride(1) != 1 or self.padding_mode != "zeros" or self.dilation != (1, 1):
            return super().forward(x)
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if self.groups == 1:
            if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):
                y = F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias)
                return y.permute(0, 3, 1, 2)
            if (h + 2 * ph - kh) // sh == 0 and (w + 2 * pw - kw) // sw == 0 \
                    and ph + h <= kh and pw + w <= kw:
                taps = self.weight[:, :, ph:ph + h, pw:pw + w].permute(0, 2, 3, 1).flatten(1)
                y = F.linear(x.permute(0, 2, 3, 1).reshape(n, h * w * c), taps, self.bias)
                return y.view(n, 1, 1, -1).permute(0, 3, 1, 2)
        elif self.groups == c == self.out_channels and h * w <= 4 and kh == kw \
                and (sh, sw) == (1, 1) and ph == pw == kh // 2:
            index, mask = _depthwise_taps(h, w, kh)
            m = self.weight.flatten(1)[:, index.to(x.device)] * mask.to(x.device, x.dtype)  # C,HWo,HWi
            y = (x.permute(0, 2, 3, 1).reshape(n, 1, h * w, c) * m.permute(1, 2, 0)).sum(2)
            if self.bias is not None:
                y = y + self.bias
            return y.view(n, h, w, c).permute(0, 3, 1, 2)
        return super().forward(x)


def prepare_model(model: nn.Module, device: torch.device, engine: EngineChoice,
                  channels_last: bool | None = None) -> nn.Module:
    """Move ``model`` to ``device`` in the engine's memory format; on CPU swap its plain
    ``nn.Conv2d`` modules for :class:`MatmulConv2d` (in place; weights untouched)."""
    model = model.to(device)
    if channels_last is None:
        channels_last = engine.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        if engine.conv_matmul:
            for m in model.modules():
                if type(m) is nn.Conv2d:
                    m.__class__ = MatmulConv2d
    return model


# -- data ----------------------------------------------------------------------------------------
def augment_batch(x: torch.Tensor, gen: torch.Generator, padding: int, hflip: bool) -> torch.Tensor:
    """Random crop after zero padding + random horizontal flip of a uint8 NHWC batch.

    One gather for the whole batch (per-sample offsets via advanced indexing), no Python loop
    over images. Random numbers come from the CPU generator ``gen`` so results do not depend
    on the device.
    """
    b, h, w, _ = x.shape
    if padding > 0:
        xp = F.pad(x, (0, 0, padding, padding, padding, padding))  # pads W and H of NHWC
        dy = torch.randint(0, 2 * padding + 1, (b,), generator=gen).to(x.device, non_blocking=True)
        dx = torch.randint(0, 2 * padding + 1, (b,), generator=gen).to(x.device, non_blocking=True)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # B,H,1
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # B,1,W
        if hflip:
            flip = (torch.rand(b, generator=gen) < 0.5).to(x.device, non_blocking=True)
            # Flipping = reading columns right-to-left; folded into the same gather.
            cols = torch.where(flip[:, None, None], cols.flip(-1), cols)
        return xp[torch.arange(b, device=x.device)[:, None, None], rows, cols]
    if hflip:
        flip = (torch.rand(b, generator=gen) < 0.5).to(x.device, non_blocking=True)
        return torch.where(flip[:, None, None, None], x.flip(2), x)
    return x


_MEAN = torch.tensor(IMAGENET_DEFAULT_MEAN) * 255
_STD = torch.tensor(IMAGENET_DEFAULT_STD) * 255


_MEAN_STD: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}


def normalize(x: torch.Tensor, channels_last: bool, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW (channels_last strides come for free from NHWC)."""
    key = (x.device, dtype)
    if key not in _MEAN_STD:  # once per device: no host-to-device copy per batch
        _MEAN_STD[key] = (_MEAN.to(x.device, dtype), _STD.to(x.device, dtype))
    mean, std = _MEAN_STD[key]
    x = (x.to(dtype) - mean) / std
    x = x.permute(0, 3, 1, 2)
    return x if channels_last else x.contiguous()


class _Batches:
    """Rows of a uint8 memmap, gathered and moved to the device.

    CPU: one fancy-index copy. CUDA: gathered into one of two page-locked buffers and copied
    asynchronously; a buffer is reused only after the copy out of it has finished (an event),
    so the gather of the next batch overlaps the GPU's work on this one."""

    def __init__(self, array: np.ndarray, device: torch.device, pin: bool, max_rows: int) -> None:
        self.array, self.device = array, device
        dtype = torch.from_numpy(np.empty(0, dtype=array.dtype)).dtype
        self.bufs = [torch.empty((max_rows,) + array.shape[1:], dtype=dtype).pin_memory()
                     for _ in range(2)] if pin else []
        self.events: list = [None, None]
        self.turn = 0

    def take(self, idx: np.ndarray) -> torch.Tensor:
        """Rows ``idx`` (sorted: the memmap is read in file order)."""
        if not self.bufs:
            return torch.from_numpy(np.ascontiguousarray(self.array[idx])).to(self.device)
        buf = self._free_buffer(len(idx))
        np.take(self.array, idx, axis=0, out=buf.numpy(), mode="clip")
        return self._send(buf)

    def range(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop``."""
        if not self.bufs:
            return torch.from_numpy(np.array(self.array[start:stop])).to(self.device)
        buf = self._free_buffer(stop - start)
        np.copyto(buf.numpy(), self.array[start:stop])
        return self._send(buf)

    def _free_buffer(self, rows: int) -> torch.Tensor:
        if self.events[self.turn] is not None:
            self.events[self.turn].synchronize()  # the copy out of it has finished
        return self.bufs[self.turn][:rows]

    def _send(self, buf: torch.Tensor) -> torch.Tensor:
        out = buf.to(self.device, non_blocking=True)
        self.events[self.turn] = torch.cuda.Event()
        self.events[self.turn].record()
        self.turn ^= 1
        return out


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
    engine = engine_for(device)
    autocast = _autocast(device, engine)
    batches = _Batches(data.train_x, device, engine.pin_memory, batch_size)
    try:
        # Batches are shuffled across classes (a class-pure batch would skew batch statistics).
        order = idx[np.random.default_rng(0).permutation(len(idx))]
        for s in range(0, len(order), batch_size):
            xb = batches.take(np.sort(order[s:s + batch_size]))
            with autocast():
                model(normalize(xb, channels_last))
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: ProxyData, fidelity: Fidelity, device: torch.device,
             channels_last: bool = False) -> tuple[float, float]:
    """(top-1 %, mean cross-entropy without smoothing) on the cached val split.

    Sums stay on the device (float64 loss sum, as Python floats before) and are read once."""
    model.eval()
    engine = engine_for(device)
    autocast = _autocast(device, engine)
    vx, vy = data.val_x, data.val_y
    bs = fidelity.eval_batch_size
    batches = _Batches(vx, device, engine.pin_memory, bs)
    labels = torch.from_numpy(np.array(vy)).to(device)
    n = len(vy)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for s in range(0, n, bs):
        xb, yb = batches.range(s, min(s + bs, n)), labels[s:s + bs]
        with autocast():
            out = model(normalize(xb, channels_last))
        out = out.float()
        loss_sum += F.cross_entropy(out, yb, reduction="sum").double()
        correct += (out.argmax(1) == yb).sum()
    return 100.0 * correct.item() / n, loss_sum.item() / n


class _StepInBackward:
    """The optimizer's AdamW step taken during ``backward``, chunk by chunk (memory).

    The model's parameters are cut into ``chunks`` runs of about equal size in registration
    order (backward reaches them roughly in reverse), none under ``min_chunk`` elements (each
    chunk's step costs ~0.1 ms of Python: XS gets 2 chunks, L1 5, L3 13); each chunk has its
    own ``torch.optim.AdamW`` over its parameters with their groups' hyperparameters. A post-accumulate-grad hook counts
    the chunk's finished gradients; when the last is in, the chunk steps (at the learning rate
    the scheduler has set on ``opt``) and its gradients are freed, so a few chunks' gradients
    are alive at a time instead of all. The fused AdamW kernel works tensor by tensor: the
    weights are bit-identical to one ``opt.step()`` after backward (tested). ``opt`` keeps the
    param groups the scheduler drives and is never stepped itself."""

    def __init__(self, opt: torch.optim.Optimizer, params: list[nn.Parameter], chunks: int = 16,
                 min_chunk: int = 2 ** 21) -> None:
        self.opt = opt
        group_of = {p: i for i, g in enumerate(opt.param_groups) for p in g["params"]}
        params = [p for p in params if p in group_of]
        budget = max(sum(p.numel() for p in params) / max(chunks, 1), min_chunk)
        self.chunks: list[list[nn.Parameter]] = [[]]
        size = 0
        for p in params:
            if size >= budget:
                self.chunks.append([])
                size = 0
            self.chunks[-1].append(p)
            size += p.numel()
        self.steppers = []
        for chunk in self.chunks:
            ids = sorted({group_of[p] for p in chunk})
            sub = torch.optim.AdamW([{**{k: v for k, v in opt.param_groups[i].items() if k != "params"},
                                      "params": [p for p in chunk if group_of[p] == i]} for i in ids])
            self.steppers.append((sub, ids))
        self.chunk_of = {p: c for c, chunk in enumerate(self.chunks) for p in chunk}
        self.pending = [0] * len(self.chunks)
        self.handles = [p.register_post_accumulate_grad_hook(self._grad_ready) for p in params]

    def _grad_ready(self, p: torch.Tensor) -> None:
        c = self.chunk_of[p]
        self.pending[c] += 1
        if self.pending[c] == len(self.chunks[c]):
            self._step(c)

    def _step(self, c: int) -> None:
        sub, group_ids = self.steppers[c]
        for g, i in zip(sub.param_groups, group_ids):
            g["lr"] = self.opt.param_groups[i]["lr"]
        sub.step()
        sub.zero_grad(set_to_none=True)
        self.pending[c] = -1  # stepped

    def close(self) -> None:
        """Remove the hooks: the parameters hold them, and the garbage collector does not free
        a model whose parameters' hooks point back at it (measured: one trial's weights and
        AdamW moments stayed alive per trial)."""
        for h in self.handles:
            h.remove()
        self.handles, self.steppers, self.chunks, self.chunk_of = [], [], [], {}

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()`` with the optimizer step; a chunk some of whose parameters got no
        gradient steps at the end (those are skipped, as ``opt.step()`` skips them)."""
        self.pending = [0] * len(self.chunks)
        loss.backward()
        for c, n in enumerate(self.pending):
            if n > 0:
                self._step(c)


# -- training --------------------------------------------------------------------------------------
@dataclass
class _Setup:
    """Everything one training run holds (built by _setup, used by _train_epoch)."""

    dev: torch.device
    engine: EngineChoice
    channels_last: bool
    model: nn.Module
    opt: torch.optim.Optimizer
    sched: CosineLRScheduler
    loss_fn: nn.Module
    scaler: object
    steps_per_epoch: int
    bs: int
    gen: torch.Generator
    labels: torch.Tensor
    batches: _Batches
    stepper: _StepInBackward | None = None  # engine.step_in_backward (and no GradScaler)


def _setup(spec: ArchSpec, fidelity: Fidelity, data: ProxyData, seed: int, device: str,
           channels_last: bool | None) -> _Setup:
    dev = resolve_device(device)
    engine = engine_for(dev)
    if channels_last is None:
        channels_last = engine.channels_last
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = engine.cudnn_benchmark
    torch.manual_seed(seed)
    model = prepare_model(build_model(proxy_spec(spec, data, fidelity)), dev, engine, channels_last)
    n = len(data.train_y)
    bs = min(fidelity.batch_size, n)
    steps_per_epoch = n // bs  # drop the ragged last batch: BN hates a batch of 1-3 images
    total_steps = steps_per_epoch * fidelity.epochs
    warmup_steps = min(int(round(fidelity.warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))
    opt = create_optimizer_v2(model, "adamw", lr=fidelity.lr, weight_decay=fidelity.weight_decay,
                              **({"fused": True} if engine.fused_adamw else {}))
    sched = CosineLRScheduler(opt, t_initial=total_steps, lr_min=fidelity.min_lr,
                              warmup_t=warmup_steps, warmup_lr_init=fidelity.warmup_lr,
                              t_in_epochs=False)
    loss_fn = LabelSmoothingCrossEntropy(fidelity.label_smoothing) if fidelity.label_smoothing > 0 \
        else torch.nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler(dev.type) if engine.grad_scaler else None
    return _Setup(dev=dev, engine=engine, channels_last=channels_last, model=model, opt=opt,
                  sched=sched, loss_fn=loss_fn, scaler=scaler, steps_per_epoch=steps_per_epoch,
                  bs=bs, gen=torch.Generator().manual_seed(seed),  # shuffles + augmentation
                  labels=torch.from_numpy(np.array(data.train_y, dtype=np.int64)),
                  batches=_Batches(data.train_x, dev, engine.pin_memory, bs),
                  stepper=_StepInBackward(opt, list(model.parameters()))
                  if engine.step_in_backward and scaler is None else None)


def _train_epoch(s: _Setup, spec: ArchSpec, fidelity: Fidelity, epoch: int, step: int) -> tuple[int, torch.Tensor]:
    """One epoch of optimizer steps; returns (global step, summed loss on the device).

    Non-finite losses are checked every ``engine.check_every`` steps (every step on CPU, where
    the check costs nothing); on CUDA a NaN is thus reported up to check_every-1 steps late."""
    s.model.train()
    autocast = _autocast(s.dev, s.engine)
    perm = torch.randperm(len(s.labels), generator=s.gen).numpy()
    loss_sum = torch.zeros((), device=s.dev)
    finite = torch.ones((), dtype=torch.bool, device=s.dev)
    for b in range(s.steps_per_epoch):
        idx = np.sort(perm[b * s.bs:(b + 1) * s.bs])
        xb = s.batches.take(idx)
        yb = s.labels[idx].to(s.dev, non_blocking=True)
        xb = augment_batch(xb, s.gen, fidelity.crop_padding, fidelity.hflip)
        with autocast():
            out = s.model(normalize(xb, s.channels_last))
            loss = s.loss_fn(out.float(), yb)
        finite &= torch.isfinite(loss)
        if (b + 1) % s.engine.check_every == 0 or b + 1 == s.steps_per_epoch:
            if not finite:
                first = max(b + 2 - s.engine.check_every, 1)
                where = f"step {b + 1}" if first == b + 1 else f"steps {first}-{b + 1}"
                raise NonFiniteLoss(f"arch {spec.arch_hash}: training loss {loss.item()} at epoch "
                                    f"{epoch}, {where}/{s.steps_per_epoch} "
                                    f"(lr {s.opt.param_groups[0]['lr']:.3g})")
        if s.scaler is not None:
            s.scaler.scale(loss).backward()
            s.scaler.step(s.opt)
            s.scaler.update()
        elif s.stepper is not None:
            s.stepper.backward(loss)  # steps and frees each chunk's gradients during backward
        else:
            loss.backward()
            s.opt.step()
        # Gradients freed as soon as the step has used them, not at the next backward: the
        # next forward (and the epoch's BN recalibration + eval) then runs without a
        # parameter-sized gradient set alive (same numbers: backward sees None grads either way).
        s.opt.zero_grad(set_to_none=True)
        step += 1
        s.sched.step_update(step)
        loss_sum += loss.detach()
    return step, loss_sum


def train_proxy(spec: ArchSpec, fidelity: Fidelity, data: ProxyData, *, seed: int,
                device: str = "auto", report: Callable[[dict], None] | None = None,
                threads: int | None = None, channels_last: bool | None = None) -> dict:
    """Train ``spec`` at ``fidelity`` on ``data``; return the final metrics.

    The model is built with num_classes = data.num_classes and resolution = fidelity.resolution.
    After every epoch ``report`` gets {"epoch", "top1", "val_loss", "train_loss", "img_per_s",
    "seconds", "epoch_seconds", "train_cpu_seconds", "lr"} (seconds = wall time since training
    started; img_per_s = training images per second of that epoch, BN recalibration and eval
    excluded). Raises NonFiniteLoss when a training loss is NaN/inf. ``threads`` sets torch's
    intra-op threads for this process. channels_last None = the engine's choice (on for CPU and
    CUDA, :func:`choose_engine`).
    """
    if data.resolution != fidelity.resolution:
        raise ValueError(f"data resolution {data.resolution} != fidelity.resolution "
                         f"{fidelity.resolution}: prepare_data with this fidelity")
    if threads is not None:
        torch.set_num_threads(int(threads))
    s = _setup(spec, fidelity, data, seed, device, channels_last)
    try:
        n_params = sum(p.numel() for p in s.model.parameters())
        history: list[dict] = []
        t_start, cpu_start = time.perf_counter(), time.process_time()  # CPU time: robust to load
        step, train_time, n_img = 0, 0.0, s.steps_per_epoch * s.bs
        for epoch in range(1, fidelity.epochs + 1):
            t_ep, c_ep = time.perf_counter(), time.process_time()
            step, loss_sum = _train_epoch(s, spec, fidelity, epoch, step)
            if s.dev.type == "cuda":
                torch.cuda.synchronize(s.dev)
            ep_train, ep_cpu = time.perf_counter() - t_ep, time.process_time() - c_ep
            train_time += ep_train
            train_loss = loss_sum.item() / max(s.steps_per_epoch, 1)
            recalibrate_bn(s.model, data, fidelity.bn_recal_images, fidelity.eval_batch_size, s.dev,
                           s.channels_last)
            top1, val_loss = evaluate(s.model, data, fidelity, s.dev, s.channels_last)
            if not math.isfinite(val_loss):
                # Eval-mode BN with diverged running stats can blow up even if the last loss was finite.
                raise NonFiniteLoss(f"arch {spec.arch_hash}: validation loss {val_loss} at epoch {epoch}")
            now = time.perf_counter()
            m = {"epoch": epoch, "top1": top1, "val_loss": val_loss, "train_loss": train_loss,
                 "img_per_s": n_img / max(ep_train, 1e-9), "seconds": now - t_start,
                 "epoch_seconds": now - t_ep, "train_cpu_seconds": ep_cpu,
                 "lr": s.opt.param_groups[0]["lr"]}
            history.append(m)
            if report is not None:
                report(dict(m))
    finally:  # also when a NonFiniteLoss ends the run
        if s.stepper is not None:
            s.stepper.close()
    result = {"top1": top1, "val_loss": val_loss, "train_loss": train_loss,
              "epochs_done": len(history), "train_seconds": time.perf_counter() - t_start,
              "cpu_seconds": time.process_time() - cpu_start,
              "img_per_s": n_img * len(history) / max(train_time, 1e-9),
              "params": n_params, "device": str(s.dev), "threads": torch.get_num_threads(),
              "channels_last": bool(s.channels_last), "seed": seed, "arch_hash": spec.arch_hash,
              "fidelity_key": fidelity.key, "dataset_id": data.dataset_id, "history": history}
    del s
    release_memory()
    return result
