"""ArchSearcher: the Ray Tune searcher of the architecture search.

It wraps Ray's ``OptunaSearch`` (multi-objective: maximise proxy top-1, minimise predicted
latency) and adds what the plain searcher cannot do, all in the driver process:

* the baselines (XS/S/L1/L3) are emitted first, or reused from the store when the same
  architecture was already trained on the same dataset at the same fidelity;
* every candidate's latency is predicted before it becomes a Tune trial; candidates over the
  budget are recorded REJECTED and told to Optuna as (top1=0, latency) so sampling moves away,
  without paying for a Ray trial;
* an architecture already trained at this dataset + fidelity is not trained again: its stored
  result is recorded for this study and told to Optuna;
* optional pre-ranking: ask ``prerank`` candidates, score them with zero-cost proxies, train the
  best, record the others PRUNED.

The driver injects the :class:`~search.nas.context.SearchContext` (store, predictor, data). Tune
pickles the searcher into the experiment directory (``tuner.pkl`` at start, a searcher
checkpoint every few seconds); the context never goes with it. To resume, the driver builds a
fresh searcher around a fresh context and loads the checkpointed state with Tune's public
``Searcher.restore_from_dir``. Trials that were running at the checkpoint are then emitted again
with the same config (same key, same seed) -- or, when the store already has their final row
(they finished after the checkpoint), told to Optuna from the store without training again.
"""
from __future__ import annotations

import logging
from typing import Any

from ray import cloudpickle
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from results.schema import STANDALONE
from search_space.lazy import lazy_import
from search_space.space import SearchSpace
from search_space.spec import ArchSpec

from .config import STRATEGIES
from .context import SearchContext

optuna = lazy_import("optuna")

logger = logging.getLogger(__name__)

METRICS = ["top1", "latency_ms"]
MODES = ["max", "min"]
# Consecutive suggestions that yield no trainable trial (rejected / reused) before giving up:
# a budget that almost nothing meets, or a space that is exhausted.
MAX_SKIPS = 500


class SpaceFn:
    """Define-by-run space for OptunaSearch; a plain class so it pickles with stdlib pickle."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def __call__(self, trial) -> None:
        self.space.suggest(trial)  # categorical suggestions, captured by OptunaSearch
        return None


def make_sampler(strategy: str, seed: int, n_trials: int):
    """Optuna sampler for a strategy name. Population / startup sizes scale with the budget so
    a 12-trial search is not all random start-up."""
    startup = max(4, min(10, n_trials // 3))
    if strategy == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=max(4, min(50, n_trials // 3)),
                                             seed=seed)
    if strategy == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=startup)
    if strategy == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"strategy {strategy!r}: allowed {', '.join(STRATEGIES)}")  # resolve() checked


class ArchSearcher(Searcher):
    """Baselines first, then Optuna suggestions filtered by the latency budget (see module doc)."""

    def __init__(self, context: SearchContext, space: SearchSpace, strategy: str, seed: int,
                 n_trials: int, baselines: list[tuple[str, str]], prerank: int = 0) -> None:
        super().__init__(metric=list(METRICS), mode=list(MODES))
        self.context = context
        self.space = space
        self.seed = seed
        self.n_trials = n_trials
        self.prerank = max(0, int(prerank))
        self.pending_baselines = list(baselines)  # [(name, spec_json)]
        self.n_candidates = 0     # candidates accounted for (trained, reused) -> budget
        self.n_suggested = 0      # Optuna asks, for unique inner ids
        # tune trial id -> {"inner": Optuna id | None (baseline), "config": the trial config}
        self.live: dict[str, dict[str, Any]] = {}
        self.requeued: list[dict[str, Any]] = []  # live at the checkpoint a resume started from
        self.inner = OptunaSearch(space=SpaceFn(space), metric=list(METRICS), mode=list(MODES),
                                  sampler=make_sampler(strategy, seed, n_trials), seed=None)

    # -- plumbing ---------------------------------------------------------------------------
    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the space is fixed at construction; Tune's param_space is empty

    def _ask(self) -> tuple[str, dict]:
        self.n_suggested += 1
        inner_id = f"ask{self.n_suggested:05d}"
        return inner_id, self.inner.suggest(inner_id)

    def _tell(self, inner_id: str, result: dict | None, error: bool = False) -> None:
        self.inner.on_trial_complete(inner_id, result=result, error=error)

    def _emit(self, trial_id: str, inner_id: str | None, config: dict) -> dict:
        self.live[trial_id] = {"inner": inner_id, "config": config}
        return config

    # -- Tune API ---------------------------------------------------------------------------
    def suggest(self, trial_id: str):
        ctx = self.context
        config = self._next_requeued(trial_id)
        if config is not None:
            return config
        while self.pending_baselines:
            name, spec_json = self.pending_baselines.pop(0)
            cfg = ctx.baseline_config(name, spec_json)
            if cfg is not None:  # None: reused from the store, recorded by the context
                return self._emit(trial_id, None, cfg)
        skips = 0
        while self.n_candidates < self.n_trials:
            if skips >= MAX_SKIPS:
                ctx.progress.warn(f"{MAX_SKIPS} suggestions in a row were rejected or reused; "
                                  "stopping the search early")
                self.n_trials = self.n_candidates
                break
            batch, skipped = self._screen_batch()
            skips += skipped
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
            return self._emit(trial_id, inner_id, cfg)
        ctx.search_finished = True
        return Searcher.FINISHED

    def _screen_batch(self) -> tuple[list, int]:
        """Ask max(1, prerank) suggestions; those to train, and how many were not."""
        batch, skipped = [], 0
        for _ in range(max(1, self.prerank)):
            inner_id, params = self._ask()
            verdict = self.context.screen_candidate(params, self.n_candidates, inner_id)
            if verdict["action"] == "train":
                batch.append((inner_id, params, verdict))
                continue
            self._tell(inner_id, verdict.get("tell"))  # rejected, duplicate or replayed
            skipped += 1
            if verdict["action"] == "reused":  # this index completed before a crash
                self.n_candidates += 1
                if self.n_candidates >= self.n_trials:
                    break
        return batch, skipped

    def _next_requeued(self, trial_id: str) -> dict | None:
        """After a resume: the next trial that was running at the checkpoint and has no final
        row yet (emitted again, same config); those with one are told to Optuna from it."""
        while self.requeued:
            info = self.requeued.pop(0)
            row = self.context.stored(info["config"]["trial_key"])
            if row is None:
                cfg = info["config"]
                if cfg.get("kind") == "candidate" and cfg.get("spec"):
                    self.context.training(cfg["trial_key"], ArchSpec.from_json(cfg["spec"]).arch_hash)
                return self._emit(trial_id, info["inner"], cfg)
            if info["inner"] is not None:
                self._tell(info["inner"], SearchContext.told(row), error=row["status"] == "FAILED")
        return None

    def replay_store(self) -> int:
        """On resume: have Optuna suggest again, first and in index order, the candidates the
        store has rows for (final or interrupted) that this searcher does not account for --
        all of them without a checkpoint, those suggested after it otherwise. Each then gets
        its own index, key and seed again: a final one is told to Optuna from its row, an
        interrupted one runs again. Without this, results told in another order than in the
        killed run steer the sampler elsewhere, and a candidate index that had finished would
        be given to another architecture. Returns how many were queued."""
        requeued = {info["config"]["trial_key"] for info in self.requeued}
        rows = [t for t in self.context.store.trials(self.context.study_id, rung=STANDALONE)
                if (t.get("config") or {}).get("kind") == "candidate"
                and t["config"].get("index") is not None
                and t["config"]["index"] >= self.n_candidates
                and t["config"].get("params") is not None and t["trial_key"] not in requeued]
        for t in sorted(rows, key=lambda t: t["config"]["index"]):
            self.inner._ot_study.enqueue_trial(dict(t["config"]["params"]))
        return len(rows)

    def enqueue(self, params: list[dict]) -> None:
        """Have Optuna suggest these candidates first, in order (``--proxy supernet``'s rung 2:
        the supernet front's picks). A suggestion is still screened (budget, reuse) as any."""
        for p in params:
            self.inner._ot_study.enqueue_trial(dict(p))

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
        state = {k: v for k, v in self.__dict__.items() if k not in ("inner", "context")}
        return {"self": state, "inner": self.inner.__dict__.copy()}

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state["self"])
        self.inner.__dict__.update(state["inner"])
        # This searcher serves a new Tune run: the trials live at the checkpoint are gone.
        self.requeued = list(self.requeued) + list(self.live.values())
        self.live = {}

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            cloudpickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(cloudpickle.load(f))

    def __getstate__(self) -> dict:
        d = self.__dict__.copy()
        d["context"] = None  # driver-process objects never go into tuner.pkl
        return d
