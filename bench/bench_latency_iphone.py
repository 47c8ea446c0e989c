#!/usr/bin/env python
"""Published iPhone 14 (Neural Engine) rows: leave-one-out accuracy of the predictor vs GMACs line.

For every SwiftFormer-paper Table 2 row whose model converts (features from the shipped CoreML
op cache; SwiftFormer rows analytic), fit on all other rows and predict the held-out one. The
naive baseline (a straight line in GMACs, least squares) is evaluated leave-one-out in the same
run, both over the rows with a published GMACs value (as reported elsewhere) and over exactly
our rows. Also times analytic predictions and (optionally) a fresh CoreML featurisation.

    /work/venv/bin/python bench/bench_latency_iphone.py [--time-convert] [--rebuild-cache]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from search_space.stats import kendall_tau  # noqa: E402


def loo_line(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    pred = np.empty(len(y))
    for i in range(len(y)):
        k = np.arange(len(y)) != i
        a, b = np.polyfit(x[k], y[k], 1)
        pred[i] = a * x[i] + b
    return pred


def summary(pred: np.ndarray, y: np.ndarray) -> str:
    rel = (pred - y) / y
    return (f"n={len(y)}  MAPE {100 * np.mean(np.abs(rel)):.1f}%  within 10% "
            f"{100 * np.mean(np.abs(rel) <= 0.1):.0f}%  within 20% {100 * np.mean(np.abs(rel) <= 0.2):.0f}%"
            f"  Kendall tau {kendall_tau(pred, y):.3f}")


def few_shot(args) -> None:
    """Calibrate another published device from K of its rows (prior: the shipped iPhone 14),
    evaluate on its other rows; GMACs line (CoreML-counted GMACs) fitted on the same K rows."""
    import latency_models as lm
    from latency_models.features import gmacs_of
    from latency_models.fewshot import fit_features
    from latency_models.published import published_table

    F, y, _, _ = published_table(args.few_shot_device)
    if len(y) < args.few_shot + 3:
        print(f"few-shot: only {len(y)} featurisable {args.few_shot_device} rows; skipped")
        return
    g = gmacs_of(F)
    rng = np.random.default_rng(0)
    res: dict[str, list] = {"iphone14 prior": [], "generic prior": [], "GMACs line": []}
    for _ in range(args.draws):
        cal = rng.choice(len(y), args.few_shot, replace=False)
        ev = np.setdiff1d(np.arange(len(y)), cal)
        for name, prior in (("iphone14 prior", lm.load_predictor()), ("generic prior", None)):
            p = fit_features(F[cal], y[cal], "few-shot", prior)
            res[name].append((p.predict_features(F[ev])[0], y[ev]))
        a, b = np.polyfit(g[cal], y[cal], 1)
        res["GMACs line"].append((a * g[ev] + b, y[ev]))
    print(f"\nFew-shot transfer: {len(y)} published '{args.few_shot_device}*' rows (mixed apps, "
          f"compute unit ALL), calibrate on {args.few_shot}, evaluate on the other {len(y) - args.few_shot}, "
          f"{args.draws} random draws (median over draws):")
    for name, pairs in res.items():
        rels = [pr / yy - 1 for pr, yy in pairs]
        tau = np.median([kendall_tau(pr, yy) for pr, yy in pairs])
        mape = np.median([np.mean(np.abs(r)) for r in rels])
        w10 = np.median([np.mean(np.abs(r) <= 0.1) for r in rels])
        w20 = np.median([np.mean(np.abs(r) <= 0.2) for r in rels])
        print(f"  {name:<15} MAPE {100 * mape:5.1f}%  within 10% {100 * w10:3.0f}%  "
              f"within 20% {100 * w20:3.0f}%  Kendall tau {tau:.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--prior", default="generic", help="'generic' (hand-set) or a device name")
    ap.add_argument("--time-convert", action="store_true", help="time a fresh CoreML featurisation")
    ap.add_argument("--rebuild-cache", action="store_true",
                    help="(re)build latency_models/data/published_features.json (converts models)")
    ap.add_argument("--write-default", action="store_true",
                    help="refit and write the shipped default calibration")
    ap.add_argument("--few-shot-device", default="iPhone 12",
                    help="published rows (device prefix) for the few-shot transfer check")
    ap.add_argument("--few-shot", type=int, default=8, help="calibration rows per draw")
    ap.add_argument("--draws", type=int, default=50)
    args = ap.parse_args()
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())

    from latency_models.feature_cache import (EXTRA_MODELS, build_feature_cache,
                                              load_feature_cache)
    from latency_models.featurize import featurize_records
    from latency_models.fewshot import fit_features
    from latency_models.published import calibrate_default, published_models, published_records

    if args.rebuild_cache:
        build_feature_cache(published_models() + [m for m in EXTRA_MODELS
                                                  if m not in published_models()])
    if args.write_default:
        calibrate_default()
    recs = published_records()
    F, errs = featurize_records(recs)
    ok = np.array([e is None for e in errs])
    y_all = np.array([r.latency_ms for r in recs])
    prior = None if args.prior == "generic" else __import__("latency_models").load_predictor(args.prior)

    idx = np.flatnonzero(ok)
    y = y_all[idx]
    Fk = F[idx]
    t0 = time.perf_counter()
    pred = np.empty(len(idx))
    for j in range(len(idx)):
        keep = np.arange(len(idx)) != j
        pred[j] = fit_features(Fk[keep], y[keep], "loo", prior).predict_features(Fk[j:j + 1])[0][0]
    loo_s = time.perf_counter() - t0

    # Naive baseline: GMACs line, using the table's published GMACs column.
    g_pub = np.array([float(r.extra.get("gmacs") or "nan") for r in recs])
    has_g = np.isfinite(g_pub)
    naive_all = loo_line(g_pub[has_g], y_all[has_g])
    naive_ours = loo_line(g_pub[idx], y) if np.all(np.isfinite(g_pub[idx])) else None

    print(f"\nPublished iPhone 14 Neural Engine rows (SwiftFormer Table 2), leave-one-out "
          f"(prior: {args.prior}; {loo_s:.1f} s for {len(idx)} fits)")
    print(f"{'model':<26} {'timm':<28} {'ms':>5} {'ours':>6} {'err':>7} {'GMACs line':>10} {'err':>7}")
    for j, i in enumerate(idx):
        r = recs[i]
        nl = f"{naive_ours[j]:10.2f} {100 * (naive_ours[j] - y[j]) / y[j]:+6.0f}%" \
            if naive_ours is not None else ""
        print(f"{r.model:<26} {r.timm_name:<28} {y[j]:5.1f} {pred[j]:6.2f} "
              f"{100 * (pred[j] - y[j]) / y[j]:+6.0f}% {nl}")
    for i in np.flatnonzero(~ok):
        print(f"{recs[i].model:<26} (not featurised: {errs[i][:60]})")
    print("\nours (leave-one-out):            " + summary(pred, y))
    if naive_ours is not None:
        print("GMACs line, same rows (LOO):     " + summary(naive_ours, y))
    print("GMACs line, rows with GMACs (LOO): " + summary(naive_all, y_all[has_g]))
    sf = {recs[i].model: pred[j] for j, i in enumerate(idx) if recs[i].model.startswith("SwiftFormer")}
    order = [sf.get(f"SwiftFormer-{n}") for n in ("XS", "S", "L1", "L3")]
    print("SwiftFormer XS<S<L1<L3 (LOO predictions):",
          " < ".join(f"{v:.2f}" for v in order), "->",
          "ordered" if all(a < b for a, b in zip(order, order[1:])) else "NOT ordered")

    # Shipped default calibration (fit on all rows): its ordering and speed.
    import latency_models as lm
    from search_space.space import DEFAULT_SPACE
    from search_space.spec import PRESETS

    p = lm.load_predictor()
    full = [p.predict(PRESETS[n])[0] for n in ("XS", "S", "L1", "L3")]
    print(f"shipped {p.device} ({p.version}): XS/S/L1/L3 = " + ", ".join(f"{v:.2f}" for v in full)
          + f" ms (published 0.7/0.8/1.1/1.9); in-sample LOO MAPE {100 * p.meta['loo_mape']:.1f}%")
    specs = DEFAULT_SPACE.sample_many(20000, seed=0)
    t0 = time.perf_counter()
    p.predict_many(specs)
    dt = time.perf_counter() - t0
    print(f"analytic path: {len(specs) / dt:,.0f} spec predictions/s (predict_many, 20k specs, "
          "spec -> features -> ms)")
    cache = load_feature_cache()
    conv_s = [m["featurize_s"] for m in cache["models"].values()
              if m.get("ops") is not None and "coremltools" in m.get("method", "")]
    if conv_s:
        print(f"CoreML featurisation (cache build, under the machine load of that run): median "
              f"{np.median(conv_s):.1f} s, max {np.max(conv_s):.1f} s per model ({len(conv_s)} models)")
    few_shot(args)
    if args.time_convert:
        from latency_models.coreml import coreml_features
        from latency_models.models import resolve_model
        from search_space.spec import PRESETS as _P

        for name in ("mobilenetv2_100", "efficientformer_l1", _P["L1"]):
            t0, c0 = time.perf_counter(), time.process_time()
            coreml_features(name if isinstance(name, str) else resolve_model(name)[0])
            label = name if isinstance(name, str) else "SwiftFormer-L1 spec"
            print(f"fresh CoreML featurisation of {label}: wall {time.perf_counter() - t0:.1f} s, "
                  f"CPU {time.process_time() - c0:.1f} s")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
