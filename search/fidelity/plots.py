"""The fidelity/cost curve: Kendall tau (with its bootstrap interval) against CPU-seconds, one
point per ranking of ``study.summarize``'s table.

:func:`curve_data` is the data step (plain lists); :func:`draw_curve` only draws it
(matplotlib's object API, no pyplot state) and writes through
``search_space.io.save_figure_atomic``.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from search_space.io import save_figure_atomic
from search_space.lazy import lazy_import

mpl_figure = lazy_import("matplotlib.figure")

__all__ = ["curve_data", "draw_curve", "plot_curve"]

# ranking kind (prefix of the row's "ranking") -> (marker, colour)
STYLES = {"proxy top-1": ("o", "C0"), "proxy -val": ("D", "C3"), "learning": ("s", "C1"),
          "zero-cost": ("^", "C2"), "params": ("*", "k")}
# Small multiplicative x offsets per kind: rankings of the same runs share a cost and would
# otherwise hide each other.
X_OFFSET = {"proxy top-1": 1.0, "proxy -val": 1.07, "learning": 1.14}


def curve_data(table: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One point per row: x (CPU-seconds, offset per kind), tau and its interval, marker,
    colour, legend label (first of its kind) and annotation (proxy top-1 rows). The params
    control costs nothing: not drawable on a log axis, so it is left out (its tau is in the
    report)."""
    points, seen = [], set()
    for r in table:
        kind = next(k for k in STYLES if r["ranking"].startswith(k))
        if kind == "params":
            continue
        marker, colour = STYLES[kind]
        points.append({"x": float(r["cost_cpu_s"]) * X_OFFSET.get(kind, 1.0),
                       "tau": float(r["tau"]), "lo": float(r["tau_lo"]),
                       "hi": float(r["tau_hi"]), "marker": marker, "colour": colour,
                       "label": None if kind in seen else kind,
                       "annotate": r["setting"] if kind == "proxy top-1" else None,
                       "anchor": [float(r["cost_cpu_s"]), float(r["tau"])]})
        seen.add(kind)
    return {"points": points,
            "xlabel": "CPU-seconds to score all references once (mean over seeds)",
            "ylabel": "Kendall tau vs published ImageNet top-1",
            "title": "Proxy fidelity vs cost (XS/S/L1/L3; bars: 95% bootstrap over seeds)"}


def draw_curve(data: Mapping[str, Any], path: str | os.PathLike) -> str:
    fig = mpl_figure.Figure(figsize=(8, 5))
    ax = fig.subplots()
    for p in data["points"]:
        ax.errorbar(p["x"], p["tau"], yerr=[[p["tau"] - p["lo"]], [p["hi"] - p["tau"]]],
                    fmt=p["marker"], color=p["colour"], capsize=3, label=p["label"])
        if p["annotate"]:
            ax.annotate(p["annotate"], tuple(p["anchor"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.axhline(1.0, color="grey", lw=0.5, ls="--")
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_ylim(-1.1, 1.1)
    ax.set_xlabel(data["xlabel"])
    ax.set_ylabel(data["ylabel"])
    ax.set_title(data["title"])
    ax.legend(loc="center left", fontsize=8)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=120)
    return str(path)


def plot_curve(table: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> str:
    """Both steps: the PNG of :func:`curve_data`; returns the path."""
    return draw_curve(curve_data(table), path)
