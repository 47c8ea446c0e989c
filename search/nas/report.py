"""End-of-search report: the Pareto table against the baselines, a PNG of the front, JSON.

Computing (:func:`build_report`) is apart from drawing (:func:`render_table`,
:func:`plot_front`) and writing (:func:`write_report`). The points, the front, the baseline
markers and the hypervolume with its reference point all come from
``results.study_front.study_front`` -- the same function behind ``run_search.py pareto
--study``, the dashboard and the offline report -- so the number printed at the end of a search
is the number every other view shows. Only trials COMPLETED at the study's full proxy budget
are points (trials stopped early by ASHA or failed are counted, never plotted as front
members). Baselines are the same architectures trained with the same proxy on the same data;
published ImageNet top-1 and iPhone 14 latencies are shown beside them for orientation, never
compared with proxy numbers.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from results.pareto import REFERENCE_RULE, dominating
from results.schema import STANDALONE, SUPERNET
from results.store import ResultsStore
from results.study_front import INTERVAL_SIGMAS, OBJECTIVES, study_front
from search_space.io import save_figure_atomic, write_json_atomic, write_text_atomic
from search_space.lazy import lazy_import

mfigure = lazy_import("matplotlib.figure")

FRONT_FIELDS = ("trial_key", "arch_hash", "top1", "latency_ms", "latency_std_ms", "gmacs",
                "params", "seed", "spec", "advantage_within_interval")


# ---------------------------------------------------------------------------------------------
# computing
# ---------------------------------------------------------------------------------------------
def build_report(store: ResultsStore, study: str, rung: str = STANDALONE) -> dict[str, Any]:
    """Front, candidates, baselines, hypervolume, counts and failures of ``study`` on one rung
    of the ladder (on its own latency device, full-budget trials only). On the supernet rung
    ``top1`` holds the supernet score (``metric`` says which)."""
    view = study_front(store, study, rung=rung)
    rows = store.trials(view["study"]["id"], rung=rung)
    by_key = {t["trial_key"]: t for t in rows}
    front = _front_rows(view["front"], by_key)
    front_vals = np.array([[f["top1"], f["latency_ms"]] for f in front], dtype=float)
    cand = view["cand"]
    baselines = [_baseline_row(b, front, front_vals) for b in view["baselines"]]
    counts: dict[str, int] = {}
    for t in rows:
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    ref = view["reference_point"]
    return {"study": study, "study_id": view["study"]["id"], "device": view["device"],
            "rung": rung, "metric": view["metric"], "counts": counts,
            # architectures, not rows: a reused duplicate is the same candidate again
            "n_candidates_full": len({r[2] for r in cand.rows}),
            "failures": [(t["trial_key"], t.get("error") or "") for t in rows
                         if t["status"] == "FAILED"],
            "peak_rss_mib": peak_rss(rows),
            "front": front,
            "candidates": [{k: p[k] for k in ("trial_key", "top1", "latency_ms")}
                           for p in map(cand.point, range(len(cand)))],
            "baselines": baselines,
            "hypervolume": {"value": view["hypervolume"], "rule": REFERENCE_RULE,
                            "reference": None if ref is None else
                            {"top1": ref[0], "latency_ms": ref[1]}}}


def peak_rss(rows: list[dict]) -> dict[str, Any] | None:
    """Peak resident memory of the trials that trained (``peak_rss_mib`` of their metrics:
    the worker's peak during the trial): median, max and the trial that reached it; None when
    no trial recorded one (scored-only rows, older studies)."""
    peaks = [((t.get("metrics") or {}).get("peak_rss_mib"), t["trial_key"]) for t in rows]
    peaks = [(p, k) for p, k in peaks if p is not None]
    if not peaks:
        return None
    top, key = max(peaks)
    return {"median": float(np.median([p for p, _ in peaks])), "max": top, "max_trial": key,
            "trials": len(peaks)}


def _front_rows(front: list[dict], by_key: dict[str, dict]) -> list[dict]:
    """The front by latency, one row per architecture (a reused duplicate is the same point
    under a second trial key: the first in finish order stands for it)."""
    out, seen = [], set()
    for p in front:
        if p["arch_hash"] in seen:
            continue
        seen.add(p["arch_hash"])
        t = by_key.get(p["trial_key"], {})
        row = {**p, "latency_std_ms": t.get("latency_std_ms"), "seed": t.get("seed"),
               "spec": (t.get("config") or {}).get("spec")}
        out.append({k: row.get(k) for k in FRONT_FIELDS})
    return sorted(out, key=lambda f: (f["latency_ms"], -f["top1"]))


def _baseline_row(b: dict, front: list[dict], front_vals: np.ndarray) -> dict[str, Any]:
    row = {k: b.get(k) for k in ("name", "trial_id", "top1", "latency_ms", "latency_std_ms",
                                 "top1_source", "published_top1", "published_latency_ms",
                                 "published_device", "dominated_beyond_interval")}
    bt, bl = b.get("top1"), b.get("latency_ms")
    row["dominated_by"] = []
    if bt is None or bl is None or not len(front):
        return row
    for i in dominating(front_vals, (bt, bl), OBJECTIVES).tolist():
        f = front[i]
        row["dominated_by"].append({
            "trial_key": f["trial_key"], "arch_hash": f["arch_hash"],
            "d_top1": f["top1"] - bt, "d_latency_ms": f["latency_ms"] - bl,
            "d_latency_pct": 100.0 * (f["latency_ms"] - bl) / bl})
    return row


# ---------------------------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------------------------
def _num(v: Any, fmt: str, missing: str = "-") -> str:
    return format(v, fmt) if v is not None else missing


def render_table(rep: dict[str, Any]) -> str:
    k = max([28] + [len(f["trial_key"]) for f in rep["front"]])
    supernet = rep.get("rung") == SUPERNET
    what, col = (("scored on the supernet (supernet score max", "score") if supernet else
                 ("trained to the full proxy budget (proxy top-1 max", "top1 %"))
    lines = [f"Pareto front: {len(rep['front'])} of {rep['n_candidates_full']} candidates "
             f"{what}, predicted latency on {rep['device']} min)",
             f"{'trial':<{k}} {col:>7} {'lat ms':>7} {'±1σ':>5} {'GMACs':>6} {'params':>10}"
             f"  beats only inside ±{INTERVAL_SIGMAS:g}σ latency"]
    for f in rep["front"]:
        params = f"{int(f['params']):,}" if f.get("params") is not None else "-"
        unresolved = ",".join(f.get("advantage_within_interval") or []) or "-"
        lines.append(f"{f['trial_key']:<{k}} {f['top1']:>7.{4 if supernet else 2}f} "
                     f"{f['latency_ms']:>7.3f} "
                     f"{_num(f.get('latency_std_ms'), '.2f'):>5} {_num(f.get('gmacs'), '.3f'):>6} "
                     f"{params:>10}  {unresolved}")
    lines += ["", "Baselines, same proxy and data (published ImageNet top-1 / iPhone 14 ms "
              "beside them, for orientation only):"]
    w = max([4] + [len(b["name"]) for b in rep["baselines"]])
    lines.append(f"{'name':<{w}} {'score' if supernet else 'proxy top1':>10} {'pred ms':>8} "
                 f"{'pub top1':>8} {'pub ms':>7}  dominated by (Δ{col.split()[0]}, Δlatency)")
    for b in rep["baselines"]:
        lines.append(f"{b['name']:<{w}} {_num(b['top1'], '.4f' if supernet else '.2f', 'n/a'):>10} "
                     f"{_num(b['latency_ms'], '.3f', 'n/a'):>8} "
                     f"{_num(b['published_top1'], '.1f'):>8} "
                     f"{_num(b['published_latency_ms'], '.1f'):>7}  {_dominance(b)}")
    hv = rep["hypervolume"]
    if hv["reference"] is not None:
        ref = (f"score {hv['reference']['top1']:.4f}" if supernet else
               f"top1 {hv['reference']['top1']:.2f} %")
        value = f"{hv['value']:.{5 if supernet else 3}f}"
        lines.append(f"\nhypervolume {value} (reference {ref}, latency "
                     f"{hv['reference']['latency_ms']:.3f} ms: {hv['rule']})")
    lines.append("trials: " + ", ".join(f"{k.lower()} {v}"
                                        for k, v in sorted(rep["counts"].items())))
    mem = rep.get("peak_rss_mib")
    if mem is not None:
        n = mem["trials"]
        lines.append(f"peak RSS per trial worker: median {mem['median']:,.0f} MiB, max "
                     f"{mem['max']:,.0f} MiB ({mem['max_trial']}; {n} trial{'s' * (n != 1)})")
    for key, err in rep["failures"][:10]:
        lines.append(f"  failed {key}: {err[:150]}")
    return "\n".join(lines)


def _dominance(b: dict[str, Any]) -> str:
    if b["top1"] is None:
        return "(baseline not trained)"
    if b["latency_ms"] is None:
        return "(no latency on this device)"
    if not b["dominated_by"]:
        return "not dominated"
    best = sorted(b["dominated_by"], key=lambda d: (-d["d_top1"], d["d_latency_ms"]))
    parts = [f"{d['trial_key']} ({d['d_top1']:+.2f}, {d['d_latency_ms']:+.3f} ms / "
             f"{d['d_latency_pct']:+.0f}%)" for d in best[:3]]
    more = f" +{len(best) - 3} more" if len(best) > 3 else ""
    caveat = (f" [only inside the ±{INTERVAL_SIGMAS:g}σ latency interval: not resolved]"
              if b.get("dominated_beyond_interval") is False else "")
    return f"{len(best)}: " + ", ".join(parts) + more + caveat


def _draw(ax, rep: dict[str, Any], title: str) -> None:
    supernet = rep.get("rung") == SUPERNET
    what = "scored on the supernet" if supernet else "full proxy budget"
    if rep["candidates"]:
        ax.scatter([c["latency_ms"] for c in rep["candidates"]],
                   [c["top1"] for c in rep["candidates"]], s=10 if supernet else 18, c="0.6",
                   label=f"candidates ({what})")
    if rep["front"]:
        ax.plot([f["latency_ms"] for f in rep["front"]], [f["top1"] for f in rep["front"]],
                "o-", c="tab:red", ms=5, drawstyle="steps-post", label="Pareto front")
    for b in rep["baselines"]:
        if b["top1"] is None or b["latency_ms"] is None:
            continue
        ax.scatter([b["latency_ms"]], [b["top1"]], marker="s", s=40, c="k")
        ax.annotate(b["name"], (b["latency_ms"], b["top1"]), textcoords="offset points",
                    xytext=(5, -10), fontsize=8)
    ax.set_xlabel(f"predicted latency (ms, {rep['device']})")
    ax.set_ylabel("supernet score (higher is better)" if supernet else "proxy top-1 (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    # Below the axes: inside, "best" still covered a baseline (L3 sits bottom-right whenever
    # the proxy reverses the ImageNet order).
    if ax.get_legend_handles_labels()[0]:  # an empty rung (a failed supernet) has no legend
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3,
                  frameon=False)


def plot_front(rep: dict[str, Any], path: Path, title: str = "",
               supernet: dict[str, Any] | None = None) -> None:
    """Candidates, the front (staircase) and the baselines; with ``supernet`` (the supernet
    rung's report) its panel on the left, the stand-alone rung's on the right. Written
    atomically."""
    panels = ([(supernet, "rung 1: supernet scores")] if supernet else []) + [
        (rep, "rung 2: trained stand-alone" if supernet else
         title or "search front vs SwiftFormer baselines (same proxy)")]
    # no pyplot: no global state, no backend
    fig = mfigure.Figure(figsize=(7 * len(panels), 4.5), dpi=120)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (r, t) in zip(axes, panels):
        _draw(ax, r, t)
    if supernet:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure_atomic(fig, path)


def render_rungs(rep: dict[str, Any], sn: dict[str, Any]) -> str:
    """Both rungs of a ``--proxy supernet`` study: each front, then the baselines side by side
    (never one front over both rungs)."""
    info = sn.get("supernet") or {}
    tau = info.get("tau")
    head = (f"Supernet: {info.get('epochs_done', '?')} epochs, {_num(info.get('cpu_seconds'), '.0f')} "
            f"CPU-s training, {_num(info.get('scoring_cpu_seconds'), '.0f')} CPU-s scoring; "
            f"Kendall tau of XS/S/L1/L3 scores vs ImageNet {_num(tau, '.2f', 'n/a')}")
    w = max([6] + [len(b["name"]) for b in sn["baselines"]])
    side = [f"{'name':<{w}} {'supernet score':>14} {'supernet top1':>13} {'trained top1':>12} "
            f"{'pred ms':>8} {'ImageNet top1':>13}"]
    trained = {b["name"]: b for b in rep["baselines"]}
    for b in sn["baselines"]:
        t = trained.get(b["name"], {})
        side.append(f"{b['name']:<{w}} {_num(b['top1'], '.4f', 'n/a'):>14} "
                    f"{_num(b.get('proxy_top1'), '.2f', 'n/a'):>13} "
                    f"{_num(t.get('top1'), '.2f', 'n/a'):>12} "
                    f"{_num(b['latency_ms'], '.3f', 'n/a'):>8} "
                    f"{_num(b['published_top1'], '.1f'):>13}")
    return "\n".join([head, "", "== Rung 1: supernet ==", render_table(sn), "",
                      "== Rung 2: trained stand-alone ==", render_table(rep), "",
                      "Baselines on both rungs (each rung's own front; rungs never mixed):",
                      *side])


def build_supernet_report(store: ResultsStore, study: str) -> dict[str, Any] | None:
    """The supernet rung's report with the supernet's row (None: the study has no supernet)."""
    sn = build_report(store, study, rung=SUPERNET)
    rows = store.trials(sn["study_id"], rung=SUPERNET)
    model = [t for t in rows if (t.get("config") or {}).get("kind") == "supernet"]
    if not model:
        return None
    m = model[-1]
    sn["supernet"] = {"trial_id": m["id"], "trial_key": m["trial_key"], "status": m["status"],
                      "config": (m["config"] or {}).get("supernet"), **(m["metrics"] or {})}
    top1 = {t["id"]: t["top1"] for t in rows if t["status"] == "COMPLETED"}
    for b in sn["baselines"]:  # the subnet's top-1 on the proxy val split, beside its score
        b["proxy_top1"] = top1.get(b.get("trial_id"))
    return sn


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def write_report(store: ResultsStore, study: str, out_dir: Path, *, db: str,
                 stream: TextIO | None = None) -> dict[str, Any]:
    """Table to ``stream`` (stdout) and pareto.txt; pareto.json and pareto.png in ``out_dir``.
    A ``--proxy supernet`` study: both rungs (pareto.json: the stand-alone rung at the top
    level, the supernet rung under ``supernet_rung``)."""
    out_dir = Path(out_dir)
    rep = build_report(store, study)
    sn = build_supernet_report(store, study)
    png, txt, js = out_dir / "pareto.png", out_dir / "pareto.txt", out_dir / "pareto.json"
    plot_front(rep, png, title=f"study {study}", supernet=sn)
    rep["files"] = {"table": str(txt), "json": str(js), "plot": str(png),
                    "database": os.path.abspath(db)}
    if sn is not None:
        rep["supernet_rung"] = sn
    text = (render_table(rep) if sn is None else render_rungs(rep, sn)) + (
        f"\n\nplot: {png}\ntable: {txt}\ndatabase: {os.path.abspath(db)} (study {study}; "
        f"inspect with `run_search.py studies` / `pareto --study {study}`"
        + ("" if sn is None else f" / `pareto --study {study} --rung supernet`") + ")")
    write_text_atomic(txt, text + "\n")
    write_json_atomic(js, rep)
    print(text, file=stream or sys.stdout, flush=True)
    return rep
