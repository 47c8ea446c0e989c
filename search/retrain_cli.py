"""CLI of the full-scale retraining feature: ``export``, ``retrain`` and ``evaluate``.

Only argparse here (module import stays light); torch, timm and the training loop are imported
inside the handlers, from ``search.retrain``. The defaults are the SwiftFormer recipe (paper
Sec. 4 / official ``main.py``); see notes/retrain.md for the table with sources.
"""
from __future__ import annotations

import argparse

# SwiftFormer recipe (official main.py defaults, paper Sec. 4). "auto" = chosen per architecture
# the way the official code treats XS/S (see search.retrain.recipe_preset).
DEFAULT_EPOCHS = 300
DEFAULT_BATCH_PER_PROCESS = 128          # 16 GPUs x 128 = 2048 (official slurm_train.sh)
DEFAULT_LR = 2e-3                        # at DEFAULT_LR_BASE_BATCH global images per step
DEFAULT_LR_BASE_BATCH = 2048


def _bool_pair(p, name: str, default: bool, help: str) -> None:
    """--name / --no-name (argparse.BooleanOptionalAction)."""
    p.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=default,
                   help=f"{help} (default: {'on' if default else 'off'})")


def add_launch_arguments(p: argparse.ArgumentParser) -> None:
    """Device and process options shared by ``retrain`` and ``evaluate``."""
    g = p.add_argument_group("device and processes")
    g.add_argument("--device", default="auto",
                   help="auto (cuda if available, else cpu), cpu, cuda or cuda:N")
    g.add_argument("--nproc", type=int, default=1,
                   help="spawn this many local processes (torch.multiprocessing; gloo on CPU, "
                        "NCCL on GPU). Ignored when launched by torchrun/srun (RANK/WORLD_SIZE set)")
    g.add_argument("--workers", type=int, default=8, help="data-loading workers per process")
    _bool_pair(g, "amp", True, "mixed precision (float16 autocast + grad scaler); CUDA only")
    g.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_PER_PROCESS,
                   help="images per process and step (global batch = this x world size)")


def add_retrain_arguments(p: argparse.ArgumentParser) -> None:
    """Every ``retrain`` option; also used by the exported launch scripts' checks."""
    p.add_argument("--arch", required=True, help="spec JSON file, inline JSON or preset XS/S/L1/L3")
    p.add_argument("--data", required=True,
                   help="ImageFolder root with train/ and val/ (ImageNet layout)")
    p.add_argument("--output", default=None,
                   help="run directory: checkpoints, metrics, exports (default runs/retrain/<arch_hash>)")
    p.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="resume from a checkpoint; bare --resume = <output>/checkpoint.pth if it "
                        "exists, else start fresh")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    p.add_argument("--stop-after-epochs", type=int, default=None,
                   help="train at most this many epochs in this invocation, then exit (the "
                        "schedule still spans --epochs); re-launch with --resume to continue")
    p.add_argument("--seed", type=int, default=0)
    add_launch_arguments(p)

    o = p.add_argument_group("optimiser and schedule")
    o.add_argument("--opt", default="adamw", help="timm optimizer name")
    o.add_argument("--opt-eps", type=float, default=1e-8)
    o.add_argument("--lr", type=float, default=DEFAULT_LR,
                   help="learning rate at --lr-base-batch global images per step")
    o.add_argument("--lr-base-batch", type=int, default=DEFAULT_LR_BASE_BATCH,
                   help="global batch the --lr refers to; the lr is scaled linearly to the real one")
    _bool_pair(o, "lr-scale", True, "scale --lr linearly with the global batch")
    o.add_argument("--weight-decay", type=float, default=0.025)
    o.add_argument("--sched", default="cosine", help="timm scheduler name (create_scheduler_v2)")
    o.add_argument("--warmup-epochs", type=int, default=5)
    o.add_argument("--warmup-lr", type=float, default=1e-6)
    o.add_argument("--min-lr", type=float, default=1e-5)
    o.add_argument("--clip-grad", type=float, default=0.01,
                   help="clipping value (AGC factor for --clip-mode agc); 0 = off")
    o.add_argument("--clip-mode", default="agc", choices=("agc", "norm", "value"))

    a = p.add_argument_group("augmentation (auto = as the official code does for the nearest "
                             "published size: no mixup/cutmix for S-sized, also no RandAugment "
                             "for XS-sized models)")
    a.add_argument("--aa", default="auto",
                   help="timm auto-augment policy, 'auto' (rand-m9-mstd0.5-inc1 or none) or 'none'")
    a.add_argument("--mixup", default="auto", help="mixup alpha or 'auto' (0.8 or 0)")
    a.add_argument("--cutmix", default="auto", help="cutmix alpha or 'auto' (1.0 or 0)")
    a.add_argument("--mixup-prob", type=float, default=1.0)
    a.add_argument("--mixup-switch-prob", type=float, default=0.5)
    a.add_argument("--mixup-mode", default="batch", choices=("batch", "pair", "elem"))
    a.add_argument("--smoothing", type=float, default=0.1, help="label smoothing")
    a.add_argument("--color-jitter", type=float, default=0.4)
    a.add_argument("--reprob", type=float, default=0.25, help="random-erasing probability")
    a.add_argument("--remode", default="pixel")
    a.add_argument("--train-interpolation", default="bicubic")
    _bool_pair(a, "repeated-aug", True, "repeated augmentation sampler (3 repeats)")
    a.add_argument("--drop-path", type=float, default=None,
                   help="stochastic depth rate (default: the spec's drop_path_rate)")

    d = p.add_argument_group("distillation (DeiT-style, hard by default)")
    d.add_argument("--teacher-model", default="regnety_160", help="timm model name of the teacher")
    d.add_argument("--teacher-checkpoint", default=None,
                   help="teacher weights file (state_dict or {'model': ...}); without it "
                        "distillation is off")
    d.add_argument("--distillation-type", default="hard", choices=("hard", "soft", "none"))
    d.add_argument("--distillation-alpha", type=float, default=0.5)
    d.add_argument("--distillation-tau", type=float, default=1.0)

    e = p.add_argument_group("EMA, evaluation, results")
    _bool_pair(e, "model-ema", True, "keep an EMA of the weights (timm ModelEmaV3)")
    e.add_argument("--model-ema-decay", type=float, default=0.99996)
    e.add_argument("--eval-interval", type=int, default=1,
                   help="evaluate on val every N epochs (the last epoch always)")
    e.add_argument("--db", default="runs/results.db",
                   help="results database to record the run in (linked to the architecture)")
    _bool_pair(e, "record", True, "write the run to the results database")
    e.add_argument("--study-id", type=int, default=None, help="link the run to this study")
    _bool_pair(e, "export", True, "export the final model to ONNX and CoreML")


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", required=True,
                   help="spec JSON file, inline JSON or preset XS/S/L1/L3 (official checkpoints)")
    p.add_argument("--checkpoint", required=True,
                   help="weights: ours (retrain checkpoint/final), timm or official SwiftFormer")
    p.add_argument("--data", required=True, help="ImageFolder root with val/ (or a val dir itself)")
    p.add_argument("--split", default="val", help="sub-directory of --data to evaluate")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights of our checkpoint")
    p.add_argument("--crop-pct", type=float, default=0.875)
    p.add_argument("--interpolation", default="bicubic")
    p.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    add_launch_arguments(p)
    p.set_defaults(batch_size=192)  # official: 1.5 x 128 for evaluation


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--trial", type=int, help="trial id in the results DB (needs --db)")
    src.add_argument("--arch", help="spec JSON file, inline JSON or preset")
    p.add_argument("--db", default="runs/results.db", help="results DB (for --trial)")
    p.add_argument("--out", required=True, help="directory for arch.json, config and scripts")
    p.add_argument("--nodes", type=int, default=4, help="Slurm nodes")
    p.add_argument("--gpus-per-node", type=int, default=4)
    p.add_argument("--cpus-per-gpu", type=int, default=16, help="Slurm/Ray CPUs per GPU process")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per GPU (default: 2048 / (nodes x gpus-per-node), the paper's "
                        "global batch)")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    p.add_argument("--partition", default=None, help="Slurm partition")
    p.add_argument("--time", default="48:00:00", help="Slurm time limit")
    p.add_argument("--project-dir", default=None,
                   help="checkout the cluster runs from (default: this checkout)")
    p.add_argument("--extra", default="",
                   help="more retrain options, as one shell-quoted string (e.g. \"--mixup 0\")")


def retrain_parser() -> argparse.ArgumentParser:
    """A standalone parser of the ``retrain`` options (used by the Ray launch script)."""
    p = argparse.ArgumentParser(prog="run_search.py retrain")
    add_retrain_arguments(p)
    return p


def _retrain(args: argparse.Namespace) -> int:
    from .retrain import retrain_main
    return retrain_main(args)


def _evaluate(args: argparse.Namespace) -> int:
    from .retrain import evaluate_main
    return evaluate_main(args)


def _export(args: argparse.Namespace) -> int:
    from .retrain import export_main
    return export_main(args)


def register(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="write an architecture with its training config and "
                                       "launch scripts (torchrun, Slurm, Ray Train)")
    add_export_arguments(ex)
    ex.set_defaults(func=_export)

    rt = sub.add_parser("retrain", help="full-scale DDP training with the SwiftFormer recipe")
    add_retrain_arguments(rt)
    rt.set_defaults(func=_retrain)

    ev = sub.add_parser("evaluate", help="top-1/top-5 of a checkpoint on an ImageFolder val set")
    add_evaluate_arguments(ev)
    ev.set_defaults(func=_evaluate)
