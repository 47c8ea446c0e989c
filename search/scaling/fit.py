"""The ``fit`` command as a library function: scaling laws fitted to the proxy results in the
results store, guarded extrapolation, and the proxy -> full-scale relation.

:func:`collect_points` gathers the results (one dataset and fidelity); :func:`run_fit` fits,
prints, and writes ``<out>/fit.json`` and ``fit.png``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from latency_models import load_predictor
from results.families import get_family
from results.options import open_store
from results.store import fidelity_key
from search_space.cli_types import comma_items
from search_space.errors import NotFoundError, UsageError
from search_space.io import write_json_atomic

from .family import utc_stamp
from .laws import ScalingFit, fit_proxy_to_full, fit_scaling_law
from .plots import fit_plot

__all__ = ["COSTS", "FitRequest", "parse_costs", "parse_at", "collect_points", "run_fit"]

COSTS = ("gmacs", "params", "latency_ms")


def parse_costs(text: str) -> tuple[str, ...]:
    """``--x``: a comma list of gmacs, params, latency_ms."""
    allowed = f"a comma list of {', '.join(COSTS)}"
    xs = comma_items(text, "--x", allowed)
    if any(x not in COSTS for x in xs):
        raise UsageError(f"--x {text!r}: allowed {allowed}")
    return xs


def parse_at(items: Sequence[str]) -> tuple[tuple[str, float], ...]:
    """``--at COST=VALUE`` (repeatable) -> ((cost, value), ...)."""
    out = []
    for item in items:
        k, _, v = item.partition("=")
        try:
            val = float(v)
        except ValueError:
            raise UsageError(f"--at {item!r}: expected COST=VALUE, e.g. gmacs=2.5") from None
        if k not in COSTS or not val > 0:
            raise UsageError(f"--at {item!r}: COST is {'/'.join(COSTS)}, VALUE > 0")
        out.append((k, val))
    return tuple(out)


@dataclass(frozen=True)
class FitRequest:
    """What to fit; validated on construction (one-line UsageError)."""

    # Studies whose COMPLETED trials are the points (None: all); they must share one dataset
    # and proxy fidelity, or the accuracies are not comparable.
    studies: tuple[str, ...] | None = None
    costs: tuple[str, ...] = COSTS  # the x's fitted against, each on its own
    form: str = "auto"  # power / loglinear / auto (lower leave-one-out error)
    family: str | None = None  # extrapolate to this stored family's members
    at: tuple[tuple[str, float], ...] = ()  # further extrapolation points (cost, value)
    # Extrapolation guards: refuse beyond the fitted range by more than max_ratio, or with a
    # 95 % interval wider than max_ci top-1 points.
    max_ratio: float = 2.0
    max_ci: float = 10.0
    n_boot: int = 200  # pairs-bootstrap resamples
    seed: int = 0
    out: str | None = None  # default runs/fit/<UTC time>

    def __post_init__(self) -> None:
        if self.form not in ("auto", "power", "loglinear"):
            raise UsageError(f"--form {self.form!r}: allowed auto, power, loglinear")
        if not self.max_ratio >= 1:
            raise UsageError(f"--max-ratio {self.max_ratio}: allowed >= 1")
        if not self.max_ci > 0:
            raise UsageError(f"--max-ci {self.max_ci}: allowed > 0")
        if self.n_boot < 0:
            raise UsageError(f"--bootstrap {self.n_boot}: allowed >= 0")


def _chosen_studies(store, studies: Sequence[str] | None) -> list[dict]:
    all_studies = store.studies()
    if not studies:
        return all_studies
    known = {s["name"]: s for s in all_studies}
    missing = [n for n in studies if n not in known]
    if missing:
        raise NotFoundError(f"--study {missing[0]!r}: not in this database (have: "
                            f"{', '.join(sorted(known)[:8]) or 'none'})")
    return [known[n] for n in studies]


def collect_points(store, studies: Sequence[str] | None, predictor=None) -> dict[str, Any]:
    """COMPLETED trials with a top-1 from the chosen studies (default all), which must share
    one dataset and proxy fidelity. Latency is re-predicted on ``predictor`` when given."""
    chosen = _chosen_studies(store, studies)
    keys = {(s["dataset_id"], fidelity_key(s["fidelity"])) for s in chosen}
    if len(keys) > 1:
        raise UsageError(f"the selected studies use {len(keys)} different dataset/fidelity "
                         "settings (proxy accuracies are not comparable); pick --study")
    rows = []
    for s in chosen:
        for t in store.trials(s["id"], status="COMPLETED"):
            if t["top1"] is None:
                continue
            rows.append({"arch_hash": t["arch_hash"], "top1": t["top1"], "gmacs": t["gmacs"],
                         "params": t["params"], "latency_ms": t["latency_ms"],
                         "study": s["name"]})
    if predictor is not None and rows:
        hs = sorted({r["arch_hash"] for r in rows})
        ms, _ = predictor.predict_many([store.spec(h) for h in hs])
        lat = dict(zip(hs, [float(v) for v in ms]))
        for r in rows:
            r["latency_ms"] = lat[r["arch_hash"]]
    return {"rows": rows, "studies": [s["name"] for s in chosen],
            "fidelity": chosen[0]["fidelity"] if chosen else None}


def _print_fit(ft: ScalingFit, log: Callable[[str], None]) -> None:
    ps = ", ".join(f"{k}={v:.4g} [{ft.params_ci_cov[k][0]:.4g}, {ft.params_ci_cov[k][1]:.4g}]"
                   for k, v in ft.params.items())
    log(f"\ntop-1 vs {ft.x_name}: {ft.formula}, x0={ft.x0:.4g}, n={ft.n}\n  {ps}  "
        "(95% CI, covariance)")
    pb = ", ".join(f"{k} [{lo:.4g}, {hi:.4g}]" for k, (lo, hi) in ft.params_ci_boot.items())
    log(f"  bootstrap 95% CI: {pb}")
    nan = float("nan")
    log(f"  in-sample RMSE {ft.rmse:.2f}  leave-one-out RMSE "
        f"{ft.loo_rmse if ft.loo_rmse is not None else nan:.2f}  largest-20% hold-out RMSE "
        f"{ft.holdout_rmse if ft.holdout_rmse is not None else nan:.2f} (top-1 points)")
    for w in ft.warnings:
        log(f"  warning: {w}")


def _extrapolate(ft: ScalingFit, targets: Sequence[float], req: FitRequest,
                 log: Callable[[str], None]) -> list[dict[str, Any]]:
    out = []
    for v in targets:
        e = ft.extrapolate(v, max_ratio=req.max_ratio, max_ci=req.max_ci)
        out.append(e)
        verdict = "" if e["supported"] else f"  NOT SUPPORTED: {e['reason']}"
        log(f"  at {ft.x_name}={v:.4g}: top-1 {e['pred']:.2f} [{e['lo']:.2f}, {e['hi']:.2f}]"
            f"{' (extrapolated)' if not e['inside_range'] else ''}{verdict}")
    return out


def _proxy_to_full(rows: Sequence[Mapping[str, Any]], runs: Sequence[Mapping[str, Any]],
                   log: Callable[[str], None]) -> dict[str, Any]:
    """full_top1 = a + b * proxy_top1 over architectures with both (means over repeats)."""
    proxy: dict[str, list[float]] = {}
    for r in rows:
        proxy.setdefault(r["arch_hash"], []).append(r["top1"])
    full: dict[str, list[float]] = {}
    for r in runs:
        full.setdefault(r["arch_hash"], []).append(r["top1"])
    both = sorted(set(proxy) & set(full))
    p2f = fit_proxy_to_full([float(np.mean(proxy[h])) for h in both],
                            [float(np.mean(full[h])) for h in both])
    if p2f["supported"]:
        log(f"\nproxy -> full-scale: {p2f['formula']}: a={p2f['a']:.3g} {p2f['a_ci95']}, "
            f"b={p2f['b']:.3g} {p2f['b_ci95']}, r={p2f['r']:.3f}, n={p2f['n']}, LOO RMSE "
            f"{p2f['loo_rmse']}")
    else:
        log(f"\nproxy -> full-scale: not fitted: {p2f['reason']}")
    return p2f


def run_fit(req: FitRequest, *, db: str, latency_device: str | None = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit top-1 against each of ``req.costs``; ``latency_device`` re-predicts latency (None:
    the stored values). Returns the report written to ``<out>/fit.json``."""
    predictor = load_predictor(latency_device) if latency_device else None
    with open_store(db, readonly=True) as store:
        pts = collect_points(store, req.studies, predictor=predictor)
        family = get_family(store, req.family) if req.family else None
        runs = [r for r in store.training_runs() if r["status"] == "COMPLETED"
                and r["top1"] is not None]
    rows = pts["rows"]
    log(f"{len(rows)} proxy results from {len(pts['studies'])} stud(ies); fidelity "
        f"{json.dumps(pts['fidelity'], sort_keys=True) if pts['fidelity'] else '-'}")
    report: dict[str, Any] = {"studies": pts["studies"], "n": len(rows), "fits": {},
                              "extrapolations": [], "proxy_to_full": None}
    plots = []
    y = np.array([r["top1"] for r in rows], float)
    for xn in req.costs:
        x = np.array([r[xn] if r[xn] is not None else np.nan for r in rows], float)
        try:
            ft = fit_scaling_law(x, y, x_name=xn, form=req.form, n_boot=req.n_boot,
                                 seed=req.seed)
        except UsageError as e:  # too few points for this cost: said, and the others go on
            log(f"{xn}: cannot fit: {e}")
            report["fits"][xn] = {"error": str(e)}
            continue
        report["fits"][xn] = ft.to_dict()
        plots.append((ft, x, y))
        _print_fit(ft, log)
        targets = [v for k, v in req.at if k == xn]
        if family is not None:
            targets += [float(m[xn]) for m in family["members"]]
        report["extrapolations"] += _extrapolate(ft, targets, req, log)
    report["proxy_to_full"] = _proxy_to_full(rows, runs, log)
    out = req.out or os.path.join("runs", "fit", utc_stamp())
    write_json_atomic(os.path.join(out, "fit.json"), report, indent=1)
    if plots:
        fit_plot(plots, os.path.join(out, "fit.png"))
    log(f"wrote {out}/fit.json{' and fit.png' if plots else ''}")
    return report
