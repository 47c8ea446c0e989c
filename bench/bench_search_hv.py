"""Hypervolume of NSGA-II vs random search at an equal trial budget, over several seeds.

    /work/venv/bin/python bench/bench_search_hv.py [--trials 12] [--seeds 0 1 2]
        [--strategies nsga2 random] [--fidelity '{"epochs": 1, ...}']

Runs the real driver (search.nas: Ray Tune + Optuna + proxy training on the embedded data) once
per (strategy, seed) into its own database under runs/bench_search_hv/ (so no run reuses
another's proxy results), then reports the hypervolume (results.pareto) of each run's
full-budget candidates (results.study_front; proxy top-1 max, predicted iPhone 14 latency min)
against ONE fixed reference point (top-1 0 %, latency --ref-latency-ms), mean and spread per
strategy, and wall time per run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--strategies", nargs="+", default=["nsga2", "random"])
    ap.add_argument("--fidelity", default=json.dumps({"epochs": 1, "images_per_class": 100,
                                                      "val_per_class": 50}))
    ap.add_argument("--ref-latency-ms", type=float, default=4.0)
    ap.add_argument("--out", default="runs/bench_search_hv")
    a = ap.parse_args()

    from results.pareto import hypervolume
    from results.store import ResultsStore
    from results.study_front import OBJECTIVES, study_front
    from search.nas.config import SearchConfig, parse_fidelity_fields
    from search.nas.driver import run_search

    print(f"uptime: {os.popen('uptime').read().strip()}", flush=True)
    out = Path(a.out)
    if out.exists():
        shutil.rmtree(out)
    rows = []
    for seed in a.seeds:
        for strat in a.strategies:
            study = f"hv-{strat}-s{seed}"
            db = out / f"{study}.db"
            cfg = SearchConfig(study=study, strategy=strat, seed=seed, n_trials=a.trials,
                               fidelity=parse_fidelity_fields(json.loads(a.fidelity)),
                               baselines=(), db=str(db), out_root=str(out))
            t0 = time.monotonic()
            with open(os.devnull, "w") as quiet:
                run_search(cfg, stream=quiet)
            wall = time.monotonic() - t0
            # The study's points as every view has them; one FIXED reference for all runs (the
            # per-study reference rule would make runs incomparable).
            with ResultsStore(str(db), readonly=True) as store:
                vals = study_front(store, study)["cand"].values
            hv = hypervolume(vals, OBJECTIVES, [0.0, a.ref_latency_ms]) if len(vals) else 0.0
            best = float(vals[:, 0].max()) if len(vals) else float("nan")
            rows.append({"strategy": strat, "seed": seed, "hv": hv, "n": len(vals),
                         "best_top1": best, "wall_s": wall})
            print(f"{strat:<7} seed {seed}: HV {hv:8.3f}  candidates {len(vals)}  "
                  f"best top1 {best:5.2f}%  wall {wall:6.1f} s", flush=True)
    print(f"\nreference point: top1 0 %, latency {a.ref_latency_ms} ms; trials/run {a.trials}; "
          f"fidelity overrides {a.fidelity}")
    for strat in a.strategies:
        hv = [r["hv"] for r in rows if r["strategy"] == strat]
        sd = statistics.stdev(hv) if len(hv) > 1 else 0.0
        print(f"{strat:<7}: HV mean {statistics.mean(hv):8.3f} ± {sd:.3f} (sd, n={len(hv)}); "
              f"per seed {', '.join(f'{h:.2f}' for h in hv)}")
    print(f"total wall {sum(r['wall_s'] for r in rows):.0f} s; uptime: "
          f"{os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
