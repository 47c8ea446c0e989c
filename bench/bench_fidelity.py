#!/usr/bin/env python
"""Fidelity/cost curve of the proxy: Kendall tau vs CPU-seconds over the built-in sweep.

    /work/venv/bin/python bench/bench_fidelity.py [--settings all] [--seeds 0,1,2] [--workers 3]

Trains XS/S/L1/L3 under every setting of search.fidelity_study.SWEEP (or --settings) over
the seeds, with results cached in --out (resumable: re-run to continue, --report-only to
summarise what finished), and prints the table, the machine load, and the PNG path. Settings
on the full CIFAR-10 JPEGs (/work/shared/datasets/cifar10) are skipped when that is absent.
CPU-seconds are time.process_time of each training process (1 thread by default, so that
OpenMP spin-waiting on an oversubscribed machine does not inflate them).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", default="all")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/fidelity")
    ap.add_argument("--db", default="runs/results.db")
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args()

    from search.fidelity_study import SWEEP

    by = {s.name: s for s in SWEEP}
    names = list(by) if a.settings == "all" else a.settings.split(",")
    present = [n for n in names if n not in by or by[n].source is None or os.path.isdir(by[n].source)]
    skipped = [n for n in names if n not in present]
    if skipped:
        print(f"skipped (dataset absent): {', '.join(skipped)}")
    print("load before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    import run_search

    argv = ["fidelity", "--settings", ",".join(present), "--seeds", a.seeds, "--workers",
            str(a.workers), "--threads", str(a.threads), "--out", a.out, "--db", a.db]
    if a.report_only:
        argv.append("--report-only")
    rc = run_search.main(argv)
    print("load after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return rc


if __name__ == "__main__":
    sys.exit(main())
