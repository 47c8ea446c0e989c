"""Proxy fidelity study: does cheap training rank architectures the way ImageNet does?

For each proxy *setting* (a Fidelity plus a data source and an optional per-architecture
epoch rule) the reference architectures (XS/S/L1/L3) are trained over several seeds. The
study reports Kendall tau and Spearman rho between the mean proxy top-1 and the references'
published ImageNet top-1, with a percentile bootstrap interval over seeds, and the cost in
CPU-seconds (``time.process_time`` of the training process: every thread counted).

Three layers, usable on their own:

* statistics: :func:`kendall_tau`, :func:`spearman_rho`, :func:`bootstrap_over_seeds`,
  :func:`rank_report` (pure functions on arrays, no torch);
* measurement: :func:`train_reference` (one training, one process, CPU-seconds counted),
  zero-cost scores (search.proxy.zero_cost), :func:`run_study` (resumable: every finished training is a JSON
  file in ``runs/fidelity/cache/``; every one is also a trial in the results store);
* report: :func:`summarize` (the fidelity/cost table as data), :func:`format_table`,
  :func:`plot_curve` (matplotlib drawing step, separate from the data step).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .proxy.fidelity import Fidelity

__all__ = ["Setting", "REFERENCE_NAMES", "reference_specs", "published_top1", "kendall_tau",
           "spearman_rho", "bootstrap_over_seeds", "rank_report", "extrapolate_top1",
           "train_reference", "run_study", "summarize", "format_table",
           "plot_curve", "load_cached", "SWEEP", "CODE_VERSION"]

CODE_VERSION = "fidelity_study/1"
REFERENCE_NAMES = ("XS", "S", "L1", "L3")


# ---------------------------------------------------------------------------------------------
# statistics (pure)
# ---------------------------------------------------------------------------------------------
def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall tau-b (ties handled as scipy does). NaN if either side is constant."""
    from scipy.stats import kendalltau

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"kendall_tau: need two equal-length sequences of >= 2, got {len(x)}, {len(y)}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(kendalltau(x, y).statistic)


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties). NaN if either side is constant."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"spearman_rho: need two equal-length sequences of >= 2, got {len(x)}, {len(y)}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def bootstrap_over_seeds(scores: np.ndarray, target: Sequence[float],
                         stat: Callable[[Sequence[float], Sequence[float]], float],
                         n_boot: int = 2000, level: float = 0.95,
                         rng: int | np.random.Generator = 0) -> tuple[float, float, float]:
    """(point, low, high) of ``stat(mean over seeds of scores, target)``.

    ``scores`` is [seeds, architectures] (NaN = missing run, ignored in the mean). The interval
    is the percentile bootstrap over seeds: resample whole seeds with replacement (an
    architecture's runs under one seed stay together), average, apply ``stat``. With one seed
    the interval is the point (no spread can be estimated) -- :func:`rank_report` flags that.
    A mean (or resample mean) that is constant (stat NaN) counts as 0: no ranking information.
    """
    s = np.atleast_2d(np.asarray(scores, float))
    target = list(target)
    if s.shape[1] != len(target):
        raise ValueError(f"bootstrap_over_seeds: scores have {s.shape[1]} columns, target {len(target)}")
    with np.errstate(all="ignore"):
        point = stat(np.nanmean(s, axis=0), target)
    if not math.isfinite(point):
        point = 0.0  # constant scores (e.g. every model at chance): no ranking information
    k = s.shape[0]
    if k < 2:
        return point, point, point
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    idx = gen.integers(0, k, size=(n_boot, k))
    vals = np.empty(n_boot)
    with np.errstate(all="ignore"):
        for b in range(n_boot):
            m = np.nanmean(s[idx[b]], axis=0)
            v = stat(m, target) if np.all(np.isfinite(m)) else float("nan")
            vals[b] = 0.0 if not math.isfinite(v) else v
    a = (1 - level) / 2
    lo, hi = np.quantile(vals, [a, 1 - a])
    return point, float(lo), float(hi)


def rank_report(scores: np.ndarray, target: Sequence[float], n_boot: int = 2000,
                rng: int = 0) -> dict[str, Any]:
    """Tau and rho of mean scores vs target, bootstrap intervals, per-seed taus, significance.

    ``significant`` is True only when the tau interval excludes zero; with fewer than two
    complete seeds there is no interval and the verdict is "not significant (1 seed)".
    """
    s = np.atleast_2d(np.asarray(scores, float))
    complete = s[np.all(np.isfinite(s), axis=1)]
    tau, tlo, thi = bootstrap_over_seeds(s, target, kendall_tau, n_boot, rng=rng)
    rho, rlo, rhi = bootstrap_over_seeds(s, target, spearman_rho, n_boot, rng=rng)
    per_seed = [kendall_tau(row, target) for row in complete]
    n = len(complete)
    if n < 2:
        verdict, sig = "not significant (fewer than 2 seeds: no interval)", False
    elif tlo > 0 or thi < 0:
        verdict, sig = "significant", True
    else:
        verdict, sig = "not significant (interval spans zero)", False
    return {"tau": tau, "tau_lo": tlo, "tau_hi": thi, "rho": rho, "rho_lo": rlo, "rho_hi": rhi,
            "tau_per_seed": per_seed, "seeds": n,
            "seeds_tau1": int(sum(1 for t in per_seed if t > 1 - 1e-9)),
            "significant": sig, "verdict": verdict,
            "mean": [float(v) for v in np.nanmean(s, axis=0)]}


def extrapolate_top1(epochs: Sequence[float], top1: Sequence[float], to_epoch: float) -> float:
    """Learning-curve extrapolation: fit err(t) = a * t^b (least squares in log-log) to the
    per-epoch top-1 and evaluate at ``to_epoch``. Needs >= 2 epochs; clipped to [0, 100]."""
    t = np.asarray(epochs, float)
    e = np.clip(100.0 - np.asarray(top1, float), 1e-3, None)
    if len(t) < 2:
        raise ValueError("extrapolate_top1: need at least two epochs of history")
    b, loga = np.polyfit(np.log(t), np.log(e), 1)
    return float(np.clip(100.0 - math.exp(loga) * to_epoch ** b, 0.0, 100.0))


# ---------------------------------------------------------------------------------------------
# settings and references
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One proxy setting of the study.

    ``source`` None = the embedded CIFAR-10 subset (500 train / 100 val per class); a path =
    an ImageFolder root. ``epoch_rule`` "fixed" trains every architecture for
    ``fidelity.epochs``; "equal_compute" gives each architecture the training compute of
    ``budget_ref`` at ``fidelity.epochs`` (epochs = round(epochs * gmacs(ref) / gmacs(arch)),
    at least 1): the fixed-compute-budget alternative to fixed epochs.
    """

    name: str
    fidelity: Fidelity
    source: str | None = None
    epoch_rule: str = "fixed"
    budget_ref: str = "S"
    note: str = ""

    def __post_init__(self) -> None:
        if self.epoch_rule not in ("fixed", "equal_compute"):
            raise ValueError(f"setting {self.name}: epoch_rule={self.epoch_rule!r}: allowed fixed, equal_compute")

    def fidelity_for(self, name: str, spec) -> Fidelity:
        if self.epoch_rule == "fixed":
            return self.fidelity
        from search_space.costs import analytic_gmacs
        from search_space.spec import PRESETS

        r = self.fidelity.resolution
        g_ref = analytic_gmacs(PRESETS[self.budget_ref].replace(resolution=r))
        g = analytic_gmacs(spec.replace(resolution=r))
        return self.fidelity.replace(epochs=max(1, int(round(self.fidelity.epochs * g_ref / g))))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "fidelity": self.fidelity.to_dict(), "source": self.source,
                "epoch_rule": self.epoch_rule, "budget_ref": self.budget_ref, "note": self.note}


def reference_specs(names: Iterable[str] = REFERENCE_NAMES) -> dict[str, Any]:
    from search_space.spec import PRESETS

    out = {}
    for n in names:
        if n.upper() not in PRESETS:
            raise ValueError(f"--refs {n!r}: allowed {', '.join(PRESETS)}")
        out[n.upper()] = PRESETS[n.upper()]
    return out


def published_top1(names: Iterable[str]) -> list[float]:
    from search_space.spec import PUBLISHED

    return [float(PUBLISHED[n]["top1"]) for n in names]


# The sweep planned for a 2-core machine (32 px; ~28 ms CPU per image-epoch for all four refs).
# The sweep's base: 300 images x 3 epochs, the embedded default before this study (pinned
# here so the sweep and its cache keys do not move when DEFAULT_FIDELITY does).
_B = Fidelity(images_per_class=300, epochs=3)
CIFAR_FULL = "/work/shared/datasets/cifar10"  # bench/CLI only: never read at run time by the search
# Cheapest first: on a loaded machine the run is cut short, and the cheap end of the curve is
# what the embedded default must come from.
SWEEP: tuple[Setting, ...] = (
    Setting("i100-e1", _B.replace(images_per_class=100, epochs=1), note="cheapest"),
    Setting("i100-e3", _B.replace(images_per_class=100, epochs=3),
            note="same image-epochs as i300-e1: fewer images, more epochs"),
    Setting("i300-e1", _B.replace(epochs=1), note="same image-epochs as i100-e3: more images, fewer epochs"),
    Setting("i300-e3", _B, note="DEFAULT_FIDELITY before the study"),
    Setting("i500-e2", _B.replace(images_per_class=500, epochs=2), note="more images, fewer epochs; DEFAULT_FIDELITY"),
    Setting("i100-e9", _B.replace(images_per_class=100, epochs=9), note="fewer images, more epochs"),
    Setting("i300-e3-eqc", _B, epoch_rule="equal_compute", budget_ref="S",
            note="equal compute (S's) per arch, not equal epochs"),
    Setting("i1000-e1", _B.replace(images_per_class=1000, epochs=1), source=CIFAR_FULL,
            note="full CIFAR-10 JPEGs"),
    Setting("i300-e3-plain", _B.replace(label_smoothing=0.0, crop_padding=0, hflip=False),
            note="no label smoothing, no augmentation"),
    Setting("i300-e3-bs32", _B.replace(batch_size=32), note="batch 32 (twice the steps)"),
    Setting("i500-e5", _B.replace(images_per_class=500, epochs=5), note="expensive"),
    Setting("i2000-e1", _B.replace(images_per_class=2000, epochs=1), source=CIFAR_FULL,
            note="full CIFAR-10, more images"),
    Setting("i5000-e1", _B.replace(images_per_class=5000, val_per_class=500, epochs=1),
            source=CIFAR_FULL, note="all of CIFAR-10's training set once; 5,000 val images"),
    Setting("r64-i100-e2", _B.replace(images_per_class=100, epochs=2, resolution=64, crop_padding=8),
            note="64 px"),
)


# ---------------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------------
def train_reference(spec, fidelity: Fidelity, data, seed: int, threads: int = 1,
                    device: str = "cpu") -> dict[str, Any]:
    """One proxy training; adds ``cpu_seconds`` (process CPU time, all threads) and wall time."""
    from .proxy.train import NonFiniteLoss, train_proxy

    c0, w0 = time.process_time(), time.perf_counter()
    try:
        r = train_proxy(spec, fidelity, data, seed=seed, device=device, threads=threads)
        r["status"] = "COMPLETED"
    except NonFiniteLoss as e:  # a diverged reference is a result (top-1 = chance), not a crash
        r = {"status": "FAILED", "error": str(e), "top1": 100.0 / data.num_classes,
             "history": [], "epochs_done": 0}
    r["cpu_seconds"] = time.process_time() - c0
    r["wall_seconds"] = time.perf_counter() - w0
    return r


def _atomic_json(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _task(args: tuple) -> dict[str, Any]:
    """Worker body (module level so ProcessPoolExecutor can pickle it)."""
    setting, name, spec, data, seed, threads, with_zc, path = args
    if os.path.isfile(path):  # another run of the study (same cache) finished it meanwhile
        with open(path, encoding="utf-8") as f:
            return {**json.load(f), "_cached": True}
    fid = setting.fidelity_for(name, spec)
    import torch

    torch.set_num_threads(threads)
    r = train_reference(spec, fid, data, seed, threads=threads)
    if with_zc:
        c0 = time.process_time()
        from .proxy.zero_cost import zero_cost_scores  # the search's own scores: one implementation
        r["zero_cost"] = zero_cost_scores(spec, data, seed=seed, batch_size=64)
        r["zero_cost_cpu_seconds"] = time.process_time() - c0
    r.update(setting=setting.name, ref=name, seed=seed, fidelity=fid.to_dict(),
             dataset_id=data.dataset_id, finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return r


def _cache_path(out_dir: str, setting: Setting, data_id: str, name: str, seed: int) -> str:
    from results.store import canonical_json
    import hashlib

    sk = hashlib.sha256(canonical_json({**setting.to_dict(), "name": None, "note": None,
                                        "data": data_id}).encode()).hexdigest()[:12]
    return os.path.join(out_dir, "cache", f"{setting.name}-{sk}", f"{name}-seed{seed}.json")


def _store_result(store, setting: Setting, data, spec, r: Mapping[str, Any]) -> None:
    """One training = one trial of study ``fidelity-<setting>``; epochs as epoch metrics."""
    sid = store.get_or_create_study(
        # The note is free text (edited as the study evolves): not part of the study identity.
        f"fidelity-{setting.name}", config={"kind": "fidelity-study", "setting": {
            k: v for k, v in setting.to_dict().items() if k != "note"}},
        seed=0, dataset_id=data.dataset_id,
        fidelity={**setting.fidelity.to_dict(),
                  **({"epoch_rule": setting.epoch_rule, "budget_ref": setting.budget_ref}
                     if setting.epoch_rule != "fixed" else {})},
        device="cpu", code_version=CODE_VERSION)
    store.upsert_architecture(spec)
    key = f"{r['ref']}-seed{r['seed']}"
    tid = store.start_trial(sid, key, spec.arch_hash, config={"ref": r["ref"], "fidelity": r["fidelity"]},
                            seed=int(r["seed"]))
    for h in r.get("history", []):
        store.log_epoch(tid, int(h["epoch"]), h)
    zc = r.get("zero_cost", {})
    metrics = {"top1": r.get("top1"), "val_loss": r.get("val_loss"),
               "train_seconds": r.get("train_seconds"), "cpu_seconds": r["cpu_seconds"],
               "wall_seconds": r["wall_seconds"], **{k: v for k, v in zc.items()
                                                      if v is not None and math.isfinite(v)}}
    metrics = {k: v for k, v in metrics.items() if v is not None}
    store.finish_trial(tid, r["status"], metrics=metrics,
                       fidelity_reached={**r["fidelity"], "epochs": r.get("epochs_done", 0)},
                       error=r.get("error"), timings={"cpu_seconds": r["cpu_seconds"],
                                                      "wall_seconds": r["wall_seconds"]})


def run_study(settings: Sequence[Setting], seeds: Sequence[int], *, refs: Sequence[str] = REFERENCE_NAMES,
              out_dir: str = "runs/fidelity", cache_dir: str = "runs/cache", workers: int = 1,
              threads: int = 1, store=None, zero_cost: bool = True,
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train every (setting, seed, ref) not yet cached; return all results (cached + new).

    Order: seeds 0 and 1 of every setting first (so each setting gets an interval early), then
    the further seeds. Finished trainings are written to ``out_dir/cache`` as they arrive and,
    if ``store`` is given, as trials of study ``fidelity-<setting>``.
    """
    from .proxy.data import prepare_data

    specs = reference_specs(refs)
    datas = {}
    for st in settings:
        datas[st.name] = prepare_data(st.source, st.fidelity, cache_dir=cache_dir)
    seeds = list(seeds)
    order = [(st, s) for st in settings for s in seeds[:2]] + \
        [(st, s) for s in seeds[2:] for st in settings]
    results, todo = [], []
    for st, seed in order:
        for n in specs:
            p = _cache_path(out_dir, st, datas[st.name].dataset_id, n, seed)
            if os.path.isfile(p):
                with open(p, encoding="utf-8") as f:
                    results.append(json.load(f))
            else:
                todo.append((p, (st, n, specs[n], datas[st.name], seed, threads, zero_cost, p)))
    log(f"fidelity study: {len(results)} cached, {len(todo)} to train "
        f"({workers} worker(s) x {threads} thread(s))")

    def done(p: str, args: tuple, r: dict) -> None:
        if r.pop("_cached", False):  # written (file and store) by the run that trained it
            results.append(r)
            return
        _atomic_json(p, r)
        results.append(r)
        if store is not None:
            # The cache file is the record the report reads; a store conflict (e.g. a study of
            # the same name made with other settings) must not abort the trainings still running.
            try:
                _store_result(store, args[0], args[3], args[2], r)
            except ValueError as e:
                log(f"  warning: {r['setting']} {r['ref']} seed {r['seed']} not written to the "
                    f"results store: {str(e).splitlines()[0]}")
        log(f"  {r['setting']:>16} {r['ref']:>3} seed {r['seed']}: top-1 {r['top1']:.1f}%  "
            f"{r['cpu_seconds']:.0f} CPU-s  {r['wall_seconds']:.0f} s wall  [{r['status']}]")

    if workers <= 1:
        for p, args in todo:
            done(p, args, _task(args))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawn: no forked torch thread pools; each worker imports fresh.
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
            futs = {ex.submit(_task, args): (p, args) for p, args in todo}
            from concurrent.futures import as_completed

            for fu in as_completed(futs):
                p, args = futs[fu]
                done(p, args, fu.result())
    return results


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def _matrix(rows: Sequence[Mapping[str, Any]], refs: Sequence[str], key: Callable[[Mapping], float]
            ) -> tuple[np.ndarray, list[int]]:
    seeds = sorted({int(r["seed"]) for r in rows})
    m = np.full((len(seeds), len(refs)), np.nan)
    for r in rows:
        if r["ref"] in refs:
            m[seeds.index(int(r["seed"])), list(refs).index(r["ref"])] = key(r)
    return m, seeds


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
        rows = by[name]
        acc, seeds = _matrix(rows, refs, lambda r: float(r["top1"]))
        cpu, _ = _matrix(rows, refs, lambda r: float(r["cpu_seconds"]))
        wall, _ = _matrix(rows, refs, lambda r: float(r["wall_seconds"]))
        full = np.all(np.isfinite(acc), axis=1)
        if not full.any():
            continue
        rep = rank_report(acc[full], target, n_boot)
        f0 = rows[0]["fidelity"]
        base = {"setting": name, "note": notes.get(name, ""),
                "images_per_class": f0["images_per_class"], "epochs": f0["epochs"],
                "resolution": f0["resolution"], "batch_size": f0["batch_size"],
                "cost_cpu_s": float(np.nanmean(np.nansum(cpu[full], axis=1))),
                "per_training_cpu_s": float(np.nanmean(cpu[full])),
                "max_training_cpu_s": float(np.nanmax(cpu[full])),
                "max_training_wall_s": float(np.nanmax(wall[full])),
                "failed": sum(1 for r in rows if r.get("status") != "COMPLETED")}
        table.append({**base, "ranking": "proxy top-1", **rep})
        # the same runs ranked by validation cross-entropy (continuous, so less quantised than
        # top-1 on 1,000 images); negated so that higher = better like top-1
        if all(r.get("val_loss") is not None for r in rows):
            vl, _ = _matrix(rows, refs, lambda r: -float(r["val_loss"]))
            table.append({**base, "ranking": "proxy -val loss", **rank_report(vl[full], target, n_boot)})
        # learning-curve extrapolation from the same runs (free)
        if extrapolate_to and all(len(r.get("history", [])) >= 2 for r in rows):
            ex, _ = _matrix(rows, refs, lambda r: extrapolate_top1(
                [h["epoch"] for h in r["history"]], [h["top1"] for h in r["history"]],
                extrapolate_to))
            table.append({**base, "ranking": f"learning curve -> epoch {extrapolate_to:g}",
                          **rank_report(ex[full], target, n_boot)})
        for zc in ("synflow", "naswot", "grad_norm"):
            if not all(zc in r.get("zero_cost", {}) for r in rows):
                continue
            z, _ = _matrix(rows, refs, lambda r: float(r["zero_cost"][zc]))
            zc_cpu = [r.get("zero_cost_cpu_seconds", float("nan")) for r in rows]
            zcost = float(np.nanmean(zc_cpu))
            zrep = rank_report(z[full], target, n_boot)
            # vs proxy accuracy: per seed, tau(score, proxy top-1) -> mean; no bootstrap target
            vs_proxy = [kendall_tau(z[i], acc[i]) for i in np.flatnonzero(full)]
            table.append({**base, "ranking": f"zero-cost {zc}", **zrep,
                          "cost_cpu_s": zcost * len(refs), "per_training_cpu_s": zcost,
                          "max_training_cpu_s": float(np.nanmax(zc_cpu)),
                          "tau_vs_proxy": float(np.nanmean(vs_proxy)) if np.isfinite(vs_proxy).any()
                          else float("nan"),
                          "tau_vs_proxy_per_seed": vs_proxy})
    # Control: the parameter count alone (no training). On XS/S/L1/L3, size and ImageNet top-1
    # are in the same order, so any score that tracks size reaches tau = 1 here.
    if table:
        from search_space.costs import analytic_params

        specs = reference_specs(refs)
        p = np.array([[float(analytic_params(specs[n])) for n in refs]])
        rep = rank_report(p, target, n_boot)
        rep.update(seeds=0, seeds_tau1=0, verdict="deterministic (no seeds)", significant=rep["tau"] != 0)
        table.append({"setting": "-", "note": "control", "images_per_class": 0, "epochs": 0,
                      "resolution": 0, "batch_size": 0, "cost_cpu_s": 0.0,
                      "per_training_cpu_s": 0.0, "max_training_cpu_s": 0.0,
                      "max_training_wall_s": 0.0, "failed": 0, "ranking": "params (control)", **rep})
    return table


def format_table(table: Sequence[Mapping[str, Any]], refs: Sequence[str] = REFERENCE_NAMES) -> str:
    """Markdown table of :func:`summarize` rows."""
    head = ("| setting | ranking | img/cls | ep | px | seeds | tau [95% CI] | rho [95% CI] | "
            "seeds tau=1 | verdict | CPU-s all refs | CPU-s/training (max) | mean top-1 "
            + "/".join(refs) + " |")
    lines = [head, "|" + "---|" * 13]
    for r in table:
        extra = f" (tau vs proxy {r['tau_vs_proxy']:+.2f})" if "tau_vs_proxy" in r else ""
        lines.append(
            f"| {r['setting']} | {r['ranking']}{extra} | {r['images_per_class']} | {r['epochs']} | "
            f"{r['resolution']} | {r['seeds']} | {r['tau']:+.2f} [{r['tau_lo']:+.2f}, {r['tau_hi']:+.2f}] | "
            f"{r['rho']:+.2f} [{r['rho_lo']:+.2f}, {r['rho_hi']:+.2f}] | {r['seeds_tau1']}/{r['seeds']} | "
            f"{r['verdict']} | {r['cost_cpu_s']:.0f} | {r['per_training_cpu_s']:.0f} "
            f"({r['max_training_cpu_s']:.0f}) | " + "/".join(f"{v:.1f}" if abs(v) < 1e3 else f"{v:.3g}"
                                                             for v in r["mean"]) + " |")
    return "\n".join(lines)


def plot_curve(table: Sequence[Mapping[str, Any]], path: str) -> str:
    """Drawing step: tau (with bootstrap interval) against CPU-seconds, one point per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    styles = {"proxy top-1": ("o", "C0"), "proxy -val": ("D", "C3"), "learning": ("s", "C1"),
              "zero-cost": ("^", "C2"), "params": ("*", "k")}
    seen = set()
    for r in table:
        kind = next(k for k in styles if r["ranking"].startswith(k))
        if kind == "params":  # zero cost: not drawable on a log axis; stated in the title instead
            continue
        m, c = styles[kind]
        # small multiplicative x offsets per kind: rankings of the same runs share a cost and
        # would otherwise hide each other
        x = r["cost_cpu_s"] * {"proxy top-1": 1.0, "proxy -val": 1.07, "learning": 1.14}.get(kind, 1.0)
        ax.errorbar(x, r["tau"], yerr=[[r["tau"] - r["tau_lo"]], [r["tau_hi"] - r["tau"]]],
                    fmt=m, color=c, capsize=3, label=None if kind in seen else kind)
        seen.add(kind)
        if kind == "proxy top-1":
            ax.annotate(r["setting"], (r["cost_cpu_s"], r["tau"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.axhline(1.0, color="grey", lw=0.5, ls="--")
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_ylim(-1.1, 1.1)
    ax.set_xlabel("CPU-seconds to score all references once (mean over seeds)")
    ax.set_ylabel("Kendall tau vs published ImageNet top-1")
    ax.set_title("Proxy fidelity vs cost (XS/S/L1/L3; bars: 95% bootstrap over seeds)")
    ax.legend(loc="center left", fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def load_cached(out_dir: str) -> list[dict[str, Any]]:
    """Every finished training cached under ``out_dir/cache`` (for --report-only)."""
    root = os.path.join(out_dir, "cache")
    out = []
    if not os.path.isdir(root):
        raise FileNotFoundError(f"--out {out_dir}: no cache/ directory (nothing trained yet)")
    for d in sorted(os.listdir(root)):
        for f in sorted(os.listdir(os.path.join(root, d))):
            if f.endswith(".json") and not f.startswith("."):
                with open(os.path.join(root, d, f), encoding="utf-8") as fh:
                    out.append(json.load(fh))
    return out
