"""StoreCallback: the driver-side Tune callback that is the only writer of trial rows."""
from __future__ import annotations

from ray.tune import Callback

from search_space.spec import ArchSpec

from search.driver import _FINAL_KEYS, _clean, _error_cause, get_context


class StoreCallback(Callback):
    """The one writer of trial rows: start, per-epoch metrics, final status and cause."""

    def __init__(self, study: str) -> None:
        self.study = study
        self.results: dict[str, dict] = {}

    def _ctx(self):
        return get_context(self.study)

    def on_trial_start(self, iteration, trials, trial, **info):
        ctx = self._ctx()
        c = trial.config
        spec = ArchSpec.from_json(c["spec"])
        ctx._configs[c["trial_key"]] = dict(c)
        ctx.start(c["trial_key"], spec, dict(c), int(c["seed"]))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        ctx = self._ctx()
        key = trial.config["trial_key"]
        self.results[trial.trial_id] = dict(result)
        if key in ctx.done_keys or result.get("final") or result.get("replayed"):
            return
        if key not in ctx.trial_ids:  # restored trial: start was logged by another process
            self.on_trial_start(iteration, trials, trial)
        epoch = result.get("epoch", result.get("training_iteration"))
        keep = {k: v for k, v in result.items()
                if k in ("epoch", "top1", "top5", "val_loss", "train_loss", "lr",
                         "epoch_seconds", "seconds", "img_per_s")}
        ctx.store.log_epoch(ctx.trial_ids[key], int(epoch), _clean(keep))

    def on_trial_complete(self, iteration, trials, trial, **info):
        ctx = self._ctx()
        c = trial.config
        key = c["trial_key"]
        if key not in ctx.trial_ids:
            self.on_trial_start(iteration, trials, trial)
        r = self.results.pop(trial.trial_id, None) or dict(trial.last_result or {})
        if key in ctx.done_keys:
            return
        metrics = {k: v for k, v in r.items() if k in _FINAL_KEYS}
        metrics.update(latency_ms=c["latency_ms"], latency_std_ms=c.get("latency_std_ms"))
        timings = {k: r.get(k) for k in ("train_seconds", "zero_cost_seconds",
                                         "wall_seconds") if r.get(k) is not None}
        epochs_done = r.get("epochs_done", r.get("epoch"))
        if r.get("final"):
            ctx.finish(key, "COMPLETED", metrics, ctx.reached(epochs_done), timings=timings)
            status = "COMPLETED"
        else:  # stopped by the scheduler (ASHA) before the full proxy budget
            ctx.finish(key, "PRUNED", metrics, ctx.reached(epochs_done or 0),
                       error="stopped early by ASHA", timings=timings)
            status = "PRUNED"
        self._line(ctx, c, status, metrics)

    def on_trial_error(self, iteration, trials, trial, **info):
        ctx = self._ctx()
        c = trial.config
        key = c["trial_key"]
        if key not in ctx.trial_ids:
            self.on_trial_start(iteration, trials, trial)
        r = self.results.pop(trial.trial_id, None) or {}
        metrics = {k: v for k, v in r.items() if k in _FINAL_KEYS}
        metrics.update(latency_ms=c["latency_ms"], latency_std_ms=c.get("latency_std_ms"))
        cause = _error_cause(trial)
        ctx.finish(key, "FAILED", metrics, ctx.reached(r.get("epoch", 0) or 0), error=cause)
        self._line(ctx, c, "FAILED", {"error": cause})

    def _line(self, ctx, c, status, metrics):
        n_done = sum(v for k, v in ctx.progress.counts.items()
                     if k not in ("REJECTED", "PRERANKED_OUT", "DUPLICATE"))
        who = c["name"] if c["kind"] == "baseline" else f"cand {c['index']:>3}"
        if status == "FAILED":
            what = f"FAILED: {metrics['error'][:100]}"
        else:
            top1 = metrics.get("top1")
            what = (f"{status.lower()} top1 {top1:.2f}%" if top1 is not None else status.lower())
        rej = ctx.progress.counts.get("REJECTED", 0)
        rej_s = f", {rej} rejected over budget" if rej else ""
        pre = ctx.progress.counts.get("PRERANKED_OUT", 0)
        rej_s += f", {pre} pre-ranked out" if pre else ""
        dup = ctx.progress.counts.get("DUPLICATE", 0)
        rej_s += f", {dup} duplicate(s) reused" if dup else ""
        ctx.progress.line(f"{n_done}/{ctx.progress.total} done{rej_s} | {who} "
                          f"{c['latency_ms']:.2f} ms {what} | {ctx.front_summary()}")
