#!/usr/bin/env python
"""Local ground truth for the latency predictor: torch CPU eager latency of random specs.

Measures ``--n`` random specs of the default space (batch 1, resolution as sampled, one pinned
thread; both wall time and the inference thread's CPU time are recorded: on a machine shared
with other jobs wall time measures the scheduler, the thread's CPU time measures the model) in ``--rounds`` interleaved rounds (shuffled order per round, warm-up runs before each
model's timed runs, one process warm-up before everything), caching every raw timing in
``--cache`` so that fitting can be redone without re-measuring (``--fit-only``). Then calibrates
the predictor on ``--n-cal`` random specs and evaluates on the rest, next to the naive baseline
(a straight line in GMACs fitted on the same specs), for ``--draws`` random calibration subsets.

    /work/venv/bin/python bench/bench_latency_cpu.py --n 150 --threads 1
    /work/venv/bin/python bench/bench_latency_cpu.py --fit-only
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from search_space.stats import kendall_tau  # noqa: E402


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "uptime unavailable"


def save(cache: dict, path: str) -> None:
    from search_space.io import write_json_atomic

    write_json_atomic(path, cache, indent=None)


def measure(args) -> dict:
    import torch

    from latency_models.backends import process_warmup, set_threads
    from search_space.space import DEFAULT_SPACE
    from search_space.spec import ArchSpec
    from search_space.swiftformer import build_model

    specs = DEFAULT_SPACE.sample_many(args.n, seed=args.seed)
    cache = {"specs": {}, "meta": {}}
    if os.path.exists(args.cache):
        with open(args.cache) as f:
            cache = json.load(f)
    for s in specs:
        cache["specs"].setdefault(s.arch_hash, {"spec": s.to_dict(), "rounds": {}})
    cache["meta"].setdefault("uptime", []).append(["start", time.strftime("%H:%M:%S"), uptime()])
    cache["meta"].update(threads=args.threads, runs=args.runs, warmup=args.warmup,
                         torch=torch.__version__)
    set_threads(args.threads)
    process_warmup(args.process_warmup, args.threads)
    rng = random.Random(args.seed + 1)
    t_start = time.time()
    for rnd in range(args.rounds):
        order = [s for s in specs]
        rng.shuffle(order)
        todo = [s for s in order if str(rnd) not in cache["specs"][s.arch_hash]["rounds"]]
        for i, s in enumerate(todo):
            torch.manual_seed(0)
            model = build_model(ArchSpec.from_dict(cache["specs"][s.arch_hash]["spec"])).eval()
            x = torch.randn(1, 3, s.resolution, s.resolution)
            with torch.inference_mode():
                for _ in range(args.warmup):
                    model(x)
                ts, cpu = [], []
                for _ in range(args.runs):
                    t0, c0 = time.perf_counter(), time.thread_time()
                    model(x)
                    cpu.append((time.thread_time() - c0) * 1e3)
                    ts.append((time.perf_counter() - t0) * 1e3)
            cache["specs"][s.arch_hash]["rounds"][str(rnd)] = ts
            cache["specs"][s.arch_hash].setdefault("cpu_rounds", {})[str(rnd)] = cpu
            del model
            if i % 10 == 0 or i == len(todo) - 1:
                save(cache, args.cache)
                print(f"round {rnd} {i + 1}/{len(todo)} {time.time() - t_start:.0f}s "
                      f"{os.getloadavg()[0]:.2f}", flush=True)
        cache["meta"]["uptime"].append([f"after round {rnd}", time.strftime("%H:%M:%S"), uptime()])
        save(cache, args.cache)
    cache["meta"]["measure_s"] = round(time.time() - t_start, 1)
    save(cache, args.cache)
    return cache


def metrics(pred: np.ndarray, y: np.ndarray) -> dict:
    rel = (pred - y) / y
    return {"tau": kendall_tau(pred, y), "within10": float(np.mean(np.abs(rel) <= 0.10)),
            "mape": float(np.mean(np.abs(rel))), "max_ape": float(np.max(np.abs(rel)))}


def evaluate(cache: dict, args) -> dict:
    from latency_models import load_predictor
    from latency_models.analytic import spec_features_many
    from latency_models.fewshot import fit_features
    from search_space.costs import analytic_gmacs
    from search_space.spec import ArchSpec

    key = "cpu_rounds" if args.clock == "cpu" else "rounds"
    entries = [dict(e, rounds=e[key]) for e in cache["specs"].values() if len(e.get(key, {})) >= 1]
    specs = [ArchSpec.from_dict(e["spec"]) for e in entries]
    # Per-model latency: median over every timed run of every round (rounds are interleaved, so
    # slow phases of the shared machine hit all models alike).
    stat = {"median": np.median, "min": np.min,
            "p25": lambda a: np.percentile(a, 25)}[args.stat]
    y = np.array([stat(np.concatenate([np.asarray(v) for v in e["rounds"].values()]))
                  for e in entries])
    spread = np.array([
        (np.percentile(np.concatenate([np.asarray(v) for v in e["rounds"].values()]), 75) -
         np.percentile(np.concatenate([np.asarray(v) for v in e["rounds"].values()]), 25)) / m
        for e, m in zip(entries, y)])
    # Repeatability of the ground truth itself: the same statistic per round, round vs round,
    # over the models measured in every round.
    all_r = sorted({r for e in entries for r in e["rounds"]})
    full = [e for e in entries if all(r in e["rounds"] for r in all_r)]
    rounds_med = [np.array([stat(e["rounds"][r]) for e in full]) for r in all_r]
    rep = {}
    if len(rounds_med) > 1:
        a, b = rounds_med[0], rounds_med[1]
        rel = np.abs(a - b) / ((a + b) / 2)
        rep = {"n": len(full), "tau_round0_vs_round1": kendall_tau(a, b),
               "median_rel_diff": float(np.median(rel)), "within10": float(np.mean(rel <= 0.1)),
               "round0_as_predictor_of_round1": metrics(a, b)}
    if len(all_r) >= 4:
        # Split half: the statistic over the first half of the rounds against the second half,
        # i.e. how well the ground truth (at half its runs) agrees with itself: the ceiling for
        # any predictor's tau against it.
        h = len(all_r) // 2
        halves = [np.array([stat(np.concatenate([np.asarray(e["rounds"][r]) for r in rs]))
                            for e in full]) for rs in (all_r[:h], all_r[h:])]
        rep["split_half"] = {"rounds": [all_r[:h], all_r[h:]],
                             **metrics(halves[0], halves[1])}
    F = spec_features_many(specs)
    g = np.array([analytic_gmacs(s) for s in specs])
    prior = None if args.prior == "generic" else load_predictor(args.prior)
    rng = np.random.default_rng(args.seed)
    rows = []
    for d in range(args.draws):
        cal = rng.choice(len(y), size=args.n_cal, replace=False)
        ev = np.setdiff1d(np.arange(len(y)), cal)
        t0 = time.perf_counter()
        p = fit_features(F[cal], y[cal], "local-cpu", prior=prior)
        fit_s = time.perf_counter() - t0
        ours = metrics(p.predict_features(F[ev])[0], y[ev])
        A = np.stack([g[cal], np.ones(len(cal))], 1)
        coef, *_ = np.linalg.lstsq(A, y[cal], rcond=None)
        naive = metrics(coef[0] * g[ev] + coef[1], y[ev])
        rows.append({"ours": ours, "naive": naive, "fit_s": fit_s, "candidate": p.meta["candidate"]})
    # A full fit (all specs) shows how well the model family can do at all.
    full = fit_features(F, y, "local-cpu-full", prior=prior)
    out = {"clock": args.clock, "n_specs": len(y), "n_cal": args.n_cal, "draws": args.draws, "prior": args.prior,
           "median_rel_iqr": float(np.median(spread)),
           "stat": args.stat, "repeatability": rep,
           "latency_ms_range": [float(y.min()), float(y.max())],
           "full_fit_loo_mape": full.meta["loo_mape"]}
    for k in ("ours", "naive"):
        for m in ("tau", "within10", "mape", "max_ape"):
            vals = np.array([r[k][m] for r in rows])
            out[f"{k}_{m}_median"] = float(np.median(vals))
            out[f"{k}_{m}_first_draw"] = float(vals[0])
            out[f"{k}_{m}_p10"] = float(np.percentile(vals, 10))
    out["fit_s_median"] = float(np.median([r["fit_s"] for r in rows]))
    out["candidates"] = [r["candidate"] for r in rows]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=5, help="timed runs per model per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs per model per round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--process-warmup", type=float, default=5.0)
    ap.add_argument("--cache", default=os.path.join(ROOT, "runs", "latency", "cpu_torch.json"))
    ap.add_argument("--fit-only", action="store_true")
    ap.add_argument("--clock", default="cpu", choices=("cpu", "wall"),
                    help="cpu: thread CPU time of the (single) inference thread, which is the "
                         "uncontended latency on a shared machine; wall: perf_counter")
    ap.add_argument("--stat", default="median", choices=("median", "min", "p25"),
                    help="per-model statistic over all timed runs of all rounds")
    ap.add_argument("--n-cal", type=int, default=10)
    ap.add_argument("--draws", type=int, default=50)
    ap.add_argument("--prior", default="iphone14-ane", help="reference device or 'generic'")
    args = ap.parse_args()
    os.makedirs(os.path.dirname(args.cache), exist_ok=True)
    print(uptime(), flush=True)
    if args.fit_only:
        with open(args.cache) as f:
            cache = json.load(f)
    else:
        cache = measure(args)
    res = evaluate(cache, args)
    res["uptime_now"] = uptime()
    res["measure_uptime_log"] = cache["meta"].get("uptime", [])
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
