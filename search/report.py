"""End-of-search report: the Pareto table against XS/S/L1/L3, a PNG of the front, JSON.

Only candidates that COMPLETED at the study's full proxy budget are on the front (trials
stopped early by ASHA or failed are counted, never plotted as front members). Baselines are
the same architectures trained with the same proxy on the same data (reused across studies),
so front and baselines share both axes; published ImageNet top-1 and iPhone 14 latencies are
shown beside them for orientation, never compared with proxy numbers.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _objs():
    from results.queries import Objective
    return [Objective("top1", "max"), Objective("latency_ms", "min")]


def study_points(store, study_id: int) -> dict[str, Any]:
    """Candidates / baselines of one study from the store, split by status."""
    trials = store.trials(study_id)
    cands, bases, counts, failures = [], {}, {}, []
    seen: set[str] = set()
    for t in trials:
        cfg = t.get("config") or {}
        counts[t["status"]] = counts.get(t["status"], 0) + 1
        if t["status"] == "FAILED":
            failures.append((t["trial_key"], t.get("error") or ""))
        if t["status"] != "COMPLETED" or not t["full_budget"]:
            continue
        if t.get("top1") is None or t.get("latency_ms") is None:
            continue
        if cfg.get("kind") == "baseline":
            bases[cfg.get("name") or t["trial_key"]] = t
        elif t["arch_hash"] not in seen:  # a reused duplicate is one architecture, one point
            seen.add(t["arch_hash"])
            cands.append(t)
    return {"candidates": cands, "baselines": bases, "counts": counts, "failures": failures,
            "n_trials": len(trials)}


def front_of(cands: list[dict]) -> list[dict]:
    from results.queries import pareto_mask
    if not cands:
        return []
    vals = np.array([[c["top1"], c["latency_ms"]] for c in cands], dtype=float)
    mask = pareto_mask(vals, _objs())
    front = [c for c, m in zip(cands, mask) if m]
    return sorted(front, key=lambda c: (c["latency_ms"], -c["top1"]))


def hypervolume_of(cands: list[dict], ref_latency_ms: float, ref_top1: float = 0.0) -> float:
    """Hypervolume of (top1 max, latency min) w.r.t. (ref_top1, ref_latency_ms)."""
    from results.queries import hypervolume
    if not cands:
        return 0.0
    vals = np.array([[c["top1"], c["latency_ms"]] for c in cands], dtype=float)
    return hypervolume(vals, _objs(), [ref_top1, ref_latency_ms])


def build_report(store, study_id: int, device: str) -> dict[str, Any]:
    from search_space.spec import PUBLISHED
    pts = study_points(store, study_id)
    cands, front = pts["candidates"], front_of(pts["candidates"])
    published = {b["name"]: b for b in store.baselines()}
    base_rows = []
    names = ["XS", "S", "L1", "L3"] + sorted(n for n in pts["baselines"] if n not in PUBLISHED)
    for name in names:
        t = pts["baselines"].get(name)
        pub = PUBLISHED.get(name, {})
        row: dict[str, Any] = {"name": name,
                               "published_top1": pub.get("top1"),
                               "published_latency_ms": pub.get("latency_ms"),
                               "published_device": published.get(name, {}).get("latency_device")}
        if t is None:
            row.update(top1=None, latency_ms=None, dominated_by=[])
            base_rows.append(row)
            continue
        bt, bl = t["top1"], t["latency_ms"]
        dom = [c for c in front if c["top1"] >= bt and c["latency_ms"] <= bl
               and (c["top1"] > bt or c["latency_ms"] < bl)]
        row.update(top1=bt, latency_ms=bl, trial_key=t["trial_key"],
                   reused=bool((t.get("config") or {}).get("reused_from_trial")),
                   dominated_by=[{"trial_key": c["trial_key"], "arch_hash": c["arch_hash"],
                                  "d_top1": c["top1"] - bt, "d_latency_ms": c["latency_ms"] - bl,
                                  "d_latency_pct": 100.0 * (c["latency_ms"] - bl) / bl}
                                 for c in dom])
        base_rows.append(row)
    all_lat = [c["latency_ms"] for c in cands] + [b["latency_ms"] for b in base_rows
                                                   if b["latency_ms"] is not None]
    ref_lat = 1.1 * max(all_lat) if all_lat else None
    hv = hypervolume_of(cands, ref_lat) if ref_lat else 0.0
    return {"study_id": study_id, "device": device, "counts": pts["counts"],
            "n_candidates_full": len(cands), "failures": pts["failures"],
            "front": [{"trial_key": c["trial_key"], "arch_hash": c["arch_hash"],
                       "top1": c["top1"], "latency_ms": c["latency_ms"],
                       "latency_std_ms": c.get("latency_std_ms"), "gmacs": c.get("gmacs"),
                       "params": c.get("params"), "seed": c.get("seed"),
                       "spec": (c.get("config") or {}).get("spec")} for c in front],
            "candidates": [{"trial_key": c["trial_key"], "top1": c["top1"],
                            "latency_ms": c["latency_ms"]} for c in cands],
            "baselines": base_rows,
            "hypervolume": {"value": hv, "reference": {"top1": 0.0, "latency_ms": ref_lat}}}


def render_table(rep: dict[str, Any]) -> str:
    lines = []
    c = rep["counts"]
    lines.append(f"Pareto front: {len(rep['front'])} of {rep['n_candidates_full']} candidates "
                 f"trained to the full proxy budget (proxy top-1 max, predicted latency on "
                 f"{rep['device']} min)")
    lines.append(f"{'trial':<28} {'top1 %':>7} {'lat ms':>7} {'±':>5} {'GMACs':>6} "
                 f"{'params':>10}")
    for f in rep["front"]:
        std = f"{f['latency_std_ms']:.2f}" if f.get("latency_std_ms") is not None else "-"
        g = f"{f['gmacs']:.3f}" if f.get("gmacs") is not None else "-"
        p = f"{int(f['params']):,}" if f.get("params") is not None else "-"
        lines.append(f"{f['trial_key']:<28} {f['top1']:>7.2f} {f['latency_ms']:>7.3f} {std:>5} "
                     f"{g:>6} {p:>10}")
    lines.append("")
    lines.append("Baselines, same proxy and data (published ImageNet top-1 / iPhone 14 ms "
                 "beside them, for orientation only):")
    w = max([4] + [len(b["name"]) for b in rep["baselines"]])
    lines.append(f"{'name':<{w}} {'proxy top1':>10} {'pred ms':>8} {'pub top1':>8} {'pub ms':>7}  "
                 "dominated by (Δtop1 pts, Δlatency)")
    for b in rep["baselines"]:
        pt = f"{b['top1']:.2f}" if b["top1"] is not None else "n/a"
        pl = f"{b['latency_ms']:.3f}" if b["latency_ms"] is not None else "n/a"
        if b["top1"] is None:
            dom = "(baseline not trained)"
        elif not b["dominated_by"]:
            dom = "not dominated"
        else:
            best = sorted(b["dominated_by"], key=lambda d: (-d["d_top1"], d["d_latency_ms"]))
            parts = [f"{d['trial_key']} ({d['d_top1']:+.2f}, {d['d_latency_ms']:+.3f} ms / "
                     f"{d['d_latency_pct']:+.0f}%)" for d in best[:3]]
            more = f" +{len(best) - 3} more" if len(best) > 3 else ""
            dom = f"{len(best)}: " + ", ".join(parts) + more
        ptop = f"{b['published_top1']:.1f}" if b["published_top1"] is not None else "-"
        plat = f"{b['published_latency_ms']:.1f}" if b["published_latency_ms"] is not None else "-"
        lines.append(f"{b['name']:<{w}} {pt:>10} {pl:>8} {ptop:>8} {plat:>7}  {dom}")
    hv = rep["hypervolume"]
    if hv["reference"]["latency_ms"]:
        lines.append(f"\nhypervolume {hv['value']:.3f} (reference top1 0 %, latency "
                     f"{hv['reference']['latency_ms']:.3f} ms)")
    lines.append("trials: " + ", ".join(f"{k.lower()} {v}" for k, v in sorted(c.items())))
    for key, err in rep["failures"][:10]:
        lines.append(f"  failed {key}: {err[:150]}")
    return "\n".join(lines)


def plot_front(rep: dict[str, Any], path: Path, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    if rep["candidates"]:
        ax.scatter([c["latency_ms"] for c in rep["candidates"]],
                   [c["top1"] for c in rep["candidates"]], s=18, c="0.6",
                   label="candidates (full proxy budget)")
    if rep["front"]:
        ax.plot([f["latency_ms"] for f in rep["front"]], [f["top1"] for f in rep["front"]],
                "o-", c="tab:red", ms=5, drawstyle="steps-post", label="Pareto front")
    for b in rep["baselines"]:
        if b["top1"] is None:
            continue
        ax.scatter([b["latency_ms"]], [b["top1"]], marker="s", s=40, c="k")
        ax.annotate(f"{b['name']}", (b["latency_ms"], b["top1"]), textcoords="offset points",
                    xytext=(5, -10), fontsize=8)
    ax.set_xlabel(f"predicted latency (ms, {rep['device']})")
    ax.set_ylabel("proxy top-1 (%)")
    ax.set_title(title or "search front vs SwiftFormer baselines (same proxy)", fontsize=10)
    ax.grid(alpha=0.3)
    # Below the axes: inside, "best" still covered a baseline (L3 sits bottom-right whenever
    # the proxy reverses the ImageNet order).
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def write_report(store, study_id: int, out_dir: Path, *, device: str, db: str,
                 stream=None) -> dict[str, Any]:
    """Table to stdout and pareto.txt, pareto.json, pareto.png under ``out_dir``."""
    stream = stream or sys.stdout
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rep = build_report(store, study_id, device)
    text = render_table(rep)
    png = out_dir / "pareto.png"
    plot_front(rep, png, title=f"study {out_dir.name}")
    rep["files"] = {"table": str(out_dir / "pareto.txt"), "json": str(out_dir / "pareto.json"),
                    "plot": str(png), "database": os.path.abspath(db)}
    text += (f"\n\nplot: {png}\ntable: {out_dir / 'pareto.txt'}\n"
             f"database: {os.path.abspath(db)} (study {out_dir.name}; inspect with "
             f"`run_search.py studies` / `pareto --study {out_dir.name}`)")
    for name, content in (("pareto.txt", text + "\n"),
                          ("pareto.json", json.dumps(rep, indent=2, default=str))):
        tmp = out_dir / (name + ".tmp")
        tmp.write_text(content, encoding="utf-8")
        os.replace(tmp, out_dir / name)
    print(text, file=stream, flush=True)
    return rep
