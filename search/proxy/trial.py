"""The one way a candidate is proxy-trained and its trial recorded.

Three features train candidates: the search (a Ray Tune trial per candidate), the scaling
ladder and the fidelity study. They all go through this module, so a trial row means the same
thing whoever wrote it:

* :func:`run_candidate` -- the worker side: zero-cost scores, then proxy training at a
  :class:`~search.proxy.fidelity.Fidelity`, with a callback per epoch. It touches no database,
  so it runs in a Ray worker or a process pool as well as in the caller's process.
* :class:`TrialRecorder` -- the driver side, the only writer of trial rows: start (RUNNING),
  per-epoch metrics, and the final status with the metrics of :data:`FINAL_KEYS`, the fidelity
  reached and the timings. The search's Tune callback feeds it live results; a finished result
  computed elsewhere is recorded in one call with :meth:`TrialRecorder.record`.
* :func:`train_and_record` -- both in one process (the ladder).
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from search_space.io import json_safe
from search_space.spec import ArchSpec

from .data import ProxyData
from .fidelity import Fidelity
from .train import NonFiniteLoss, train_proxy
from .zero_cost import zero_cost_scores

# What a finished proxy training leaves on its trial row (metrics JSON; the numeric ones that
# are also columns -- top1, val_loss, latency_ms, ... -- become columns in results.store).
FINAL_KEYS = ("top1", "top5", "val_loss", "train_loss", "epochs_done", "train_seconds",
              "cpu_seconds", "synflow", "naswot", "grad_norm", "zero_cost_seconds",
              "wall_seconds", "epoch", "replayed", "img_per_s", "threads", "device",
              "latency_ms", "latency_std_ms")
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


def run_candidate(spec: ArchSpec, fidelity: Fidelity, data: ProxyData, *, seed: int,
                  device: str = "auto", threads: int | None = 1,
                  zero_cost: bool | Mapping[str, float] = True, zero_cost_batch: int = 32,
                  on_epoch: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train one candidate at ``fidelity`` on ``data``; return its final metrics.

    ``zero_cost``: True computes synflow / NASWOT / grad-norm first (a few seconds; stored with
    the trial so zero-cost ranks can be compared with trained ranks later), a mapping passes
    scores computed earlier (pre-ranking), False skips them. ``on_epoch`` gets the metrics of
    every epoch (see ``train_proxy``). Raises ``NonFiniteLoss`` when the training diverges.

    The result holds :data:`FINAL_KEYS` that apply, ``history`` (the per-epoch metrics),
    ``params`` and the identity fields ``train_proxy`` returns.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    out: dict[str, Any] = {}
    if isinstance(zero_cost, Mapping):
        out.update({k: float(v) for k, v in zero_cost.items()})
    elif zero_cost:
        scores = zero_cost_scores(spec, data, seed=seed, batch_size=zero_cost_batch)
        out.update({k: float(v) for k, v in scores.items()})
        out["zero_cost_seconds"] = time.perf_counter() - t0
    out.update(train_proxy(spec, fidelity, data, seed=seed, device=device, report=on_epoch,
                           threads=threads))
    out["wall_seconds"] = time.perf_counter() - t0
    out["cpu_seconds"] = time.process_time() - c0
    return out


def fidelity_reached(fidelity: Mapping[str, Any], epochs_done: float | None) -> dict:
    """The study's fidelity with the epochs actually trained (full budget iff all reached)."""
    return {**dict(fidelity), "epochs": epochs_done if epochs_done is not None else 0}


class TrialRecorder:
    """Writes the trials of one study; the only writer of trial rows (driver process only).

    ``fidelity`` is the study's full proxy budget (``Fidelity.to_dict()``): a trial is full
    budget when it COMPLETED and reached every item of it (``results.store``).
    """

    def __init__(self, store, study_id: int, fidelity: Mapping[str, Any]) -> None:
        self.store = store
        self.study_id = study_id
        self.fidelity = dict(fidelity)
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
                self.study_id, key, spec.arch_hash, config=dict(config), seed=int(seed))
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


def train_and_record(recorder: TrialRecorder, key: str, spec: ArchSpec, fidelity: Fidelity,
                     data: ProxyData, *, seed: int, config: Mapping[str, Any],
                     device: str = "auto", threads: int | None = 1,
                     zero_cost: bool | Mapping[str, float] = True,
                     latency: tuple[float | None, float | None] | None = None) -> dict[str, Any]:
    """Train ``spec`` in this process and record it as trial ``key`` of the recorder's study.

    Returns the :func:`run_candidate` result with ``status`` COMPLETED, or ``status`` FAILED
    and ``error`` when the training diverged (a diverged candidate is a result, not a crash).
    """
    recorder.start(key, spec, config=config, seed=seed)
    try:
        result = run_candidate(spec, fidelity, data, seed=seed, device=device, threads=threads,
                               zero_cost=zero_cost, on_epoch=lambda m: recorder.epoch(key, m))
    except NonFiniteLoss as e:
        recorder.fail(key, str(e))
        return {"status": "FAILED", "error": str(e), "epochs_done": 0}
    recorder.complete(key, result, latency)
    return {**result, "status": "COMPLETED"}
