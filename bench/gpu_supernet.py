#!/usr/bin/env python
"""Supernet fidelity study on one GPU: 3 seeds, XS/S/L1/L3 Kendall tau vs ImageNet, img/s.

    python bench/gpu_supernet.py                 # one CUDA GPU, fits 10 minutes (--budget-s)
    python bench/gpu_supernet.py --smoke         # seconds on a CPU: checks the script runs
    python bench/gpu_supernet.py --nproc 4       # 4 GPUs: each seed's supernet trained with DDP
    python bench/gpu_supernet.py --smoke --nproc 2   # the same on 2 gloo CPU processes

The same measurement as bench/bench_supernet.py at a GPU-sized setting (full widths, larger
batch, more epochs; bf16 autocast + channels_last come from search.proxy.train's helpers).
The seeds run as concurrent processes on the one GPU (--parallel; a supernet step is many small
kernels, so one process leaves the GPU mostly idle). Before training, a few timed steps size
the epochs to the budget; the script prints what it chose. Prints per seed: tau, top-1s,
training img/s (images through the sandwich per second; x(2 + num_random) subnet passes), the
scoring rate; writes $OUT/gpu_supernet.json when OUT is set (after every seed).

With --nproc N > 1 the seeds run one after another, each supernet trained data-parallel on N
processes (``train_supernet_ranks``: NCCL, one GPU per rank; the global batch is the config's,
split over the ranks), then scored in this process from its checkpoint; img/s is then the
whole group's.

Imports only torch, timm, numpy, scipy and this repository's search_space + search.proxy
modules (no ray / optuna / sqlalchemy on the GPU machine).
"""
from __future__ import annotations

import argparse
import datetime
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402

from search.proxy.data import prepare_data  # noqa: E402
from search.proxy.fidelity import DEFAULT_FIDELITY, Fidelity  # noqa: E402
from search.proxy.supernet.config import SupernetConfig  # noqa: E402
from search.proxy.supernet.study import run_seed  # noqa: E402
from search.proxy.supernet.training import step_seconds, train_supernet_ranks  # noqa: E402
from search_space.io import write_json_atomic  # noqa: E402

# GPU setting: full widths (no width_divisor), 4x the CPU batch, many more epochs. The epochs
# are an upper bound: the calibration may lower them to fit the budget.
GPU_CONFIG = SupernetConfig(epochs=60, batch_size=256, num_random=2, lr=2e-3, warmup_epochs=2.0,
                            width_divisor=1, recal_images=1000)
GPU_FIDELITY = DEFAULT_FIDELITY.replace(eval_batch_size=1000)
SMOKE_CONFIG = SupernetConfig(epochs=1, batch_size=16, num_random=1, width_divisor=4,
                              recal_images=32)
SMOKE_FIDELITY = DEFAULT_FIDELITY.replace(images_per_class=4, val_per_class=2, eval_batch_size=64)


def _job(args: tuple) -> dict:
    cfg_json, fid_json, seed, device, cache_dir, candidates, threads, nproc = args
    torch.set_num_threads(threads)
    cfg, fid = SupernetConfig.from_json(cfg_json), Fidelity.from_json(fid_json)
    data = prepare_data(None, fid, cache_dir=cache_dir)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"gpu_supernet_seed{seed}_") as ck:
        if nproc > 1:  # DDP training into ck; run_seed below loads the finished run
            train_supernet_ranks(nproc, cfg, fid, data, seed=seed, checkpoint_dir=ck, device=device)
        r = run_seed(cfg, fid, data, seed, device=device, candidates=candidates,
                     checkpoint_dir=ck if nproc > 1 else None)
    r["nproc"] = nproc
    r["wall_seconds"] = time.perf_counter() - t0
    r["img_per_s"] = float(np.mean([h["img_per_s"] for h in r["history"]]))
    r["subnet_img_per_s"] = float(np.mean([h["subnet_img_per_s"] for h in r["history"]]))
    return r


def _size_epochs(cfg: SupernetConfig, fid: Fidelity, data, device: str, n_seeds: int,
                 parallel: int, budget_s: float) -> tuple[SupernetConfig, float]:
    """Lower cfg.epochs so that n_seeds trainings fit the budget, assuming the concurrent
    processes share the GPU with no speed-up at all (a safe bound)."""
    s = step_seconds(cfg, fid, data, steps=5, device=device)
    steps = len(data.train_y) // min(cfg.batch_size, len(data.train_y))
    per_epoch = s * steps * 1.15  # + per-epoch scoring/recalibration and checkpoint slack
    fits = int(budget_s / (per_epoch * n_seeds)) if per_epoch > 0 else cfg.epochs
    return cfg.replace(epochs=max(1, min(cfg.epochs, fits))), s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny setting on CPU (a test)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--parallel", type=int, default=None, help="processes (default: 3 on CUDA)")
    ap.add_argument("--nproc", type=int, default=1,
                    help="DDP processes per supernet (one GPU each; gloo on CPU); >1: seeds run "
                         "one after another")
    ap.add_argument("--config", default=None, help="SupernetConfig JSON (default: GPU_CONFIG)")
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="training time budget for all seeds (the script's total is ~1.3x)")
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--cache-dir", default=os.path.join(ROOT, "runs", "cache"))
    a = ap.parse_args()
    t_start = time.perf_counter()
    cuda = torch.cuda.is_available() and not a.smoke
    device = "cuda" if cuda else "cpu"
    cfg = SupernetConfig.from_json(a.config) if a.config else (SMOKE_CONFIG if a.smoke else GPU_CONFIG)
    fid = SMOKE_FIDELITY if a.smoke else GPU_FIDELITY
    seeds = [int(s) for s in a.seeds.split(",")]
    parallel = 1 if a.nproc > 1 else (a.parallel or (3 if cuda else 1))
    print("date:", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    print(f"torch {torch.__version__}, timm {timm.__version__}, device "
          f"{torch.cuda.get_device_name() if cuda else 'cpu'}, parallel processes {parallel}, "
          f"DDP processes per supernet {a.nproc}")
    data = prepare_data(None, fid, cache_dir=a.cache_dir)
    if cuda:
        cfg, step_s = _size_epochs(cfg, fid, data, device, len(seeds), parallel, a.budget_s)
        print(f"calibration: {step_s * 1000:.0f} ms per sandwich step (batch {cfg.batch_size}) "
              f"-> {cfg.epochs} epochs per seed")
    print(f"config {cfg.key}: {cfg.to_json()}")
    print(f"fidelity {fid.key}: {fid.to_json()}", flush=True)
    jobs = [(cfg.to_json(), fid.to_json(), s, device, a.cache_dir, a.candidates,
             1 if parallel > 1 or not cuda else 4, a.nproc) for s in seeds]
    results, out_dir = [], os.environ.get("OUT")
    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    with ProcessPoolExecutor(parallel, mp_context=ctx) as ex:
        for fut in as_completed([ex.submit(_job, j) for j in jobs]):
            r = fut.result()
            results.append(r)
            print(f"seed {r['seed']}: tau {r['tau']:+.2f} ({r['score_metric']}; top-1 "
                  f"{r['tau_top1']:+.2f}, val loss {r['tau_val_loss']:+.2f}) top-1 "
                  + " / ".join(f"{k} {v:.1f}" for k, v in r["top1"].items())
                  + f"; train {r['train_seconds']:.0f} s, {r['img_per_s']:.0f} img/s "
                  f"({r['subnet_img_per_s']:.0f} subnet-img/s); "
                  f"{r.get('candidates', {}).get('candidates_per_minute', math.nan):.0f} "
                  "candidates/min", flush=True)
            if out_dir:
                _write(out_dir, cfg, fid, device, results, t_start)
    taus = [r["tau"] for r in sorted(results, key=lambda r: r["seed"])]
    print(f"tau per seed: {', '.join(f'{t:+.2f}' for t in taus)}; all 1.0: "
          f"{'yes' if all(t == 1.0 for t in taus) else 'no'}; total {time.perf_counter() - t_start:.0f} s")
    return 0


def _write(out_dir: str, cfg: SupernetConfig, fid: Fidelity, device: str, results: list,
           t_start: float) -> None:
    os.makedirs(out_dir, exist_ok=True)
    doc = {"config": cfg.to_dict(), "fidelity": fid.to_dict(), "device": device,
           "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
           "torch": torch.__version__, "timm": timm.__version__, "seeds": results,
           "taus": [r["tau"] for r in results], "elapsed_s": time.perf_counter() - t_start}
    write_json_atomic(os.path.join(out_dir, "gpu_supernet.json"), doc)


if __name__ == "__main__":
    sys.exit(main())
