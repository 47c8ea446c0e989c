"""Local CPU layout for the search: 1 trial x N threads vs N trials x 1 thread (same trials).

    /work/venv/bin/python bench/bench_search_parallel.py [--trials 6] [--fidelity JSON]
        [--baselines XS,S]

Runs the real driver twice with the random sampler and the same seed (so both layouts train
the very same architectures), each into its own database (no reuse between them), and prints
the end-to-end wall time of each layout, including Ray start-up.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--fidelity", default=json.dumps({"epochs": 1}))
    ap.add_argument("--baselines", default="")
    ap.add_argument("--out", default="runs/bench_search_parallel")
    a = ap.parse_args()
    from search.nas.config import SearchConfig, parse_fidelity_fields
    from search.nas.driver import run_search

    cores = os.cpu_count() or 1
    print(f"uptime: {os.popen('uptime').read().strip()}", flush=True)
    out = Path(a.out)
    if out.exists():
        shutil.rmtree(out)
    layouts = [("1 trial x %d threads" % cores, float(cores), 1),
               ("%d trials x 1 thread" % cores, 1.0, cores)]
    for label, cpt, conc in layouts:
        study = f"par-{int(cpt)}x{conc}"
        cfg = SearchConfig(study=study, strategy="random", seed=0, n_trials=a.trials,
                           fidelity=parse_fidelity_fields(json.loads(a.fidelity)),
                           baselines=tuple(b for b in a.baselines.split(",") if b),
                           db=str(out / f"{study}.db"), out_root=str(out),
                           cpus_per_trial=cpt, max_concurrent=conc)
        t0 = time.monotonic()
        with open(os.devnull, "w") as quiet:
            rep = run_search(cfg, stream=quiet)
        wall = time.monotonic() - t0
        n = rep["counts"].get("COMPLETED", 0)
        print(f"{label:<22}: {wall:6.1f} s end to end for {n} trained trials "
              f"({60 * n / wall:.2f} trials/min)", flush=True)
    print(f"trials {a.trials} + baselines [{a.baselines}], fidelity overrides {a.fidelity}; "
          f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
