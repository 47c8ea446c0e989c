"""The search driver: Ray Tune + Optuna multi-objective search over the SwiftFormer space.

``run_search(cfg)`` validates everything that can be validated cheaply (data layout, device,
budget vs the smallest member of the space, specs) *before* Ray starts, then runs a Tune
``Tuner`` whose searcher is :class:`search.tune_searcher.ArchSearcher` (Optuna NSGA-II / TPE /
GP / random inside Tune) and whose only results-store writer is :class:`StoreCallback` in this
process. ``--resume`` restores the Tune experiment with ``Tuner.restore``; trials that already
completed in the store are replayed from it instead of being trained again.

Layout: ``runs/<study>/`` holds the Tune experiment (``tune/``), ``search_config.json``,
``pareto.txt``, ``pareto.json`` and ``pareto.png``; the results database (default
``runs/results.db``) is shared by studies so proxy results can be reused across them.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from search_space.spec import PRESETS, ArchSpec, SpecError, load_spec

ROOT = Path(__file__).resolve().parent.parent
FAILURE_ENV = "SWIFTFORMER_NAS_INJECT_FAILURE"  # test hook, see inject_spec()
DEFAULT_BASELINES = ("XS", "S", "L1", "L3")
STRATEGIES = ("nsga2", "tpe", "gp", "random")
CONFIG_FILE = "search_config.json"

_CONTEXTS: dict[str, "SearchContext"] = {}


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------
@dataclass
class SearchConfig:
    """Everything that defines a study (saved to runs/<study>/search_config.json)."""

    study: str
    data: str | None = None               # ImageFolder root with train/ and val/; None = embedded
    device: str | None = None             # latency device; None = latency_models.DEFAULT_DEVICE
    strategy: str = "nsga2"
    n_trials: int = 12                    # candidates evaluated (trained or reused), baselines extra
    latency_budget_ms: float | None = None
    seed: int = 0
    fidelity: dict | None = None          # Fidelity fields overriding DEFAULT_FIDELITY
    baselines: list[str] = field(default_factory=lambda: list(DEFAULT_BASELINES))
    space: dict | None = None             # SearchSpace field overrides (lists)
    prerank: int = 0                      # >1: ask this many, train the best by zero-cost rank
    asha: bool = False
    db: str = "runs/results.db"
    out_root: str = "runs"
    # Execution settings: may change on --resume, not part of the study identity.
    address: str | None = None
    cpus_per_trial: float | None = None   # None = auto
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    train_device: str = "auto"

    IDENTITY_EXCLUDE = ("address", "cpus_per_trial", "gpus_per_trial", "max_concurrent",
                        "train_device", "db", "out_root")

    def identity(self) -> dict:
        d = asdict(self)
        for k in self.IDENTITY_EXCLUDE:
            d.pop(k, None)
        return d

    @property
    def out_dir(self) -> Path:
        return Path(self.out_root) / self.study


def build_space(overrides: dict | None):
    """DEFAULT_SPACE with field overrides (lists become tuples); SpecError on bad input."""
    from search_space.space import DEFAULT_SPACE, SearchSpace
    import dataclasses

    if not overrides:
        return DEFAULT_SPACE
    allowed = {f.name for f in dataclasses.fields(SearchSpace)}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise SpecError(f"--space: unknown field(s) {unknown}; allowed {sorted(allowed)}")

    def tup(v):
        return tuple(tup(x) for x in v) if isinstance(v, (list, tuple)) else v

    kw = {k: tup(v) if k != "fixed" else dict(v) for k, v in overrides.items()}
    try:
        return dataclasses.replace(DEFAULT_SPACE, **kw)
    except (TypeError, ValueError) as e:
        raise SpecError(f"--space: {e}") from None


def build_fidelity(overrides: dict | None):
    """DEFAULT_FIDELITY with field overrides (validated by Fidelity itself)."""
    from search.proxy.fidelity import DEFAULT_FIDELITY, Fidelity

    if not overrides:
        return DEFAULT_FIDELITY
    return Fidelity.from_dict({**DEFAULT_FIDELITY.to_dict(), **overrides})


def resolve_baselines(refs: list[str]) -> list[tuple[str, ArchSpec]]:
    out = []
    for ref in refs:
        spec = load_spec(ref)  # SpecError names the bad reference
        name = ref.upper() if ref.upper() in PRESETS else f"user-{spec.arch_hash[:8]}"
        out.append((name, spec))
    return out


def inject_spec() -> dict[int, str]:
    """Test-only failure injection: ``SWIFTFORMER_NAS_INJECT_FAILURE="1:raise,2:nan"`` makes
    candidate #1 raise RuntimeError and candidate #2 raise NonFiniteLoss after its first epoch
    (candidate indices start at 0); ``"3:weak"`` makes candidate #3 report top-1 0 after every
    epoch (so a scheduler such as ASHA stops it deterministically). Read in the driver and
    passed to trials in their config."""
    text = os.environ.get(FAILURE_ENV, "").strip()
    out: dict[int, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        idx, _, kind = part.partition(":")
        if not idx.isdigit() or kind not in ("raise", "nan", "weak"):
            raise ValueError(f"{FAILURE_ENV}={text!r}: expected e.g. '1:raise,2:nan,3:weak'")
        out[int(idx)] = kind
    return out


def smallest_members(space) -> list[ArchSpec]:
    """Candidates for the space's fastest member: minimum depth/width/ratio/resolution with each
    uniform attention placement (which placement is fastest depends on the device)."""
    p = {k: v for k, v in space.param_choices().items()}
    out = []
    for mode in space.attn_modes:
        params = {}
        for i in range(4):
            params[f"d{i}"] = min(p[f"d{i}"])
            params[f"w{i}"] = min(p[f"w{i}"])
            params[f"m{i}"] = min(p[f"m{i}"])
            params[f"a{i}"] = mode
        params["res"] = min(p["res"])
        out.append(space.from_params(params))
    return out


def validate(cfg: SearchConfig) -> dict:
    """Fail fast, before Ray: returns the resolved pieces (space, fidelity, predictor, ...)."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", cfg.study):
        raise ValueError(f"--study {cfg.study!r}: use letters, digits, '_', '-', '.' (<= 64)")
    if cfg.strategy not in STRATEGIES:
        raise ValueError(f"--strategy {cfg.strategy!r}: allowed {', '.join(STRATEGIES)}")
    if cfg.n_trials < 1:
        raise ValueError(f"--trials {cfg.n_trials}: need at least 1")
    if cfg.data is not None:
        root = Path(cfg.data)
        if not root.is_dir():
            raise FileNotFoundError(f"--data {cfg.data}: not a directory")
        missing = [d for d in ("train", "val") if not (root / d).is_dir()]
        if missing:
            raise FileNotFoundError(f"--data {cfg.data}: no {' or '.join(missing)}/ directory "
                                    "(expected an ImageFolder root with train/ and val/)")
    space = build_space(cfg.space)
    fidelity = build_fidelity(cfg.fidelity)
    baselines = resolve_baselines(cfg.baselines)

    from latency_models import DEFAULT_DEVICE, list_devices, load_predictor
    device = cfg.device or DEFAULT_DEVICE
    devices = list(list_devices())
    if device not in devices and not device.endswith(".json"):
        raise ValueError(f"--device {device!r}: allowed {', '.join(devices)} or a path to a "
                         "calibration .json")
    predictor = load_predictor(device)
    if cfg.latency_budget_ms is not None:
        if not (cfg.latency_budget_ms > 0 and math.isfinite(cfg.latency_budget_ms)):
            raise ValueError(f"--latency-budget-ms {cfg.latency_budget_ms}: need a positive number")
        fastest = min(float(predictor.predict(s)[0]) for s in smallest_members(space))
        if fastest > cfg.latency_budget_ms:
            raise ValueError(
                f"--latency-budget-ms {cfg.latency_budget_ms:g}: no architecture of the space "
                f"meets it on {device} (the smallest member is predicted at {fastest:.3f} ms)")
    inject = inject_spec()
    return {"space": space, "fidelity": fidelity, "baselines": baselines, "device": device,
            "predictor": predictor, "inject": inject}


# ---------------------------------------------------------------------------------------------
# driver-side context (store, predictor, data) used by the searcher and the callback
# ---------------------------------------------------------------------------------------------
def get_context(study: str) -> "SearchContext":
    try:
        return _CONTEXTS[study]
    except KeyError:
        raise RuntimeError(f"no search context for study {study!r} in this process") from None


def _fidelity_dict(fidelity) -> dict:
    return dict(fidelity.to_dict())


def _epochs_field(fid: dict) -> str:
    for k in ("epochs", "max_epochs", "num_epochs"):
        if k in fid:
            return k
    return "epochs"


def _pareto(points: list[tuple]) -> list[tuple]:
    """Non-dominated (key, top1 max, latency min, ...) points, sorted by latency."""
    front = []
    for p in points:
        dominated = any((q[1] >= p[1] and q[2] <= p[2]) and (q[1] > p[1] or q[2] < p[2])
                        for q in points)
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: p[2])


class Progress:
    """Concise progress lines on stdout (Ray's own tables are off)."""

    def __init__(self, total: int, stream=None) -> None:
        self.total = total
        self.stream = stream or sys.stdout
        self.t0 = time.monotonic()
        self.counts: dict[str, int] = {}

    def line(self, text: str) -> None:
        el = time.monotonic() - self.t0
        print(f"[{int(el // 60):02d}:{int(el % 60):02d}] {text}", file=self.stream, flush=True)

    def warn(self, text: str) -> None:
        self.line(f"warning: {text}")

    def count(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1


class SearchContext:
    """Driver-process state shared by ArchSearcher and StoreCallback (never pickled)."""

    def __init__(self, cfg: SearchConfig, resolved: dict, store, study_id: int, data,
                 progress: Progress) -> None:
        self.cfg = cfg
        self.space = resolved["space"]
        self.fidelity = resolved["fidelity"]
        self.fid = _fidelity_dict(self.fidelity)
        self.epochs_key = _epochs_field(self.fid)
        self.device = resolved["device"]
        self.predictor = resolved["predictor"]
        self.inject = resolved["inject"]
        self.store = store
        self.study_id = study_id
        self.data = data
        self.dataset_id = data.dataset_id
        from results.store import fidelity_key
        self.fidelity_key = fidelity_key(self.fid)
        self.progress = progress
        self.trial_ids: dict[str, int] = {}    # trial_key -> store trial id
        self.done_keys: set[str] = set()       # trial keys finished in the store
        self.front_points: list[tuple[str, float, float]] = []
        self.baseline_points: dict[str, tuple[float, float]] = {}
        self._lat_cache: dict[str, tuple[float, float]] = {}
        self._configs: dict[str, dict] = {}     # trial_key -> trial config (for kind/name)
        self.search_finished = False            # set by ArchSearcher when its budget is spent
        self.load_existing()

    # -- store helpers ----------------------------------------------------------------------
    def load_existing(self) -> None:
        for t in self.store.trials(self.study_id):
            if t["status"] != "RUNNING":
                self.done_keys.add(t["trial_key"])
            self.trial_ids[t["trial_key"]] = t["id"]
            self._configs[t["trial_key"]] = t.get("config") or {}
            self._note_point(t["trial_key"], t)

    def _note_point(self, key: str, t: dict) -> None:
        if t.get("status") != "COMPLETED" or not t.get("full_budget"):
            return
        if t.get("top1") is None or t.get("latency_ms") is None:
            return
        cfg = t.get("config") or {}
        if cfg.get("kind") == "baseline":
            self.baseline_points[cfg.get("name", key)] = (t["top1"], t["latency_ms"])
        elif cfg.get("kind") == "candidate":
            arch = cfg.get("spec") and ArchSpec.from_json(cfg["spec"]).arch_hash
            # one point per architecture (a reused duplicate is not a second front member)
            self.front_points = [p for p in self.front_points if p[0] != key and p[3] != arch]
            self.front_points.append((key, t["top1"], t["latency_ms"], arch))

    def latency(self, spec: ArchSpec) -> tuple[float, float]:
        h = spec.arch_hash
        if h not in self._lat_cache:
            ms, std = self.predictor.predict(spec)
            ms, std = float(ms), (None if std is None else float(std))
            self._lat_cache[h] = (ms, std)
            self.store.upsert_architecture(spec)
            self.store.add_latency_prediction(h, self.device, str(self.predictor.version), ms, std)
        return self._lat_cache[h]

    def start(self, key: str, spec: ArchSpec, config: dict, seed: int) -> int:
        if key not in self.trial_ids:
            self.store.upsert_architecture(spec)
            self.trial_ids[key] = self.store.start_trial(self.study_id, key, spec.arch_hash,
                                                         config=config, seed=seed)
        return self.trial_ids[key]

    def finish(self, key: str, status: str, metrics: dict, reached: dict | None,
               error: str | None = None, timings: dict | None = None,
               count_as: str | None = None) -> None:
        if key in self.done_keys:
            return  # already final (replayed after --resume): never written twice
        tid = self.trial_ids[key]
        self.store.finish_trial(tid, status, metrics=_clean(metrics),
                                fidelity_reached=reached or {}, error=error, timings=timings)
        self.done_keys.add(key)
        self.progress.count(count_as or status)
        self._note_point(key, {**metrics, "status": status, "config": self._configs.get(key, {}),
                               "full_budget": status == "COMPLETED" and self.full(reached)})

    def full(self, reached: dict | None) -> bool:
        from results.store import reached_full_budget
        return reached_full_budget(self.fid, reached)

    def reached(self, epochs_done: int | float | None) -> dict:
        r = dict(self.fid)
        r[self.epochs_key] = epochs_done if epochs_done is not None else 0
        return r

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
        self._configs[key] = config
        self.start(key, spec, config, int(prev.get("seed") or 0))
        self.finish(key, "COMPLETED", metrics, prev.get("fidelity_reached") or self.reached(None),
                    count_as=count_as)

    def candidates_final(self) -> int:
        """Candidate indices with a final row (the searcher's budget, as the store sees it)."""
        idx = {(t.get("config") or {}).get("index") for t in self.store.trials(self.study_id)
               if t["status"] != "RUNNING" and (t.get("config") or {}).get("kind") == "candidate"}
        idx.discard(None)
        return len(idx)

    # -- searcher hooks ---------------------------------------------------------------------
    def baseline_config(self, name: str, spec_json: str) -> dict | None:
        spec = ArchSpec.from_json(spec_json)
        key = f"base-{name}-{spec.arch_hash}"
        lat, std = self.latency(spec)
        config = {"trial_key": key, "kind": "baseline", "name": name, "index": -1,
                  "spec": spec_json, "params": None, "latency_ms": lat, "latency_std_ms": std,
                  "seed": self.seed_for(10_000), "zero_cost": None, "inject": None}
        if key in self.done_keys:
            return None
        prev = self.reusable(spec)
        if prev is not None:
            self.record_reuse(key, spec, config, prev)
            self.progress.line(f"baseline {name}: reused proxy result of trial {prev['id']} "
                               f"(study {prev.get('study')}): top1 {prev['top1']:.2f}%")
            return None
        self._configs[key] = config
        return config

    def screen_candidate(self, params: dict, index: int, inner_id: str) -> dict:
        """'train', 'rejected' (over the latency budget) or 'reused' for one Optuna suggestion."""
        spec = self.space.from_params(params)
        lat, std = self.latency(spec)
        budget = self.cfg.latency_budget_ms
        if budget is not None and lat > budget:
            key = f"rej-{inner_id}-{spec.arch_hash}"
            config = {"trial_key": key, "kind": "candidate", "name": "", "index": None,
                      "spec": spec.canonical_json(), "params": dict(params), "latency_ms": lat,
                      "latency_std_ms": std, "seed": None}
            self._configs[key] = config
            self.start(key, spec, config, 0)
            self.finish(key, "REJECTED", {"latency_ms": lat, "latency_std_ms": std},
                        self.reached(0),
                        error=f"predicted {lat:.3f} ms > budget {budget:g} ms on {self.device}")
            return {"action": "rejected", "tell": {"top1": 0.0, "latency_ms": lat}}
        key = f"cand-{index:04d}-{spec.arch_hash}"
        if key in self.done_keys:
            # Trained before a crash, lost from Tune's last checkpoint: replay, do not re-run.
            t = next(t for t in self.store.trials(self.study_id) if t["trial_key"] == key)
            if t["status"] == "COMPLETED" and t["top1"] is not None:
                return {"action": "reused", "tell": {"top1": t["top1"], "latency_ms": lat}}
            return {"action": "reused", "tell": None}
        prev = self.reusable(spec)
        if prev is not None:
            # Already trained at this dataset + fidelity (here or in another study): record the
            # known result for this study and tell Optuna, but spend no training budget on it.
            dkey = f"dup-{inner_id}-{spec.arch_hash}"
            config = {"trial_key": dkey, "kind": "candidate", "name": "", "index": None,
                      "spec": spec.canonical_json(), "params": dict(params), "latency_ms": lat,
                      "latency_std_ms": std, "seed": None}
            if dkey not in self.done_keys:
                self.record_reuse(dkey, spec, config, prev, count_as="DUPLICATE")
                self.progress.line(f"suggestion {inner_id} {lat:.2f} ms: architecture already "
                                   f"trained at this fidelity (trial {prev['id']}, study "
                                   f"{prev.get('study')}): reused top1 {prev['top1']:.2f}%, "
                                   "not retrained")
            return {"action": "duplicate", "tell": {"top1": prev["top1"], "latency_ms": lat}}
        return {"action": "train", "spec": spec, "latency_ms": lat, "latency_std_ms": std}

    def prerank(self, batch: list) -> list:
        """Order by mean rank of synflow and naswot (higher is better); record the losers."""
        from search.proxy.zero_cost import zero_cost_scores
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
        for inner_id, params, verdict in ranked[1:]:
            spec = verdict["spec"]
            key = f"pre-{inner_id}-{spec.arch_hash}"
            config = {"trial_key": key, "kind": "candidate", "name": "", "index": None,
                      "spec": spec.canonical_json(), "params": dict(params),
                      "latency_ms": verdict["latency_ms"],
                      "latency_std_ms": verdict["latency_std_ms"], "seed": None,
                      "zero_cost": verdict["zero_cost"]}
            self._configs[key] = config
            self.start(key, spec, config, 0)
            self.finish(key, "PRUNED", {"latency_ms": verdict["latency_ms"],
                                        "latency_std_ms": verdict["latency_std_ms"],
                                        **verdict["zero_cost"]}, self.reached(0),
                        error=f"pre-ranked out by zero-cost scores (kept 1 of {n})",
                        count_as="PRERANKED_OUT")
        return ranked

    def candidate_config(self, params: dict, index: int, verdict: dict) -> dict:
        spec = verdict["spec"]
        key = f"cand-{index:04d}-{spec.arch_hash}"
        config = {"trial_key": key, "kind": "candidate", "name": "", "index": index,
                  "spec": spec.canonical_json(), "params": dict(params),
                  "latency_ms": verdict["latency_ms"],
                  "latency_std_ms": verdict["latency_std_ms"], "seed": self.seed_for(index),
                  "zero_cost": verdict.get("zero_cost"), "inject": self.inject.get(index)}
        self._configs[key] = config
        return config

    # -- progress ---------------------------------------------------------------------------
    def front_summary(self) -> str:
        front = _pareto(self.front_points)
        if not front:
            return "front: (none yet)"
        pts = ", ".join(f"{lat:.2f}ms/{top1:.1f}%" for _, top1, lat, _ in front[:6])
        more = f" +{len(front) - 6}" if len(front) > 6 else ""
        dom = []
        for name, (bt, bl) in self.baseline_points.items():
            if any(t >= bt and l <= bl and (t > bt or l < bl) for _, t, l, _ in front):
                dom.append(name)
        tail = f" | dominated baselines: {','.join(dom)}" if dom else ""
        return f"front({len(front)}): {pts}{more}{tail}"


def _clean(metrics: dict) -> dict:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = None
        elif isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple, dict)):
            out[k] = json.loads(json.dumps(v, default=str))
        else:
            try:
                out[k] = float(v)
            except (TypeError, ValueError):
                out[k] = str(v)
    return out


# ---------------------------------------------------------------------------------------------
# the trainable (runs in Ray workers) and the store-writing callback (runs in the driver)
# ---------------------------------------------------------------------------------------------
def proxy_trial(config: dict, data=None, fidelity=None, replay=None, threads: int = 1,
                device: str = "auto") -> None:
    """One Tune trial: zero-cost scores, then proxy training with a report per epoch.

    A trial whose key is in ``replay`` (completed in the store before a crash) reports its
    stored result instead of training again.
    """
    from ray import tune

    key = config["trial_key"]
    base = {"trial_key": key, "latency_ms": config["latency_ms"],
            "latency_std_ms": config.get("latency_std_ms")}
    if replay and key in replay:
        tune.report({**replay[key], **base, "final": True, "replayed": True})
        return
    import torch
    from search.proxy.train import NonFiniteLoss, train_proxy
    from search.proxy.zero_cost import zero_cost_scores

    torch.set_num_threads(max(1, int(threads)))
    spec = ArchSpec.from_json(config["spec"])
    seed = int(config["seed"])
    inject = config.get("inject")
    if inject == "raise":
        raise RuntimeError(f"injected failure ({FAILURE_ENV}) for candidate {config['index']}")
    t0 = time.perf_counter()
    zc = config.get("zero_cost")
    if not zc:
        zc = {k: float(v) for k, v in zero_cost_scores(spec, data, seed=seed).items()}
    base.update(zc)
    base["zero_cost_seconds"] = time.perf_counter() - t0

    def report(m: dict) -> None:
        if inject == "weak":
            m = {**m, "top1": 0.0}
        tune.report({**base, **_clean(dict(m)), "final": False})
        if inject == "nan":
            raise NonFiniteLoss(f"injected non-finite loss ({FAILURE_ENV}) after epoch "
                                f"{m.get('epoch', 1)}")

    final = train_proxy(spec, fidelity, data, seed=seed, device=device, report=report,
                        threads=max(1, int(threads)))
    final = {k: v for k, v in final.items() if k not in ("history", "params")}
    tune.report({**base, **_clean(dict(final)), "final": True,
                 "wall_seconds": time.perf_counter() - t0})


def _error_cause(trial) -> str:
    """One line naming the exception a failed trial raised (or why its worker died)."""
    err = None
    try:
        err = trial.get_pickled_error()
    except Exception:  # pragma: no cover - unreadable error file
        err = None
    if err is not None:
        cause = getattr(err, "cause", None) or err
        text = str(cause).strip().splitlines()
        name = type(cause).__name__
        if name in ("RayTaskError", "RayActorError", "ActorDiedError") and text:
            # Ray's wrapper: the last "Xxx: message" line of its traceback is the cause.
            lines = [l for l in text if l and not l.startswith(" ")]
            return lines[-1][:500] if lines else text[0][:500]
        return f"{name}: {text[-1] if text else ''}"[:500]
    try:
        with open(trial.error_file, encoding="utf-8") as f:
            lines = [l.strip() for l in f if l.strip() and not l.startswith(" ")]
        return lines[-1][:500] if lines else "unknown error"
    except Exception:
        return "unknown error (no error file)"


_FINAL_KEYS = ("top1", "top5", "val_loss", "train_loss", "epochs_done", "train_seconds",
               "synflow", "naswot", "grad_norm", "zero_cost_seconds", "wall_seconds", "epoch",
               "replayed", "img_per_s", "threads", "device")


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------
def code_version() -> str:
    import subprocess
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, path)


def plan_resources(cfg: SearchConfig, total_cpus: float) -> tuple[float, int, int]:
    """(cpus per trial, torch threads per trial, max concurrent trials).

    Default on a local machine: one single-threaded trial per core. Proxy models are small
    (32 px): two intra-op threads scale poorly on them, and on a shared machine OpenMP threads
    spin at barriers while descheduled (measured in notes/search_driver.md). On a cluster the
    default is 2 CPUs per trial."""
    cpt = cfg.cpus_per_trial
    if cpt is None:
        cpt = 1.0 if cfg.address is None else 2.0
    if cpt <= 0:
        raise ValueError(f"--cpus-per-trial {cpt}: need a positive number")
    threads = max(1, int(cpt))
    if cfg.max_concurrent:
        conc = int(cfg.max_concurrent)
    elif cfg.address is None:
        conc = max(1, int(total_cpus // cpt))
    else:
        conc = 0  # a cluster: as many as its resources allow
    return float(cpt), threads, int(conc)


def _init_ray(cfg: SearchConfig) -> float:
    """Start (or connect to) Ray quietly; returns the cluster's CPU count."""
    import ray

    for name in ("ray", "ray.tune", "ray.train", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if ray.is_initialized():
        return float(ray.cluster_resources().get("CPU", 1))
    if cfg.address:
        ray.init(address=cfg.address, log_to_driver=False, logging_level=logging.ERROR,
                 runtime_env={"working_dir": str(ROOT),
                              "excludes": ["runs/", ".git/", "*.db", "__pycache__/"]})
    else:
        # Workers must import this project: they inherit PYTHONPATH from the local raylet.
        paths = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR, object_store_memory=256 * 2 ** 20,
                 configure_logging=True)
    return float(ray.cluster_resources().get("CPU", 1))


def load_saved_config(study: str, out_root: str = "runs") -> SearchConfig:
    path = Path(out_root) / study / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"--resume {study}: no {path} (nothing to resume)")
    d = json.loads(path.read_text(encoding="utf-8"))
    return SearchConfig(**d)


def run_search(cfg: SearchConfig, resume: bool = False, stream=None) -> dict:
    """Validate, run the Tune search, write the report; returns the report dict."""
    out_dir = cfg.out_dir
    cfg_path = out_dir / CONFIG_FILE
    if resume:
        saved = load_saved_config(cfg.study, cfg.out_root)
        for k in SearchConfig.IDENTITY_EXCLUDE:  # execution settings may change on resume
            setattr(saved, k, getattr(cfg, k))
        cfg = saved
    elif cfg_path.exists():
        raise ValueError(f"study {cfg.study!r} already exists in {out_dir}; use --resume "
                         "to continue it or another --study name")
    resolved = validate(cfg)  # fail fast: everything below may be slow
    progress = Progress(cfg.n_trials + len(resolved["baselines"]), stream=stream)

    from search.proxy.data import prepare_data
    from results.store import ResultsStore

    data = prepare_data(cfg.data, resolved["fidelity"],
                        cache_dir=str(Path(cfg.out_root) / "cache"))
    Path(cfg.db).parent.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(cfg.db)
    store.ensure_baselines()
    fid = _fidelity_dict(resolved["fidelity"])
    study_id = store.get_or_create_study(
        cfg.study, config=cfg.identity(), seed=cfg.seed, dataset_id=data.dataset_id,
        fidelity=fid, device=resolved["device"], code_version=code_version())
    _write_json(cfg_path, asdict(cfg))
    ctx = SearchContext(cfg, resolved, store, study_id, data, progress)
    _CONTEXTS[cfg.study] = ctx
    progress.line(f"study {cfg.study} (id {study_id}): {cfg.strategy}, {cfg.n_trials} candidates "
                  f"+ {len(resolved['baselines'])} baselines, latency on {resolved['device']}"
                  + (f", budget {cfg.latency_budget_ms:g} ms" if cfg.latency_budget_ms else "")
                  + f"; data {data.source} ({data.num_classes} classes); db {cfg.db}")

    t0 = time.monotonic()
    import ray
    started_ray = not ray.is_initialized()
    total_cpus = _init_ray(cfg)
    cpt, threads, conc = plan_resources(cfg, total_cpus)
    progress.line(f"ray up in {time.monotonic() - t0:.1f}s: {total_cpus:g} CPUs, {cpt:g} CPU(s) "
                  f"x {threads} thread(s) per trial, up to {conc or 'unlimited'} at once")
    try:
        unfinished = _fit(cfg, ctx, resolved, data, cpt, threads, conc, resume)
        interrupted = not ((ctx.search_finished or ctx.candidates_final() >= cfg.n_trials)
                           and not unfinished)
        if not interrupted:
            _close_orphans(ctx)
        else:  # e.g. ^C: Tune saved its state; leave RUNNING rows for --resume
            progress.line(f"search interrupted ({unfinished} trial(s) unfinished); continue "
                          f"with: run_search.py search --study {cfg.study} --resume")
    finally:
        _CONTEXTS.pop(cfg.study, None)
        if started_ray:
            ray.shutdown()
    from search.report import write_report
    rep = write_report(store, study_id, out_dir, device=resolved["device"], db=cfg.db,
                       stream=stream)
    store.close()
    rep["interrupted"] = interrupted
    return rep


def _close_orphans(ctx: SearchContext) -> None:
    """Rows still RUNNING after a finished search were started by a driver that was killed and
    were not part of the experiment state Tune restored: record them as interrupted."""
    for t in ctx.store.trials(ctx.study_id, status="RUNNING"):
        ctx.trial_ids[t["trial_key"]] = t["id"]
        ctx.finish(t["trial_key"], "FAILED", {}, ctx.reached(t.get("epochs_reached") or 0),
                   error="interrupted: the driver stopped while this trial ran and the "
                         "restored experiment did not include it")


def _fit(cfg, ctx, resolved, data, cpt, threads, conc, resume) -> None:
    # Tune reads these when its controller is created: save the experiment state (trials +
    # searcher) every 2 s so a killed driver loses little; no per-trial CSV/JSON/TBX loggers
    # (the results store is the record); no Ray progress tables.
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = "2"
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # legacy reporter: silent at verbose=0
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(max(1, conc or 1))
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from search.tune_callback import StoreCallback
    from search.tune_searcher import ArchSearcher

    replay = {}
    for t in ctx.store.trials(ctx.study_id, status="COMPLETED"):
        if t["full_budget"] and t["top1"] is not None:
            replay[t["trial_key"]] = {"top1": t["top1"], "val_loss": t["val_loss"],
                                      "epochs_done": t["epochs_reached"]}
    trainable = tune.with_parameters(proxy_trial, data=data, fidelity=resolved["fidelity"],
                                     replay=replay, threads=threads, device=cfg.train_device)
    resources = {"cpu": cpt, "gpu": cfg.gpus_per_trial}
    trainable = tune.with_resources(trainable, resources)
    tune_dir = (cfg.out_dir / "tune").resolve()
    exp_path = tune_dir / "search"
    if resume and tune.Tuner.can_restore(str(exp_path)):
        ctx.progress.line(f"resuming: {len(ctx.done_keys)} trial(s) already final in the store")
        tuner = tune.Tuner.restore(str(exp_path), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
        searcher = ArchSearcher(
            cfg.study, ctx.space, cfg.strategy, cfg.seed, cfg.n_trials,
            [(n, s.canonical_json()) for n, s in resolved["baselines"]], prerank=cfg.prerank)
        scheduler = None
        if cfg.asha:
            scheduler = ASHAScheduler(metric="top1", mode="max", time_attr="training_iteration",
                                      max_t=int(ctx.fid["epochs"]) + 1, grace_period=1,
                                      reduction_factor=2)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                        num_samples=-1, max_concurrent_trials=conc or None,
                                        reuse_actors=True),
            run_config=tune.RunConfig(
                name="search", storage_path=str(tune_dir), callbacks=[StoreCallback(cfg.study)],
                verbose=0, log_to_file=True,
                failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    grid = tuner.fit()
    try:
        trials = grid._experiment_analysis.trials  # no public accessor for trial statuses
        return sum(1 for t in trials if t.status not in ("TERMINATED", "ERROR"))
    except AttributeError:  # pragma: no cover - Ray internals moved
        return 0
