"""Few-shot transfer: how well do N measured rows calibrate a device? (issue 14's protocol)

Given a device's measured table (features ``F``, latencies ``y``) and a prior device, each
draw calibrates on ``n_cal`` rows and predicts the others, with three methods fitted on the
same rows in the same run:

* ``ours``  -- :func:`latency_models.fewshot.fit_features` (shrinkage toward the prior, model
  selection between prior x scale, per-group scales, per-term multipliers and a bounded
  refit, on folds that leave whole model families out);
* ``scale`` -- the prior times one factor (the baseline ours must never lose to);
* ``gmacs`` -- a least-squares line in GMACs.

Draws: ``draws`` random subsets plus the one ``latency suggest`` would pick (greedy Bayesian
design over the table's rows under the prior). Per method and draw: MAPE, share within +-10%,
Kendall tau, +-2 sigma coverage (ours and scale). Also the bound no "prior x one factor" can
beat: the best single factor chosen on the predicted rows themselves.

Used by ``run_search.py latency evaluate --few-shot N [N ...]`` (a user's own table; several
N give a learning curve) and ``bench/bench_latency_fewshot.py`` (the shipped iPhone tables).
Computing (:func:`transfer`, :func:`summarise`) is apart from drawing (:func:`render_summary`,
:func:`render_curve`).
"""
from __future__ import annotations

import time

import numpy as np

from search_space.stats import kendall_tau

from .features import gmacs_of
from .fewshot import CANDIDATES as FITS, fit_features  # FITS: what ours chooses between
from .predictor import within_interval
from .suggest import choose_rows, design_rows

METHODS = ("ours", "scale", "gmacs")


def metrics(pred: np.ndarray, y: np.ndarray, sd: np.ndarray | None = None) -> dict:
    """MAPE, share within +-10 %, Kendall tau, worst error and (with ``sd``) +-2 sigma
    coverage (``predictor.within_interval``) and the mean relative standard deviation of
    ``pred`` against measured ``y``."""
    rel = (pred - y) / y
    out = {"mape": float(np.mean(np.abs(rel))), "within10": float(np.mean(np.abs(rel) <= 0.1)),
           "tau": kendall_tau(pred, y), "max_ape": float(np.max(np.abs(rel)))}
    out["cov2"] = None if sd is None else float(np.mean(within_interval(pred, sd, y)))
    out["rel_sd"] = None if sd is None else float(np.mean(sd / pred))
    return out


def gmacs_line(g_cal: np.ndarray, y_cal: np.ndarray, g_ev: np.ndarray) -> np.ndarray:
    """A least-squares line latency = a * GMACs + b on the calibration rows, at ``g_ev``."""
    a, b = np.polyfit(g_cal, y_cal, 1)
    return a * g_ev + b


def best_factor_mape(pred: np.ndarray, y: np.ndarray) -> float:
    """The lowest MAPE any single factor on ``pred`` can reach on these rows (the factor chosen
    on the evaluation rows themselves: a bound for prior x scale, not a method). MAPE of s*pred
    is convex piecewise linear in s with kinks at y_i / pred_i: the minimum is at a kink."""
    kinks = y / pred
    return float(min(np.mean(np.abs(k * pred / y - 1)) for k in kinks))


def loo_predictions(F: np.ndarray, y: np.ndarray, prior, families: list[str] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Each row predicted (ms, std) by a calibration fitted on all the other rows (each fit's
    own held-out folds by ``families``)."""
    pred, sd = np.empty(len(y)), np.empty(len(y))
    for j in range(len(y)):
        keep = np.arange(len(y)) != j
        fam = None if families is None else [f for i, f in enumerate(families) if i != j]
        ms, s = fit_features(F[keep], y[keep], "loo", prior,
                             families=fam).predict_features(F[j:j + 1])
        pred[j], sd[j] = ms[0], s[0]
    return pred, sd


def evaluate_split(F: np.ndarray, y: np.ndarray, cal: np.ndarray, ev: np.ndarray,
                   prior, families: list[str] | None = None) -> dict:
    """All three methods calibrated on rows ``cal``, evaluated on rows ``ev`` (``families``:
    each row's model family, for ours' held-out folds)."""
    t0 = time.perf_counter()
    fam = None if families is None else [families[i] for i in cal]
    ours = fit_features(F[cal], y[cal], "target", prior, families=fam)
    fit_s = time.perf_counter() - t0
    scale = fit_features(F[cal], y[cal], "target", prior, candidates=("scale",))
    g = gmacs_of(F)
    pm, ps = ours.predict_features(F[ev])
    sm, ss = scale.predict_features(F[ev])
    return {"ours": metrics(pm, y[ev], ps), "scale": metrics(sm, y[ev], ss),
            "gmacs": metrics(gmacs_line(g[cal], y[cal], g[ev]), y[ev]),
            "scale_bound": best_factor_mape(sm, y[ev]),
            "candidate": ours.meta["candidate"], "kappa": ours.kappa, "fit_s": fit_s,
            "extrapolating": int(sum(bool(w) for w in ours.extrapolation(F[ev])))}


def transfer(F: np.ndarray, y: np.ndarray, prior, n_cal: int, draws: int, seed: int,
             families: list[str] | None = None) -> dict:
    """``draws`` random calibration sets of ``n_cal`` rows and the suggest set, each
    evaluated on the rows it leaves out."""
    rng = np.random.default_rng(seed)
    everything = np.arange(len(y))
    rows = []
    for _ in range(draws):
        cal = np.sort(rng.choice(len(y), n_cal, replace=False))
        rows.append(evaluate_split(F, y, cal, np.setdiff1d(everything, cal), prior, families))
    sug = np.array(sorted(choose_rows(design_rows(F, prior), n_cal)))
    suggest = evaluate_split(F, y, sug, np.setdiff1d(everything, sug), prior, families)
    return {"random": rows, "suggest": suggest, "suggest_rows": sug.tolist(),
            "n_cal": n_cal, "rows": len(y)}


def summarise(res: dict) -> dict:
    """Median / worst over the random draws per method and metric; the suggest draw; how often
    ours lost to prior x scale; which fit ours chose."""
    out: dict = {"n_cal": res.get("n_cal"), "rows": res.get("rows")}
    r = res["random"]
    for m in METHODS:
        for k in ("mape", "within10", "tau", "cov2"):
            vals = [x[m][k] for x in r if x[m][k] is not None]
            if vals:
                out[f"{m}_{k}_median"] = float(np.median(vals))
                out[f"{m}_{k}_worst"] = float(max(vals) if k == "mape" else min(vals))
            out[f"{m}_{k}_suggest"] = res["suggest"][m][k]
    out["scale_bound_mape_median"] = float(np.median([x["scale_bound"] for x in r]))
    out["ours_worse_than_scale_draws"] = sum(x["ours"]["mape"] > x["scale"]["mape"] + 1e-9
                                             for x in r)
    out["suggest_beats_random_draws"] = sum(res["suggest"]["ours"]["mape"] < x["ours"]["mape"]
                                            for x in r)
    out["random_draws"] = len(r)
    out["candidates"] = {c: sum(x["candidate"] == c for x in r) for c in FITS}
    return out


def render_summary(title: str, s: dict) -> str:
    """The summary as a table: one line per method (median and worst over the random draws,
    then the suggest draw), the single-factor bound, and the selection's record."""
    def f(k: str, pct: bool = True) -> str:
        v = s.get(k)
        return "    -" if v is None else (f"{100 * v:5.1f}%" if pct else f"{v:5.3f}")

    lines = [title,
             f"{'method':<8} {'MAPE med':>9} {'worst':>7} {'+-10% med':>10} {'tau med':>8} "
             f"{'cov2 med':>9} | suggest: {'MAPE':>6} {'+-10%':>6} {'tau':>6} {'cov2':>6}"]
    for m in METHODS:
        lines.append(f"{m:<8} {f(f'{m}_mape_median'):>9} {f(f'{m}_mape_worst'):>7} "
                     f"{f(f'{m}_within10_median'):>10} {f(f'{m}_tau_median', False):>8} "
                     f"{f(f'{m}_cov2_median'):>9} | {f(f'{m}_mape_suggest'):>14} "
                     f"{f(f'{m}_within10_suggest'):>6} {f(f'{m}_tau_suggest', False):>6} "
                     f"{f(f'{m}_cov2_suggest'):>6}")
    lines.append("bound: the best single factor on the prior, chosen on the held-out rows "
                 f"themselves, MAPE median {100 * s['scale_bound_mape_median']:.1f}%")
    lines.append(f"ours worse than scale in {s['ours_worse_than_scale_draws']} of "
                 f"{s['random_draws']} random draws; suggest draw beats "
                 f"{s['suggest_beats_random_draws']} of them; chosen fits {s['candidates']}")
    return "\n".join(lines)


def render_curve(curve: dict[int, dict]) -> str:
    """How the error falls with the number of calibration rows: one line per N (median over
    the random draws of ours and prior x scale, the single-factor bound, ours' worst draw)."""
    lines = ["how the error falls with the rows measured (median over the random draws)",
             f"{'rows':>5} {'ours MAPE':>10} {'worst':>7} {'+-10%':>6} {'tau':>6} "
             f"{'scale MAPE':>11} {'bound':>6}"]
    for n, s in sorted(curve.items()):
        lines.append(f"{n:>5} {100 * s['ours_mape_median']:>9.1f}% "
                     f"{100 * s['ours_mape_worst']:>6.1f}% {100 * s['ours_within10_median']:>5.0f}% "
                     f"{s['ours_tau_median']:>6.3f} {100 * s['scale_mape_median']:>10.1f}% "
                     f"{100 * s['scale_bound_mape_median']:>5.1f}%")
    return "\n".join(lines)
