"""StoreCallback: the driver-side Tune callback that records every Tune trial.

Through the injected context's :class:`~search.proxy.record.TrialRecorder`: start (RUNNING),
one row per reported epoch, and the final status -- COMPLETED, PRUNED (stopped early by ASHA)
or FAILED with the exception that ended it -- with the metrics of
``search.proxy.record.FINAL_KEYS``. Failures are results, not crashes: the search goes on.
"""
from __future__ import annotations

from typing import Any, Mapping

from ray.tune import Callback

from search_space.spec import ArchSpec

from ..proxy.record import FINAL_KEYS
from .context import SearchContext

# Ray's wrappers around the exception a trial raised (or around a dead worker).
RAY_WRAPPERS = ("RayTaskError", "RayActorError", "ActorDiedError")


def error_cause(trial) -> str:
    """One line naming the exception a failed trial raised (or why its worker died)."""
    try:
        err = trial.get_pickled_error()
    except Exception:  # noqa: BLE001 - an unreadable error file: fall back to the text file
        err = None
    if err is not None:
        cause = getattr(err, "cause", None) or err
        text = str(cause).strip().splitlines()
        name = type(cause).__name__
        if name in RAY_WRAPPERS and text:
            # Ray's wrapper: the last "Xxx: message" line of its traceback is the cause.
            lines = [line for line in text if line and not line.startswith(" ")]
            return lines[-1][:500] if lines else text[0][:500]
        return f"{name}: {text[-1] if text else ''}"[:500]
    try:
        with open(trial.error_file, encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip() and not line.startswith(" ")]
        return lines[-1][:500] if lines else "unknown error"
    except (OSError, TypeError):
        return "unknown error (no error file)"


class StoreCallback(Callback):
    """Records the Tune trials of one search run (see module doc)."""

    def __init__(self, context: SearchContext) -> None:
        self.context = context
        self.results: dict[str, dict] = {}  # tune trial id -> its last result

    def __getstate__(self) -> dict:
        return {"results": {}, "context": None}  # Tune pickles callbacks into tuner.pkl

    def _start(self, trial) -> SearchContext:
        """The context, with the trial's row started (idempotent)."""
        ctx, c = self.context, trial.config
        ctx.start(c["trial_key"], ArchSpec.from_json(c["spec"]), dict(c), int(c["seed"]))
        return ctx

    def on_trial_start(self, iteration, trials, trial, **info):
        self._start(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        key = trial.config["trial_key"]
        self.results[trial.trial_id] = dict(result)
        if key in self.context.done_keys or result.get("final"):
            return
        self._start(trial).recorder.epoch(key, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        ctx, c = self._start(trial), trial.config
        r = self.results.pop(trial.trial_id, None) or dict(trial.last_result or {})
        if c["trial_key"] in ctx.done_keys:
            return
        metrics = self._metrics(c, r)
        epochs_done = r.get("epochs_done", r.get("epoch"))
        if r.get("final"):
            status = "COMPLETED"
            ctx.finish(c["trial_key"], status, metrics, epochs_done=epochs_done)
        else:  # stopped by the scheduler (ASHA) before the full proxy budget
            status = "PRUNED"
            ctx.finish(c["trial_key"], status, metrics, epochs_done=epochs_done or 0,
                       error="stopped early by ASHA")
        self._line(c, status, metrics)

    def on_trial_error(self, iteration, trials, trial, **info):
        ctx, c = self._start(trial), trial.config
        r = self.results.pop(trial.trial_id, None) or {}
        cause = error_cause(trial)
        ctx.finish(c["trial_key"], "FAILED", self._metrics(c, r),
                   epochs_done=r.get("epoch", 0) or 0, error=cause)
        self._line(c, "FAILED", {"error": cause})

    @staticmethod
    def _metrics(config: Mapping[str, Any], result: Mapping[str, Any]) -> dict:
        metrics = {k: v for k, v in result.items() if k in FINAL_KEYS}
        metrics.update(latency_ms=config["latency_ms"],
                       latency_std_ms=config.get("latency_std_ms"))
        return metrics

    def _line(self, c: Mapping[str, Any], status: str, metrics: Mapping[str, Any]) -> None:
        ctx = self.context
        who = c["name"] if c["kind"] == "baseline" else f"cand {c['index']:>3}"
        if status == "FAILED":
            what = f"FAILED: {metrics['error'][:100]}"
        else:
            top1 = metrics.get("top1")
            what = f"{status.lower()} top1 {top1:.2f}%" if top1 is not None else status.lower()
        ctx.progress.line(f"{ctx.progress.done_summary()} | {who} {c['latency_ms']:.2f} ms "
                          f"{what} | {ctx.front_summary()}")
