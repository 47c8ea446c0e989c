"""The retrain run in the results database, beside the proxy estimate of its architecture.

Rank 0 adds a RUNNING row to ``sfn_training_runs`` at the start (linked to the searched
architecture and, when given, its study) and sets it COMPLETED with top-1/top-5 and the final
checkpoint, or FAILED with the error, at the end. A database problem is printed and never stops
(or loses) a multi-day training run.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict
from typing import Any

from results.options import open_store
from search_space.io import json_safe

from .config import RetrainJob
from ..distributed import log
from .prepare import PreparedRun


def dataset_id(data: str, classes: tuple[str, ...] | list[str]) -> str:
    """A stable name of an ImageFolder: its path and a hash of its class list."""
    h = hashlib.sha256("\n".join(classes).encode()).hexdigest()[:12]
    return f"imagefolder:{os.path.abspath(data)}:{len(classes)}cls:{h}"


def job_settings(job: RetrainJob) -> dict[str, Any]:
    """The job's settings as one flat JSON-safe mapping (option names without dashes)."""
    flat = {k: v for k, v in asdict(job).items() if k not in ("recipe", "processes")}
    return json_safe({**flat, **asdict(job.processes), **asdict(job.recipe)})


def run_config(job: RetrainJob, prep: PreparedRun) -> dict[str, Any]:
    """The config stored with the run: the settings plus what "auto" resolved to."""
    r = prep.recipe
    return dict(job_settings(job), trained_spec=json_safe(prep.spec.to_dict()), aa=r.aa, mixup=r.mixup,
                cutmix=r.cutmix, nearest_preset=r.nearest_preset, distillation=prep.distillation)


def start_recorded_run(job: RetrainJob, prep: PreparedRun) -> int | None:
    """Add a RUNNING full-scale training run, linked to the searched architecture."""
    try:
        with open_store(job.db, readonly=False) as store:
            arch_hash = store.upsert_architecture(prep.input_spec)
            study_id = job.study_id
            if study_id is not None and all(s["id"] != study_id for s in store.studies()):
                log(f"--study-id {study_id}: not in {job.db}; the run is recorded unlinked")
                study_id = None
            return store.start_training_run(arch_hash, dataset_id=dataset_id(job.data, prep.classes),
                                            epochs=job.recipe.epochs, config=run_config(job, prep),
                                            study_id=study_id)
    except Exception as e:  # the DB must never stop (or lose) a multi-day training run
        log(f"could not record the run in {job.db}: {type(e).__name__}: {e}")
        return None


def finish_recorded_run(db: str, run_id: int | None, status: str, *, top1: float | None = None,
                        top5: float | None = None, checkpoint: str | None = None,
                        error: str | None = None) -> None:
    """Set the run's final status (nothing when it was never recorded)."""
    if run_id is None:
        return
    try:
        with open_store(db, readonly=False) as store:
            store.finish_training_run(run_id, status, top1=top1, top5=top5,
                                      checkpoint_path=checkpoint, error=error)
    except Exception as e:  # as above: report, never fail the run over its record
        log(f"could not update run {run_id} in {db}: {type(e).__name__}: {e}")
