"""Retraining settings: the SwiftFormer recipe, declared once.

:class:`RetrainConfig` is the recipe (SwiftFormer, Shaker et al., ICCV'23, Sec. 4, and the
official https://github.com/Amshaker/SwiftFormer ``main.py`` / ``dist_train.sh`` /
``slurm_train.sh``); every ``retrain`` option is derived from its fields by ``cli.py`` (the
defaults are not restated there). :class:`Processes` holds the execution details (device,
processes, loader workers, AMP) that change speed, never what is learned; :class:`RetrainJob`,
:class:`EvaluateConfig` and :class:`ExportConfig` are one invocation of each command. Every
library function of ``search.retrain`` takes these typed records, never an argparse namespace.

This module imports no torch: the command line builds and validates these before any heavy work.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from results.options import DEFAULT_DB
from search_space.cli_types import MAX_SEED
from search_space.costs import analytic_params
from search_space.errors import UsageError
from search_space.spec import PRESETS, ArchSpec, SpecError, load_spec

CLIP_MODES = ("agc", "norm", "value")          # timm dispatch_clip_grad modes
MIXUP_MODES = ("batch", "pair", "elem")        # timm Mixup modes
DISTILLATION_TYPES = ("hard", "soft", "none")  # DeiT's
# The checkout: default home of run directories (runs/retrain/<arch_hash>) and the directory
# the exported launch scripts run from unless told otherwise.
PROJECT_DIR = Path(__file__).resolve().parents[2]


# sbatch --time's formats (man sbatch) and partition names (comma-separated list)
SLURM_TIME = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2}|UNLIMITED|INFINITE")
SLURM_PARTITION = re.compile(r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*")


def option(name: str) -> str:
    """The command-line spelling of a config field: ``warmup_lr`` -> ``--warmup-lr``."""
    return "--" + name.replace("_", "-")


def _in_ranges(obj: object, ranges: dict[str, tuple[str, Callable[[float], bool]]]) -> None:
    """Each named field of ``obj`` (None: not set) passes its test, else one line naming the
    option, the value and what is allowed (``ranges``: field -> (allowed, test))."""
    for name, (allowed, ok) in ranges.items():
        v = getattr(obj, name)
        if v is not None and not ok(v):
            raise UsageError(f"{option(name)} {v:g}: allowed {allowed}")


def _at_least(obj: object, names: tuple[str, ...], low: int) -> None:
    """The integer fields ``names`` are >= ``low`` (counts, sizes, epochs)."""
    _in_ranges(obj, {n: (f"integers >= {low}", lambda v: v >= low) for n in names})


def _auto_or_number(name: str, v: float | str) -> float | str:
    if isinstance(v, str) and v != "auto":
        try:
            v = float(v)
        except ValueError:
            raise UsageError(f"{option(name)} {v!r}: allowed a number >= 0 or 'auto'") from None
    if not isinstance(v, str) and not (math.isfinite(v) and v >= 0):
        raise UsageError(f"{option(name)} {v:g}: allowed a number >= 0 or 'auto'")
    return v


# The range of each number of the recipe, as (allowed, test): one line naming the option and
# this range when a value is outside (a negative lr or a probability of 7 trains happily and
# wastes a cluster job). NaN fails every test.
_RECIPE_RANGES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "opt_eps": ("numbers > 0", lambda v: 0 < v < math.inf),
    "lr": ("numbers > 0", lambda v: 0 < v < math.inf),
    "weight_decay": ("numbers >= 0", lambda v: 0 <= v < math.inf),
    "warmup_epochs": ("integers >= 0", lambda v: v >= 0),
    "warmup_lr": ("numbers >= 0", lambda v: 0 <= v < math.inf),
    "min_lr": ("numbers >= 0", lambda v: 0 <= v < math.inf),
    "clip_grad": ("numbers >= 0 (0: off)", lambda v: 0 <= v < math.inf),
    "mixup_prob": ("0..1", lambda v: 0 <= v <= 1),
    "mixup_switch_prob": ("0..1", lambda v: 0 <= v <= 1),
    "smoothing": ("[0, 1)", lambda v: 0 <= v < 1),
    "color_jitter": ("numbers >= 0", lambda v: 0 <= v < math.inf),
    "reprob": ("0..1", lambda v: 0 <= v <= 1),
    "drop_path": ("[0, 1)", lambda v: 0 <= v < 1),  # None: the spec's own rate
    "distillation_alpha": ("0..1", lambda v: 0 <= v <= 1),
    "distillation_tau": ("numbers > 0", lambda v: 0 < v < math.inf),
    "model_ema_decay": ("0..1", lambda v: 0 <= v <= 1),
}


@dataclass(frozen=True)
class RetrainConfig:
    """How a chosen architecture is trained at full scale: the SwiftFormer recipe.

    "auto" (``aa``, ``mixup``, ``cutmix``) = the treatment the official code gives the published
    model nearest in parameter count (:func:`resolve_recipe`). notes/retrain.md lists the
    deviations from the official code and why.
    """

    # --- length, batch, seed ------------------------------------------------------------------
    epochs: int = 300  # paper Sec. 4 and official main.py: 300 epochs on ImageNet-1k
    # Images per process and step: the official slurm_train.sh runs 16 GPUs x 128 = 2048.
    batch_size: int = 128
    seed: int = 0  # weights, sampler and the per-epoch augmentation streams derive from it

    # --- optimiser and schedule (official main.py; timm's create_optimizer/scheduler) ---------
    opt: str = "adamw"  # AdamW; timm skips weight decay on norms and biases
    opt_eps: float = 1e-8  # main.py --opt-eps
    # Peak lr at lr_base_batch global images per step: main.py's 2e-3 at slurm_train.sh's 2048.
    lr: float = 2e-3
    lr_base_batch: int = 2048  # the global batch the lr above was tuned at
    # Scale lr linearly to the real global batch. The official code does not (AdamW at 2048
    # only); both agree at 2048, and on fewer GPUs the linear rule keeps the step size per
    # image. False restores the official behaviour.
    lr_scale: bool = True
    weight_decay: float = 0.025  # main.py
    sched: str = "cosine"  # per-epoch cosine, as main.py (timm create_scheduler_v2 name)
    warmup_epochs: int = 5  # main.py: 5 linear warm-up epochs ...
    warmup_lr: float = 1e-6  # ... from this lr (not scaled with the batch, as main.py)
    min_lr: float = 1e-5  # the cosine floor (not scaled: pass less at tiny global batches)
    # Adaptive gradient clipping at 0.01 (main.py --clip-grad 0.01 --clip-mode agc): it keeps
    # the attention layers stable at lr 2e-3. 0 = off.
    clip_grad: float = 0.01
    clip_mode: str = "agc"

    # --- augmentation (official main.py / util/datasets.py, timm implementations) ------------
    # RandAugment rand-m9-mstd0.5-inc1, except XS-sized models (dist_train.sh: they under-fit
    # with it). "auto" decides per architecture; "none" turns it off.
    aa: str = "auto"
    # Mixup 0.8 / cutmix 1.0 for L1/L3-sized models, off for XS/S-sized ones (dist_train.sh,
    # slurm_train.sh note): "auto" decides per architecture, a number forces it.
    mixup: float | str = "auto"
    cutmix: float | str = "auto"
    mixup_prob: float = 1.0  # main.py: every batch is mixed ...
    mixup_switch_prob: float = 0.5  # ... half of them with cutmix instead of mixup
    mixup_mode: str = "batch"  # one mixing per batch (main.py)
    smoothing: float = 0.1  # label smoothing (main.py; inside the mixed targets when mixing)
    color_jitter: float = 0.4  # main.py
    reprob: float = 0.25  # random-erasing probability (main.py) ...
    remode: str = "pixel"  # ... filling the erased box with per-pixel noise
    train_interpolation: str = "bicubic"  # RandomResizedCrop interpolation (main.py)
    # Repeated augmentation (3 augmented copies of each image per epoch, spread over the ranks;
    # DeiT's sampler, on in main.py): it is what lets a 2048 batch keep the small-batch accuracy.
    repeated_aug: bool = True
    # Stochastic depth rate; None = the spec's own drop_path_rate (the searched architecture
    # carries the rate of the published model it derives from).
    drop_path: float | None = None

    # --- distillation (paper Sec. 4: DeiT-style hard distillation from RegNetY-160) -----------
    # The teacher's weights file is per run (RetrainJob.teacher_checkpoint); without one,
    # distillation is off and the run says so.
    teacher_model: str = "regnety_160"  # timm name of the teacher network
    distillation_type: str = "hard"  # DeiT's best: CE on the teacher's argmax
    distillation_alpha: float = 0.5  # weight of the distillation term (main.py)
    distillation_tau: float = 1.0  # temperature, soft distillation only

    # --- EMA and evaluation ---------------------------------------------------------------------
    model_ema: bool = True  # main.py keeps an EMA of the weights (timm ModelEmaV3 here)
    model_ema_decay: float = 0.99996  # per step (main.py)
    # Evaluate every N epochs (the last always). Official: every 20th; every epoch here because
    # it is cheap next to an epoch of training and Ray/metrics then see val accuracy each epoch.
    eval_interval: int = 1

    def __post_init__(self) -> None:
        _at_least(self, ("epochs", "batch_size", "lr_base_batch", "eval_interval"), 1)
        if not 0 <= self.seed <= MAX_SEED:
            raise UsageError(f"--seed {self.seed}: allowed integers 0..{MAX_SEED}")
        object.__setattr__(self, "mixup", _auto_or_number("mixup", self.mixup))
        object.__setattr__(self, "cutmix", _auto_or_number("cutmix", self.cutmix))
        _in_ranges(self, _RECIPE_RANGES)
        for name, allowed in (("clip_mode", CLIP_MODES), ("mixup_mode", MIXUP_MODES),
                              ("distillation_type", DISTILLATION_TYPES)):
            if getattr(self, name) not in allowed:
                raise UsageError(f"{option(name)} {getattr(self, name)!r}: allowed "
                                 f"{', '.join(allowed)}")


@dataclass(frozen=True)
class Processes:
    """Where and in how many processes a command runs: speed, never what is learned."""

    # auto = cuda when available, else cpu (search.options --torch-device: the same spelling).
    torch_device: str = "auto"
    # Local processes to spawn (torch.multiprocessing; gloo on CPU, NCCL on GPU). Ignored when a
    # launcher (torchrun, srun, Ray Train) already started one process per rank.
    nproc: int = 1
    workers: int = 8  # data-loading workers per process (JPEG decoding keeps a GPU busy)
    # float16 autocast + grad scaler; CUDA only (CPU runs ignore it).
    amp: bool = True

    def __post_init__(self) -> None:
        _at_least(self, ("nproc",), 1)
        _at_least(self, ("workers",), 0)


@dataclass(frozen=True)
class RayLaunch:
    """``retrain --ray``: the same recipe under Ray Train's ``TorchTrainer``, one worker per
    rank, on a local Ray or an existing cluster (``search.retrain.ray_train``)."""

    # An existing cluster (auto, HOST:PORT, ray://HOST:10001); None = start a local Ray.
    address: str | None = None
    num_workers: int = 1  # training processes (= ranks); the global batch is this x batch
    # CPUs per worker; its torch threads follow it (the data loaders' --workers come on top).
    cpus_per_worker: float = 1.0
    # GPUs per worker: 0 = CPU workers (gloo); 1 = one CUDA device each (NCCL, AMP); a
    # fraction packs several workers on one GPU (for tests of the wiring, not for speed).
    gpus_per_worker: float = 0.0
    # Where Ray Train keeps the checkpoints (every epoch) and the final run; a resumed run
    # reads its last checkpoint from here. None = <output>/ray, which only works when every
    # node sees <output>; on a cluster give a directory they all mount (NFS) or a URI
    # (s3://bucket/prefix): every worker uploads to it.
    storage: str | None = None
    # Worker-group restarts from the last checkpoint after a worker or node dies.
    max_failures: int = 0

    def __post_init__(self) -> None:
        _at_least(self, ("num_workers",), 1)
        _at_least(self, ("max_failures",), 0)
        if not self.cpus_per_worker > 0:
            raise UsageError(f"--cpus-per-worker {self.cpus_per_worker:g}: allowed numbers > 0")
        g = self.gpus_per_worker
        if not (g >= 0 and (g <= 1 or g == int(g))):
            raise UsageError(f"--gpus-per-worker {g:g}: allowed 0, a fraction of one GPU or a whole "
                             "number of GPUs")


@dataclass(frozen=True)
class RetrainJob:
    """One ``retrain`` invocation: the recipe plus what is trained, on what, and where to."""

    arch: str  # spec JSON file, inline JSON or preset name (search_space.spec.load_spec)
    data: str  # ImageFolder root with train/ and val/ (the ImageNet layout)
    recipe: RetrainConfig = field(default_factory=RetrainConfig)
    processes: Processes = field(default_factory=Processes)
    output: str | None = None  # run directory; None = runs/retrain/<arch_hash>
    # "auto" = <output>/checkpoint.pth if it exists (else start fresh), or a checkpoint path.
    resume: str | None = None
    # Train at most this many epochs now, then exit; the schedule still spans recipe.epochs
    # (time-limited cluster jobs re-launch with resume).
    stop_after_epochs: int | None = None
    teacher_checkpoint: str | None = None  # teacher weights; None = no distillation
    db: str = DEFAULT_DB  # results database the run is recorded in
    record: bool = True  # write the run to db (linked to the architecture and study_id)
    study_id: int | None = None  # the search the architecture came from
    export: bool = True  # ONNX + CoreML of the final model (latency_models.export)

    def __post_init__(self) -> None:
        _at_least(self, ("stop_after_epochs",), 1)


@dataclass(frozen=True)
class EvaluateConfig:
    """One ``evaluate`` invocation: top-1/top-5 of a checkpoint (official dist_test.sh)."""

    arch: str  # spec JSON file, inline JSON or preset (official checkpoints: XS/S/L1/L3)
    checkpoint: str  # ours (retrain checkpoint/final), timm's or an official SwiftFormer file
    data: str  # ImageFolder root with <split>/, or the split directory itself
    split: str = "val"
    ema: bool = False  # evaluate the EMA weights of our checkpoint
    crop_pct: float = 0.875  # resize to resolution / crop_pct, centre crop (official)
    interpolation: str = "bicubic"
    json: str | None = None  # also write the metrics to this file
    # Official evaluation batch: 1.5 x the training batch (no gradients to hold).
    batch_size: int = RetrainConfig.batch_size * 3 // 2
    processes: Processes = field(default_factory=Processes)

    def __post_init__(self) -> None:
        _at_least(self, ("batch_size",), 1)
        _in_ranges(self, {"crop_pct": ("(0, 1]", lambda v: 0 < v <= 1)})


@dataclass(frozen=True)
class ExportConfig:
    """One ``export`` invocation: an architecture, its launch shape and where to write."""

    out: str  # directory for arch.json, train_config.json and the launch scripts
    arch: str | None = None  # spec JSON file, inline JSON or preset ...
    trial: int | None = None  # ... or a trial of the results database
    db: str = DEFAULT_DB  # where --trial is looked up (and the finished run is recorded)
    # The paper's launch shape: 4 nodes x 4 GPUs x 128 images = the 2048 global batch.
    nodes: int = 4
    gpus_per_node: int = 4
    cpus_per_gpu: int = 16  # Slurm/Ray CPUs per GPU process (loader workers = this - 1)
    batch_size: int | None = None  # images per GPU; None = lr_base_batch / (nodes x GPUs)
    epochs: int = RetrainConfig.epochs
    partition: str | None = None  # Slurm partition
    time: str = "48:00:00"  # Slurm time limit (a job that hits it is resubmitted: resume)
    project_dir: str | None = None  # the checkout the cluster runs from; None = this one
    extra: tuple[str, ...] = ()  # more retrain options, appended to the scripts' arguments

    def __post_init__(self) -> None:
        if (self.arch is None) == (self.trial is None):
            raise UsageError("export: give exactly one of --arch and --trial")
        _at_least(self, ("nodes", "gpus_per_node", "cpus_per_gpu", "epochs", "batch_size"), 1)
        # Without --batch-size every GPU gets its share of the recipe's global batch: more GPUs
        # than images would leave each one image of a different, larger global batch.
        if self.batch_size is None and self.world_size > RetrainConfig.lr_base_batch:
            raise UsageError(
                f"--nodes {self.nodes} x --gpus-per-node {self.gpus_per_node} = "
                f"{self.world_size} GPUs: allowed at most {RetrainConfig.lr_base_batch} (the "
                "recipe's global batch, one image per GPU) unless --batch-size is given")
        # Both go into '#SBATCH' lines: a value sbatch refuses would fail only on the cluster,
        # and a line break would start a line of its own in the script.
        if not SLURM_TIME.fullmatch(self.time):
            raise UsageError(f"--time {self.time!r}: allowed a Slurm time limit: MINUTES, "
                             "MINUTES:SECONDS, HOURS:MINUTES:SECONDS, DAYS-HOURS, "
                             "DAYS-HOURS:MINUTES, DAYS-HOURS:MINUTES:SECONDS or UNLIMITED")
        if self.partition is not None and not SLURM_PARTITION.fullmatch(self.partition):
            raise UsageError(f"--partition {self.partition!r}: allowed partition names of "
                             "letters, digits, '_', '-', '.', comma-separated")

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def batch_per_gpu(self) -> int:
        """The batch per GPU: given, or the recipe's global batch spread over every GPU."""
        return self.batch_size or RetrainConfig.lr_base_batch // self.world_size  # >= 1: __post_init__


# -- the recipe for one architecture -----------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """The "auto" options of a RetrainConfig resolved for one architecture."""

    nearest_preset: str  # the published model whose treatment the architecture gets
    aa: str  # timm auto-augment policy; "" = none
    mixup: float
    cutmix: float


def load_arch(ref: str, what: str = "--arch") -> ArchSpec:
    """load_spec with an unreadable file as a one-line UsageError naming the option."""
    try:
        return load_spec(ref)
    except OSError as e:
        raise SpecError(f"{what} {ref}: unreadable ({e.strerror})") from None


def recipe_preset(spec: ArchSpec) -> str:
    """The published variant nearest to ``spec`` in parameter count (log scale).

    The official training drops RandAugment, mixup and cutmix for XS and mixup and cutmix for S
    (dist_train.sh, slurm_train.sh note): small models under-fit with the heavy recipe. A searched
    architecture gets the treatment of the published model closest in size.
    """
    p = math.log(analytic_params(spec.replace(num_classes=1000)))
    return min(PRESETS, key=lambda n: abs(math.log(analytic_params(PRESETS[n])) - p))


def resolve_recipe(cfg: RetrainConfig, spec: ArchSpec) -> Recipe:
    """Turn the 'auto' augmentation options into values for ``spec``."""
    near = recipe_preset(spec)
    heavy_mix = near in ("L1", "L3")
    mixup = (0.8 if heavy_mix else 0.0) if cfg.mixup == "auto" else float(cfg.mixup)
    cutmix = (1.0 if heavy_mix else 0.0) if cfg.cutmix == "auto" else float(cfg.cutmix)
    aa = cfg.aa
    if aa == "auto":
        aa = "" if near == "XS" else "rand-m9-mstd0.5-inc1"
    elif aa in ("none", "None", ""):
        aa = ""
    return Recipe(nearest_preset=near, aa=aa, mixup=mixup, cutmix=cutmix)


def scaled_lr(cfg: RetrainConfig, world_size: int) -> float:
    """lr scaled linearly from lr_base_batch to the real global batch (unless not lr_scale)."""
    if not cfg.lr_scale:
        return cfg.lr
    return cfg.lr * cfg.batch_size * world_size / cfg.lr_base_batch
