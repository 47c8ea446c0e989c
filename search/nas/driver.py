"""The search driver: Ray Tune + Optuna multi-objective search over the SwiftFormer space.

:func:`run_search` validates everything that can be validated cheaply (``config.resolve``:
data layout, latency device, budget vs the fastest member of the space, specs) *before* any
heavy work, then prepares the data cache, opens the results store and the study, and runs a
Tune ``Tuner`` whose searcher is :class:`~search.nas.searcher.ArchSearcher` (Optuna NSGA-II /
TPE / GP / random inside Tune) and whose trial rows are written by
:class:`~search.nas.callback.StoreCallback`, both built around one injected
:class:`~search.nas.context.SearchContext`.

``resume=True`` continues an interrupted study: its saved config is reloaded (execution
settings may change), a fresh searcher loads the last searcher checkpoint of the Tune
experiment (``Searcher.restore_from_dir``, public Tune API) and runs in a new ``Tuner``; trials
that were running at that checkpoint run again under the same key and seed, unless the store
already has their final row (then Optuna is told from the store). Completed trials are never
trained twice.

Layout: ``<out>/<study>/`` holds the Tune experiment (``tune/search/``),
``search_config.json``, ``pareto.txt``, ``pareto.json`` and ``pareto.png``; the results
database (default ``runs/results.db``) is shared by studies so proxy results are reused.
"""
from __future__ import annotations

import glob
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

from results.options import open_store
from results.store import ResultsStore
from search_space.errors import UsageError
from search_space.io import write_json_atomic
from search_space.lazy import lazy_import

from ..proxy.data import ProxyData, prepare_data
from ..proxy.record import TrialRecorder
from .callback import StoreCallback
from .config import CONFIG_FILE, ResolvedSearch, SearchConfig, prepare
from .context import SearchContext
from .progress import Progress
from .report import write_report
from .searcher import ArchSearcher
from .trainable import Trainable, build_trainable

ray = lazy_import("ray")
tune = lazy_import("ray.tune")
schedulers = lazy_import("ray.tune.schedulers")
searchers = lazy_import("ray.tune.search")
optuna = lazy_import("optuna")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = "search"  # the Tune experiment: <out>/<study>/tune/search/
# Tune reads these when its controller is created: save the experiment state (trials +
# searcher) every 2 s so a killed driver loses little; no per-trial CSV/JSON/TBX loggers (the
# results store is the record); the legacy reporter, silent at verbose=0 (no Ray tables).
TUNE_ENV = {"TUNE_GLOBAL_CHECKPOINT_S": "2", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
            "RAY_AIR_NEW_OUTPUT": "0"}


@dataclass(frozen=True)
class Resources:
    cpus_per_trial: float
    threads: int          # torch intra-op threads per trial
    max_concurrent: int   # 0: as many as the cluster fits


def plan_resources(cfg: SearchConfig, total_cpus: float) -> Resources:
    """Default on a local machine: one single-threaded trial per core. Proxy models are small
    (32 px): two intra-op threads scale poorly on them, and on a shared machine OpenMP threads
    spin at barriers while descheduled (measured in notes/search_driver.md). On a cluster the
    default is 2 CPUs per trial."""
    cpt = cfg.cpus_per_trial
    if cpt is None:
        cpt = 1.0 if cfg.address is None else 2.0
    if cfg.max_concurrent:
        conc = int(cfg.max_concurrent)
    elif cfg.address is None:
        conc = max(1, int(total_cpus // cpt))
    else:
        conc = 0
    return Resources(float(cpt), max(1, int(cpt)), conc)


def _open_study(cfg: SearchConfig, store: ResultsStore, data: ProxyData,
                device: str) -> TrialRecorder:
    """The study's recorder (created, or reopened with the same identity: the store refuses
    another)."""
    store.ensure_baselines()
    return TrialRecorder.for_study(store, cfg.study, config=cfg.identity(), seed=cfg.seed,
                                   dataset_id=data.dataset_id, fidelity=cfg.fidelity.to_dict(),
                                   device=device)


def run_search(cfg: SearchConfig, *, resume: bool = False, stream: TextIO | None = None,
               wrap_trainable: Callable[[Trainable], Trainable] | None = None) -> dict[str, Any]:
    """Validate, run the Tune search, write the report; returns the report dict (plus
    ``interrupted``). ``wrap_trainable`` wraps the Tune trainable (tests inject failures)."""
    return run_resolved(prepare(cfg, resume), resume=resume, stream=stream,
                        wrap_trainable=wrap_trainable)


def run_resolved(resolved: ResolvedSearch, *, resume: bool = False,
                 stream: TextIO | None = None,
                 wrap_trainable: Callable[[Trainable], Trainable] | None = None
                 ) -> dict[str, Any]:
    """:func:`run_search` for a config already validated by ``config.prepare`` (the command
    line validates before it imports this module, which imports torch and ray)."""
    cfg = resolved.config
    progress = Progress(cfg.n_trials + len(resolved.baselines), stream=stream)
    data = prepare_data(cfg.data, cfg.fidelity, cache_dir=str(Path(cfg.out_root) / "cache"))
    store = open_store(cfg.db, readonly=False)
    try:
        recorder = _open_study(cfg, store, data, resolved.latency_device)
        write_json_atomic(cfg.out_dir / CONFIG_FILE, cfg.to_dict())
        ctx = SearchContext(resolved, recorder, data, progress)
        budget = f", budget {cfg.latency_budget_ms:g} ms" if cfg.latency_budget_ms else ""
        progress.line(f"study {cfg.study} (id {recorder.study_id}): {cfg.strategy}, "
                      f"{cfg.n_trials} candidates + {len(resolved.baselines)} baselines, latency "
                      f"on {resolved.latency_device}{budget}; data {data.source} "
                      f"({data.num_classes} classes); db {cfg.db}")
        interrupted = _run_tune(ctx, resume, wrap_trainable)
        rep = write_report(store, cfg.study, cfg.out_dir, db=cfg.db, stream=stream)
    finally:
        store.close()
    rep["interrupted"] = interrupted
    return rep


def _run_tune(ctx: SearchContext, resume: bool, wrap: Callable | None) -> bool:
    """Ray up, the Tuner, Ray down; True when the search stopped before its end (^C)."""
    cfg = ctx.cfg
    t0 = time.monotonic()
    started_ray = not ray.is_initialized()
    total_cpus = _init_ray(cfg)
    res = plan_resources(cfg, total_cpus)
    ctx.progress.line(f"ray up in {time.monotonic() - t0:.1f}s: {total_cpus:g} CPUs, "
                      f"{res.cpus_per_trial:g} CPU(s) x {res.threads} thread(s) per trial, up to "
                      f"{res.max_concurrent or 'unlimited'} at once")
    try:
        unfinished = _fit(ctx, res, resume, wrap)
        finished = ctx.search_finished or ctx.candidates_final() >= cfg.n_trials
        interrupted = not (finished and not unfinished)
        if not interrupted:
            ctx.close_orphans()
        else:  # e.g. ^C: the searcher checkpoint and RUNNING rows stay for --resume
            ctx.progress.line(f"search interrupted ({ctx.running()} trial(s) unfinished); "
                              "continue with: run_search.py search --study "
                              f"{cfg.study} --resume")
    finally:
        if started_ray:
            ray.shutdown()
    return interrupted


def _init_ray(cfg: SearchConfig) -> float:
    """Start (or connect to) Ray quietly; returns the cluster's CPU count."""
    for name in ("ray", "ray.tune", "ray.train", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if ray.is_initialized():
        return float(ray.cluster_resources().get("CPU", 1))
    if cfg.address:
        try:
            ray.init(address=cfg.address, log_to_driver=False, logging_level=logging.ERROR,
                     runtime_env={"working_dir": str(PROJECT_ROOT),
                                  "excludes": ["runs/", ".git/", "*.db", "__pycache__/"]})
        except ConnectionError as e:  # no cluster there: the user's --address
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UsageError(f"--address {cfg.address}: no Ray cluster to connect to ({why})") \
                from None
    else:
        # Workers must import this project: they inherit PYTHONPATH from the local raylet.
        paths = [str(PROJECT_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(
            os.pathsep) if p]
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR, object_store_memory=256 * 2 ** 20,
                 configure_logging=True)
    return float(ray.cluster_resources().get("CPU", 1))


def _searcher(ctx: SearchContext, exp_path: Path, resume: bool) -> ArchSearcher:
    """A searcher around ``ctx``; on resume with the state of the experiment's last searcher
    checkpoint (none yet: a fresh searcher, the store still replays what finished)."""
    cfg = ctx.cfg
    searcher = ArchSearcher(ctx, cfg.space, cfg.strategy, cfg.seed, cfg.n_trials,
                            [(n, s.canonical_json()) for n, s in ctx.resolved.baselines],
                            prerank=cfg.prerank)
    checkpoints = glob.glob(str(exp_path / searchers.Searcher.CKPT_FILE_TMPL.format("*")))
    if resume and checkpoints:
        searcher.restore_from_dir(str(exp_path))
        ctx.progress.line(f"resuming: {len(ctx.done_keys)} trial(s) already final in the store, "
                          f"{len(searcher.requeued)} were running at the last checkpoint")
    elif resume:
        ctx.progress.line(f"resuming without a searcher checkpoint: {len(ctx.done_keys)} "
                          "trial(s) already final in the store are replayed from it")
    return searcher


def _fit(ctx: SearchContext, res: Resources, resume: bool, wrap: Callable | None) -> int:
    """Run the Tuner; returns the number of Tune trials that neither finished nor failed."""
    cfg = ctx.cfg
    os.environ.update(TUNE_ENV)
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(max(1, res.max_concurrent or 1))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trainable = build_trainable(ctx.data, cfg.fidelity, threads=res.threads,
                                device=cfg.torch_device, cpus=res.cpus_per_trial,
                                gpus=cfg.gpus_per_trial, wrap=wrap)
    tune_dir = (cfg.out_dir / "tune").resolve()
    scheduler = None
    if cfg.asha:
        scheduler = schedulers.ASHAScheduler(
            metric="top1", mode="max", time_attr="training_iteration",
            max_t=cfg.fidelity.epochs + 1, grace_period=1, reduction_factor=2)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=_searcher(ctx, tune_dir / EXPERIMENT, resume),
                                    scheduler=scheduler, num_samples=-1,
                                    max_concurrent_trials=res.max_concurrent or None,
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name=EXPERIMENT, storage_path=str(tune_dir), callbacks=[StoreCallback(ctx)],
            verbose=0, log_to_file=True,
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    grid = tuner.fit()
    return len(grid) - grid.num_terminated - grid.num_errors
