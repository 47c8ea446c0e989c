"""Proxy fidelity study: does cheap training rank architectures the way ImageNet does?

For each proxy *setting* (``settings.Setting``: a Fidelity plus a data source and an optional
per-architecture epoch rule) the reference architectures (XS/S/L1/L3) are trained over several
seeds. The study reports Kendall tau and Spearman rho between the mean proxy top-1 and the
references' published ImageNet top-1, with a percentile bootstrap interval over seeds
(``stats``), and the cost in CPU-seconds (``time.process_time`` of the training process: every
thread counted).

A supernet setting (``Setting.supernet``) trains one weight-sharing supernet per seed and
scores the references as its subnets (``supernet``); its rows have the same shape, its cost
includes the supernet's training.

* measurement: :func:`run_study` trains in a process pool through the one path of
  ``search.proxy.trial`` (:func:`~search.proxy.trial.run_candidate` in the workers,
  :meth:`~search.proxy.record.TrialRecorder.record` in this process, the only writer of trial
  rows). Resumable: every finished training is a JSON file in ``<out>/cache/``, and a trial of
  study ``fidelity-<setting>`` in the results store;
* report: :func:`summarize` (the fidelity/cost table as data), :func:`format_table`,
  :func:`write_report` (report.md, report.json, the curve drawn by ``plots``).
"""
from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from search.proxy.data import ProxyData, prepare_data
from search.proxy.train import NonFiniteLoss
from search.proxy.record import TrialRecorder
from search.proxy.trial import run_candidate
from search.proxy.zero_cost import zero_cost_scores
from search_space.costs import analytic_params
from search_space.errors import NotFoundError
from search_space.io import read_json, write_json_atomic, write_text_atomic
from search_space.spec import ArchSpec

from .plots import plot_curve
from .settings import (REFERENCE_NAMES, SWEEP, Setting, published_top1, reference_specs,
                       setting_key)
from .supernet import SupernetTask, checkpoint_dir
from .supernet import run_task as run_supernet_task
from search_space.stats import kendall_tau

from .stats import extrapolate_top1, rank_report

__all__ = ["Setting", "SWEEP", "REFERENCE_NAMES", "run_study", "summarize", "format_table",
           "write_report", "load_cached", "ZERO_COST_BATCH"]

ZERO_COST_BATCH = 64  # images the zero-cost scores see (one batch at initialisation)
STUDY_DEVICE = "cpu"  # the studies' latency-device field: the costs are CPU-seconds


# ---------------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Task:
    """One training: module-level and plain, so a spawned worker can unpickle it."""

    setting: Setting
    ref: str
    spec: ArchSpec
    data: ProxyData
    seed: int
    threads: int
    zero_cost: bool
    path: str  # the cache file the result goes to


def _train(task: _Task) -> dict[str, Any]:
    """Worker body: one proxy training (``run_candidate``), then the zero-cost scores.

    ``cpu_seconds`` is the training's alone (the scores are timed apart, as
    ``zero_cost_cpu_seconds``). A diverged training is a result (top-1 = chance), not a crash.
    """
    if os.path.isfile(task.path):  # another run of the study (same cache) finished it meanwhile
        return {**read_json(task.path, "fidelity cache file"), "_cached": True}
    fid = task.setting.fidelity_for(task.ref, task.spec)
    c0, w0 = time.process_time(), time.perf_counter()
    try:
        r = run_candidate(task.spec, fid, task.data, seed=task.seed, device="cpu",
                          threads=task.threads, zero_cost=False)
        r["status"] = "COMPLETED"
    except NonFiniteLoss as e:
        r = {"status": "FAILED", "error": str(e), "top1": 100.0 / task.data.num_classes,
             "history": [], "epochs_done": 0, "cpu_seconds": time.process_time() - c0,
             "wall_seconds": time.perf_counter() - w0}
    if task.zero_cost:
        c1 = time.process_time()
        scores = zero_cost_scores(task.spec, task.data, seed=task.seed,
                                  batch_size=ZERO_COST_BATCH)
        r.update(scores, zero_cost=scores, zero_cost_cpu_seconds=time.process_time() - c1)
    r.update(setting=task.setting.name, ref=task.ref, seed=task.seed, fidelity=fid.to_dict(),
             dataset_id=task.data.dataset_id,
             finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return r


def _cache_path(out_dir: str, setting: Setting, data_id: str, name: str, seed: int) -> str:
    sk = setting_key(setting, data_id)
    return os.path.join(out_dir, "cache", f"{setting.name}-{sk}", f"{name}-seed{seed}.json")


def _execute(task: _Task | SupernetTask) -> list[tuple[str, ArchSpec, dict[str, Any]]]:
    """Worker entry for both kinds of task: (cache path, spec, result) per reference."""
    if isinstance(task, SupernetTask):
        if all(os.path.isfile(p) for p in task.paths):  # written meanwhile by another run
            return [(p, s, {**read_json(p, "fidelity cache file"), "_cached": True})
                    for p, s in zip(task.paths, task.specs)]
        return run_supernet_task(task)
    return [(task.path, task.spec, _train(task))]


class _Recorders:
    """One ``TrialRecorder`` per setting (study ``fidelity-<setting>``), made on first use.

    A study that cannot be opened (the store has one of that name with other settings) is
    reported per result and the sweep goes on: the cache file is the record the report reads,
    and a store conflict must not abort the trainings still running.
    """

    def __init__(self, store, log: Callable[[str], None]) -> None:
        self.store, self.log = store, log
        self.made: dict[str, TrialRecorder | str] = {}

    def _recorder(self, setting: Setting, data: ProxyData) -> TrialRecorder | str:
        if setting.name not in self.made:
            try:
                self.made[setting.name] = TrialRecorder.for_study(
                    self.store, f"fidelity-{setting.name}",
                    # The note is free text (edited as the study evolves): not its identity.
                    config={"kind": "fidelity-study", "setting": {
                        k: v for k, v in setting.to_dict().items() if k != "note"}},
                    seed=0, dataset_id=data.dataset_id, fidelity=setting.study_fidelity(),
                    device=STUDY_DEVICE)
            except ValueError as e:  # the store's one-line study conflict
                self.made[setting.name] = str(e).splitlines()[0]
        return self.made[setting.name]

    def record(self, setting: Setting, data: ProxyData, spec: ArchSpec,
               r: Mapping[str, Any]) -> None:
        rec = self._recorder(setting, data)
        if isinstance(rec, str):
            self.log(f"  warning: {r['setting']} {r['ref']} seed {r['seed']} not written to the "
                     f"results store: {rec}")
            return
        rec.record(f"{r['ref']}-seed{r['seed']}", spec, r,
                   config={"ref": r["ref"], "fidelity": r["fidelity"]}, seed=int(r["seed"]))


def _plan(settings: Sequence[Setting], seeds: Sequence[int], refs: Sequence[str], out_dir: str,
          cache_dir: str, threads: int, zero_cost: bool
          ) -> tuple[list[dict[str, Any]], list[_Task | SupernetTask]]:
    """(cached results, tasks to train). Order: seeds 0 and 1 of every setting first (so each
    setting gets an interval early), then the further seeds. A supernet setting is one task
    per seed (its supernet scores every reference of that seed not yet cached)."""
    specs = reference_specs(refs)
    for st in settings:
        if st.needs_cifar10 and st.source is None:
            raise ValueError(f"setting {st.name}: needs the full CIFAR-10 directory "
                             "(Setting.with_source); select_settings fills it from --cifar10")
    datas = {st.name: prepare_data(st.source, st.fidelity, cache_dir=cache_dir)
             for st in settings}
    seeds = list(seeds)
    order = [(st, s) for st in settings for s in seeds[:2]] + \
        [(st, s) for s in seeds[2:] for st in settings]
    cached, todo = [], []
    for st, seed in order:
        data = datas[st.name]
        paths = {n: _cache_path(out_dir, st, data.dataset_id, n, seed) for n in specs}
        missing = [n for n in specs if not os.path.isfile(paths[n])]
        if st.supernet is not None and missing:
            # one supernet per seed scores every reference again (its training is loaded from
            # the checkpoint when done): the training's cost is shared by the refs of one run
            todo.append(SupernetTask(st, tuple(specs), tuple(specs.values()), data, seed,
                                     threads, checkpoint_dir(out_dir, st, data.dataset_id, seed),
                                     tuple(paths.values())))
            continue
        cached += [read_json(paths[n], "fidelity cache file") for n in specs if n not in missing]
        todo += [_Task(st, n, specs[n], data, seed, threads, zero_cost, paths[n])
                 for n in missing]
    return cached, todo


def run_study(settings: Sequence[Setting], seeds: Sequence[int], *,
              refs: Sequence[str] = REFERENCE_NAMES, out_dir: str = "runs/fidelity",
              cache_dir: str = "runs/cache", workers: int = 1, threads: int = 1, store=None,
              zero_cost: bool = True, log: Callable[[str], None] = print
              ) -> list[dict[str, Any]]:
    """Train every (setting, seed, ref) not yet cached; return all results (cached + new).

    Finished trainings are written to ``out_dir/cache`` as they arrive and, if ``store`` is
    given, recorded as trials of study ``fidelity-<setting>``.
    """
    results, todo = _plan(settings, seeds, refs, out_dir, cache_dir, threads, zero_cost)
    log(f"fidelity study: {len(results)} cached, {len(todo)} to train "
        f"({workers} worker(s) x {threads} thread(s))")
    recorders = _Recorders(store, log) if store is not None else None

    def done(task: _Task | SupernetTask, out: list[tuple[str, ArchSpec, dict]]) -> None:
        for path, spec, r in out:
            if r.pop("_cached", False):  # written (file and store) by the run that trained it
                results.append(r)
                continue
            write_json_atomic(path, r, indent=1)
            results.append(r)
            if recorders is not None:
                recorders.record(task.setting, task.data, spec, r)
            log(f"  {r['setting']:>16} {r['ref']:>3} seed {r['seed']}: top-1 {r['top1']:.1f}%  "
                f"{r['cpu_seconds']:.0f} CPU-s  {r['wall_seconds']:.0f} s wall  [{r['status']}]")

    if workers <= 1:
        for task in todo:
            done(task, _execute(task))
        return results
    # spawn: no forked torch thread pools; each worker imports fresh.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        futs = {ex.submit(_execute, task): task for task in todo}
        for fu in as_completed(futs):
            done(futs[fu], fu.result())
    return results


def load_cached(out_dir: str) -> list[dict[str, Any]]:
    """Every finished training cached under ``out_dir/cache`` (for --report-only)."""
    root = os.path.join(out_dir, "cache")
    if not os.path.isdir(root):
        raise NotFoundError(f"--out {out_dir}: no cache/ directory (nothing trained yet)")
    out = []
    for d in sorted(os.listdir(root)):
        for f in sorted(os.listdir(os.path.join(root, d))):
            if f.endswith(".json") and not f.startswith("."):
                out.append(read_json(os.path.join(root, d, f), "fidelity cache file"))
    return out


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def _num(v: Any) -> float:
    """A stored number; None (a non-finite value in strict JSON) is NaN."""
    return float("nan") if v is None else float(v)


def _matrix(rows: Sequence[Mapping[str, Any]], refs: Sequence[str],
            key: Callable[[Mapping], float]) -> tuple[np.ndarray, list[int]]:
    seeds = sorted({int(r["seed"]) for r in rows})
    m = np.full((len(seeds), len(refs)), np.nan)
    for r in rows:
        if r["ref"] in refs:
            m[seeds.index(int(r["seed"])), list(refs).index(r["ref"])] = key(r)
    return m, seeds


def _zero_cost_rows(rows, refs, target, acc, full, base, n_boot) -> list[dict[str, Any]]:
    """One row per zero-cost score: its ranking vs published top-1, and its mean per-seed tau
    against the setting's proxy top-1."""
    out = []
    for zc in ("synflow", "naswot", "grad_norm"):
        if not all(zc in r.get("zero_cost", {}) for r in rows):
            continue
        z, _ = _matrix(rows, refs, lambda r: _num(r["zero_cost"][zc]))
        zc_cpu = [_num(r.get("zero_cost_cpu_seconds")) for r in rows]
        zcost = float(np.nanmean(zc_cpu))
        vs_proxy = [kendall_tau(z[i], acc[i]) for i in np.flatnonzero(full)]
        out.append({**base, "ranking": f"zero-cost {zc}", **rank_report(z[full], target, n_boot),
                    "cost_cpu_s": zcost * len(refs), "per_training_cpu_s": zcost,
                    "max_training_cpu_s": float(np.nanmax(zc_cpu)),
                    "tau_vs_proxy": float(np.nanmean(vs_proxy)) if np.isfinite(vs_proxy).any()
                    else float("nan"),
                    "tau_vs_proxy_per_seed": vs_proxy})
    return out


def _setting_rows(name: str, rows: Sequence[Mapping[str, Any]], refs: list[str],
                  target: list[float], note: str, n_boot: int,
                  extrapolate_to: float | None) -> list[dict[str, Any]]:
    acc, _ = _matrix(rows, refs, lambda r: float(r["top1"]))
    cpu, _ = _matrix(rows, refs, lambda r: float(r["cpu_seconds"]))
    wall, _ = _matrix(rows, refs, lambda r: float(r["wall_seconds"]))
    full = np.all(np.isfinite(acc), axis=1)
    if not full.any():
        return []
    f0 = rows[0]["fidelity"]
    base = {"setting": name, "note": note,
            "images_per_class": f0["images_per_class"], "epochs": f0["epochs"],
            "resolution": f0["resolution"], "batch_size": f0["batch_size"],
            "cost_cpu_s": float(np.nanmean(np.nansum(cpu[full], axis=1))),
            "per_training_cpu_s": float(np.nanmean(cpu[full])),
            "max_training_cpu_s": float(np.nanmax(cpu[full])),
            "max_training_wall_s": float(np.nanmax(wall[full])),
            "failed": sum(1 for r in rows if r.get("status") != "COMPLETED")}
    table = [{**base, "ranking": "proxy top-1", **rank_report(acc[full], target, n_boot)}]
    # the same runs ranked by validation cross-entropy (continuous, so less quantised than
    # top-1 on 1,000 images); negated so that higher = better like top-1
    if all(r.get("val_loss") is not None for r in rows):
        vl, _ = _matrix(rows, refs, lambda r: -float(r["val_loss"]))
        table.append({**base, "ranking": "proxy -val loss",
                      **rank_report(vl[full], target, n_boot)})
    # learning-curve extrapolation from the same runs (free)
    if extrapolate_to and all(len(r.get("history", [])) >= 2 for r in rows):
        ex, _ = _matrix(rows, refs, lambda r: extrapolate_top1(
            [h["epoch"] for h in r["history"]], [h["top1"] for h in r["history"]],
            extrapolate_to))
        table.append({**base, "ranking": f"learning curve -> epoch {extrapolate_to:g}",
                      **rank_report(ex[full], target, n_boot)})
    return table + _zero_cost_rows(rows, refs, target, acc, full, base, n_boot)


def _control_row(refs: list[str], target: list[float], n_boot: int) -> dict[str, Any]:
    """The parameter count alone (no training). On XS/S/L1/L3, size and ImageNet top-1 are in
    the same order, so any score that tracks size reaches tau = 1 here."""
    specs = reference_specs(refs)
    p = np.array([[float(analytic_params(specs[n])) for n in refs]])
    rep = rank_report(p, target, n_boot)
    rep.update(seeds=0, seeds_tau1=0, verdict="deterministic (no seeds)",
               significant=rep["tau"] != 0)
    return {"setting": "-", "note": "control", "images_per_class": 0, "epochs": 0,
            "resolution": 0, "batch_size": 0, "cost_cpu_s": 0.0, "per_training_cpu_s": 0.0,
            "max_training_cpu_s": 0.0, "max_training_wall_s": 0.0, "failed": 0,
            "ranking": "params (control)", **rep}


def summarize(results: Sequence[Mapping[str, Any]], refs: Sequence[str] = REFERENCE_NAMES,
              settings: Sequence[Setting] | None = None, n_boot: int = 2000,
              extrapolate_to: float | None = 30.0) -> list[dict[str, Any]]:
    """The fidelity/cost table as data: one row per setting (and per derived ranking).

    cost = CPU-seconds of training all refs once (mean over seeds); per_training = mean and
    max CPU-seconds of one training. Derived rows: ``<setting>+lce`` ranks by the learning
    curve extrapolated to ``extrapolate_to`` epochs (settings with >= 2 epochs); zero-cost
    rows rank by each score (vs published top-1 and vs that setting's proxy top-1).
    """
    refs = list(refs)
    target = published_top1(refs)
    by: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        by.setdefault(r["setting"], []).append(r)
    names = [s.name for s in settings if s.name in by] if settings else list(by)
    notes = {s.name: s.note for s in settings} if settings else {}
    table = []
    for name in names:
        table += _setting_rows(name, by[name], refs, target, notes.get(name, ""), n_boot,
                               extrapolate_to)
    if table:
        table.append(_control_row(refs, target, n_boot))
    return table


def format_table(table: Sequence[Mapping[str, Any]],
                 refs: Sequence[str] = REFERENCE_NAMES) -> str:
    """Markdown table of :func:`summarize` rows."""
    head = ("| setting | ranking | img/cls | ep | px | seeds | tau [95% CI] | rho [95% CI] | "
            "seeds tau=1 | verdict | CPU-s all refs | CPU-s/training (max) | mean top-1 "
            + "/".join(refs) + " |")
    lines = [head, "|" + "---|" * 13]
    for r in table:
        extra = f" (tau vs proxy {r['tau_vs_proxy']:+.2f})" if "tau_vs_proxy" in r else ""
        means = "/".join(f"{v:.1f}" if abs(v) < 1e3 else f"{v:.3g}" for v in r["mean"])
        lines.append(
            f"| {r['setting']} | {r['ranking']}{extra} | {r['images_per_class']} | "
            f"{r['epochs']} | {r['resolution']} | {r['seeds']} | "
            f"{r['tau']:+.2f} [{r['tau_lo']:+.2f}, {r['tau_hi']:+.2f}] | "
            f"{r['rho']:+.2f} [{r['rho_lo']:+.2f}, {r['rho_hi']:+.2f}] | "
            f"{r['seeds_tau1']}/{r['seeds']} | {r['verdict']} | {r['cost_cpu_s']:.0f} | "
            f"{r['per_training_cpu_s']:.0f} ({r['max_training_cpu_s']:.0f}) | {means} |")
    return "\n".join(lines)


def write_report(table: Sequence[Mapping[str, Any]], refs: Sequence[str], out_dir: str
                 ) -> dict[str, str | None]:
    """``report.json`` (the table as data), ``report.md`` (:func:`format_table`) and
    ``fidelity_curve.png`` (tau vs CPU-seconds; none for an empty table) in ``out_dir``."""
    paths: dict[str, str | None] = {"json": os.path.join(out_dir, "report.json"),
                                    "md": os.path.join(out_dir, "report.md"), "png": None}
    write_json_atomic(paths["json"], table, indent=1)
    write_text_atomic(paths["md"], format_table(table, refs) + "\n")
    if table:
        paths["png"] = plot_curve(table, os.path.join(out_dir, "fidelity_curve.png"))
    return paths
