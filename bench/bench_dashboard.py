#!/usr/bin/env python
"""Benchmark of the dashboard API on a large study: what one page refresh and one poll cost.

    /work/venv/bin/python bench/bench_dashboard.py               # 200k trials in one study
    /work/venv/bin/python bench/bench_dashboard.py --n 50000

Synthetic data: one study, 2,000 real architectures (sampled from the default space), N
completed full-budget trials with top-1 rising with latency plus noise. Times (best of 3, wall
and CPU): the poll (/api/stamp), one page refresh on a cold cache (scatter + front +
hypervolume, as the page requests them), the same on a warm cache, a trial detail; and, as the
baseline measured in the same run, the CLI's ``queries.pareto_front`` over the same study.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastapi.testclient import TestClient  # noqa: E402

from results.dashboard.app import create_app  # noqa: E402
from results.queries import TrialFilter, pareto_front  # noqa: E402
from results.store import ResultsStore  # noqa: E402
from search_space.space import DEFAULT_SPACE  # noqa: E402


def timeit(fn, repeat: int = 3):
    best = None
    out = None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        w, c = time.perf_counter() - t0, time.process_time() - c0
        if best is None or w < best[0]:
            best = (w, c)
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--db", default="runs/bench/dashboard_bench.db")
    args = ap.parse_args()
    for suf in ("", "-wal", "-shm"):
        if os.path.exists(args.db + suf):
            os.remove(args.db + suf)
    os.makedirs(os.path.dirname(os.path.abspath(args.db)), exist_ok=True)
    print(f"load: {os.getloadavg()}  n={args.n:,}  db={args.db}")
    w = ResultsStore(args.db)
    w.ensure_baselines()
    sid = w.get_or_create_study("big", config={}, seed=0, dataset_id="cifar10",
                                fidelity={"epochs": 10}, device="iphone14", code_version="bench")
    hashes = [w.upsert_architecture(s) for s in DEFAULT_SPACE.sample_many(2000, seed=0)]
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for start in range(0, args.n, 50_000):
        m = min(50_000, args.n - start)
        lat = rng.lognormal(0.0, 0.5, m)
        top1 = 60 + 12 * np.log1p(lat) + rng.normal(0, 3, m)
        arch = rng.integers(0, len(hashes), m)
        w.bulk_add_trials(sid, [{"trial_key": f"t{start + j}", "arch_hash": hashes[arch[j]],
                                 "top1": float(top1[j]), "latency_ms": float(lat[j]),
                                 "full_budget": True, "fidelity_reached": {"epochs": 10}}
                                for j in range(m)])
    print(f"filled in {time.perf_counter() - t0:.1f} s")
    w.close()

    app = create_app(args.db, poll_seconds=0)
    c = TestClient(app, base_url="http://127.0.0.1")
    q = {"fidelity": "full"}

    t_stamp, st = timeit(lambda: c.get("/api/stamp").json())
    print(f"poll /api/stamp: {t_stamp[0]:.3f} s wall / {t_stamp[1]:.3f} s CPU "
          f"({st['trials']:,} trials)")
    # Cold: a fresh app (empty cache) per repeat.
    def cold():
        a = create_app(args.db, poll_seconds=0)
        cc = TestClient(a, base_url="http://127.0.0.1")
        out = [cc.get(f"/api/studies/big/{k}", params=q).json()
               for k in ("scatter", "hypervolume", "front")]
        a.state.store.close()
        return out
    t_cold, (sc, hv, fr) = timeit(cold)
    print(f"page refresh, cold cache (scatter+hypervolume+front): {t_cold[0]:.3f} s wall / "
          f"{t_cold[1]:.3f} s CPU (n={sc['n_considered']:,}, front={sc['n_front']}, "
          f"drawn={sc['n_shown']:,}, hv steps={len(hv['steps'])})")
    t_warm, _ = timeit(lambda: [c.get(f"/api/studies/big/{k}", params=q).json()
                                for k in ("scatter", "hypervolume", "front")])
    print(f"page refresh, warm cache (no new results): {t_warm[0]:.3f} s wall / "
          f"{t_warm[1]:.3f} s CPU")
    tid = fr["rows"][0]["trial_id"]
    t_det, _ = timeit(lambda: c.get(f"/api/trials/{tid}").json())
    print(f"trial detail: {t_det[0]:.3f} s wall / {t_det[1]:.3f} s CPU")
    ro = ResultsStore(args.db, readonly=True)
    t_cli, res = timeit(lambda: pareto_front(ro, "top1,latency_ms", TrialFilter(studies=("big",))))
    print(f"baseline, same run: queries.pareto_front (CLI `pareto`) on the study: "
          f"{t_cli[0]:.3f} s wall / {t_cli[1]:.3f} s CPU (front={res['n_front']}; one study: "
          "results.study_front.study_front, the dashboard's own front without HTTP or thinning)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
