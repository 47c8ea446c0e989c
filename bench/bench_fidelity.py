#!/usr/bin/env python
"""Fidelity/cost curve of the proxy: Kendall tau vs CPU-seconds over the built-in sweep.

    /work/venv/bin/python bench/bench_fidelity.py [--settings all] [--seeds 0,1,2] [--workers 3]
        [--cifar10 DIR]

Trains XS/S/L1/L3 under every setting of search.fidelity.settings.SWEEP (or --settings) over
the seeds, with results cached in --out (resumable: re-run to continue, --report-only to
summarise what finished), and prints the table, the machine load, and the PNG path. Settings
on the full CIFAR-10 (i1000-e1, i2000-e1, i5000-e1) need --cifar10 DIR (an ImageFolder root
with train/<class>/ and val/<class>/) and are skipped without it. CPU-seconds are
time.process_time of each training process (1 thread by default, so that OpenMP spin-waiting
on an oversubscribed machine does not inflate them).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import run_search  # noqa: E402  (the repository root is on sys.path only now)
from search.fidelity.settings import SWEEP  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", default="all")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/fidelity")
    ap.add_argument("--db", default="runs/results.db")
    ap.add_argument("--cifar10", metavar="DIR", help="full CIFAR-10 ImageFolder root")
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args()

    by = {s.name: s for s in SWEEP}
    names = list(by) if a.settings == "all" else a.settings.split(",")
    present = [n for n in names if n not in by or not by[n].needs_cifar10 or a.cifar10
               or a.report_only]
    skipped = [n for n in names if n not in present]
    if skipped:
        print(f"skipped (full CIFAR-10, no --cifar10): {', '.join(skipped)}")
    print("load before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    argv = ["fidelity", "--settings", ",".join(present), "--seeds", a.seeds, "--workers",
            str(a.workers), "--threads", str(a.threads), "--out", a.out, "--db", a.db]
    if a.cifar10:
        argv += ["--cifar10", a.cifar10]
    if a.report_only:
        argv.append("--report-only")
    rc = run_search.main(argv)
    print("load after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return rc


if __name__ == "__main__":
    sys.exit(main())
