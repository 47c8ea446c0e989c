"""Command line of full-scale retraining: ``export``, ``retrain`` and ``evaluate``.

The only module of ``search.retrain`` that sees argparse results: every option is derived from
a field of the typed configs in ``config.py`` (name, default and type declared once, there), and
each handler turns its namespace into those configs before calling the library. The training
modules (torch, timm) load on first use, so building the parser stays light.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import MISSING, fields
from typing import Any

from results.options import add_db_option
from search.options import add_torch_device_option
from search_space.cli_types import INTEGER, NUMBER
from search_space.errors import UsageError
from search_space.lazy import lazy_import

from . import launch
from .config import (CLIP_MODES, DISTILLATION_TYPES, MIXUP_MODES, EvaluateConfig, ExportConfig,
                     Processes, RayLaunch, RetrainConfig, RetrainJob, option)

loop = lazy_import("search.retrain.loop")
ray_train = lazy_import("search.retrain.ray_train")
evaluate = lazy_import("search.retrain.evaluate")

# argparse types of the config fields' annotations (everything else is taken as text).
# Parse step of a number field: a finite int / float (one line saying so); the config's own
# __post_init__ checks the range and names it.
_TYPES = {"int": INTEGER, "float": NUMBER, "int | None": INTEGER, "float | None": NUMBER}


def _field(cls: type, name: str):
    return next(f for f in fields(cls) if f.name == name)


def _add(group, cls: type, name: str, help: str = "", **kw: Any) -> None:
    """``--<name>`` with the default and type of ``cls.<name>``; booleans get --no-<name>."""
    f = _field(cls, name)
    if f.default is MISSING and f.default_factory is MISSING:
        kw.setdefault("required", True)
    elif isinstance(f.default, bool):
        group.add_argument(option(name), action=argparse.BooleanOptionalAction,
                           default=f.default,
                           help=f"{help} (default: {'on' if f.default else 'off'})".lstrip())
        return
    else:
        kw.setdefault("default", f.default)
        if f.default is not None:  # None: the help says what happens instead
            help = f"{help} (default: %(default)s)".lstrip()
    kw.setdefault("type", _TYPES.get(f.type))
    group.add_argument(option(name), help=help, **kw)


def _config(cls: type, args: argparse.Namespace, **given: Any):
    """``cls`` from the namespace's attributes of the same names (plus ``given``)."""
    values = {f.name: getattr(args, f.name) for f in fields(cls)
              if f.name not in given and hasattr(args, f.name)}
    return cls(**values, **given)


# -- options ----------------------------------------------------------------------------------
def add_process_arguments(p: argparse.ArgumentParser, batch_help: str, batch_cls: type) -> None:
    """Device and process options shared by ``retrain`` and ``evaluate``."""
    g = p.add_argument_group("device and processes")
    add_torch_device_option(g)
    _add(g, Processes, "nproc", "spawn this many local processes (torch.multiprocessing; gloo "
         "on CPU, NCCL on GPU). Ignored when launched by torchrun/srun (RANK/WORLD_SIZE set)")
    _add(g, Processes, "workers", "data-loading workers per process")
    _add(g, Processes, "amp", "mixed precision (float16 autocast + grad scaler); CUDA only")
    _add(g, batch_cls, "batch_size", batch_help)


def _add_job_arguments(p: argparse.ArgumentParser) -> None:
    _add(p, RetrainJob, "arch", "spec JSON file, inline JSON or preset XS/S/L1/L3")
    _add(p, RetrainJob, "data", "ImageFolder root with train/ and val/ (ImageNet layout)")
    _add(p, RetrainJob, "output", "run directory: checkpoints, metrics, exports "
         "(default: runs/retrain/<arch_hash>)")
    _add(p, RetrainJob, "resume", "resume from a checkpoint; bare --resume = "
         "<output>/checkpoint.pth if it exists, else start fresh", nargs="?", const="auto")
    _add(p, RetrainConfig, "epochs")
    _add(p, RetrainJob, "stop_after_epochs", "train at most this many epochs in this "
         "invocation, then exit (the schedule still spans --epochs); re-launch with --resume")
    _add(p, RetrainConfig, "seed")


def _add_optimiser_arguments(p: argparse.ArgumentParser) -> None:
    o = p.add_argument_group("optimiser and schedule")
    _add(o, RetrainConfig, "opt", "timm optimizer name")
    _add(o, RetrainConfig, "opt_eps")
    _add(o, RetrainConfig, "lr", "learning rate at --lr-base-batch global images per step")
    _add(o, RetrainConfig, "lr_base_batch", "global batch the --lr refers to; the lr is scaled "
         "linearly to the real one")
    _add(o, RetrainConfig, "lr_scale", "scale --lr linearly with the global batch")
    _add(o, RetrainConfig, "weight_decay")
    _add(o, RetrainConfig, "sched", "timm scheduler name (create_scheduler_v2)")
    for name in ("warmup_epochs", "warmup_lr", "min_lr"):
        _add(o, RetrainConfig, name)
    _add(o, RetrainConfig, "clip_grad", "clipping value (AGC factor for --clip-mode agc); 0 = off")
    _add(o, RetrainConfig, "clip_mode", choices=CLIP_MODES)


def _add_augmentation_arguments(p: argparse.ArgumentParser) -> None:
    a = p.add_argument_group("augmentation (auto = as the official code does for the nearest "
                             "published size: no mixup/cutmix for S-sized, also no RandAugment "
                             "for XS-sized models)")
    _add(a, RetrainConfig, "aa", "timm auto-augment policy, 'auto' (rand-m9-mstd0.5-inc1 or "
         "none) or 'none'")
    _add(a, RetrainConfig, "mixup", "mixup alpha or 'auto' (0.8 or 0)")
    _add(a, RetrainConfig, "cutmix", "cutmix alpha or 'auto' (1.0 or 0)")
    _add(a, RetrainConfig, "mixup_prob")
    _add(a, RetrainConfig, "mixup_switch_prob")
    _add(a, RetrainConfig, "mixup_mode", choices=MIXUP_MODES)
    _add(a, RetrainConfig, "smoothing", "label smoothing")
    _add(a, RetrainConfig, "color_jitter")
    _add(a, RetrainConfig, "reprob", "random-erasing probability")
    _add(a, RetrainConfig, "remode")
    _add(a, RetrainConfig, "train_interpolation")
    _add(a, RetrainConfig, "repeated_aug", "repeated augmentation sampler (3 repeats)")
    _add(a, RetrainConfig, "drop_path", "stochastic depth rate (default: the spec's drop_path_rate)")


def _add_distillation_arguments(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("distillation (DeiT-style, hard by default)")
    _add(d, RetrainConfig, "teacher_model", "timm model name of the teacher")
    _add(d, RetrainJob, "teacher_checkpoint", "teacher weights file (state_dict or "
         "{'model': ...}); without it distillation is off")
    _add(d, RetrainConfig, "distillation_type", choices=DISTILLATION_TYPES)
    _add(d, RetrainConfig, "distillation_alpha")
    _add(d, RetrainConfig, "distillation_tau")


def add_retrain_arguments(p: argparse.ArgumentParser) -> None:
    """Every ``retrain`` option; also what ``export --extra`` and the Ray script parse."""
    _add_job_arguments(p)
    add_process_arguments(p, "images per process and step (global batch = this x world size)",
                          RetrainConfig)
    _add_optimiser_arguments(p)
    _add_augmentation_arguments(p)
    _add_distillation_arguments(p)
    e = p.add_argument_group("EMA, evaluation, results")
    _add(e, RetrainConfig, "model_ema", "keep an EMA of the weights (timm ModelEmaV3)")
    _add(e, RetrainConfig, "model_ema_decay")
    _add(e, RetrainConfig, "eval_interval", "evaluate on val every N epochs (the last epoch always)")
    add_db_option(e, purpose="the run is recorded there, linked to its architecture")
    _add(e, RetrainJob, "record", "write the run to the results database")
    _add(e, RetrainJob, "study_id", "link the run to this study")
    _add(e, RetrainJob, "export", "export the final model to ONNX and CoreML")


def add_ray_arguments(p: argparse.ArgumentParser) -> None:
    """``retrain --ray`` and its options (not part of the recipe: not in export --extra)."""
    g = p.add_argument_group("Ray Train (--ray: the same recipe under TorchTrainer, "
                             "checkpointed through Ray's storage)")
    g.add_argument("--ray", action="store_true", help="train with Ray Train workers on a local "
                   "Ray or the cluster at --address; --resume continues from Ray's storage")
    _add(g, RayLaunch, "address", "Ray cluster to join: auto, HOST:PORT of the head, "
         "ray://HOST:10001 (default: start a local Ray)")
    _add(g, RayLaunch, "num_workers", "training workers (ranks)")
    _add(g, RayLaunch, "cpus_per_worker", "CPUs per worker (= its torch threads)", type=NUMBER)
    _add(g, RayLaunch, "gpus_per_worker", "GPUs per worker (0: CPU workers with gloo)")
    _add(g, RayLaunch, "storage", "where Ray keeps the checkpoints: a directory every node "
         "sees or a URI such as s3://bucket/prefix (default: <output>/ray)")
    _add(g, RayLaunch, "max_failures", "worker-group restarts from the last checkpoint")


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    _add(p, EvaluateConfig, "arch", "spec JSON file, inline JSON or preset XS/S/L1/L3 "
         "(official checkpoints)")
    _add(p, EvaluateConfig, "checkpoint", "weights: ours (retrain checkpoint/final), timm or "
         "official SwiftFormer")
    _add(p, EvaluateConfig, "data", "ImageFolder root with val/ (or a val dir itself)")
    _add(p, EvaluateConfig, "split", "sub-directory of --data to evaluate")
    _add(p, EvaluateConfig, "ema", "evaluate the EMA weights of our checkpoint")
    _add(p, EvaluateConfig, "crop_pct")
    _add(p, EvaluateConfig, "interpolation")
    _add(p, EvaluateConfig, "json", "also write the metrics to this JSON file")
    add_process_arguments(p, "images per process and step (official: 1.5 x the training batch)",
                          EvaluateConfig)


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    _add(src, ExportConfig, "trial", "trial id in the results DB (needs --db)")
    _add(src, ExportConfig, "arch", "spec JSON file, inline JSON or preset")
    add_db_option(p, purpose="where --trial is looked up")
    _add(p, ExportConfig, "out", "directory for arch.json, config and scripts")
    _add(p, ExportConfig, "nodes", "Slurm nodes")
    _add(p, ExportConfig, "gpus_per_node")
    _add(p, ExportConfig, "cpus_per_gpu", "Slurm/Ray CPUs per GPU process")
    _add(p, ExportConfig, "batch_size", "images per GPU (default: --lr-base-batch 2048 / (nodes x "
         "gpus-per-node), the paper's global batch)")
    _add(p, ExportConfig, "epochs")
    _add(p, ExportConfig, "partition", "Slurm partition")
    _add(p, ExportConfig, "time", "Slurm time limit")
    _add(p, ExportConfig, "project_dir", "checkout the cluster runs from (default: this checkout)")
    p.add_argument("--extra", default="", help="more retrain options, as one shell-quoted "
                   "string (e.g. \"--mixup 0\")")


# -- namespaces -> configs ----------------------------------------------------------------------
def retrain_parser() -> argparse.ArgumentParser:
    """A standalone parser of the ``retrain`` options (export checks, the Ray launch script)."""
    p = argparse.ArgumentParser(prog="run_search.py retrain")
    add_retrain_arguments(p)
    return p


def retrain_job(args: argparse.Namespace) -> RetrainJob:
    """The typed job of a parsed ``retrain`` command line (UsageError on bad values)."""
    return _config(RetrainJob, args, recipe=_config(RetrainConfig, args),
                   processes=_config(Processes, args))


def parse_retrain(argv: list[str]) -> RetrainJob:
    """``retrain`` arguments -> RetrainJob (what every Ray Train worker does)."""
    return retrain_job(retrain_parser().parse_args(argv))


def evaluate_config(args: argparse.Namespace) -> EvaluateConfig:
    return _config(EvaluateConfig, args, processes=_config(Processes, args))


def export_config(args: argparse.Namespace) -> ExportConfig:
    try:
        extra = tuple(shlex.split(args.extra))
    except ValueError as e:
        raise UsageError(f"--extra {args.extra!r}: not a valid shell string ({e})") from None
    return _config(ExportConfig, args, extra=extra)


def _extra_job(cfg: ExportConfig, text: str) -> RetrainJob:
    """The retrain settings the scripts pass: the launch shape's epochs and batch plus --extra,
    parsed by the real parser so a typo fails here, not on the cluster."""
    parser = retrain_parser()

    def fail(msg: str):
        raise UsageError(f"--extra {text!r}: not valid retrain options ({msg})")
    parser.error = fail  # type: ignore[method-assign]  # no usage dump, no exit: one line
    base = ["--arch", "arch.json", "--data", ".", "--epochs", str(cfg.epochs),
            "--batch-size", str(cfg.batch_per_gpu)]
    return retrain_job(parser.parse_args(base + list(cfg.extra)))


# -- handlers -----------------------------------------------------------------------------------
def ray_launch(args: argparse.Namespace) -> RayLaunch | None:
    """The Ray Train launch of a ``retrain`` command line (None without --ray; its options
    without --ray are a UsageError)."""
    launch = _config(RayLaunch, args)
    if getattr(args, "ray", False):
        return launch
    given = [option(f.name) for f in fields(RayLaunch)
             if getattr(launch, f.name) != getattr(RayLaunch(), f.name)]
    if given:
        raise UsageError(f"{given[0]}: only with --ray")
    return None


def _retrain(args: argparse.Namespace) -> int:
    launch = ray_launch(args)
    if launch is not None:
        return ray_train.retrain_on_ray(retrain_job(args), launch)
    return loop.retrain_main(retrain_job(args))


def _evaluate(args: argparse.Namespace) -> int:
    return evaluate.evaluate_main(evaluate_config(args))


def _export(args: argparse.Namespace) -> int:
    cfg = export_config(args)
    if (warning := launch.check_project_dir(cfg.project_dir)) is not None:
        print(f"warning: {warning}", file=sys.stderr)
    spec, origin = launch.export_source(cfg)
    job = _extra_job(cfg, args.extra)
    for path in launch.export_launch(cfg, spec, origin, job.recipe, job.processes):
        print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="write an architecture with its training config and "
                                       "launch scripts (torchrun, Slurm, Ray Train)")
    add_export_arguments(ex)
    ex.set_defaults(func=_export)

    rt = sub.add_parser("retrain", help="full-scale DDP training with the SwiftFormer recipe")
    add_retrain_arguments(rt)
    add_ray_arguments(rt)
    rt.set_defaults(func=_retrain)

    ev = sub.add_parser("evaluate", help="top-1/top-5 of a checkpoint on an ImageFolder val set")
    add_evaluate_arguments(ev)
    ev.set_defaults(func=_evaluate)
