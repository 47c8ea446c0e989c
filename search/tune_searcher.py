"""ArchSearcher: the Ray Tune searcher of the architecture search.

It wraps Ray's ``OptunaSearch`` (multi-objective: maximise proxy top-1, minimise predicted
latency) and adds what the plain searcher cannot do, all in the driver process:

* the four baselines (XS/S/L1/L3) are emitted first, or reused from the store when the same
  architecture was already trained on the same dataset at the same fidelity;
* every candidate's latency is predicted before it becomes a Tune trial; candidates over the
  budget are recorded REJECTED and told to Optuna as (top1=0, latency) so sampling moves away,
  without paying for a Ray trial;
* an architecture already trained at this dataset + fidelity is not trained again: its stored
  result is recorded for this study and told to Optuna (this is also what makes ``--resume``
  exact for trials that completed after Tune's last experiment checkpoint);
* optional pre-ranking: ask ``prerank`` candidates, score them with zero-cost proxies, train the
  best, record the others PRUNED.

Heavy driver-side objects (store, predictor, data) live in a per-process context looked up by
study name (``search.driver.get_context``), so the searcher itself pickles into Tune's
``tuner.pkl`` and searcher checkpoints.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from ray import cloudpickle
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

logger = logging.getLogger(__name__)

METRICS = ["top1", "latency_ms"]
MODES = ["max", "min"]
# Consecutive suggestions that yield no trainable trial (rejected / reused) before giving up:
# a budget that almost nothing meets, or a space that is exhausted.
MAX_SKIPS = 500


class SpaceFn:
    """Define-by-run space for OptunaSearch; a plain class so it pickles with stdlib pickle."""

    def __init__(self, space) -> None:
        self.space = space

    def __call__(self, trial) -> None:
        self.space.suggest(trial)  # categorical suggestions, captured by OptunaSearch
        return None


def make_sampler(strategy: str, seed: int, n_trials: int):
    """Optuna sampler for a strategy name. Population / startup sizes scale with the budget so
    a 12-trial search is not all random start-up."""
    import optuna

    if strategy == "nsga2":
        pop = max(4, min(50, n_trials // 3))
        return optuna.samplers.NSGAIISampler(population_size=pop, seed=seed)
    if strategy == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, n_startup_trials=max(4, min(10, n_trials // 3)))
    if strategy == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=max(4, min(10, n_trials // 3)))
    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"--strategy {strategy!r}: allowed nsga2, tpe, gp, random")


from search.driver import STRATEGIES  # noqa: E402  (one list for CLI, validation, here)


class ArchSearcher(Searcher):
    """Baselines first, then Optuna suggestions filtered by the latency budget (see module doc)."""

    def __init__(self, study: str, space, strategy: str, seed: int, n_trials: int,
                 baselines: list[tuple[str, str]], prerank: int = 0,
                 context_fn: Callable[[str], Any] | None = None) -> None:
        super().__init__(metric=list(METRICS), mode=list(MODES))
        self.study = study
        self.space = space
        self.seed = seed
        self.n_trials = n_trials
        self.prerank = max(0, int(prerank))
        self.pending_baselines = list(baselines)  # [(name, spec_json)]
        self.n_candidates = 0     # candidates accounted for (trained, reused) -> budget
        self.n_suggested = 0      # Optuna asks, for unique inner ids
        self.live: dict[str, dict] = {}  # tune trial id -> {"inner": id|None, "kind": ...}
        self._context_fn = context_fn
        self.inner = OptunaSearch(space=SpaceFn(space), metric=list(METRICS), mode=list(MODES),
                                  sampler=make_sampler(strategy, seed, n_trials), seed=None)

    # -- plumbing ---------------------------------------------------------------------------
    def _ctx(self):
        if self._context_fn is None:
            from search.driver import get_context
            return get_context(self.study)
        return self._context_fn(self.study)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the space is fixed at construction; Tune's param_space is empty

    def _ask(self) -> tuple[str, dict]:
        self.n_suggested += 1
        inner_id = f"ask{self.n_suggested:05d}"
        params = self.inner.suggest(inner_id)
        return inner_id, params

    def _tell(self, inner_id: str, result: dict | None, error: bool = False) -> None:
        self.inner.on_trial_complete(inner_id, result=result, error=error)

    # -- Tune API ---------------------------------------------------------------------------
    def suggest(self, trial_id: str):
        ctx = self._ctx()
        while self.pending_baselines:
            name, spec_json = self.pending_baselines.pop(0)
            cfg = ctx.baseline_config(name, spec_json)
            if cfg is None:  # reused from the store, recorded by the context
                continue
            self.live[trial_id] = {"inner": None, "kind": "baseline"}
            return cfg
        skips = 0
        while self.n_candidates < self.n_trials:
            if skips >= MAX_SKIPS:
                ctx.progress.warn(f"{MAX_SKIPS} suggestions in a row were rejected or reused; "
                                  "stopping the search early")
                self.n_trials = self.n_candidates
                break
            batch = []
            for _ in range(max(1, self.prerank)):
                inner_id, params = self._ask()
                verdict = ctx.screen_candidate(params, self.n_candidates, inner_id)
                if verdict["action"] == "train":
                    batch.append((inner_id, params, verdict))
                else:  # rejected over budget, a duplicate, or replayed after a crash
                    self._tell(inner_id, verdict.get("tell"))
                    if verdict["action"] == "reused":  # this index completed before a crash
                        self.n_candidates += 1
                        if self.n_candidates >= self.n_trials:
                            break
                    skips += 1
            if not batch:
                continue
            if self.n_candidates >= self.n_trials:  # the budget filled up with reused results
                for inner_id, _, _ in batch:
                    self._tell(inner_id, None)
                break
            if len(batch) > 1:
                batch = ctx.prerank(batch)  # best first; the rest recorded PRUNED
                for inner_id, _, _ in batch[1:]:
                    self._tell(inner_id, None)  # Optuna: PRUNED (never trained)
            inner_id, params, verdict = batch[0]
            cfg = ctx.candidate_config(params, self.n_candidates, verdict)
            self.n_candidates += 1
            self.live[trial_id] = {"inner": inner_id, "kind": "candidate"}
            return cfg
        ctx.search_finished = True
        return Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass  # multi-objective Optuna takes no intermediate values

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        info = self.live.pop(trial_id, None)
        if info is None or info["inner"] is None:
            return
        if error:
            self._tell(info["inner"], None, error=True)
        elif result and result.get("final") and result.get("top1") is not None:
            self._tell(info["inner"], {m: float(result[m]) for m in METRICS})
        else:
            self._tell(info["inner"], None)  # stopped early (ASHA): PRUNED for Optuna

    # -- checkpointing (Tune calls save/restore through save_to_dir/restore_from_dir) --------
    def get_state(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("inner", "_context_fn")}
        return {"self": state, "inner": self.inner.__dict__.copy()}

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state["self"])
        self.inner.__dict__.update(state["inner"])

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            cloudpickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(cloudpickle.load(f))

    def __getstate__(self) -> dict:
        d = self.__dict__.copy()
        d["_context_fn"] = None  # driver-process objects never go into tuner.pkl
        return d
