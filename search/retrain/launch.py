"""``export``: an architecture with its training config and launch scripts for a cluster.

Writes ``arch.json``, ``train_config.json`` and three launchers of the same command
(``run_search.py retrain`` with the recipe's arguments): ``train_torchrun.sh`` (one node),
``train_slurm.sbatch`` (srun + torchrun on several nodes) and ``train_ray.py`` (Ray Train
``TorchTrainer``). The templates are in ``templates.py``. No torch here.
"""
from __future__ import annotations

import os
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from results.options import open_store
from search_space.errors import NotFoundError, UsageError
from search_space.io import atomic_write, check_writable_dir, dumps_json
from search_space.spec import ArchSpec

from . import templates as T
from .config import (PROJECT_DIR, ExportConfig, Processes, Recipe, RetrainConfig, load_arch,
                     resolve_recipe, scaled_lr)

# Options the launch scripts set themselves (per cluster run), never taken from --extra.
SCRIPT_OPTIONS = ("--arch", "--data", "--output", "--resume")
EXECUTABLE = (".sh", ".sbatch", ".py")


@dataclass(frozen=True)
class Origin:
    """Where the exported architecture came from (written to train_config.json)."""

    source: str  # "arch" or "trial"
    arch: str | None = None  # the --arch reference
    trial: int | None = None  # the trial id, its study and database
    study: str | None = None
    study_id: int | None = None
    db: str | None = None
    proxy: dict[str, Any] | None = None  # the trial's proxy top-1/top-5, latency and costs

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def export_source(cfg: ExportConfig) -> tuple[ArchSpec, Origin]:
    """The architecture to export: ``cfg.arch``, or trial ``cfg.trial`` of ``cfg.db``."""
    if cfg.arch is not None:
        return load_arch(cfg.arch), Origin(source="arch", arch=cfg.arch)
    with open_store(cfg.db, readonly=True) as store:
        try:
            t = store.trial(cfg.trial)
        except NotFoundError as e:  # the store's "trial N: not in this database"
            raise NotFoundError(f"--trial {cfg.trial}: {e}") from None
    proxy = {k: t.get(k) for k in ("top1", "top5", "latency_ms", "params", "gmacs")}
    return ArchSpec.from_dict(t["spec"]), Origin(
        source="trial", trial=cfg.trial, study=t.get("study"), study_id=t.get("study_id"),
        db=os.path.abspath(cfg.db), proxy=proxy)


def check_extra(extra: tuple[str, ...]) -> None:
    for opt in SCRIPT_OPTIONS:
        if opt in extra:
            raise UsageError(f"--extra: {opt} is set by the launch scripts themselves")


def check_project_dir(project_dir: str | None) -> str | None:
    """--project-dir is the checkout on the cluster: it may not exist on this machine (a warning,
    returned), but where it does exist here it must be this project's checkout (UsageError)."""
    if project_dir is None:
        return None
    path = Path(project_dir)
    if not path.exists():
        return (f"--project-dir {project_dir}: not on this machine; the scripts run "
                f"{path.resolve() / 'run_search.py'} on the cluster")
    if not (path / "run_search.py").is_file():
        raise UsageError(f"--project-dir {project_dir}: allowed a checkout of this project (a "
                         "directory holding run_search.py), or a path that exists only on the "
                         "cluster")
    return None


def _fmt(v: Any) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def recipe_args(cfg: ExportConfig, recipe: RetrainConfig, resolved: Recipe,
                processes: Processes, origin: Origin) -> list[str]:
    """The ``retrain`` arguments every launcher passes (besides SCRIPT_OPTIONS)."""
    args = [
        "--epochs", str(recipe.epochs), "--batch-size", str(recipe.batch_size),
        "--lr", _fmt(recipe.lr), "--lr-base-batch", str(recipe.lr_base_batch),
        "--weight-decay", _fmt(recipe.weight_decay), "--warmup-epochs", str(recipe.warmup_epochs),
        "--clip-grad", _fmt(recipe.clip_grad), "--clip-mode", recipe.clip_mode,
        "--aa", resolved.aa or "none", "--mixup", _fmt(resolved.mixup),
        "--cutmix", _fmt(resolved.cutmix), "--smoothing", _fmt(recipe.smoothing),
        "--teacher-model", recipe.teacher_model,
        "--distillation-alpha", _fmt(recipe.distillation_alpha),
        "--model-ema-decay", _fmt(recipe.model_ema_decay),
        "--workers", str(max(1, min(processes.workers, cfg.cpus_per_gpu - 1))),
    ]
    if origin.study_id is not None and "--study-id" not in cfg.extra:
        args += ["--study-id", str(origin.study_id)]  # links the run to the search
    if origin.db and "--db" not in cfg.extra:
        args += ["--db", origin.db]  # record the full-scale result beside the proxy one
    return args + list(cfg.extra)


def _train_config(cfg: ExportConfig, spec: ArchSpec, origin: Origin, recipe: RetrainConfig,
                  resolved: Recipe, args: list[str]) -> dict[str, Any]:
    world = cfg.world_size
    return {
        "arch_hash": spec.arch_hash, "spec": spec.to_dict(), "origin": origin.to_dict(),
        "launch": {"nodes": cfg.nodes, "gpus_per_node": cfg.gpus_per_node,
                   "batch_per_gpu": recipe.batch_size, "global_batch": recipe.batch_size * world,
                   "lr_effective": scaled_lr(recipe, world)},
        "recipe": {"nearest_preset": resolved.nearest_preset, "aa": resolved.aa,
                   "mixup": resolved.mixup, "cutmix": resolved.cutmix},
        "retrain_args": args,
        "command": "run_search.py retrain --arch arch.json --data DATA --output OUTPUT --resume "
                   + shlex.join(args),
    }


def _scripts(cfg: ExportConfig, spec: ArchSpec, recipe: RetrainConfig, args: list[str],
             out: Path) -> dict[str, str]:
    project = str(Path(cfg.project_dir).resolve()) if cfg.project_dir else str(PROJECT_DIR)
    bash_args = "\n".join("  " + shlex.join(args[i:i + 2]) for i in range(0, len(args), 2))
    common = dict(ARCH_HASH=spec.arch_hash, EXPORT_DIR=shlex.quote(str(out)),
                  PROJECT_DIR=shlex.quote(project),
                  RECIPE_ARGS=bash_args, GPUS_PER_NODE=str(cfg.gpus_per_node),
                  BATCH=str(recipe.batch_size), LR=_fmt(recipe.lr),
                  LR_BASE_BATCH=str(recipe.lr_base_batch))
    partition = (f"#SBATCH --partition={cfg.partition}" if cfg.partition else
                 "# (add #SBATCH --partition=... / --account=... for your cluster)")
    return {
        "train_torchrun.sh": T.render(T.TORCHRUN_SH, **common),
        "train_slurm.sbatch": T.render(
            T.SLURM_SBATCH, **common, NODES=str(cfg.nodes), TIME=cfg.time,
            CPUS_PER_NODE=str(cfg.cpus_per_gpu * cfg.gpus_per_node), PARTITION_LINE=partition),
        "train_ray.py": T.render(T.RAY_PY, ARCH_HASH=spec.arch_hash, EXPORT_DIR_PY=repr(str(out)),
                                 PROJECT_DIR_PY=repr(project), RECIPE_ARGS_PY=repr(args),
                                 NUM_WORKERS=str(cfg.world_size),
                                 CPUS_PER_GPU=str(cfg.cpus_per_gpu)),
    }


def _write(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")
        if path.name.endswith(EXECUTABLE):
            tmp.chmod(0o755)
    atomic_write(path, write)


def export_launch(cfg: ExportConfig, spec: ArchSpec, origin: Origin, recipe: RetrainConfig,
                  processes: Processes) -> list[str]:
    """Write arch.json, train_config.json and the three launch scripts; return their paths.

    ``recipe`` / ``processes`` are the retrain settings the scripts pass on (the defaults with
    the launch shape's batch and cfg.extra applied)."""
    check_extra(cfg.extra)
    check_writable_dir(cfg.out, "--out")
    resolved = resolve_recipe(recipe, spec)
    args = recipe_args(cfg, recipe, resolved, processes, origin)
    out = Path(cfg.out).resolve()
    files = {"arch.json": spec.to_json(indent=2) + "\n",
             "train_config.json": dumps_json(
                 _train_config(cfg, spec, origin, recipe, resolved, args)),
             **_scripts(cfg, spec, recipe, args, out)}
    written = []
    for name, text in files.items():
        _write(out / name, text)
        written.append(str(out / name))
    return written
