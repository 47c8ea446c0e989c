"""Full-scale retraining of a chosen architecture with the SwiftFormer recipe (issue 8).

One training loop serves every launcher: torchrun (env RANK/WORLD_SIZE/LOCAL_RANK), Slurm
(srun + torchrun, or srun alone with SLURM_PROCID), Ray Train (process group already set up by
``TorchTrainer``) and local ``--nproc`` spawning for CPU tests. The data pipeline, augmentation,
mixup, losses, scheduler, optimiser, EMA and gradient clipping are timm's; what lives here is the
glue the official ``main.py``/``engine.py`` has (DeiT-style distillation loss, epoch loop,
checkpoint/resume, distributed evaluation) plus recording the result beside the proxy estimate.

Recipe: SwiftFormer (Shaker et al., ICCV'23) Sec. 4 and https://github.com/Amshaker/SwiftFormer
``main.py`` / ``dist_train.sh`` / ``slurm_train.sh``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from search_space.spec import PRESETS, ArchSpec, SpecError, load_spec

CHECKPOINT_NAME = "checkpoint.pth"
FINAL_NAME = "final.pth"
CHECKPOINT_FORMAT = "swiftformer-nas-retrain/1"
PROJECT_DIR = Path(__file__).resolve().parents[1]

EpochHook = Callable[[dict[str, Any]], None]


def log(msg: str, rank: int = 0) -> None:
    """Print from rank 0 only (every rank prints the same thing otherwise)."""
    if rank == 0:
        print(msg, flush=True)


# -- recipe ---------------------------------------------------------------------------------
def recipe_preset(spec: ArchSpec) -> str:
    """The published variant nearest to ``spec`` in parameter count (log scale).

    The official training drops RandAugment, mixup and cutmix for XS and mixup and cutmix for S
    (dist_train.sh, slurm_train.sh note): small models under-fit with the heavy recipe. A searched
    architecture gets the treatment of the published model closest in size.
    """
    from search_space.costs import analytic_params

    p = math.log(analytic_params(spec.replace(num_classes=1000)))
    return min(PRESETS, key=lambda n: abs(math.log(analytic_params(PRESETS[n])) - p))


def resolve_recipe(args: argparse.Namespace, spec: ArchSpec) -> dict[str, Any]:
    """Turn the 'auto' augmentation options into values; returns what was resolved and why."""
    near = recipe_preset(spec)
    heavy_mix = near in ("L1", "L3")
    out: dict[str, Any] = {"nearest_preset": near}

    def num(name: str, auto: float) -> float:
        v = getattr(args, name)
        if isinstance(v, str):
            if v == "auto":
                return auto
            try:
                return float(v)
            except ValueError:
                raise ValueError(f"--{name} {v!r}: allowed a number or 'auto'") from None
        return float(v)

    out["mixup"] = num("mixup", 0.8 if heavy_mix else 0.0)
    out["cutmix"] = num("cutmix", 1.0 if heavy_mix else 0.0)
    aa = args.aa
    if aa == "auto":
        aa = "" if near == "XS" else "rand-m9-mstd0.5-inc1"
    elif aa in ("none", "None", ""):
        aa = ""
    out["aa"] = aa
    return out


def scaled_lr(args: argparse.Namespace, world_size: int) -> float:
    """lr scaled linearly from --lr-base-batch to the real global batch (unless --no-lr-scale)."""
    if not args.lr_scale:
        return args.lr
    return args.lr * args.batch_size * world_size / args.lr_base_batch


# -- validation (before any process is spawned) ---------------------------------------------
def _class_dirs(path: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def check_imagefolder(root: str, splits: tuple[str, ...]) -> dict[str, list[str]]:
    """Each split is a directory with at least one class sub-directory; train/val classes agree."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"--data {root}: not a directory (need {'/, '.join(splits)}/ "
                                "with one sub-directory per class)")
    found: dict[str, list[str]] = {}
    for s in splits:
        d = base / s
        if not d.is_dir():
            raise FileNotFoundError(f"--data {root}: missing {s}/ (need {'/, '.join(splits)}/ with "
                                    "one sub-directory per class)")
        classes = _class_dirs(d)
        if not classes:
            raise FileNotFoundError(f"--data {root}: {s}/ has no class sub-directories")
        found[s] = classes
    if "train" in found and "val" in found and found["train"] != found["val"]:
        raise ValueError(f"--data {root}: train/ has {len(found['train'])} classes and val/ "
                         f"{len(found['val'])}, or their names differ; they must match")
    return found


def prepare_retrain(args: argparse.Namespace) -> tuple[ArchSpec, dict[str, Any]]:
    """Validate everything cheap to validate; return the spec to train and resolved settings."""
    import timm

    try:
        spec = load_spec(args.arch)
    except OSError as e:
        raise SpecError(f"--arch {args.arch}: unreadable ({e.strerror})") from None
    classes = check_imagefolder(args.data, ("train", "val"))["train"]
    for name in ("epochs", "batch_size", "nproc", "eval_interval"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    if args.workers < 0:
        raise ValueError(f"--workers {args.workers}: must be >= 0")
    if args.stop_after_epochs is not None and args.stop_after_epochs < 1:
        raise ValueError(f"--stop-after-epochs {args.stop_after_epochs}: must be >= 1")
    if args.drop_path is not None and not 0.0 <= args.drop_path < 1.0:
        raise ValueError(f"--drop-path {args.drop_path}: allowed [0, 1)")
    if not 0.0 <= args.distillation_alpha <= 1.0:
        raise ValueError(f"--distillation-alpha {args.distillation_alpha}: allowed [0, 1]")
    _check_device(args.device)
    changes: dict[str, Any] = {}
    if spec.num_classes != len(classes):
        changes["num_classes"] = len(classes)
    if args.drop_path is not None:
        changes["drop_path_rate"] = args.drop_path
    train_spec = spec.replace(**changes) if changes else spec

    distill = "none"
    if args.distillation_type != "none":
        if args.teacher_checkpoint:
            if not os.path.isfile(args.teacher_checkpoint):
                raise FileNotFoundError(f"--teacher-checkpoint {args.teacher_checkpoint}: no such file")
            if not timm.is_model(args.teacher_model):
                raise ValueError(f"--teacher-model {args.teacher_model}: not a timm model name")
            if not train_spec.distillation:
                raise ValueError(f"--arch {args.arch}: distillation=false in the spec (no "
                                 "distillation head); drop --teacher-checkpoint or use "
                                 "--distillation-type none")
            distill = args.distillation_type
    if args.resume not in (None, "auto") and not os.path.isfile(args.resume):
        raise FileNotFoundError(f"--resume {args.resume}: no such file")
    recipe = resolve_recipe(args, train_spec)
    if (recipe["mixup"] > 0 or recipe["cutmix"] > 0) and args.batch_size % 2:
        raise ValueError(f"--batch-size {args.batch_size}: mixup/cutmix need an even batch")
    output = args.output or str(PROJECT_DIR / "runs" / "retrain" / spec.arch_hash)
    settings = dict(recipe, distillation=distill, classes=classes, output=output,
                    arch_hash=spec.arch_hash, spec_json=train_spec.canonical_json(),
                    input_spec=spec)
    return train_spec, settings


def _check_device(device: str) -> None:
    if device == "auto" or device == "cpu":
        return
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available here (use auto or cpu)")
        return
    raise ValueError(f"--device {device}: allowed auto, cpu, cuda, cuda:N")


# -- distributed context ----------------------------------------------------------------------
@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _slurm_env() -> None:
    """srun without torchrun (one task per GPU): derive torch's env vars as the official code does."""
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ:
        return
    ntasks = int(os.environ.get("SLURM_NTASKS", "1"))
    if ntasks <= 1:
        return
    import subprocess

    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ["SLURM_NODELIST"]
    first = subprocess.run(["scontrol", "show", "hostnames", nodelist], check=True,
                           capture_output=True, text=True).stdout.split()[0]
    os.environ.setdefault("MASTER_ADDR", first)
    os.environ.setdefault("MASTER_PORT", "29500")
    os.environ["WORLD_SIZE"] = str(ntasks)
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")


def setup_distributed(device_arg: str, device: torch.device | None = None) -> DistContext:
    """Read the launcher's env, pick the device, and join the process group if there is one."""
    _slurm_env()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        if device_arg == "auto":
            device_arg = "cuda" if torch.cuda.is_available() else "cpu"
        if device_arg == "cuda":
            device = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
        else:
            device = torch.device(device_arg)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                init_method="env://", world_size=world, rank=rank)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=device)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn_entry(local_rank: int, fn: Callable[[argparse.Namespace], Any],
                 args: argparse.Namespace, nproc: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank),
                      LOCAL_RANK=str(local_rank), WORLD_SIZE=str(nproc),
                      LOCAL_WORLD_SIZE=str(nproc))
    if not torch.cuda.is_available() or args.device == "cpu":
        # N processes on one CPU: share the cores instead of oversubscribing them N times.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    try:
        fn(args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch(fn: Callable[[argparse.Namespace], Any], args: argparse.Namespace) -> None:
    """Run ``fn(args)`` in this process (launcher env present, or --nproc 1) or spawn --nproc."""
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if launched or args.nproc == 1 or ("SLURM_PROCID" in os.environ
                                       and int(os.environ.get("SLURM_NTASKS", "1")) > 1):
        try:
            fn(args)
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
        return
    import torch.multiprocessing as mp

    # CPU on Linux: fork (children inherit the imported modules: seconds faster per process).
    # CUDA cannot be used in forked children, so GPU runs spawn fresh interpreters.
    cpu = args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available())
    method = "fork" if cpu and sys.platform == "linux" else "spawn"
    mp.start_processes(_spawn_entry, args=(fn, args, args.nproc, _free_port()), nprocs=args.nproc,
                       join=True, start_method=method)


def _all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    if ctx.distributed:
        dist.all_reduce(t)
    return t.tolist()


# -- data ---------------------------------------------------------------------------------------
def train_transform(args: argparse.Namespace, resolution: int, aa: str):
    """timm's ImageNet training transform (official build_transform, is_train=True)."""
    from timm.data import create_transform
    from torchvision import transforms

    tf = create_transform(input_size=resolution, is_training=True, color_jitter=args.color_jitter,
                          auto_augment=aa or None, interpolation=args.train_interpolation,
                          re_prob=args.reprob, re_mode=args.remode, re_count=1)
    if resolution <= 32:
        # Official code: CIFAR-sized inputs get RandomCrop(padding=4) instead of RandomResizedCrop.
        tf.transforms[0] = transforms.RandomCrop(resolution, padding=4)
    return tf


def eval_transform(resolution: int, crop_pct: float = 0.875, interpolation: str = "bicubic"):
    """Resize to resolution/crop_pct, centre crop, normalise (official; no resize at <= 32 px)."""
    from timm.data import create_transform
    from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from torchvision import transforms

    if resolution <= 32:
        return transforms.Compose([transforms.ToTensor(),
                                   transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])
    return create_transform(input_size=resolution, is_training=False, crop_pct=crop_pct,
                            interpolation=interpolation)


def eval_loader(dataset, ctx: DistContext, batch_size: int, workers: int):
    """Each rank evaluates a disjoint stride of the val set; counts are summed (exact, no padding)."""
    from torch.utils.data import DataLoader, Subset

    shard = Subset(dataset, list(range(ctx.rank, len(dataset), ctx.world_size)))
    return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=ctx.device.type == "cuda", drop_last=False)


@torch.no_grad()
def evaluate(model: nn.Module, loader, ctx: DistContext, amp: bool) -> dict[str, float]:
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
        top = logits.topk(k, dim=1).indices
        hit = top.eq(y[:, None])
        correct1 += hit[:, :1].any(dim=1).sum().item()
        correct5 += hit.any(dim=1).sum().item()
        n += y.numel()
    c1, c5, ls, total = _all_reduce_sum([correct1, correct5, loss_sum, float(n)], ctx)
    total = max(total, 1.0)
    return {"top1": 100.0 * c1 / total, "top5": 100.0 * c5 / total, "val_loss": ls / total,
            "val_images": int(total)}


# -- loss -----------------------------------------------------------------------------------
class DistillationLoss(nn.Module):
    """DeiT-style distillation on the distillation head.

    hard: ``(1 - alpha) * base(head, labels) + alpha * CE(head_dist, teacher(x).argmax(1))``;
    soft: KL(head_dist / tau || teacher / tau) * tau^2 in place of the hard term;
    none: ``base`` on the model's output (averaged heads).
    """

    def __init__(self, base: nn.Module, teacher: nn.Module | None, kind: str = "hard",
                 alpha: float = 0.5, tau: float = 1.0) -> None:
        super().__init__()
        if kind not in ("hard", "soft", "none"):
            raise ValueError(f"distillation type {kind!r}: allowed hard, soft, none")
        if kind != "none" and teacher is None:
            raise ValueError("distillation needs a teacher model")
        self.base, self.teacher, self.kind, self.alpha, self.tau = base, teacher, kind, alpha, tau

    def forward(self, inputs: torch.Tensor, outputs, labels: torch.Tensor) -> torch.Tensor:
        out_kd = None
        if isinstance(outputs, (tuple, list)):
            outputs, out_kd = outputs
        base = self.base(outputs, labels)
        if self.kind == "none":
            return base
        if out_kd is None:
            raise ValueError("distillation needs (head, head_dist) outputs: call "
                             "model.set_distilled_training(True)")
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        if self.kind == "hard":
            kd = F.cross_entropy(out_kd, teacher_logits.argmax(dim=1))
        else:
            t = self.tau
            kd = F.kl_div(F.log_softmax(out_kd / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                          reduction="sum", log_target=True) * (t * t) / out_kd.numel()
        return (1.0 - self.alpha) * base + self.alpha * kd


def load_teacher(name: str, path: str, num_classes: int, device: torch.device) -> nn.Module:
    """A timm model with user-supplied weights (weights_only; never downloaded)."""
    import timm

    teacher = timm.create_model(name, pretrained=False, num_classes=num_classes)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "model_ema"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    try:
        teacher.load_state_dict(sd)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ValueError(f"--teacher-checkpoint {path}: does not fit {name} with {num_classes} "
                         f"classes ({first})") from None
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


# -- checkpoints ------------------------------------------------------------------------------
def save_atomic(obj: Any, path: str | Path) -> None:
    """torch.save to a temp file in the same directory, then os.replace: never a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _jsonable_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items()
            if k != "func" and (v is None or isinstance(v, (str, int, float, bool)))}


def param_digest(model: nn.Module) -> str:
    """sha256 of every parameter's bytes: equal on all ranks iff DDP kept them in sync."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# -- training -------------------------------------------------------------------------------
def retrain_worker(args: argparse.Namespace, device: torch.device | None = None,
                   on_epoch_end: EpochHook | None = None) -> dict[str, Any]:
    """Train on this rank (the process group is joined here unless the launcher did it)."""
    from timm.data import Mixup
    from timm.data.distributed_sampler import RepeatAugSampler
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3, NativeScaler, dispatch_clip_grad
    from torch.utils.data import DataLoader, DistributedSampler
    from torchvision.datasets import ImageFolder

    from search_space.swiftformer import build_model

    spec, st = prepare_retrain(args)
    ctx = setup_distributed(args.device, device)
    out = Path(st["output"])
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    amp = args.amp and ctx.device.type == "cuda"
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    log(f"retrain {st['arch_hash']} on {ctx.world_size} process(es), device {ctx.device}, "
        f"amp {'on' if amp else 'off'}; recipe as {st['nearest_preset']} (aa={st['aa'] or 'none'}, "
        f"mixup={st['mixup']}, cutmix={st['cutmix']})", ctx.rank)
    if args.distillation_type != "none" and st["distillation"] == "none":
        log("no --teacher-checkpoint given: distillation is off (both heads learn from the labels)",
            ctx.rank)

    # Same seed on every rank for the weights (DDP also broadcasts rank 0's at wrap time).
    _seed_everything(args.seed)
    model = build_model(spec).to(ctx.device)
    num_classes = spec.num_classes

    train_ds = ImageFolder(os.path.join(args.data, "train"),
                           transform=train_transform(args, spec.resolution, st["aa"]))
    val_ds = ImageFolder(os.path.join(args.data, "val"), transform=eval_transform(spec.resolution))
    if args.repeated_aug:
        sampler = RepeatAugSampler(train_ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True)
    else:
        sampler = DistributedSampler(train_ds, num_replicas=ctx.world_size, rank=ctx.rank,
                                     shuffle=True, seed=args.seed)
    train_loader = DataLoader(train_ds, sampler=sampler, batch_size=args.batch_size,
                              num_workers=args.workers, pin_memory=ctx.device.type == "cuda",
                              drop_last=True, persistent_workers=False)
    if len(train_loader) == 0:
        raise ValueError(f"--data {args.data}: {len(train_ds)} training images give no full batch "
                         f"of {args.batch_size} per process on {ctx.world_size} process(es)")
    val_loader = eval_loader(val_ds, ctx, int(1.5 * args.batch_size), args.workers)

    mixup_fn = None
    if st["mixup"] > 0 or st["cutmix"] > 0:
        mixup_fn = Mixup(mixup_alpha=st["mixup"], cutmix_alpha=st["cutmix"], prob=args.mixup_prob,
                         switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                         label_smoothing=args.smoothing, num_classes=num_classes)
        base_loss: nn.Module = SoftTargetCrossEntropy()  # smoothing is inside the mixed targets
    elif args.smoothing > 0:
        base_loss = LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    else:
        base_loss = nn.CrossEntropyLoss()
    teacher = None
    if st["distillation"] != "none":
        teacher = load_teacher(args.teacher_model, args.teacher_checkpoint, num_classes, ctx.device)
        model.set_distilled_training(True)
        log(f"distillation {st['distillation']} from {args.teacher_model} "
            f"({args.teacher_checkpoint}), alpha {args.distillation_alpha}", ctx.rank)
    criterion = DistillationLoss(base_loss, teacher, st["distillation"], args.distillation_alpha,
                                 args.distillation_tau)

    lr = scaled_lr(args, ctx.world_size)
    optimizer = create_optimizer_v2(model, opt=args.opt, lr=lr, weight_decay=args.weight_decay,
                                    eps=args.opt_eps)
    scheduler, _ = create_scheduler_v2(optimizer, sched=args.sched, num_epochs=args.epochs,
                                       warmup_epochs=args.warmup_epochs, warmup_lr=args.warmup_lr,
                                       min_lr=args.min_lr, cooldown_epochs=0)
    scaler = NativeScaler(device="cuda") if amp else None
    # EMA after .to(device), before the DDP wrapper (as timm/official code require).
    ema = ModelEmaV3(model, decay=args.model_ema_decay) if args.model_ema else None

    start_epoch, global_step, history, resumed_run_id = 0, 0, [], None
    ckpt_path = out / CHECKPOINT_NAME
    resume = args.resume
    if resume == "auto":
        resume = str(ckpt_path) if ckpt_path.is_file() else None
        if resume is None:
            log(f"--resume: no {ckpt_path} yet, starting from scratch", ctx.rank)
    if resume:
        ck = torch.load(resume, map_location="cpu", weights_only=True)
        if ck.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"--resume {resume}: not a retrain checkpoint (format "
                             f"{ck.get('format')!r})")
        if ck.get("spec") != spec.canonical_json():
            raise ValueError(f"--resume {resume}: checkpoint is of another architecture")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if scheduler is not None and ck.get("lr_scheduler") is not None:
            scheduler.load_state_dict(ck["lr_scheduler"])
        if ema is not None and ck.get("model_ema") is not None:
            ema.module.load_state_dict(ck["model_ema"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        start_epoch, global_step = ck["epoch"] + 1, ck["global_step"]
        history = list(ck.get("history", []))
        resumed_run_id = ck.get("run_id")
        log(f"resumed from {resume} at epoch {start_epoch}", ctx.rank)

    model_without_ddp = model
    if ctx.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)

    end_epoch = args.epochs
    if args.stop_after_epochs is not None:
        end_epoch = min(end_epoch, start_epoch + args.stop_after_epochs)
    rank_log = {"rank": ctx.rank, "world_size": ctx.world_size, "steps": 0, "samples": 0}
    result: dict[str, Any] = {}
    run_id = resumed_run_id
    if ctx.is_main and args.record and run_id is None:
        run_id = start_recorded_run(args.db, st["input_spec"], st, args)
    if start_epoch >= args.epochs:
        log(f"{ckpt_path}: all {args.epochs} epochs already trained; nothing to do "
            "(see result.json, or raise --epochs to train further)", ctx.rank)
    try:
        for epoch in range(start_epoch, end_epoch):
            t0 = time.time()
            # Per-epoch, per-rank seeding: augmentation/mixup randomness does not depend on where a
            # run was interrupted, so a resumed run takes exactly the steps an uninterrupted one takes.
            _seed_everything(args.seed + 1_000_003 * epoch + 7919 * ctx.rank)
            sampler.set_epoch(epoch)
            if scheduler is not None:
                scheduler.step(epoch)  # lr for this epoch (idempotent, so resume-safe)
            model.train()
            loss_sum, n_seen = 0.0, 0
            for x, y in train_loader:
                x = x.to(ctx.device, non_blocking=True)
                y = y.to(ctx.device, non_blocking=True)
                if mixup_fn is not None:
                    x, y = mixup_fn(x, y)
                with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp):
                    outputs = model(x)
                    loss = criterion(x, outputs, y)
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}, step {global_step}")
                optimizer.zero_grad(set_to_none=True)
                clip = args.clip_grad if args.clip_grad and args.clip_grad > 0 else None
                if scaler is not None:
                    scaler(loss, optimizer, clip_grad=clip, clip_mode=args.clip_mode,
                           parameters=model_without_ddp.parameters())
                else:
                    loss.backward()
                    if clip is not None:
                        dispatch_clip_grad(model_without_ddp.parameters(), clip, mode=args.clip_mode)
                    optimizer.step()
                global_step += 1
                if ema is not None:
                    ema.update(model_without_ddp, step=global_step)
                loss_sum += loss.item() * x.shape[0]
                n_seen += x.shape[0]
            if ctx.device.type == "cuda":
                torch.cuda.synchronize()
            ls, ns = _all_reduce_sum([loss_sum, float(n_seen)], ctx)
            metrics: dict[str, Any] = {"epoch": epoch, "train_loss": ls / max(ns, 1.0),
                                       "lr": optimizer.param_groups[0]["lr"], "train_images": int(ns),
                                       "global_step": global_step}
            last = epoch == args.epochs - 1
            if last or (epoch + 1) % args.eval_interval == 0:
                metrics.update(evaluate(model_without_ddp, val_loader, ctx, amp))
                if ema is not None:
                    m = evaluate(ema.module, val_loader, ctx, amp)
                    metrics.update(top1_ema=m["top1"], top5_ema=m["top5"])
            metrics["epoch_seconds"] = time.time() - t0
            history.append(metrics)
            rank_log.update(epoch=epoch, steps=rank_log["steps"] + len(train_loader),
                            samples=rank_log["samples"] + n_seen,
                            param_sha256=param_digest(model_without_ddp))
            _write_rank_log(rank_log, out)
            if ctx.is_main:
                save_atomic({
                    "format": CHECKPOINT_FORMAT, "epoch": epoch, "global_step": global_step,
                    "model": model_without_ddp.state_dict(), "optimizer": optimizer.state_dict(),
                    "lr_scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "model_ema": ema.module.state_dict() if ema is not None else None,
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "spec": spec.canonical_json(), "arch_hash": st["arch_hash"],
                    "args": _jsonable_args(args), "history": history, "run_id": run_id,
                }, ckpt_path)
                with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps(metrics, sort_keys=True) + "\n")
                shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in metrics.items() if k != "epoch")
                log(f"epoch {epoch + 1}/{args.epochs}: {shown}")
            if on_epoch_end is not None:
                on_epoch_end(metrics)
            if ctx.distributed:
                dist.barrier()  # nobody races ahead of the checkpoint of this epoch
            result = metrics
    except BaseException as e:
        if ctx.is_main and args.record:
            finish_recorded_run(args.db, run_id, "FAILED", error=f"{type(e).__name__}: {e}"[:2000])
        raise

    finished = bool(history) and history[-1]["epoch"] == args.epochs - 1
    if finished and end_epoch > start_epoch and ctx.is_main:
        final = history[-1]
        save_atomic({"format": CHECKPOINT_FORMAT, "model": model_without_ddp.state_dict(),
                     "model_ema": ema.module.state_dict() if ema is not None else None,
                     "spec": spec.canonical_json(), "arch_hash": st["arch_hash"]},
                    out / FINAL_NAME)
        summary = {"arch_hash": st["arch_hash"], "spec": json.loads(spec.canonical_json()),
                   "epochs": args.epochs, "world_size": ctx.world_size,
                   "global_batch": args.batch_size * ctx.world_size, "lr": lr,
                   "distillation": st["distillation"], "data": os.path.abspath(args.data),
                   "top1": final.get("top1"), "top5": final.get("top5"),
                   "top1_ema": final.get("top1_ema"), "top5_ema": final.get("top5_ema"),
                   "checkpoint": str((out / FINAL_NAME).resolve())}
        if args.export:
            summary["exports"] = export_final(model_without_ddp, spec, out)
        write_json_atomic(summary, out / "result.json")
        if args.record:
            finish_recorded_run(args.db, run_id, "COMPLETED", top1=final.get("top1"),
                                top5=final.get("top5"), checkpoint=summary["checkpoint"])
            summary.update(run_id=run_id, db=args.db)
            write_json_atomic(summary, out / "result.json")
        result = summary
    if ctx.distributed:
        dist.barrier()
    return result


def _write_rank_log(rank_log: dict[str, Any], out: Path) -> None:
    # Non-zero ranks may reach here before rank 0 created the directory.
    (out / "rank_logs").mkdir(parents=True, exist_ok=True)
    write_json_atomic(rank_log, out / "rank_logs" / f"rank{rank_log['rank']}.json")


# -- results store ----------------------------------------------------------------------------
def dataset_id(data: str, classes: list[str]) -> str:
    """A stable name of an ImageFolder: its path and a hash of its class list."""
    h = hashlib.sha256("\n".join(classes).encode()).hexdigest()[:12]
    return f"imagefolder:{os.path.abspath(data)}:{len(classes)}cls:{h}"


def _open_store(db: str):
    try:
        from results.store import ResultsStore
    except ImportError:
        log("results store not available in this checkout: run not recorded (see result.json)")
        return None
    return ResultsStore(db)


def start_recorded_run(db: str, input_spec: ArchSpec, st: dict[str, Any],
                       args: argparse.Namespace) -> int | None:
    """Add a RUNNING full-scale training run, linked to the searched architecture."""
    try:
        store = _open_store(db)
        if store is None:
            return None
        with store:
            arch_hash = store.upsert_architecture(input_spec)
            study_id = args.study_id
            if study_id is not None:
                from results.schema import Study
                with store.transaction() as session:
                    if session.get(Study, study_id) is None:
                        log(f"--study-id {study_id}: not in {db}; the run is recorded unlinked")
                        study_id = None
            config = dict(_jsonable_args(args), trained_spec=json.loads(st["spec_json"]),
                          aa=st["aa"], mixup=st["mixup"], cutmix=st["cutmix"],
                          nearest_preset=st["nearest_preset"], distillation=st["distillation"])
            return store.start_training_run(arch_hash, dataset_id=dataset_id(args.data, st["classes"]),
                                            epochs=args.epochs, config=config,
                                            study_id=study_id)
    except Exception as e:  # the DB must never stop (or lose) a multi-day training run
        log(f"could not record the run in {db}: {type(e).__name__}: {e}")
        return None


def finish_recorded_run(db: str, run_id: int | None, status: str, *, top1: float | None = None,
                        top5: float | None = None, checkpoint: str | None = None,
                        error: str | None = None) -> None:
    if run_id is None:
        return
    try:
        store = _open_store(db)
        if store is None:
            return
        with store:
            store.finish_training_run(run_id, status, top1=top1, top5=top5,
                                      checkpoint_path=checkpoint, error=error)
    except Exception as e:
        log(f"could not update run {run_id} in {db}: {type(e).__name__}: {e}")


# -- export -------------------------------------------------------------------------------------
def export_final(model: nn.Module, spec: ArchSpec, out: Path) -> dict[str, Any]:
    """ONNX and CoreML of the trained model via latency_models.export, if that module exists.

    A failed export is reported, never fatal: the trained weights are already saved.
    """
    try:
        from latency_models import export as lm_export
    except ImportError:
        log("latency_models.export not available in this checkout: skipping ONNX/CoreML export")
        return {}
    done: dict[str, Any] = {}
    model = model.to("cpu").eval()
    for kind, fn_name, suffix in (("onnx", "export_onnx", ".onnx"),
                                  ("coreml", "export_coreml", ".mlpackage")):
        fn = getattr(lm_export, fn_name, None)
        if fn is None:
            log(f"latency_models.export has no {fn_name}: skipping {kind} export")
            continue
        path = out / f"model{suffix}"
        try:
            info = fn(model, str(path), resolution=spec.resolution)
        except Exception as e:  # e.g. a converter missing an op: keep the trained weights
            log(f"{kind} export failed: {type(e).__name__}: {e}")
            done[kind] = {"error": f"{type(e).__name__}: {e}"}
            continue
        done[kind] = {k: v for k, v in (info or {}).items()
                      if isinstance(v, (str, int, float, bool))} | {"path": str(path)}
        log(f"exported {kind}: {path}")
    return done


# -- entry points -----------------------------------------------------------------------------
def _will_spawn(args: argparse.Namespace) -> bool:
    launched = "RANK" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) > 1
    return args.nproc > 1 and not launched


def retrain_main(args: argparse.Namespace) -> int:
    spec, st = prepare_retrain(args)  # bad input -> one line, exit 2, before any process starts
    if st["distillation"] != "none" and _will_spawn(args):
        # A teacher file that does not fit would otherwise fail inside N spawned processes.
        load_teacher(args.teacher_model, args.teacher_checkpoint, spec.num_classes,
                     torch.device("cpu"))
    launch(_retrain_entry, args)
    return 0


def _retrain_entry(args: argparse.Namespace) -> None:
    retrain_worker(args)


def evaluate_main(args: argparse.Namespace) -> int:
    prepare_evaluate(args)
    launch(_evaluate_entry, args)
    return 0


def prepare_evaluate(args: argparse.Namespace) -> tuple[ArchSpec, str]:
    try:
        spec = load_spec(args.arch)
    except OSError as e:
        raise SpecError(f"--arch {args.arch}: unreadable ({e.strerror})") from None
    if not os.path.isfile(args.checkpoint):
        raise FileNotFoundError(f"--checkpoint {args.checkpoint}: no such file")
    root = os.path.join(args.data, args.split)
    if not os.path.isdir(root):
        if os.path.isdir(args.data) and _class_dirs(Path(args.data)):
            root = args.data  # --data points at the val directory itself
        else:
            raise FileNotFoundError(f"--data {args.data}: missing {args.split}/ (one "
                                    "sub-directory per class)")
    if not _class_dirs(Path(root)):
        raise FileNotFoundError(f"--data {root}: no class sub-directories")
    if args.nproc < 1 or args.batch_size < 1:
        raise ValueError("--nproc and --batch-size must be >= 1")
    _check_device(args.device)
    return spec, root


def _evaluate_entry(args: argparse.Namespace) -> None:
    evaluate_worker(args)


def evaluate_worker(args: argparse.Namespace, device: torch.device | None = None) -> dict[str, Any]:
    """Top-1/top-5 of a checkpoint (official dist_test.sh counterpart)."""
    from torchvision.datasets import ImageFolder

    from search_space.swiftformer import build_model, load_checkpoint

    spec, root = prepare_evaluate(args)
    ctx = setup_distributed(args.device, device)
    ds = ImageFolder(root, transform=eval_transform(spec.resolution, args.crop_pct,
                                                    args.interpolation))
    if spec.num_classes != len(ds.classes):
        log(f"note: the spec has {spec.num_classes} classes, {root} has {len(ds.classes)}; "
            "labels are the sorted class-directory indices", ctx.rank)
    model = build_model(spec)
    if args.ema:
        sd = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        if not isinstance(sd, dict) or not isinstance(sd.get("model_ema"), dict):
            raise ValueError(f"--checkpoint {args.checkpoint}: has no EMA weights (drop --ema)")
        model.load_state_dict(sd["model_ema"])
    else:
        load_checkpoint(model, args.checkpoint)
    model.to(ctx.device).eval()
    amp = args.amp and ctx.device.type == "cuda"
    t0 = time.time()
    metrics = evaluate(model, eval_loader(ds, ctx, args.batch_size, args.workers), ctx, amp)
    metrics.update(arch_hash=spec.arch_hash, checkpoint=os.path.abspath(args.checkpoint),
                   ema=bool(args.ema), seconds=time.time() - t0, world_size=ctx.world_size)
    if ctx.is_main:
        print(f"{metrics['val_images']} images: top-1 {metrics['top1']:.2f}%  "
              f"top-5 {metrics['top5']:.2f}%  loss {metrics['val_loss']:.4f}", flush=True)
        if args.json:
            write_json_atomic(metrics, args.json)
    return metrics




# -- export: architecture + training config + launch scripts ------------------------------------
def _export_spec(args: argparse.Namespace) -> tuple[ArchSpec, dict[str, Any]]:
    if args.arch is not None:
        try:
            return load_spec(args.arch), {"source": "arch", "arch": args.arch}
        except OSError as e:
            raise SpecError(f"--arch {args.arch}: unreadable ({e.strerror})") from None
    if "://" not in args.db and not os.path.isfile(args.db):
        raise FileNotFoundError(f"--db {args.db}: no such results database (needed for --trial)")
    from results.store import ResultsStore

    with ResultsStore(args.db, readonly=True) as store:
        t = store.trial(args.trial)  # ValueError (one line) if the id is unknown
    proxy = {k: t.get(k) for k in ("top1", "top5", "latency_ms", "params", "gmacs")}
    return ArchSpec.from_dict(t["spec"]), {"source": "trial", "trial": args.trial,
                                           "study": t.get("study"), "study_id": t.get("study_id"),
                                           "db": os.path.abspath(args.db), "proxy": proxy}


def _fmt(v: float) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def export_launch(args: argparse.Namespace) -> list[str]:
    """Write arch.json, train_config.json, train_torchrun.sh, train_slurm.sbatch, train_ray.py."""
    from . import launch_templates as T
    from .retrain_cli import retrain_parser

    for name in ("nodes", "gpus_per_node", "cpus_per_gpu", "epochs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    spec, origin = _export_spec(args)
    world = args.nodes * args.gpus_per_node
    batch = args.batch_size or max(1, 2048 // world)
    if batch < 1:
        raise ValueError(f"--batch-size {batch}: must be >= 1")
    try:
        extra = shlex.split(args.extra)
    except ValueError as e:
        raise ValueError(f"--extra {args.extra!r}: not a valid shell string ({e})") from None
    # Parse the extras with the real parser: a typo fails here, not on the cluster.
    parser = retrain_parser()

    def _fail(msg: str):
        raise ValueError(f"--extra {args.extra!r}: not valid retrain options ({msg})")
    parser.error = _fail  # type: ignore[method-assign]  # no usage dump, no exit: one line
    base = ["--arch", spec.canonical_json(), "--data", ".", "--epochs", str(args.epochs),
            "--batch-size", str(batch)]
    ns = parser.parse_args(base + extra)
    for opt in ("--arch", "--data", "--output", "--resume"):
        if opt in extra:
            raise ValueError(f"--extra: {opt} is set by the launch scripts themselves")
    recipe = resolve_recipe(ns, spec)
    recipe_args = [
        "--epochs", str(ns.epochs), "--batch-size", str(ns.batch_size),
        "--lr", _fmt(ns.lr), "--lr-base-batch", str(ns.lr_base_batch),
        "--weight-decay", _fmt(ns.weight_decay), "--warmup-epochs", str(ns.warmup_epochs),
        "--clip-grad", _fmt(ns.clip_grad), "--clip-mode", ns.clip_mode,
        "--aa", recipe["aa"] or "none", "--mixup", _fmt(recipe["mixup"]),
        "--cutmix", _fmt(recipe["cutmix"]), "--smoothing", _fmt(ns.smoothing),
        "--teacher-model", ns.teacher_model, "--distillation-alpha", _fmt(ns.distillation_alpha),
        "--model-ema-decay", _fmt(ns.model_ema_decay),
        "--workers", str(max(1, min(ns.workers, args.cpus_per_gpu - 1))),
    ]
    if origin.get("study_id") is not None and "--study-id" not in extra:
        recipe_args += ["--study-id", str(origin["study_id"])]  # links the run to the search
    if origin.get("db") and "--db" not in extra:
        recipe_args += ["--db", origin["db"]]  # record the full-scale result beside the proxy one
    recipe_args += extra
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    project = str(Path(args.project_dir).resolve()) if args.project_dir else str(PROJECT_DIR)
    lr_eff = ns.lr * batch * world / ns.lr_base_batch if ns.lr_scale else ns.lr
    config = {
        "arch_hash": spec.arch_hash, "spec": spec.to_dict(), "origin": origin,
        "launch": {"nodes": args.nodes, "gpus_per_node": args.gpus_per_node, "batch_per_gpu": batch,
                   "global_batch": batch * world, "lr_effective": lr_eff},
        "recipe": {"nearest_preset": recipe["nearest_preset"], "aa": recipe["aa"],
                   "mixup": recipe["mixup"], "cutmix": recipe["cutmix"]},
        "retrain_args": recipe_args,
        "command": "run_search.py retrain --arch arch.json --data DATA --output OUTPUT --resume "
                   + shlex.join(recipe_args),
    }
    bash_args = "\n".join("  " + shlex.join(recipe_args[i:i + 2])
                          for i in range(0, len(recipe_args), 2))
    common = dict(ARCH_HASH=spec.arch_hash, EXPORT_DIR=str(out), PROJECT_DIR=project,
                  RECIPE_ARGS=bash_args, GPUS_PER_NODE=str(args.gpus_per_node),
                  BATCH=str(batch), LR=_fmt(ns.lr), LR_BASE_BATCH=str(ns.lr_base_batch))
    files = {
        "arch.json": spec.to_json(indent=2) + "\n",
        "train_config.json": json.dumps(config, indent=2) + "\n",
        "train_torchrun.sh": T.render(T.TORCHRUN_SH, **common),
        "train_slurm.sbatch": T.render(
            T.SLURM_SBATCH, **common, NODES=str(args.nodes), TIME=args.time,
            CPUS_PER_NODE=str(args.cpus_per_gpu * args.gpus_per_node),
            PARTITION_LINE=f"#SBATCH --partition={args.partition}" if args.partition else
            "# (add #SBATCH --partition=... / --account=... for your cluster)"),
        "train_ray.py": T.render(T.RAY_PY, ARCH_HASH=spec.arch_hash, EXPORT_DIR_PY=repr(str(out)),
                                 PROJECT_DIR_PY=repr(project), RECIPE_ARGS_PY=repr(recipe_args),
                                 NUM_WORKERS=str(world), CPUS_PER_GPU=str(args.cpus_per_gpu)),
    }
    written = []
    for name, text in files.items():
        path = out / name
        tmp = path.with_name(f".{name}.tmp{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        if name.endswith((".sh", ".sbatch", ".py")):
            tmp.chmod(0o755)
        os.replace(tmp, path)
        written.append(str(path))
    return written


def export_main(args: argparse.Namespace) -> int:
    for p in export_launch(args):
        print(p)
    return 0
