"""The supernet proxy of the search (``search --proxy supernet``): two rungs of the fidelity ladder.

Rung 1 ("supernet", ``results.schema.SUPERNET``):

* the weight-sharing supernet (``search.proxy.supernet``) is trained as ONE Ray Tune trial
  (``supernet_trial.py``), reporting every epoch. The trial may run on any node, which need
  not see the driver's ``--out`` (docs/search.md "What each node must reach"): it trains in a
  node-local directory and sends the checkpoint after every epoch to a
  :class:`DriverCheckpoint` actor on the driver's node, which writes
  ``<out>/<study>/supernet/supernet.pt``; a killed run continues from its last epoch on
  ``--resume`` (the trial starts from the bytes that actor reads back). The supernet is a
  trial row of the study (rung "supernet", kind "supernet": its recipe, fidelity, dataset,
  CPU-seconds and, once the baselines are scored, the Kendall tau of XS/S/L1/L3 against
  ImageNet);
* the driver loads it and Optuna (the ``--strategy`` sampler, NSGA-II by default) proposes
  ``--scored`` candidates over (supernet score, predicted latency); each is scored with
  ``score_subnets`` on its ``to_proxy`` spec and recorded with rung "supernet" (score, val loss,
  top-1 on the proxy, predicted latency). Candidates over ``--latency-budget-ms`` are recorded
  REJECTED unscored. The baselines are scored on the supernet too.

Rung 2 ("standalone"): the ``--top-k`` members of the supernet front (evenly spread over its
latency range) and the baselines are trained stand-alone as Ray Tune trials by the ordinary
search path (``ArchSearcher`` with the picks queued, ``StoreCallback``, ``TrialRecorder``).

Fronts never mix rungs: ``results.study_front.study_front(..., rung=...)``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from typing import Any, Callable, Mapping

import numpy as np
from ray.tune import Callback, Stopper

from results.schema import STANDALONE, SUPERNET
from results.study_front import BASELINE_TRIAL_PREFIX, RUNG_KEY_PREFIX, study_front
from search_space.errors import UsageError
from search_space.lazy import lazy_import
from search_space.spec import ArchSpec

from ..proxy.record import TrialRecorder
from ..proxy.supernet.config import largest, to_proxy
from ..proxy.supernet.scoring import reference_tau, score_subnets
from ..proxy.supernet.training import CHECKPOINT_NAME, checkpoint_epoch, load_supernet
from ..proxy.train import resolve_device
from .callback import error_cause
from .context import SearchContext
from .progress import Progress
from .searcher import MAX_SKIPS, make_sampler
from .storage import experiment_storage
from .supernet_trial import (SUMMARY_KEYS, epoch_row, driver_checkpoint, supernet_trial,
                             work_name)

ray = lazy_import("ray")
tune = lazy_import("ray.tune")
optuna = lazy_import("optuna")
torch = lazy_import("torch")

SUPERNET_EXPERIMENT = "supernet"  # rung 1's Tune experiment, beside the search's "search"
SUPERNET_DIR = "supernet"  # <out>/<study>/supernet/supernet.pt
SN = RUNG_KEY_PREFIX[SUPERNET]  # "sn-": the supernet rung's trial keys
PROGRESS_EVERY = 0.1  # a progress line per tenth of the scored candidates


class StopFlag(Stopper):
    """Ends the supernet's Tuner when the driver sets ``event`` (a ^C while rung 1 runs in a
    driver thread, where Tune installs no signal handler). Pickled without the event."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.event = threading.Event()

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.event.is_set()


class SupernetCallback(Callback):
    """Records the supernet trial through its rung's recorder (driver process)."""

    def __init__(self, rung: "SupernetRung") -> None:
        self.rung = rung
        self.last: dict = {}

    def __getstate__(self) -> dict:
        return {"rung": None, "last": {}}  # Tune pickles callbacks into tuner.pkl

    def on_trial_start(self, iteration, trials, trial, **info):
        self.rung.started.set()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.last = dict(result)
        if not result.get("final"):
            self.rung.epoch(result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        r = self.last or dict(trial.last_result or {})
        if r.get("final"):
            self.rung.trained(r)
        else:
            self.rung.failed("stopped before its last epoch")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.rung.failed(error_cause(trial))


def spread_picks(front: list[dict], k: int) -> list[dict]:
    """``k`` members of a front evenly spread over its latency range (all when it has <= k),
    fastest first: the fastest and the most accurate are always among them."""
    front = sorted(front, key=lambda p: (p["latency_ms"], -p["top1"]))
    if len(front) <= k:
        return front
    idx = sorted({int(i) for i in np.round(np.linspace(0, len(front) - 1, k))})
    return [front[i] for i in idx]


class SupernetRung:
    """Rung 1 of one search: the supernet's trial, its row, the scoring (see module doc)."""

    def __init__(self, ctx: SearchContext) -> None:
        self.ctx, self.cfg, self.sn = ctx, ctx.cfg, ctx.cfg.supernet
        self.store = ctx.store
        self.recorder = TrialRecorder(ctx.store, ctx.study_id, ctx.fid, rung=SUPERNET)
        self.checkpoint_dir = os.path.abspath(os.path.join(self.cfg.out_dir, SUPERNET_DIR))
        self.checkpoint = os.path.join(self.checkpoint_dir, CHECKPOINT_NAME)
        self.key = f"{SN}supernet-{self.sn.key}-s{self.cfg.seed}"
        self.spec = largest(self.cfg.space)  # the architecture the supernet covers
        self.error: str | None = None
        self.started = threading.Event()  # set when the supernet trial starts (or is done)
        self.stop = threading.Event()  # set by the driver on ^C: rung 1 ends, --resume goes on
        for t in self.store.trials(ctx.study_id, rung=SUPERNET):
            self.recorder.adopt(t["trial_key"], t["id"])

    # -- the supernet's row ---------------------------------------------------------------
    def row(self) -> dict | None:
        rows = [t for t in self.store.trials(self.ctx.study_id, rung=SUPERNET)
                if t["trial_key"] == self.key]
        return rows[0] if rows else None

    def start(self) -> None:
        config = {"kind": "supernet", "supernet": self.sn.to_dict(), "fidelity": self.ctx.fid,
                  "dataset_id": self.ctx.dataset_id, "checkpoint": self.checkpoint,
                  "spec": self.spec.canonical_json()}
        self.recorder.start(self.key, self.spec, config=config, seed=self.cfg.seed)

    def epoch(self, result: Mapping[str, Any]) -> None:
        self.start()
        self.recorder.epoch(self.key, result)
        self.ctx.progress.line(
            f"supernet epoch {result.get('epoch')}/{self.sn.epochs}: loss largest "
            f"{result.get('loss_largest', math.nan):.3f}, subnets "
            f"{result.get('loss_subnets', math.nan):.3f} ({result.get('seconds', 0):.0f} s)")

    def trained(self, result: Mapping[str, Any]) -> None:
        self.start()
        # The trial's summary says how many epochs it trained; the driver scores on the
        # checkpoint its actor wrote. Should an epoch's checkpoint never have arrived (a lost
        # send), scoring would silently use an earlier epoch: refuse instead (--resume trains
        # on from the epoch the checkpoint holds).
        held, done = checkpoint_epoch(self.checkpoint), result.get("epochs_done")
        if held != done:
            self.failed(f"the supernet checkpoint {self.checkpoint} holds epoch {held} but the "
                        f"trial trained {done}: an epoch's checkpoint never reached the driver; "
                        "--resume trains on from the epoch it holds")
            return
        # every epoch from the checkpoint's history: one reported just before a kill may never
        # have reached the driver (log_epoch replaces, so the others are unchanged)
        for h in result.get("history") or []:
            self.recorder.epoch(self.key, epoch_row(h))
        metrics = {k: result[k] for k in SUMMARY_KEYS + ("supernet_params",) if k in result}
        metrics["checkpoint"] = self.checkpoint
        self.recorder.finish(self.key, "COMPLETED", metrics, reached=self.ctx.fid)
        self.ctx.progress.line(f"supernet trained: {result.get('epochs_done')} epochs, "
                               f"{result.get('cpu_seconds', 0):.0f} CPU-s")

    def failed(self, error: str) -> None:
        self.start()
        self.error = error
        self.recorder.finish(self.key, "FAILED", {}, epochs_done=0, error=error)

    def add_to_row(self, extra: Mapping[str, Any]) -> None:
        """Merge ``extra`` into the supernet row's metrics (tau, scoring cost)."""
        row = self.row()
        self.recorder.finish(self.key, "COMPLETED", {**(row["metrics"] or {}), **extra},
                             reached=self.ctx.fid)

    # -- training: one Tune trial -------------------------------------------------------------
    def train(self, cpus: float, gpus: float, wrap: Callable | None = None) -> bool:
        """Train (or resume) the supernet as one Tune trial; True when it is trained."""
        row = self.row()
        if row is not None and row["status"] == "COMPLETED" and os.path.isfile(self.checkpoint):
            self.ctx.progress.line(f"supernet already trained ({self.checkpoint})")
            self.started.set()
            return True
        cfg = self.cfg
        self.start()
        fn = wrap(supernet_trial) if wrap is not None else supernet_trial
        n = cfg.supernet_nproc   # data-parallel ranks: the trial holds n trials' resources
        checkpoint = driver_checkpoint(self.checkpoint)
        trainable = tune.with_resources(tune.with_parameters(
            fn, data=self.ctx.data, fidelity=cfg.fidelity, supernet=self.sn, space=cfg.space,
            checkpoint=checkpoint, threads=max(1, int(cpus)) * n,
            work_dir=work_name(self.checkpoint),
            device=cfg.torch_device, nproc=n), {"cpu": cpus * n, "gpu": gpus * n})
        where = experiment_storage(cfg.storage, str(cfg.out_dir), cfg.study)
        ranks = f", data-parallel on {n} processes" if n > 1 else ""
        self.ctx.progress.line(f"rung 1: training the supernet ({self.sn.epochs} epochs, widths "
                               f"/{self.sn.width_divisor}, {cpus * n:g} CPU(s){ranks}); "
                               f"checkpoint every epoch in {self.checkpoint_dir}")
        tuner = tune.Tuner(trainable, param_space={"seed": cfg.seed},
                           tune_config=tune.TuneConfig(num_samples=1),
                           run_config=tune.RunConfig(
                               name=SUPERNET_EXPERIMENT, storage_path=where.path,
                               storage_filesystem=where.filesystem,
                               callbacks=[SupernetCallback(self)], stop=StopFlag(self.stop),
                               verbose=0, log_to_file=True,
                               failure_config=tune.FailureConfig(max_failures=0)))
        try:
            tuner.fit()
        finally:
            ray.kill(checkpoint)
        row = self.row()
        return row is not None and row["status"] == "COMPLETED"

    # -- scoring ------------------------------------------------------------------------------
    def load(self, threads: int):
        dev = resolve_device(self.cfg.torch_device)
        torch.set_num_threads(max(1, threads))
        net, _ = load_supernet(self.checkpoint, device=str(dev))
        return net.eval(), dev

    def score_one(self, net, dev, spec: ArchSpec) -> dict[str, Any]:
        """Score, val loss and top-1 of ``spec`` on the supernet (UsageError: not a subnet)."""
        data, fid = self.ctx.data, self.cfg.fidelity
        pspec = to_proxy(spec, data.num_classes, fid.resolution, self.sn.width_divisor)
        return score_subnets(net, [pspec], data, fid, recal_images=self.sn.recal_images,
                             device=dev, channels_last=dev.type == "cuda",
                             score=self.sn.score)[0]

    def record_scored(self, key: str, spec: ArchSpec, config: dict, r: Mapping[str, Any],
                      lat: float, std: float | None) -> None:
        metrics = {"score": r["score"], "val_loss": r["val_loss"], "top1": r["top1"],
                   "latency_ms": lat, "latency_std_ms": std, "seconds": r["seconds"],
                   "cpu_seconds": r["cpu_seconds"], "score_metric": self.sn.score}
        self.recorder.start(key, spec, config=config, seed=self.cfg.seed)
        self.recorder.finish(key, "COMPLETED", metrics, reached=self.ctx.fid)

    def score_baselines(self, net, dev) -> dict[str, float]:
        """The baselines scored on the supernet (rung-1 markers); returns name -> score."""
        done = {t["trial_key"]: t for t in self.store.trials(self.ctx.study_id, rung=SUPERNET)
                if t["status"] == "COMPLETED"}
        out = {}
        for name, spec in self.ctx.resolved.baselines:
            key = f"{SN}{BASELINE_TRIAL_PREFIX}{name}-{spec.arch_hash}"
            if key in done:
                out[name] = done[key]["score"]
                continue
            try:
                r = self.score_one(net, dev, spec)
            except UsageError as e:  # a baseline outside the space has no subnet to score
                self.ctx.progress.warn(f"baseline {name} not scored on the supernet: {e}")
                continue
            lat, std = self.ctx.latency(spec)
            config = {"kind": "baseline", "name": name, "spec": spec.canonical_json(),
                      "latency_ms": lat, "latency_std_ms": std}
            self.record_scored(key, spec, config, r, lat, std)
            out[name] = r["score"]
        return out

    def search(self, net, dev) -> int:
        """Optuna over (score max, latency min) for ``--scored`` candidates; returns how many
        were scored in this process (a resumed run re-tells stored ones without scoring)."""
        cfg, ctx = self.cfg, self.ctx
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(directions=["maximize", "minimize"],
                                    sampler=make_sampler(cfg.strategy, cfg.seed, cfg.scored))
        rows = self.store.trials(ctx.study_id, rung=SUPERNET)
        final = {t["trial_key"] for t in rows if t["status"] != "RUNNING"}
        done = {t["config"]["index"]: t for t in rows if t["status"] == "COMPLETED"
                and (t.get("config") or {}).get("kind") == "scored"}
        for i in sorted(done):  # replayed in their order: the sampler sees the same history
            study.enqueue_trial(dict(done[i]["config"]["params"]))
        seen: dict[str, list[float]] = {}
        index = asks = skips = scored = 0
        every = max(1, int(cfg.scored * PROGRESS_EVERY))
        while index < cfg.scored and skips < MAX_SKIPS and not self.stop.is_set():
            trial = study.ask()
            asks += 1
            spec = cfg.space.suggest(trial)
            lat, std = ctx.latency(spec)
            if cfg.latency_budget_ms is not None and lat > cfg.latency_budget_ms:
                self._reject(f"{SN}rej-{asks:05d}-{spec.arch_hash}", spec, trial.params, lat,
                             std, final)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                skips += 1
                continue
            if spec.arch_hash in seen:  # suggested again: the same values, no second score
                study.tell(trial, seen[spec.arch_hash])
                skips += 1
                continue
            row = done.get(index)
            if row is None or row["arch_hash"] != spec.arch_hash:
                r = self.score_one(net, dev, spec)
                config = {"kind": "scored", "index": index, "params": dict(trial.params),
                          "spec": spec.canonical_json(), "latency_ms": lat,
                          "latency_std_ms": std}
                self.record_scored(f"{SN}{index:05d}-{spec.arch_hash}", spec, config, r, lat, std)
                row, scored = {"score": r["score"]}, scored + 1
            seen[spec.arch_hash] = [float(row["score"]), float(lat)]
            study.tell(trial, seen[spec.arch_hash])
            index, skips = index + 1, 0
            if index % every == 0 or index == cfg.scored:
                best = max(v[0] for v in seen.values())
                ctx.progress.line(f"rung 1: {index}/{cfg.scored} scored on the supernet "
                                  f"(best score {best:.4f}, {asks - index} suggestion(s) "
                                  "rejected or repeated)")
        return scored

    def _reject(self, key: str, spec: ArchSpec, params: Mapping, lat: float, std: float | None,
                final: set[str]) -> None:
        if key in final:
            return
        config = {"kind": "scored", "index": None, "params": dict(params),
                  "spec": spec.canonical_json(), "latency_ms": lat, "latency_std_ms": std}
        self.recorder.start(key, spec, config=config, seed=self.cfg.seed)
        self.recorder.finish(key, "REJECTED", {"latency_ms": lat, "latency_std_ms": std},
                             epochs_done=0, error=f"predicted {lat:.3f} ms > budget "
                             f"{self.cfg.latency_budget_ms:g} ms on {self.ctx.device}")
        final.add(key)

    def picks(self) -> list[tuple[ArchSpec, dict]]:
        """Rung 2's candidates: ``--top-k`` of the supernet front, spread over latency, as
        (spec, Optuna params)."""
        view = study_front(self.store, self.cfg.study, rung=SUPERNET)
        by_key = {t["trial_key"]: t for t in self.store.trials(self.ctx.study_id, rung=SUPERNET)}
        out = []
        for p in spread_picks(view["front"], self.cfg.top_k):
            params = dict(by_key[p["trial_key"]]["config"]["params"])
            out.append((self.cfg.space.from_params(params), params))
        return out


def score_rung(rung: SupernetRung, threads: int) -> None:
    """Rung 1's scoring in the driver: baselines, tau onto the supernet's row, the search."""
    ctx = rung.ctx
    net, dev = rung.load(threads)
    c0, t0 = _cpu(), time.perf_counter()
    scores = rung.score_baselines(net, dev)
    tau = reference_tau(scores)
    shown = "n/a (XS/S/L1/L3 not all scored)" if tau is None else f"{tau:.2f}"
    ctx.progress.line("rung 1: baselines on the supernet: " + ", ".join(
        f"{k} {v:.4f}" for k, v in scores.items()) + f"; Kendall tau vs ImageNet {shown}")
    n = rung.search(net, dev)
    cpu, wall = _cpu() - c0, time.perf_counter() - t0
    rung.add_to_row({"tau": tau, "baseline_scores": scores, "scored": rung.cfg.scored,
                     "scoring_cpu_seconds": cpu, "scoring_seconds": wall, "scored_here": n,
                     "cpu_seconds_per_candidate": cpu / max(1, n + len(scores))})


def _cpu() -> float:
    return os.times().user + os.times().system


class Background:
    """A function run in a thread of the driver, its result or exception kept for ``join``."""

    def __init__(self, fn: Callable[[], Any], name: str) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def target() -> None:
            try:
                self.result = fn()
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller by join()
                self.error = e
        self.thread = threading.Thread(target=target, name=name, daemon=True)
        self.thread.start()

    def join(self) -> Any:
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.result


def _stand_alone(ctx: SearchContext, todo: list[dict], what: str) -> SearchContext:
    """A context for one stand-alone Tuner of rung 2: ``todo`` queued candidates (the
    baselines are emitted by the searcher unless already final in the store)."""
    resolved = dataclasses.replace(
        ctx.resolved, config=dataclasses.replace(ctx.cfg, n_trials=len(todo)))
    progress = Progress(len(todo) + len(resolved.baselines), stream=ctx.progress.stream)
    progress.t0 = ctx.progress.t0
    progress.line(what)
    return SearchContext(resolved, ctx.recorder, ctx.data, progress)


def run_rungs(ctx: SearchContext, res, wrap: Callable | None, wrap_supernet: Callable | None,
              run_tune: Callable[..., bool]) -> bool:
    """Both rungs; True when the search stopped before its end (interrupted, or the supernet
    failed: ``--resume`` continues it). ``run_tune`` is the driver's Tuner of stand-alone
    trials (``search.nas.driver._run_tune``).

    The baselines' stand-alone trainings do not depend on the supernet: rung 1 (training and
    scoring) runs in a driver thread while a second Tuner trains the baselines on the CPUs the
    supernet trial leaves free; the picks of the supernet front are trained after both."""
    cfg = ctx.cfg
    rung = SupernetRung(ctx)
    # One trial's CPUs (1 thread locally by default): a second torch thread on the 2-core
    # machine took > 270 CPU-s without finishing an epoch of ~36 single-thread CPU-s under
    # load (OpenMP threads spin while descheduled; notes/supernet_search.md). --cpus-per-trial
    # gives it more.
    cpus = res.cpus_per_trial

    def rung1() -> bool:
        ok = rung.train(cpus, cfg.gpus_per_trial, wrap_supernet)
        if ok:
            score_rung(rung, max(1, int(cpus)))
        return ok

    supernet = Background(rung1, "sfn-supernet")
    # Tune's trainable registry is not thread-safe: the second Tuner starts once the first
    # has started its trial (or ended).
    while not rung.started.wait(0.2) and supernet.thread.is_alive():
        pass
    base_ctx = _stand_alone(ctx, [], "rung 2: the baselines train stand-alone beside rung 1")
    interrupted = run_tune(base_ctx, res, False, wrap, queue=[])
    ok = _wait(supernet, rung, interrupted)
    if not ok or rung.stop.is_set():
        why = f"failed: {rung.error}" if rung.error else "interrupted"
        ctx.progress.line(f"supernet training {why}; continue with: run_search.py search "
                          f"--study {cfg.study} --resume")
        return True
    return run_rung2(ctx, rung, res, wrap, run_tune) or interrupted


def _wait(supernet: Background, rung: SupernetRung, interrupted: bool) -> bool:
    """Rung 1's result. A ^C that stopped the baselines' Tuner, or one while waiting here,
    stops rung 1 too (its Tuner through StopFlag, the scoring at the next candidate)."""
    if interrupted:
        rung.stop.set()
    if threading.current_thread() is threading.main_thread():
        # Tune leaves its (one-shot) handler installed after a Tuner ends: ^C must raise here
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while supernet.thread.is_alive():
            supernet.thread.join(0.5)
    except KeyboardInterrupt:
        rung.stop.set()
    return supernet.join()


def run_rung2(ctx: SearchContext, rung: SupernetRung, res, wrap: Callable | None,
              run_tune: Callable[..., bool]) -> bool:
    """The top-k of the supernet front trained stand-alone (Tune trials; baselines not yet
    final in the store too)."""
    trained = {t["arch_hash"] for t in ctx.store.trials(ctx.study_id, rung=STANDALONE)
               if t["status"] == "COMPLETED"}
    todo = []
    for i, (spec, params) in enumerate(rung.picks()):
        if spec.arch_hash in trained:
            continue
        if ctx.reusable(spec) is not None:  # trained at this fidelity elsewhere: recorded
            ctx.screen_candidate(params, i, f"topk{i:03d}")
            continue
        todo.append(params)
    ctx2 = _stand_alone(ctx, todo, f"rung 2: training {len(todo)} of the supernet front's top "
                                   f"{ctx.cfg.top_k} stand-alone")
    return run_tune(ctx2, res, False, wrap, queue=todo)
