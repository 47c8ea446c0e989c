#!/usr/bin/env python
"""Supernet proxy fidelity: does a weight-sharing supernet rank XS<S<L1<L3 like ImageNet, at what cost?

    /work/venv/bin/python bench/bench_supernet.py [--config JSON] [--seeds 0,1,2] [--workers 2]
        [--threads 1] [--candidates 20] [--out runs/bench_supernet]

For each seed: train a supernet (search.proxy.supernet, SupernetConfig from --config) on the
embedded CIFAR-10 subset at the --fidelity's data setting (default DEFAULT_FIDELITY), extract
XS/S/L1/L3 at proxy size, score them (BatchNorm recalibration, then val loss and top-1),
Kendall tau of the score (SupernetConfig.score; the other metric beside it) against their
published ImageNet top-1 (75.7/78.5/80.9/83.0); then time the scoring of --candidates
random subnets. Prints the command, date, `uptime` load, this machine's sgemm (2048^3 on 2
threads), per-seed figures and the total, with the cost projected onto a 2-core machine of
68 GFLOP/s sgemm (issue 15's slow machine). Checkpoints go under --out/<config key>/seed<k>/,
so an interrupted run resumes where it stopped; the summary is written to --out/<key>.json.
CPU-seconds are time.process_time of each worker process (--threads torch threads; 1 by
default, so that spin-waiting on a shared machine does not inflate them).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from search.proxy.data import prepare_data  # noqa: E402
from search.proxy.fidelity import DEFAULT_FIDELITY, Fidelity  # noqa: E402
from search.proxy.supernet.config import SupernetConfig  # noqa: E402
from search.proxy.supernet.study import run_seed  # noqa: E402
from search_space.io import write_json_atomic  # noqa: E402

SLOW_SGEMM = 68.0  # GFLOP/s, 2048^3 sgemm on 2 threads of issue 15's slow machine
DEFAULT_RUN_BUDGET_S = 15 * 60  # the default run must fit 15 minutes there


def sgemm_gflops(threads: int = 2, n: int = 2048, reps: int = 5) -> float:
    """Best-of-reps GFLOP/s of an n^3 float32 matmul on ``threads`` threads."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    torch.set_num_threads(old)
    return 2 * n ** 3 / best / 1e9


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _seed_job(args: tuple) -> dict:
    cfg_json, fid_json, seed, threads, ckdir, candidates, cache_dir = args
    torch.set_num_threads(threads)
    cfg, fid = SupernetConfig.from_json(cfg_json), Fidelity.from_json(fid_json)
    data = prepare_data(None, fid, cache_dir=cache_dir)

    def progress(m: dict) -> None:
        print(f"  seed {seed} epoch {m['epoch']}: loss largest {m['loss_largest']:.3f} "
              f"others {m['loss_subnets']:.3f}, {m['cpu_seconds']:.0f} CPU-s "
              f"({m['img_per_s']:.1f} img/s)", flush=True)

    return run_seed(cfg, fid, data, seed, device="cpu", threads=threads, checkpoint_dir=ckdir,
                    candidates=candidates, report=progress)


def _print_seed(r: dict) -> None:
    print(f"seed {r['seed']}: tau {r['tau']:+.2f} ({r['score_metric']}; top-1 {r['tau_top1']:+.2f}, "
          f"val loss {r['tau_val_loss']:+.2f})  top-1 "
          + " / ".join(f"{k} {v:.1f}" for k, v in r["top1"].items()) + "  val loss "
          + " / ".join(f"{k} {v:.3f}" for k, v in r["val_loss"].items())
          + f"  train {r['train_cpu_seconds']:.0f} CPU-s + score {r['score_cpu_seconds']:.1f} CPU-s",
          flush=True)


def summarise(results: list[dict], sgemm: float, nominal_sgemm: float) -> dict:
    taus = [r["tau"] for r in results]
    cpu = [r["cpu_seconds"] for r in results]
    factor = nominal_sgemm / SLOW_SGEMM
    s = {"taus": taus, "all_tau_1": all(t == 1.0 for t in taus), "mean_tau": float(np.mean(taus)),
         "taus_top1": [r["tau_top1"] for r in results],
         "taus_val_loss": [r["tau_val_loss"] for r in results],
         "cpu_seconds_per_seed": cpu, "cpu_seconds_total": float(sum(cpu)),
         "sgemm_gflops_measured": sgemm, "sgemm_gflops_nominal": nominal_sgemm,
         # one supernet (one seed) as the default run would train it, on the slow machine's two
         # cores (1 thread per process; the wall time assumes both cores busy the whole time)
         "slow_machine_cpu_seconds_per_seed": float(np.mean(cpu)) * factor,
         "slow_machine_minutes_2_cores_per_seed": float(np.mean(cpu)) * factor / 2 / 60}
    cands = [r["candidates"] for r in results if "candidates" in r]
    if cands:
        s["cpu_seconds_per_candidate"] = float(np.mean([c["cpu_seconds_per_candidate"] for c in cands]))
        s["candidates_per_cpu_minute"] = 60 / s["cpu_seconds_per_candidate"]
        s["candidates_per_minute_wall"] = float(np.mean([c["candidates_per_minute"] for c in cands]))
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="{}", help="SupernetConfig fields as JSON")
    ap.add_argument("--fidelity", default=None, help="Fidelity fields as JSON (the data subset)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--nominal-sgemm", type=float, default=184.0,
                    help="this machine's idle sgemm GFLOP/s, for the projection (measured "
                         "figures on a loaded machine are low)")
    ap.add_argument("--out", default="runs/bench_supernet")
    ap.add_argument("--cache-dir", default="runs/cache")
    a = ap.parse_args()
    cfg = SupernetConfig.from_json(a.config)
    fid = Fidelity.from_json(a.fidelity) if a.fidelity else DEFAULT_FIDELITY
    seeds = [int(s) for s in a.seeds.split(",")]
    print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv))
    print("date:", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    print("load before:", uptime())
    sgemm = sgemm_gflops()
    print(f"sgemm 2048^3, 2 threads: {sgemm:.0f} GFLOP/s (nominal idle {a.nominal_sgemm:.0f}; "
          f"slow machine {SLOW_SGEMM:.0f})")
    print(f"config {cfg.key}: {cfg.to_json()}")
    print(f"fidelity {fid.key}: {fid.to_json()}", flush=True)
    prepare_data(None, fid, cache_dir=a.cache_dir)  # build the cache once, before the workers
    tag = f"{cfg.key}-{fid.key}"
    jobs = [(cfg.to_json(), fid.to_json(), s, a.threads, os.path.join(a.out, tag, f"seed{s}"),
             a.candidates, a.cache_dir) for s in seeds]
    with ProcessPoolExecutor(max(1, a.workers)) as ex:
        results = list(ex.map(_seed_job, jobs))
    for r in results:
        _print_seed(r)
    s = summarise(results, sgemm, a.nominal_sgemm)
    print(f"tau per seed ({cfg.score}): {', '.join(f'{t:+.2f}' for t in s['taus'])} "
          f"(mean {s['mean_tau']:+.2f}); tau = 1.0 in all seeds: {'yes' if s['all_tau_1'] else 'no'}; "
          f"top-1: {', '.join(f'{t:+.2f}' for t in s['taus_top1'])}; "
          f"val loss: {', '.join(f'{t:+.2f}' for t in s['taus_val_loss'])}")
    print(f"cost: {s['cpu_seconds_total']:.0f} CPU-s for {len(seeds)} seeds "
          f"({np.mean(s['cpu_seconds_per_seed']):.0f} per seed = one default-run supernet); "
          f"on the 68 GFLOP/s machine ~{s['slow_machine_cpu_seconds_per_seed']:.0f} CPU-s = "
          f"{s['slow_machine_minutes_2_cores_per_seed']:.1f} min on 2 cores "
          f"(budget {DEFAULT_RUN_BUDGET_S // 60} min for the whole default run)")
    if "cpu_seconds_per_candidate" in s:
        print(f"scoring: {s['cpu_seconds_per_candidate']:.2f} CPU-s per candidate = "
              f"{s['candidates_per_cpu_minute']:.0f} candidates per CPU-minute "
              f"({s['candidates_per_minute_wall']:.0f} per wall minute here, under this load)")
    print("load after:", uptime())
    path = os.path.join(a.out, f"{tag}.json")
    write_json_atomic(path, {"config": cfg.to_dict(), "fidelity": fid.to_dict(), "seeds": results,
                             "summary": s, "argv": sys.argv})
    print("written:", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
