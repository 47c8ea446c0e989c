"""Recording proxy trials: the one writer of trial rows, and what a row holds.

:class:`TrialRecorder` is the driver side of ``search.proxy.trial``: start (RUNNING), per-epoch
metrics, the final status with the metrics of :data:`FINAL_KEYS`, the fidelity reached and the
timings. The search's Tune callback feeds it live results, the ladder records in-process
trainings, the fidelity study records results its process pool computed. No torch here: the
search driver records without importing the training stack.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Mapping

from search_space.io import json_safe
from search_space.spec import ArchSpec

# What a finished proxy training leaves on its trial row (metrics JSON; the numeric ones that
# are also columns -- top1, val_loss, latency_ms, ... -- become columns in results.store).
# node_id / data_cache: the Ray node a search trial ran on and the data cache it read there.
FINAL_KEYS = ("top1", "top5", "val_loss", "train_loss", "epochs_done", "train_seconds",
              "cpu_seconds", "synflow", "naswot", "grad_norm", "zero_cost_seconds",
              "wall_seconds", "epoch", "replayed", "img_per_s", "threads", "device",
              "latency_ms", "latency_std_ms", "node_id", "data_cache", "peak_rss_mib")
# What each epoch leaves (sfn_epoch_metrics).
EPOCH_KEYS = ("epoch", "top1", "top5", "val_loss", "train_loss", "lr", "epoch_seconds",
              "seconds", "img_per_s", "train_cpu_seconds")
TIMING_KEYS = ("train_seconds", "zero_cost_seconds", "wall_seconds", "cpu_seconds")
ZERO_COST_KEYS = ("synflow", "naswot", "grad_norm")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def code_version() -> str:
    """``git describe --always --dirty`` of this checkout (stored with every study), or
    "unknown" outside a git checkout (an installed wheel)."""
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def fidelity_reached(fidelity: Mapping[str, Any], epochs_done: float | None) -> dict:
    """The study's fidelity with the epochs actually trained (full budget iff all reached)."""
    return {**dict(fidelity), "epochs": epochs_done if epochs_done is not None else 0}


class TrialRecorder:
    """Writes the trials of one study; the only writer of trial rows (driver process only).

    ``fidelity`` is the study's full proxy budget (``Fidelity.to_dict()``): a trial is full
    budget when it COMPLETED and reached every item of it (``results.store``).
    """

    def __init__(self, store, study_id: int, fidelity: Mapping[str, Any],
                 rung: str = "standalone") -> None:
        self.store = store
        self.study_id = study_id
        self.fidelity = dict(fidelity)
        # The rung of the ladder every row it starts is on (results.schema.RUNGS): one recorder
        # per rung, so a row's rung is fixed when it is created.
        self.rung = rung
        self.trial_ids: dict[str, int] = {}

    @classmethod
    def for_study(cls, store, name: str, *, config: Mapping[str, Any], seed: int,
                  dataset_id: str, fidelity: Mapping[str, Any], device: str) -> "TrialRecorder":
        """Create (or reopen) study ``name`` and return its recorder. A study's identity is its
        config, seed, dataset, fidelity and latency device; reopening with different ones is
        refused by the store."""
        study_id = store.get_or_create_study(name, config=dict(config), seed=seed,
                                             dataset_id=dataset_id, fidelity=dict(fidelity),
                                             device=device, code_version=code_version())
        return cls(store, study_id, fidelity)

    def start(self, key: str, spec: ArchSpec, *, config: Mapping[str, Any], seed: int) -> int:
        """The trial's id; created RUNNING if new (idempotent: a resumed trial keeps its row)."""
        if key not in self.trial_ids:
            self.store.upsert_architecture(spec)
            self.trial_ids[key] = self.store.start_trial(
                self.study_id, key, spec.arch_hash, config=dict(config), seed=int(seed),
                rung=self.rung)
        return self.trial_ids[key]

    def adopt(self, key: str, trial_id: int) -> None:
        """Know an existing row (loaded from the store on resume) without writing."""
        self.trial_ids[key] = trial_id

    def epoch(self, key: str, metrics: Mapping[str, Any]) -> None:
        m = {k: v for k, v in metrics.items() if k in EPOCH_KEYS}
        self.store.log_epoch(self.trial_ids[key], int(m.get("epoch", 0)), json_safe(m))

    def finish(self, key: str, status: str, metrics: Mapping[str, Any], *,
               epochs_done: float | None = None, reached: Mapping[str, Any] | None = None,
               error: str | None = None) -> None:
        """Final status with the metrics of :data:`FINAL_KEYS` (plus anything in
        ``metrics`` the caller adds, e.g. ``reused_from_trial``) and the timings."""
        timings = {k: metrics[k] for k in TIMING_KEYS if metrics.get(k) is not None}
        kept = {k: v for k, v in metrics.items() if k not in ("history", "params")}
        if reached is None:
            reached = fidelity_reached(self.fidelity, epochs_done)
        self.store.finish_trial(self.trial_ids[key], status, metrics=json_safe(kept),
                                fidelity_reached=dict(reached), error=error,
                                timings=json_safe(timings) or None)

    def complete(self, key: str, result: Mapping[str, Any],
                 latency: tuple[float | None, float | None] | None = None) -> None:
        """Record a finished proxy training (a :func:`run_candidate` result)."""
        metrics = {k: result[k] for k in FINAL_KEYS if k in result}
        if latency is not None:
            metrics.update(latency_ms=latency[0], latency_std_ms=latency[1])
        self.finish(key, "COMPLETED", metrics, epochs_done=result.get("epochs_done"))

    def fail(self, key: str, error: str, *, epochs_done: float | None = 0,
             metrics: Mapping[str, Any] | None = None) -> None:
        self.finish(key, "FAILED", dict(metrics or {}), epochs_done=epochs_done, error=error)

    def record(self, key: str, spec: ArchSpec, result: Mapping[str, Any], *,
               config: Mapping[str, Any], seed: int,
               latency: tuple[float | None, float | None] | None = None) -> int:
        """Record a result computed elsewhere (a process pool): start, epochs, final status.

        ``result["status"]`` FAILED (with ``error``) records a failure; anything else a
        completion."""
        tid = self.start(key, spec, config=config, seed=seed)
        for h in result.get("history", []):
            self.epoch(key, h)
        if result.get("status") == "FAILED":
            self.fail(key, str(result.get("error") or "failed"),
                      epochs_done=result.get("epochs_done", 0),
                      metrics={k: result[k] for k in TIMING_KEYS if k in result})
        else:
            self.complete(key, result, latency)
        return tid
