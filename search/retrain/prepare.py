"""Everything about a retrain job that is cheap to check, checked before any process starts.

A bad input (spec, data layout, device, teacher file, resume file, batch parity) is one
UsageError line naming the option, raised in the launching process: nothing is spawned and
nothing is written.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from results.options import check_db
from search_space.errors import UsageError
from search_space.io import check_input_file, check_writable_dir
from search_space.spec import ArchSpec

from .config import PROJECT_DIR, Recipe, RetrainJob, load_arch, resolve_recipe
from .data import check_imagefolder
from ..distributed import check_torch_device
from .losses import check_teacher_name


@dataclass(frozen=True)
class PreparedRun:
    """What a retrain job resolves to on this data set."""

    spec: ArchSpec  # the network trained: the input spec with the data's classes and drop path
    input_spec: ArchSpec  # the architecture as given (the searched one the run is linked to)
    recipe: Recipe  # the "auto" options resolved for spec
    distillation: str  # the distillation actually used ("none" without a teacher file)
    classes: tuple[str, ...]  # train/ class directories, sorted (the label order)
    output: Path  # run directory

    @property
    def arch_hash(self) -> str:
        return self.input_spec.arch_hash


def _trained_spec(job: RetrainJob, spec: ArchSpec, n_classes: int) -> ArchSpec:
    changes: dict[str, object] = {}
    if spec.num_classes != n_classes:
        changes["num_classes"] = n_classes
    if job.recipe.drop_path is not None:
        changes["drop_path_rate"] = job.recipe.drop_path
    return spec.replace(**changes) if changes else spec


def _distillation(job: RetrainJob, spec: ArchSpec) -> str:
    """The distillation type this job uses: 'none' unless a teacher file is given."""
    cfg = job.recipe
    if cfg.distillation_type == "none" or not job.teacher_checkpoint:
        return "none"
    check_input_file(job.teacher_checkpoint, "--teacher-checkpoint")
    check_teacher_name(cfg.teacher_model)
    if not spec.distillation:
        raise UsageError(f"--arch {job.arch}: distillation=false in the spec (no distillation "
                         "head); drop --teacher-checkpoint or use --distillation-type none")
    return cfg.distillation_type


def prepare_retrain(job: RetrainJob) -> PreparedRun:
    """Validate everything cheap to validate; return the spec to train and resolved settings."""
    spec = load_arch(job.arch)
    classes = check_imagefolder(job.data, ("train", "val"))["train"]
    check_torch_device(job.processes.torch_device)
    train_spec = _trained_spec(job, spec, len(classes))
    distillation = _distillation(job, train_spec)
    if job.resume not in (None, "auto"):
        check_input_file(job.resume, "--resume")
    recipe = resolve_recipe(job.recipe, train_spec)
    if (recipe.mixup > 0 or recipe.cutmix > 0) and job.recipe.batch_size % 2:
        raise UsageError(f"--batch-size {job.recipe.batch_size}: mixup/cutmix need an even batch")
    output = Path(job.output or PROJECT_DIR / "runs" / "retrain" / spec.arch_hash)
    check_writable_dir(output, "--output")
    if job.record:
        check_db(job.db, readonly=False)  # the run is recorded there (nothing opened yet)
    return PreparedRun(spec=train_spec, input_spec=spec, recipe=recipe,
                       distillation=distillation, classes=tuple(classes), output=output)
