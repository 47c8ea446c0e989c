"""SearchContext: the driver-process state the searcher and the Tune callback share.

The driver builds one per run and injects it into :class:`~search.nas.searcher.ArchSearcher`
and :class:`~search.nas.callback.StoreCallback` (constructor argument). It holds what must never
be pickled -- the results store, the latency predictor, the data handle -- so both objects drop
it from their pickled state; a resumed run builds fresh ones around a fresh context (see
``search.nas.driver``).

Every trial row goes through the context's one :class:`~search.proxy.record.TrialRecorder`:
Tune trials are written by the callback; suggestions that never become Tune trials (rejected
over the budget, reused from an earlier training, pre-ranked out) are written here on the
searcher's behalf. A key already final in the store is never written again (``--resume``).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from results.schema import STANDALONE
from results.store import fidelity_key, reached_full_budget
from results.study_front import BASELINE_TRIAL_PREFIX
from search_space.spec import ArchSpec

from ..proxy.data import ProxyData
from ..proxy.record import TrialRecorder, fidelity_reached
from ..proxy.zero_cost import zero_cost_scores
from .config import ResolvedSearch
from .progress import Progress, front_summary

# Seed of the baselines' training: a fixed "index" far from the candidates' 0..n_trials-1.
BASELINE_SEED_INDEX = 10_000


def count_as(trial_key: str, status: str) -> str:
    """The progress category of a final row: its status, or what a reused / pre-ranked-out
    suggestion was counted as when it was recorded (see ``finish(count_as=...)``)."""
    prefix = trial_key.split("-", 1)[0]
    return {"dup": "DUPLICATE", "pre": "PRERANKED_OUT"}.get(prefix, status)


class SearchContext:
    """Store, predictor, data and bookkeeping of one search run (never pickled)."""

    def __init__(self, resolved: ResolvedSearch, recorder: TrialRecorder, data: ProxyData,
                 progress: Progress) -> None:
        self.resolved = resolved
        self.cfg = cfg = resolved.config
        self.space = cfg.space
        self.fidelity = cfg.fidelity
        self.fid = cfg.fidelity.to_dict()
        self.device = resolved.latency_device
        self.predictor = resolved.predictor
        self.recorder = recorder
        self.store = recorder.store
        self.study_id = recorder.study_id
        self.data = data
        self.dataset_id = data.dataset_id
        self.fidelity_key = fidelity_key(self.fid)
        self.progress = progress
        self.done_keys: set[str] = set()       # trial keys final in the store
        self.configs: dict[str, dict] = {}     # trial key -> its config (kind, name, index)
        self.front_points: dict[str, tuple[str, float, float]] = {}  # key -> arch, top1, ms
        self.baseline_points: dict[str, tuple[float, float]] = {}
        self._lat_cache: dict[str, tuple[float, float | None]] = {}
        # architecture hash -> key of the candidate this run is training it as (not final yet):
        # a second suggestion of it waits for that result instead of training it again
        self.in_training: dict[str, str] = {}
        self.search_finished = False            # set by ArchSearcher when its budget is spent
        self._load_existing()

    # -- the store ------------------------------------------------------------------------------
    def _load_existing(self) -> None:
        """A resumed study: what is final is known (never written again) and counted, so the
        progress counter continues from it instead of restarting at 1."""
        for t in self.store.trials(self.study_id, rung=STANDALONE):
            if t["status"] != "RUNNING":
                self.done_keys.add(t["trial_key"])
                self.progress.count(count_as(t["trial_key"], t["status"]))
            self.recorder.adopt(t["trial_key"], t["id"])
            self.configs[t["trial_key"]] = t.get("config") or {}
            self._note_point(t["trial_key"], t)

    def _note_point(self, key: str, t: Mapping[str, Any]) -> None:
        if t.get("status") != "COMPLETED" or not t.get("full_budget"):
            return
        if t.get("top1") is None or t.get("latency_ms") is None:
            return
        cfg = t.get("config") or {}
        if cfg.get("kind") == "baseline":
            self.baseline_points[cfg.get("name", key)] = (t["top1"], t["latency_ms"])
        elif cfg.get("kind") == "candidate":
            arch = ArchSpec.from_json(cfg["spec"]).arch_hash if cfg.get("spec") else key
            # one point per architecture (a reused duplicate is not a second front member)
            self.front_points = {k: p for k, p in self.front_points.items() if p[0] != arch}
            self.front_points[key] = (arch, t["top1"], t["latency_ms"])

    def latency(self, spec: ArchSpec) -> tuple[float, float | None]:
        """Predicted (ms, std) on the study's device, stored once per architecture."""
        h = spec.arch_hash
        if h not in self._lat_cache:
            ms, std = self.predictor.predict(spec)
            ms, std = float(ms), (None if std is None else float(std))
            self._lat_cache[h] = (ms, std)
            self.store.upsert_architecture(spec)
            self.store.add_latency_prediction(h, self.device, str(self.predictor.version), ms, std)
        return self._lat_cache[h]

    def start(self, key: str, spec: ArchSpec, config: Mapping[str, Any], seed: int) -> int:
        self.configs.setdefault(key, dict(config))
        return self.recorder.start(key, spec, config=config, seed=seed)

    def finish(self, key: str, status: str, metrics: Mapping[str, Any], *,
               epochs_done: float | None = None, reached: Mapping[str, Any] | None = None,
               error: str | None = None, count_as: str | None = None) -> None:
        """Final row of ``key`` (once: a key already final is left as it is)."""
        if key in self.done_keys:
            return
        if reached is None:
            reached = fidelity_reached(self.fid, epochs_done)
        self.recorder.finish(key, status, metrics, reached=reached, error=error)
        self.done_keys.add(key)
        self.in_training = {h: k for h, k in self.in_training.items() if k != key}
        self.progress.count(count_as or status)
        self._note_point(key, {**metrics, "status": status, "config": self.configs.get(key, {}),
                               "full_budget": status == "COMPLETED"
                               and reached_full_budget(self.fid, reached)})

    def stored(self, key: str) -> dict | None:
        """The store's row of ``key`` when it is final, else None."""
        if key not in self.done_keys:
            return None
        return next(t for t in self.store.trials(self.study_id, rung=STANDALONE)
                    if t["trial_key"] == key)

    def seed_for(self, index: int) -> int:
        return (self.cfg.seed * 100_003 + index * 7_919 + 1) % (2 ** 31 - 1)

    def reusable(self, spec: ArchSpec) -> dict | None:
        return self.store.find_proxy_result(spec.arch_hash, self.dataset_id, self.fidelity_key)

    def record_reuse(self, key: str, spec: ArchSpec, config: dict, prev: dict,
                     count_as: str | None = None) -> None:
        metrics = {k: prev.get(k) for k in ("top1", "top5", "val_loss", "synflow", "naswot",
                                            "grad_norm", "train_seconds")}
        metrics.update({k: v for k, v in (prev.get("metrics") or {}).items() if k not in metrics})
        lat, std = self.latency(spec)
        metrics.update(latency_ms=lat, latency_std_ms=std, reused_from_trial=prev["id"],
                       reused_from_study=prev.get("study"))
        config = {**config, "reused_from_trial": prev["id"]}
        self.configs[key] = config
        self.start(key, spec, config, int(prev.get("seed") or 0))
        self.finish(key, "COMPLETED", metrics,
                    reached=prev.get("fidelity_reached") or fidelity_reached(self.fid, None),
                    count_as=count_as)

    def candidates_final(self) -> int:
        """Candidate indices with a final row (the searcher's budget, as the store sees it)."""
        idx = {(t.get("config") or {}).get("index")
               for t in self.store.trials(self.study_id, rung=STANDALONE)
               if t["status"] != "RUNNING" and (t.get("config") or {}).get("kind") == "candidate"}
        idx.discard(None)
        return len(idx)

    def running(self) -> int:
        """Trials of this study started and not final (what an interrupted run leaves for
        ``--resume``)."""
        return len(self.store.trials(self.study_id, status="RUNNING", rung=STANDALONE))

    def close_orphans(self) -> None:
        """Rows still RUNNING after a finished search were started by a driver that was killed
        and were not resumed: record them as interrupted."""
        for t in self.store.trials(self.study_id, status="RUNNING", rung=STANDALONE):
            self.recorder.adopt(t["trial_key"], t["id"])
            self.finish(t["trial_key"], "FAILED", {}, epochs_done=t.get("epochs_reached") or 0,
                        error="interrupted: the driver stopped while this trial ran and the "
                              "resumed search did not run it again")

    # -- searcher hooks -------------------------------------------------------------------------
    def _config(self, key: str, spec: ArchSpec, params: Mapping | None, lat: float,
                std: float | None, **extra: Any) -> dict:
        config = {"trial_key": key, "kind": "candidate", "name": "", "index": None,
                  "spec": spec.canonical_json(), "params": None if params is None else
                  dict(params), "latency_ms": lat, "latency_std_ms": std, "seed": None, **extra}
        self.configs[key] = config
        return config

    def baseline_config(self, name: str, spec_json: str) -> dict | None:
        """The trial config of a baseline, or None when it is final or reused from the store."""
        spec = ArchSpec.from_json(spec_json)
        key = f"{BASELINE_TRIAL_PREFIX}{name}-{spec.arch_hash}"
        lat, std = self.latency(spec)
        if key in self.done_keys:
            return None
        config = self._config(key, spec, None, lat, std, kind="baseline", name=name, index=-1,
                              seed=self.seed_for(BASELINE_SEED_INDEX), zero_cost=None)
        prev = self.reusable(spec)
        if prev is not None:
            self.record_reuse(key, spec, config, prev)
            self.progress.line(f"baseline {name}: reused proxy result of trial {prev['id']} "
                               f"(study {prev.get('study')}): top1 {prev['top1']:.2f}%")
            return None
        return config

    def screen_candidate(self, params: Mapping, index: int, inner_id: str) -> dict:
        """What to do with one Optuna suggestion: action 'train', 'rejected' (over the budget),
        'reused' (this index is already final) or 'duplicate' (trained before at this dataset +
        fidelity); ``tell`` is what Optuna learns when it is not trained."""
        spec = self.space.from_params(params)
        lat, std = self.latency(spec)
        budget = self.cfg.latency_budget_ms
        if budget is not None and lat > budget:
            key = f"rej-{inner_id}-{spec.arch_hash}"
            self.start(key, spec, self._config(key, spec, params, lat, std), 0)
            self.finish(key, "REJECTED", {"latency_ms": lat, "latency_std_ms": std},
                        epochs_done=0,
                        error=f"predicted {lat:.3f} ms > budget {budget:g} ms on {self.device}")
            return {"action": "rejected", "tell": {"top1": 0.0, "latency_ms": lat}}
        key = f"cand-{index:04d}-{spec.arch_hash}"
        t = self.stored(key)
        if t is not None:  # trained before a crash, lost from the searcher's last checkpoint
            return {"action": "reused", "tell": self.told(t)}
        prev = self.reusable(spec)
        if prev is None and spec.arch_hash in self.in_training:
            # Being trained right now under another index (a resumed search's sampler replays
            # the killed run's suggestions; any sampler may repeat itself): never train one
            # architecture twice at once. Optuna learns nothing from this ask (None = pruned).
            self.progress.line(f"suggestion {inner_id} {lat:.2f} ms: architecture in training "
                               f"as {self.in_training[spec.arch_hash]}; not trained twice")
            return {"action": "duplicate", "tell": None}
        if prev is None:
            return {"action": "train", "spec": spec, "latency_ms": lat, "latency_std_ms": std}
        # Already trained at this dataset + fidelity (here or in another study): record the
        # known result for this study and tell Optuna, but spend no training budget on it.
        dkey = f"dup-{inner_id}-{spec.arch_hash}"
        if dkey not in self.done_keys:
            self.record_reuse(dkey, spec, self._config(dkey, spec, params, lat, std), prev,
                              count_as="DUPLICATE")
            self.progress.line(f"suggestion {inner_id} {lat:.2f} ms: architecture already trained "
                               f"at this fidelity (trial {prev['id']}, study {prev.get('study')}"
                               f"): reused top1 {prev['top1']:.2f}%, not retrained")
        return {"action": "duplicate", "tell": {"top1": prev["top1"], "latency_ms": lat}}

    @staticmethod
    def told(t: Mapping[str, Any]) -> dict | None:
        """What Optuna learns from a final row: its objectives when it completed, else None
        (pruned)."""
        if t["status"] == "COMPLETED" and t.get("top1") is not None:
            return {"top1": float(t["top1"]), "latency_ms": float(t["latency_ms"])}
        return None

    def prerank(self, batch: list) -> list:
        """Order by mean rank of synflow and naswot (higher is better); record the losers."""
        scored = []
        for inner_id, params, verdict in batch:
            zc = zero_cost_scores(verdict["spec"], self.data, seed=self.cfg.seed)
            verdict["zero_cost"] = {k: float(v) for k, v in zc.items()}
            scored.append((inner_id, params, verdict))
        n = len(scored)
        score = [0.0] * n
        for metric in ("synflow", "naswot"):
            vals = [s[2]["zero_cost"].get(metric, float("nan")) for s in scored]
            order = sorted(range(n), key=lambda i: -vals[i] if math.isfinite(vals[i]) else math.inf)
            for rank, i in enumerate(order):
                score[i] += rank
        ranked = [scored[i] for i in sorted(range(n), key=lambda i: score[i])]
        for inner_id, params, v in ranked[1:]:
            spec = v["spec"]
            key = f"pre-{inner_id}-{spec.arch_hash}"
            config = self._config(key, spec, params, v["latency_ms"], v["latency_std_ms"],
                                  zero_cost=v["zero_cost"])
            self.start(key, spec, config, 0)
            self.finish(key, "PRUNED", {"latency_ms": v["latency_ms"],
                                        "latency_std_ms": v["latency_std_ms"], **v["zero_cost"]},
                        epochs_done=0, error=f"pre-ranked out by zero-cost scores (kept 1 of {n})",
                        count_as="PRERANKED_OUT")
        return ranked

    def training(self, key: str, arch_hash: str) -> None:
        """``key`` is emitted to Tune to train ``arch_hash`` (until its final row)."""
        if key not in self.done_keys:
            self.in_training[arch_hash] = key

    def candidate_config(self, params: Mapping, index: int, verdict: dict) -> dict:
        spec = verdict["spec"]
        key = f"cand-{index:04d}-{spec.arch_hash}"
        self.training(key, spec.arch_hash)
        return self._config(key, spec, params, verdict["latency_ms"], verdict["latency_std_ms"],
                            index=index, seed=self.seed_for(index),
                            zero_cost=verdict.get("zero_cost"))

    # -- progress -------------------------------------------------------------------------------
    def front_summary(self) -> str:
        return front_summary([(t, l) for _, t, l in self.front_points.values()],
                             self.baseline_points)
