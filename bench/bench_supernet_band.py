#!/usr/bin/env python
"""Rank consistency inside one latency band: does the supernet order close architectures like
stand-alone proxy training does?

    /work/venv/bin/python bench/bench_supernet_band.py [--n 12] [--band 0.10]
        [--fidelity JSON] [--workers 2] [--out runs/bench_band]

1. Sample the default space (seeded), predict every member's latency on --latency-device
   (iphone14-ane), keep those within +-band of S's predicted latency, draw --n of them.
2. Train each stand-alone at --fidelity (default DEFAULT_FIDELITY: all 500 embedded images per
   class, 2 epochs) through search.proxy.trial.run_candidate, for each of --seeds: the
   reference ranking is the mean top-1 over seeds (-val loss beside it); with two or more
   seeds, seed-vs-seed tau of the stand-alone top-1 is the reference's own noise ceiling.
3. Score each on the shared seed-0 supernet at the default SupernetConfig (-val loss, the
   supernet's score; top-1 beside it) -- bench/supernet_common.py trains it once.
4. Baselines on the same architectures: zero-cost synflow / NASWOT / grad-norm (one batch of
   64 at initialisation, as the fidelity study) and the parameter count.
5. Kendall tau of every score vs stand-alone top-1 (and vs stand-alone -val loss) with a 95%
   percentile bootstrap interval over architectures.

A process pool of --workers (2) at 1 torch thread each: the --n trainings and one job scoring
the supernet and the zero-cost baselines. Every result is cached under --out/cache/ (a rerun
resumes); the table goes to --out/band.json and stdout.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.supernet_common import (data_for, print_header, shared_supernet,  # noqa: E402
                                   tau_interval, uptime)
from latency_models.devices import load_predictor  # noqa: E402
from search.proxy.fidelity import DEFAULT_FIDELITY, Fidelity  # noqa: E402
from search.proxy.supernet.config import DEFAULT_SUPERNET, to_proxy  # noqa: E402
from search.proxy.supernet.scoring import score_subnets  # noqa: E402
from search.proxy.trial import run_candidate  # noqa: E402
from search.proxy.zero_cost import zero_cost_scores  # noqa: E402
from search_space.costs import analytic_params  # noqa: E402
from search_space.io import read_json, write_json_atomic  # noqa: E402
from search_space.space import DEFAULT_SPACE  # noqa: E402
from search_space.spec import PRESETS, ArchSpec  # noqa: E402

ZERO_COST = ("synflow", "naswot", "grad_norm")


def band_specs(n: int, band: float, device: str, seed: int, pool: int = 200_000
               ) -> tuple[list[ArchSpec], float, int]:
    """(n specs within +-band of S's predicted latency, S's latency, band population)."""
    pred = load_predictor(device)
    s_ms = float(pred.predict_many([PRESETS["S"]])[0][0])
    cands = DEFAULT_SPACE.sample_many(pool, seed=seed)
    ms = pred.predict_many(cands)[0]
    inside = [c for c, m in zip(cands, ms) if abs(m - s_ms) <= band * s_ms]
    uniq = list({c.arch_hash: c for c in inside}.values())
    if len(uniq) < n:
        raise SystemExit(f"only {len(uniq)} of {pool} samples within +-{band:.0%} of S")
    return random.Random(seed).sample(uniq, n), s_ms, len(uniq)


def _train_job(args: tuple) -> dict:
    spec, fid_json, seed, cache_dir, path = args
    torch.set_num_threads(1)
    fid = Fidelity.from_json(fid_json)
    r = run_candidate(spec, fid, data_for(fid, cache_dir), seed=seed, device="cpu", threads=1,
                      zero_cost=False)
    out = {"arch_hash": spec.arch_hash, "seed": seed, "top1": r["top1"], "val_loss": r.get("val_loss"),
           "cpu_seconds": r["cpu_seconds"], "wall_seconds": r["wall_seconds"]}
    write_json_atomic(path, out, indent=1)
    return {"kind": "train", **out}


def _score_job(args: tuple) -> dict:
    specs, supernet_root, cache_dir, path = args
    torch.set_num_threads(1)
    net, info, data = shared_supernet(supernet_root, cache_dir)
    pspecs = [to_proxy(s, data.num_classes, DEFAULT_FIDELITY.resolution,
                       DEFAULT_SUPERNET.width_divisor) for s in specs]
    sc = score_subnets(net, pspecs, data, DEFAULT_FIDELITY,
                       recal_images=DEFAULT_SUPERNET.recal_images, device="cpu",
                       channels_last=False, score=DEFAULT_SUPERNET.score)
    zc = []
    for s in specs:
        c0 = time.process_time()
        z = zero_cost_scores(s, data, seed=0, batch_size=64)
        zc.append({**z, "cpu_seconds": time.process_time() - c0})
    out = {"supernet": [{**a, "spec_hash": s.arch_hash} for a, s in zip(sc, specs)],
           "zero_cost": zc, "supernet_train_cpu_seconds": info["cpu_seconds"]}
    write_json_atomic(path, out, indent=1)
    return {"kind": "score", **out}


def _run_jobs(specs, fid: Fidelity, a) -> tuple[dict, dict]:
    """(trained[seed][arch hash], scored): cached results + the missing jobs, run in the pool."""
    trained: dict[int, dict] = {s: {} for s in a.seeds}
    scored, jobs = None, []
    for seed in a.seeds:
        for s in specs:
            p = os.path.join(a.out, "cache", fid.key, f"seed{seed}", f"{s.arch_hash}.json")
            if os.path.isfile(p):
                trained[seed][s.arch_hash] = read_json(p, "band cache file")
            else:
                jobs.append((_train_job, (s, fid.to_json(), seed, a.cache_dir, p)))
    sp = os.path.join(a.out, "cache", "scores-" + "-".join(s.arch_hash[:6] for s in specs)[:120] + ".json")
    if os.path.isfile(sp):
        scored = read_json(sp, "band score cache")
    else:  # last: the shared supernet may still be training in another process
        jobs.append((_score_job, (specs, a.supernet_root, a.cache_dir, sp)))
    with ProcessPoolExecutor(a.workers) as ex:
        futs = [ex.submit(fn, arg) for fn, arg in jobs]
        for fu in as_completed(futs):
            r = fu.result()
            if r["kind"] == "score":
                scored = r
                print(f"  supernet + zero-cost scored ({len(specs)} archs)", flush=True)
            else:
                trained[r["seed"]][r["arch_hash"]] = r
                print(f"  trained {r['arch_hash'][:10]} seed {r['seed']}: top-1 {r['top1']:.1f}  "
                      f"{r['cpu_seconds']:.0f} CPU-s", flush=True)
    return trained, scored


def _mean(trained: dict, specs, key) -> np.ndarray:
    """Per architecture, the mean over the stand-alone seeds of key(result)."""
    return np.array([np.mean([key(t[s.arch_hash]) for t in trained.values()]) for s in specs])


def _table(specs, trained, scored, n_boot: int) -> list[dict]:
    top1 = _mean(trained, specs, lambda r: r["top1"])
    vl = _mean(trained, specs, lambda r: -r["val_loss"])
    sup = scored["supernet"]
    cols = {"supernet -val loss (seed 0)": [-r["val_loss"] for r in sup],
            "supernet top-1 (seed 0)": [r["top1"] for r in sup]}
    for z in ZERO_COST:
        cols[f"zero-cost {z}"] = [r[z] for r in scored["zero_cost"]]
    cols["params (control)"] = [float(analytic_params(s)) for s in specs]
    cols["stand-alone -val loss"] = list(vl)
    sup_cpu = float(np.mean([r["cpu_seconds"] for r in sup]))
    cost = {"supernet -val loss (seed 0)": sup_cpu, "supernet top-1 (seed 0)": sup_cpu,
            "params (control)": 0.0,
            "stand-alone -val loss": float(np.mean(_mean(trained, specs,
                                                         lambda r: r["cpu_seconds"])))}
    for z in ZERO_COST:
        cost[f"zero-cost {z}"] = float(np.mean([r["cpu_seconds"] for r in scored["zero_cost"]]))
    rows = []
    for name, v in cols.items():
        t, lo, hi = tau_interval(v, top1, n_boot)
        row = {"score": name, "tau_vs_top1": t, "lo": lo, "hi": hi,
               "cpu_s_per_arch": cost[name]}
        if name != "stand-alone -val loss":
            row["tau_vs_val_loss"] = tau_interval(v, vl, n_boot)
        rows.append(row)
    seeds = sorted(trained)
    for i, a in enumerate(seeds):  # the reference's own noise: one seed's top-1 vs another's
        for b in seeds[i + 1:]:
            x = [trained[a][s.arch_hash]["top1"] for s in specs]
            y = [trained[b][s.arch_hash]["top1"] for s in specs]
            t, lo, hi = tau_interval(x, y, n_boot)
            rows.append({"score": f"stand-alone top-1 seed {a} vs seed {b} (noise ceiling)",
                         "tau_vs_top1": t, "lo": lo, "hi": hi, "cpu_s_per_arch": cost[
                             "stand-alone -val loss"]})
    return rows


def _print(rows, specs, trained, scored, s_ms, lat) -> None:
    print(f"\n{len(specs)} architectures within the band, S predicted {s_ms:.3f} ms "
          f"(stand-alone top-1 per seed {sorted(trained)}):")
    for s, m in zip(specs, lat):
        t = " / ".join(f"{trained[k][s.arch_hash]['top1']:.1f}" for k in sorted(trained))
        print(f"  {s.arch_hash[:10]} depths {s.depths} widths {s.widths} res {s.resolution}: "
              f"{m:.3f} ms, top-1 {t}")
    print("\n| score | tau vs stand-alone top-1 [95% CI] | tau vs stand-alone -val loss [95% CI] "
          "| CPU-s per arch |\n|---|---|---|---|")
    for r in rows:
        v = r.get("tau_vs_val_loss")
        vs = f"{v[0]:+.2f} [{v[1]:+.2f}, {v[2]:+.2f}]" if v else "-"
        print(f"| {r['score']} | {r['tau_vs_top1']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}] | "
              f"{vs} | {r['cpu_s_per_arch']:.2f} |")
    print(f"supernet training (seed 0, shared): {scored['supernet_train_cpu_seconds']:.0f} CPU-s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--band", type=float, default=0.10)
    ap.add_argument("--latency-device", default="iphone14-ane")
    ap.add_argument("--fidelity", default=None, help="stand-alone Fidelity fields as JSON")
    ap.add_argument("--seed", type=int, default=0, help="seed of the band's draw")
    ap.add_argument("--seeds", default="0", help="stand-alone training seeds (mean over them; "
                    "with two or more, their seed-vs-seed tau is the reference's noise ceiling)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--out", default="runs/bench_band")
    ap.add_argument("--supernet-root", default="runs/supernet")
    ap.add_argument("--cache-dir", default="runs/cache")
    a = ap.parse_args()
    a.seeds = [int(x) for x in a.seeds.split(",")]
    fid = Fidelity.from_json(a.fidelity) if a.fidelity else DEFAULT_FIDELITY
    print_header([f"stand-alone fidelity {fid.key}: {fid.to_json()}"])
    specs, s_ms, pop = band_specs(a.n, a.band, a.latency_device, a.seed)
    lat = load_predictor(a.latency_device).predict_many(specs)[0]
    print(f"band: +-{a.band:.0%} of S ({s_ms:.3f} ms on {a.latency_device}): {pop} distinct of "
          f"200,000 samples; drew {a.n}", flush=True)
    data_for(fid, a.cache_dir)
    data_for(DEFAULT_FIDELITY, a.cache_dir)
    t0 = time.perf_counter()
    trained, scored = _run_jobs(specs, fid, a)
    rows = _table(specs, trained, scored, a.boot)
    _print(rows, specs, trained, scored, s_ms, lat)
    print(f"wall {time.perf_counter() - t0:.0f} s")
    print("load after:", uptime())
    write_json_atomic(os.path.join(a.out, "band.json"), {
        "argv": sys.argv, "fidelity": fid.to_dict(), "s_ms": s_ms, "band": a.band,
        "specs": [s.to_dict() for s in specs], "latency_ms": [float(m) for m in lat],
        "trained": {str(k): v for k, v in trained.items()}, "scored": scored, "rows": rows}, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
