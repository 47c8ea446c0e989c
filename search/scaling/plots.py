"""Figures of the scaling explorer: each is a data step (plain lists and numbers, testable and
JSON-safe) and a drawing step that only draws what the data step returned.

* :func:`comparison_data` / :func:`draw_comparison`: GMACs and params against predicted
  latency, the scaled family against XS/S/L1/L3 (``scale``'s ``comparison.png``).
* :func:`fit_data` / :func:`draw_fit`: data, fitted law and 95 % band per cost (``fit``'s
  ``fit.png``).

Drawing uses matplotlib's object API (a ``Figure`` without pyplot: no global state, no GUI
backend) and writes through ``search_space.io.save_figure_atomic``.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from search_space.io import save_figure_atomic
from search_space.lazy import lazy_import

from .laws import ScalingFit

mpl_figure = lazy_import("matplotlib.figure")
mpl_ticker = lazy_import("matplotlib.ticker")

__all__ = ["comparison_data", "draw_comparison", "comparison_plot", "fit_data", "draw_fit",
           "fit_plot"]

DPI = 110


# -- family vs XS/S/L1/L3 -------------------------------------------------------------------------
def comparison_data(rows: Sequence[Mapping[str, Any]], members: Sequence[Mapping[str, Any]],
                    title: str = "") -> dict[str, Any]:
    """Two panels (GMACs, params in M) of the family and the baselines against predicted
    latency. ``rows``: :func:`~search.scaling.compound.family_comparison`; ``members``:
    ``ScaledMember.to_dict()`` dicts."""
    lat = [float(m["latency_ms"]) for m in members]
    panels = []
    for key, label, scale in (("gmacs", "GMACs", 1.0), ("params", "params (M)", 1e-6)):
        panels.append({
            "ylabel": label,
            "family": {"x": lat, "y": [float(m[key]) * scale for m in members]},
            "baselines": {"x": [float(r["baseline_latency_ms"]) for r in rows],
                          "y": [float(r[f"baseline_{key}"]) * scale for r in rows],
                          "labels": [str(r["baseline"]) for r in rows]},
        })
    return {"title": title, "xlabel": "predicted latency (ms)", "panels": panels}


def draw_comparison(data: Mapping[str, Any], path: str | os.PathLike) -> str:
    fig = mpl_figure.Figure(figsize=(10, 4))
    axes = fig.subplots(1, len(data["panels"]), squeeze=False)[0]
    for ax, panel in zip(axes, data["panels"]):
        fam, base = panel["family"], panel["baselines"]
        ax.plot(fam["x"], fam["y"], "o-", label="scaled family")
        ax.plot(base["x"], base["y"], "s--", label="SwiftFormer XS/S/L1/L3")
        for x, y, text in zip(base["x"], base["y"], base["labels"]):
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
        ax.set_xlabel(data["xlabel"])
        ax.set_ylabel(panel["ylabel"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if data["title"]:
        fig.suptitle(data["title"], fontsize=10)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=DPI)
    return str(path)


def comparison_plot(rows: Sequence[Mapping[str, Any]], members: Sequence[Mapping[str, Any]],
                    path: str | os.PathLike, title: str = "") -> str:
    """Both steps: the PNG of :func:`comparison_data`; returns the path."""
    return draw_comparison(comparison_data(rows, members, title), path)


# -- scaling-law fits ------------------------------------------------------------------------------
def fit_data(fits: Sequence[tuple[ScalingFit, Sequence[float], Sequence[float]]],
             points: int = 100) -> dict[str, Any]:
    """One panel per (fit, x, y): the data, the law on a log grid 1.5x beyond the fitted range,
    and the 95 % prediction band."""
    panels = []
    for ft, x, y in fits:
        grid = np.geomspace(ft.x_range[0] / 1.5, ft.x_range[1] * 1.5, points)
        lo, hi = ft.interval(grid)
        panels.append({"xlabel": ft.x_name, "form": ft.form, "grid": grid.tolist(),
                       "pred": ft.predict(grid).tolist(), "lo": lo.tolist(), "hi": hi.tolist(),
                       "x": [float(v) for v in x], "y": [float(v) for v in y]})
    return {"ylabel": "top-1 (%)", "panels": panels}


def draw_fit(data: Mapping[str, Any], path: str | os.PathLike) -> str:
    n = len(data["panels"])
    fig = mpl_figure.Figure(figsize=(4.5 * n, 3.8))
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, p in zip(axes, data["panels"]):
        ax.fill_between(p["grid"], p["lo"], p["hi"], alpha=0.2, label="95% prediction band")
        ax.plot(p["grid"], p["pred"], "-", label=p["form"])
        ax.plot(p["x"], p["y"], "o", ms=4, label="proxy results")
        ax.set_xscale("log")
        # Less than a decade of x: matplotlib labels every minor tick and they overlap.
        ax.xaxis.set_major_locator(mpl_ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(mpl_ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.xaxis.set_minor_formatter(mpl_ticker.NullFormatter())
        ax.set_xlabel(p["xlabel"])
        ax.set_ylabel(data["ylabel"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=DPI)
    return str(path)


def fit_plot(fits: Sequence[tuple[ScalingFit, Sequence[float], Sequence[float]]],
             path: str | os.PathLike) -> str:
    """Both steps: the PNG of :func:`fit_data`; returns the path."""
    return draw_fit(fit_data(fits), path)
