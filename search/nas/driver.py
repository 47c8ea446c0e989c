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

On a cluster (``--address``) the driver joins it before opening the store, asks each node
whether it can get the data (``search.nas.cluster``), and each trial uses its node's own copy
of the data cache (``search.proxy.node_cache``); the results database is written by this
process only.

Layout: ``<out>/<study>/`` holds ``search_config.json``, ``pareto.txt``, ``pareto.json`` and
``pareto.png`` and, without ``--storage``, the Tune experiment (``tune/search/``; with it,
``<storage>/<study>/search/``, ``search.nas.storage``); the results database (default
``runs/results.db``) is shared by studies so proxy results are reused.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

from results.options import open_store
from results.store import ResultsStore
from search_space.errors import UsageError
from search_space.io import write_json_atomic
from search_space.lazy import lazy_import

from ..cluster import (ask_each_node, cache_problem, cpu_only_trials, data_problem, init_ray,
                       node_name, nodes_fitting, slots)
from ..proxy.data import ProxyData, prepare_data
from ..proxy.node_cache import CACHE_ENV
from ..proxy.record import TrialRecorder
from .callback import StoreCallback
from .config import CONFIG_FILE, ResolvedSearch, SearchConfig, prepare
from .context import SearchContext
from .progress import Progress
from .report import write_report
from .searcher import ArchSearcher
from .storage import EXPERIMENT, ExperimentStorage, experiment_storage, fetch_searcher_state
from .supernet_search import run_rungs
from .trainable import Trainable, build_trainable

ray = lazy_import("ray")
tune = lazy_import("ray.tune")
schedulers = lazy_import("ray.tune.schedulers")
optuna = lazy_import("optuna")

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
    # Trials the nodes hold at once: Tune keeps that many placement groups pending, so every
    # node gets a trial at once (one pending trial at a time leaves nodes idle: a finished
    # trial's reused actor takes the next one before another node's worker has started).
    slots: int = 1


def plan_resources(cfg: SearchConfig, total_cpus: float, total_gpus: float = 0.0) -> Resources:
    """Default on a local machine: one single-threaded trial per core. Proxy models are small
    (32 px): two intra-op threads scale poorly on them, and on a shared machine OpenMP threads
    spin at barriers while descheduled (measured in notes/search_driver.md). On a cluster the
    default is 2 CPUs per trial, and Tune packs as many trials as the nodes' CPUs and GPUs
    hold (fractional --gpus-per-trial: several trials share a GPU). Torch threads per trial =
    its whole CPUs (the trainable reads its actual allocation)."""
    cpt = cfg.cpus_per_trial
    if cpt is None:
        cpt = 1.0 if cfg.address is None else 2.0
    if cfg.max_concurrent:
        conc = int(cfg.max_concurrent)
    elif cfg.address is None:
        conc = max(1, int(total_cpus // cpt))
        if cfg.gpus_per_trial > 0:
            conc = max(1, min(conc, int(total_gpus // cfg.gpus_per_trial)))
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
               wrap_trainable: Callable[[Trainable], Trainable] | None = None,
               wrap_supernet: Callable | None = None) -> dict[str, Any]:
    """Validate, run the Tune search, write the report; returns the report dict (plus
    ``interrupted``). ``wrap_trainable`` wraps the Tune trainable, ``wrap_supernet`` the
    supernet's (``--proxy supernet``; tests inject failures)."""
    return run_resolved(prepare(cfg, resume), resume=resume, stream=stream,
                        wrap_trainable=wrap_trainable, wrap_supernet=wrap_supernet)


def run_resolved(resolved: ResolvedSearch, *, resume: bool = False,
                 stream: TextIO | None = None,
                 wrap_trainable: Callable[[Trainable], Trainable] | None = None,
                 wrap_supernet: Callable | None = None) -> dict[str, Any]:
    """:func:`run_search` for a config already validated by ``config.prepare`` (the command
    line validates before it imports this module, which imports torch and ray).

    The data cache is built (every image decoded), Ray is up (or joined) and every node a trial
    fits on has been asked whether it can get the data before the results store is opened: a
    bad input writes nothing."""
    cfg = resolved.config
    progress = Progress(cfg.n_trials + len(resolved.baselines), stream=stream)
    # The data first (a broken image is refused before Ray writes anything). An absolute
    # source: a trial on another node rebuilds the cache from the same path.
    data = prepare_data(os.path.abspath(cfg.data) if cfg.data else None, cfg.fidelity,
                        cache_dir=str(Path(cfg.out_root) / "cache"))
    t0 = time.monotonic()
    started_ray = not ray.is_initialized()
    try:
        total_cpus = init_ray(cfg.address, cpu_only_workers=cpu_only_trials(
            cfg.torch_device, cfg.gpus_per_trial))
        res = plan_resources(cfg, total_cpus, float(ray.cluster_resources().get("GPU", 0)))
        nodes = _check_cluster(cfg, data, res)
        res = dataclasses.replace(res, slots=slots(nodes, res.cpus_per_trial,
                                                   cfg.gpus_per_trial))
        progress.line(f"ray up in {time.monotonic() - t0:.1f}s: {total_cpus:g} CPUs on "
                      f"{len(nodes)} node(s), {res.cpus_per_trial:g} CPU(s) x {res.threads} "
                      f"thread(s) per trial, up to {res.max_concurrent or res.slots} at once")
        rep, interrupted = _search_with_store(resolved, data, res, progress, resume,
                                              (wrap_trainable, wrap_supernet), stream)
    finally:
        if started_ray:
            ray.shutdown()
    rep["interrupted"] = interrupted
    return rep


def _check_cluster(cfg: SearchConfig, data: ProxyData, res: Resources) -> list[dict]:
    """The nodes trials can run on. UsageError: resources no node has, or a node of the
    cluster (``--address``) that can neither find the data cache nor read the dataset."""
    nodes = nodes_fitting(res.cpus_per_trial, cfg.gpus_per_trial,
                          f"--cpus-per-trial {res.cpus_per_trial:g} --gpus-per-trial "
                          f"{cfg.gpus_per_trial:g}")
    n = cfg.supernet_nproc
    if cfg.proxy == "supernet" and n > 1:   # the supernet's trial holds n trials' resources
        nodes_fitting(res.cpus_per_trial * n, cfg.gpus_per_trial * n,
                      f"--supernet-nproc {n} (x --cpus-per-trial {res.cpus_per_trial:g} "
                      f"--gpus-per-trial {cfg.gpus_per_trial:g})")
    if cfg.address:
        for node, problem in zip(nodes, ask_each_node(nodes, cache_problem)):
            if problem:
                raise UsageError(f"{problem} (on {node_name(node)})")
        for node, problem in zip(nodes, ask_each_node(nodes, data_problem, data)):
            if problem:
                raise UsageError(f"--data {data.source}: not readable on {node_name(node)}: "
                                 f"{problem}; every node that runs trials needs the dataset at "
                                 f"this path, or its prepared cache under ${CACHE_ENV}")
    return nodes


def _search_with_store(resolved: ResolvedSearch, data: ProxyData, res: Resources,
                       progress: Progress, resume: bool, wraps: tuple[Callable | None, ...],
                       stream: TextIO | None) -> tuple[dict[str, Any], bool]:
    """Open the study, run the Tuner (``--proxy supernet``: both rungs), write the report:
    (report, interrupted)."""
    cfg = resolved.config
    store = open_store(cfg.db, readonly=False)
    try:
        recorder = _open_study(cfg, store, data, resolved.latency_device)
        write_json_atomic(cfg.out_dir / CONFIG_FILE, cfg.to_dict())
        ctx = SearchContext(resolved, recorder, data, progress)
        budget = f", budget {cfg.latency_budget_ms:g} ms" if cfg.latency_budget_ms else ""
        what = (f"{cfg.n_trials} candidates" if cfg.proxy == "standalone" else
                f"supernet proxy: {cfg.scored} candidates scored, top {cfg.top_k} trained")
        progress.line(f"study {cfg.study} (id {recorder.study_id}): {cfg.strategy}, {what} + "
                      f"{len(resolved.baselines)} baselines, latency on "
                      f"{resolved.latency_device}{budget}; data {data.source} "
                      f"({data.num_classes} classes); db {cfg.db}")
        if cfg.proxy == "supernet":
            os.environ.update(TUNE_ENV)  # rung 1's Tuner too: quiet, experiment saved every 2 s
            interrupted = run_rungs(ctx, res, wraps[0], wraps[1], _run_tune)
        else:
            interrupted = _run_tune(ctx, res, resume, wraps[0])
        rep = write_report(store, cfg.study, cfg.out_dir, db=cfg.db, stream=stream)
    finally:
        store.close()
    return rep, interrupted


def _run_tune(ctx: SearchContext, res: Resources, resume: bool, wrap: Callable | None,
              queue: list[dict] | None = None) -> bool:
    """The Tuner; True when the search stopped before its end (^C). ``queue``: Optuna params
    suggested first (``ArchSearcher.enqueue``)."""
    cfg = ctx.cfg
    unfinished = _fit(ctx, res, resume, wrap, queue)
    finished = ctx.search_finished or ctx.candidates_final() >= cfg.n_trials
    interrupted = not (finished and not unfinished)
    if not interrupted:
        ctx.close_orphans()
    else:  # e.g. ^C: the searcher checkpoint and RUNNING rows stay for --resume
        ctx.progress.line(f"search interrupted ({ctx.running()} trial(s) unfinished); continue "
                          f"with: run_search.py search --study {cfg.study} --resume")
    return interrupted


def _searcher(ctx: SearchContext, where: ExperimentStorage, resume: bool) -> ArchSearcher:
    """A searcher around ``ctx``; on resume with the state of the experiment's last searcher
    checkpoint, copied from the storage (none yet: a fresh searcher, the store still replays
    what finished)."""
    cfg = ctx.cfg
    searcher = ArchSearcher(ctx, cfg.space, cfg.strategy, cfg.seed, cfg.n_trials,
                            [(n, s.canonical_json()) for n, s in ctx.resolved.baselines],
                            prerank=cfg.prerank)
    if not resume:
        return searcher
    with tempfile.TemporaryDirectory(prefix="sfn-searcher-") as local:
        state_dir = fetch_searcher_state(where, local)
        if state_dir is not None:
            searcher.restore_from_dir(state_dir)
    if state_dir is not None:
        ctx.progress.line(f"resuming from {where.shown}: {len(ctx.done_keys)} trial(s) already "
                          f"final in the store, {len(searcher.requeued)} were running at the "
                          "last checkpoint")
    else:
        ctx.progress.line(f"resuming without a searcher checkpoint in {where.shown}: "
                          f"{len(ctx.done_keys)} trial(s) already final in the store are "
                          "replayed from it")
    searcher.replay_store()
    return searcher


def _fit(ctx: SearchContext, res: Resources, resume: bool, wrap: Callable | None,
         queue: list[dict] | None = None) -> int:
    """Run the Tuner; returns the number of Tune trials that neither finished nor failed."""
    cfg = ctx.cfg
    os.environ.update(TUNE_ENV)
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(max(1, res.max_concurrent or res.slots))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trainable = build_trainable(ctx.data, cfg.fidelity, threads=res.threads,
                                device=cfg.torch_device, cpus=res.cpus_per_trial,
                                gpus=cfg.gpus_per_trial, wrap=wrap)
    where = experiment_storage(cfg.storage, str(cfg.out_dir), cfg.study)
    scheduler = None
    if cfg.asha:
        scheduler = schedulers.ASHAScheduler(
            metric="top1", mode="max", time_attr="training_iteration",
            max_t=cfg.fidelity.epochs + 1, grace_period=1, reduction_factor=2)
    searcher = _searcher(ctx, where, resume)
    searcher.enqueue(queue or [])
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher,
                                    scheduler=scheduler, num_samples=-1,
                                    max_concurrent_trials=res.max_concurrent or None,
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name=EXPERIMENT, storage_path=where.path, storage_filesystem=where.filesystem,
            callbacks=[StoreCallback(ctx)],
            verbose=0, log_to_file=True,
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    grid = tuner.fit()
    return len(grid) - grid.num_terminated - grid.num_errors
