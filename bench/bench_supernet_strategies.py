#!/usr/bin/env python
"""Does the search beat random? NSGA-II and TPE against random sampling on the supernet.

    /work/venv/bin/python bench/bench_supernet_strategies.py [--n 500] [--seeds 0,1,2]
        [--strategies nsga2,tpe,random] [--workers 2] [--out runs/bench_strategies]

Every run asks Optuna for --n architectures of the default space (the sampler is the search's
own: search.nas.searcher.make_sampler, and the space's define-by-run ``suggest``), scores each
on the shared seed-0 supernet at the default SupernetConfig (bench/supernet_common.py: trained
once, then loaded from its checkpoint) and tells Optuna two objectives: the supernet score
(minus the val loss; maximise) and the predicted latency on --latency-device (iphone14-ane;
minimise). Equal numbers of supernet evaluations per strategy; an architecture a process has
scored already is not scored again (the score of a spec on a fixed supernet is deterministic;
a repeat still counts as one of the run's --n evaluations, as it would in a search).

Hypervolume: results/pareto.py's ``hypervolume`` with ONE reference point for every run,
chosen by its REFERENCE_RULE over the points of all runs together (worst score and worst
latency seen by any run, pushed out by 10% of the range), so the numbers are comparable.
Reported per strategy: the mean and spread (sd, min-max) over seeds of the hypervolume after
100, 250 and --n evaluations, the distinct architectures scored, the best score reached.
Runs go to --out/<strategy>-seed<k>.json as they finish (a rerun skips finished runs); the
summary to --out/summary.json. --workers processes at 1 torch thread each. --report-only
summarises the runs finished so far (the reference point is then over those runs only).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402

from bench.supernet_common import print_header, shared_supernet, uptime  # noqa: E402
from latency_models.devices import load_predictor  # noqa: E402
from results.pareto import REFERENCE_RULE, Objective, hypervolume, reference_point  # noqa: E402
from search.nas.searcher import make_sampler  # noqa: E402
from search.proxy.fidelity import DEFAULT_FIDELITY  # noqa: E402
from search.proxy.supernet.config import DEFAULT_SUPERNET, to_proxy  # noqa: E402
from search.proxy.supernet.scoring import score_subnets  # noqa: E402
from search_space.io import read_json, write_json_atomic  # noqa: E402
from search_space.space import DEFAULT_SPACE  # noqa: E402

OBJECTIVES = [Objective("score", "max"), Objective("latency_ms", "min")]
CHECKPOINTS = (100, 250)


class Scorer:
    """Supernet score + predicted latency of a search-space spec, memoised by arch hash."""

    def __init__(self, supernet_root: str, cache_dir: str, device: str) -> None:
        torch.set_num_threads(1)
        self.net, self.info, self.data = shared_supernet(supernet_root, cache_dir)
        self.pred = load_predictor(device)
        self.memo: dict[str, tuple[float, float]] = {}
        self.cpu_seconds, self.scored = 0.0, 0

    def __call__(self, spec) -> tuple[float, float]:
        h = spec.arch_hash
        if h not in self.memo:
            p = to_proxy(spec, self.data.num_classes, DEFAULT_FIDELITY.resolution,
                         DEFAULT_SUPERNET.width_divisor)
            r = score_subnets(self.net, [p], self.data, DEFAULT_FIDELITY,
                              recal_images=DEFAULT_SUPERNET.recal_images, device="cpu",
                              channels_last=False, score=DEFAULT_SUPERNET.score)[0]
            ms = float(self.pred.predict_many([spec])[0][0])
            self.memo[h] = (float(r["score"]), ms)
            self.cpu_seconds += r["cpu_seconds"]
            self.scored += 1
        return self.memo[h]


_SCORER: Scorer | None = None


def _run(args: tuple) -> dict:
    """One (strategy, seed) run of --n ask/score/tell steps."""
    global _SCORER
    strategy, seed, n, supernet_root, cache_dir, device, path = args
    if _SCORER is None:  # one supernet per worker process, shared by its runs
        _SCORER = Scorer(supernet_root, cache_dir, device)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=make_sampler(strategy, seed, n))
    scored0, cpu0 = _SCORER.scored, _SCORER.cpu_seconds
    c0, t0 = time.process_time(), time.perf_counter()
    points, hashes = [], []
    for _ in range(n):
        trial = study.ask()
        spec = DEFAULT_SPACE.suggest(trial)
        score, ms = _SCORER(spec)
        study.tell(trial, [score, ms])
        points.append([score, ms])
        hashes.append(spec.arch_hash)
    out = {"strategy": strategy, "seed": seed, "n": n, "points": points, "hashes": hashes,
           "distinct": len(set(hashes)), "newly_scored": _SCORER.scored - scored0,
           "score_cpu_seconds": _SCORER.cpu_seconds - cpu0,
           "cpu_seconds": time.process_time() - c0, "wall_seconds": time.perf_counter() - t0}
    write_json_atomic(path, out)
    return out


def summarise(runs: list[dict], n: int) -> dict:
    allp = np.array([p for r in runs for p in r["points"]])
    ref = reference_point(allp, OBJECTIVES)
    per: dict[str, dict] = {}
    for r in runs:
        pts = np.array(r["points"])
        hv = {str(k): hypervolume(pts[:k], OBJECTIVES, ref) for k in (*CHECKPOINTS, n)}
        per.setdefault(r["strategy"], {"seeds": [], "hv": {k: [] for k in hv}, "distinct": [],
                                       "best_score": [], "cpu_seconds": []})
        d = per[r["strategy"]]
        d["seeds"].append(r["seed"])
        for k, v in hv.items():
            d["hv"][k].append(v)
        d["distinct"].append(r["distinct"])
        d["best_score"].append(float(pts[:, 0].max()))
        d["cpu_seconds"].append(r["cpu_seconds"])
    for d in per.values():
        d["hv_stats"] = {k: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1
                             else 0.0, "min": float(min(v)), "max": float(max(v))}
                         for k, v in d["hv"].items()}
    return {"reference": ref, "reference_rule": REFERENCE_RULE, "per_strategy": per}


def _print(s: dict, n: int) -> None:
    ref = s["reference"]
    print(f"\nreference point (one for all runs; {s['reference_rule']}): score {ref[0]:.4f} "
          f"(= val loss {-ref[0]:.4f}), latency {ref[1]:.3f} ms")
    ks = [str(k) for k in (*CHECKPOINTS, n)]
    print("| strategy | seeds | " + " | ".join(f"HV@{k} mean +- sd [min, max]" for k in ks)
          + " | distinct archs | best score (mean) | CPU-s per run |")
    print("|---|---|" + "---|" * (len(ks) + 3))
    for name, d in s["per_strategy"].items():
        cells = [f"{d['hv_stats'][k]['mean']:.4f} +- {d['hv_stats'][k]['sd']:.4f} "
                 f"[{d['hv_stats'][k]['min']:.4f}, {d['hv_stats'][k]['max']:.4f}]" for k in ks]
        print(f"| {name} | {len(d['seeds'])} | " + " | ".join(cells)
              + f" | {np.mean(d['distinct']):.0f} | {np.mean(d['best_score']):.4f} | "
              f"{np.mean(d['cpu_seconds']):.0f} |")
    for name, d in s["per_strategy"].items():
        print(f"  {name} HV@{n} per seed {d['seeds']}: "
              + ", ".join(f"{v:.4f}" for v in d["hv"][str(n)]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=500, help="supernet evaluations per run")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--strategies", default="nsga2,tpe,random")
    ap.add_argument("--latency-device", default="iphone14-ane")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="runs/bench_strategies")
    ap.add_argument("--supernet-root", default="runs/supernet")
    ap.add_argument("--cache-dir", default="runs/cache")
    ap.add_argument("--report-only", action="store_true",
                    help="score nothing: summarise the runs finished in --out")
    a = ap.parse_args()
    seeds = [int(x) for x in a.seeds.split(",")]
    strategies = a.strategies.split(",")
    print_header()
    if not a.report_only:
        shared_supernet(a.supernet_root, a.cache_dir)  # train it here once, before the workers
    t0 = time.perf_counter()
    runs, jobs = [], []
    for seed in seeds:
        for st in strategies:
            p = os.path.join(a.out, f"{st}-seed{seed}.json")
            if os.path.isfile(p):
                runs.append(read_json(p, "strategy run"))
            elif not a.report_only:
                jobs.append((st, seed, a.n, a.supernet_root, a.cache_dir, a.latency_device, p))
    with ProcessPoolExecutor(max(1, a.workers)) as ex:
        for fu in as_completed([ex.submit(_run, j) for j in jobs]):
            r = fu.result()
            runs.append(r)
            print(f"  {r['strategy']} seed {r['seed']}: {r['distinct']} distinct, "
                  f"{r['newly_scored']} newly scored, {r['cpu_seconds']:.0f} CPU-s, "
                  f"{r['wall_seconds']:.0f} s wall", flush=True)
    runs.sort(key=lambda r: (strategies.index(r["strategy"]), r["seed"]))
    s = summarise(runs, a.n)
    _print(s, a.n)
    print(f"wall {time.perf_counter() - t0:.0f} s; load after: {uptime()}")
    write_json_atomic(os.path.join(a.out, "summary.json"), {"argv": sys.argv, **s})
    return 0


if __name__ == "__main__":
    sys.exit(main())
