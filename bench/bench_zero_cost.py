"""Rank correlation of zero-cost scores with proxy accuracy over random specs.

  python bench/bench_zero_cost.py [--n 16] [--seed 0] [--threads 1] [--fidelity NAME|JSON]

Samples n specs from DEFAULT_SPACE, computes zero_cost_scores and trains each at the fidelity
(a preset name or JSON as --fidelity; default cpu-cifar on the embedded set), then prints
Kendall tau and Spearman rho of each
score -- and of parameter count, the usual baseline such proxies must beat -- with proxy top-1.
Rows are appended to runs/bench_zero_cost.jsonl as they finish.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scipy.stats import kendalltau, spearmanr  # noqa: E402

from search.proxy.data import prepare_data  # noqa: E402
from search.options import parse_fidelity  # noqa: E402
from search.proxy.train import train_proxy  # noqa: E402
from search.proxy.zero_cost import zero_cost_scores  # noqa: E402
from search_space.costs import analytic_params  # noqa: E402
from search_space.space import DEFAULT_SPACE  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fidelity", default=None)
    ap.add_argument("--cache", default="runs/cache")
    ap.add_argument("--out", default="runs/bench_zero_cost.jsonl")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    os.system("uptime")
    fid = parse_fidelity(a.fidelity)
    data = prepare_data(None, fid, cache_dir=a.cache)
    specs = DEFAULT_SPACE.sample_many(a.n, seed=a.seed)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    rows = []
    t_all = time.time()
    for i, spec in enumerate(specs):
        t = time.perf_counter()
        zc = zero_cost_scores(spec, data, seed=0)
        t_zc = time.perf_counter() - t
        r = train_proxy(spec, fid, data, seed=0, device="cpu", threads=a.threads)
        row = {"arch_hash": spec.arch_hash, **zc,
               "params_m": analytic_params(spec.replace(num_classes=data.num_classes)) / 1e6,
               "top1": r["top1"], "zc_seconds": t_zc, "train_seconds": r["train_seconds"],
               "cpu_seconds": r["cpu_seconds"], "fidelity_key": fid.key, "spec": spec.to_dict()}
        rows.append(row)
        with open(a.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{i + 1:2d}/{len(specs)} {spec.arch_hash} params {row['params_m']:.1f}M top1 "
              f"{row['top1']:.1f}  synflow {zc['synflow']:.1f} naswot {zc['naswot']:.1f} "
              f"grad_norm {zc['grad_norm']:.2f}  zc {t_zc:.1f} s, train {r['train_seconds']:.0f} s "
              f"wall / {r['cpu_seconds']:.0f} s CPU", flush=True)
    top = [r["top1"] for r in rows]
    print(f"\n{len(rows)} specs, fidelity {fid.key}, {time.time() - t_all:.0f} s")
    print(f"{'score':10} {'kendall':>8} {'p':>6} {'spearman':>9} {'p':>6}")
    for k in ("synflow", "naswot", "grad_norm", "params_m"):
        kt, sp = kendalltau([r[k] for r in rows], top), spearmanr([r[k] for r in rows], top)
        print(f"{k:10} {kt.statistic:8.2f} {kt.pvalue:6.3f} {sp.statistic:9.2f} {sp.pvalue:6.3f}")
    print("zero-cost seconds per spec: mean "
          f"{sum(r['zc_seconds'] for r in rows) / len(rows):.1f}")
    os.system("uptime")
    return 0


if __name__ == "__main__":
    sys.exit(main())
