"""How fast bad input fails: wall seconds of ``run_search.py search`` with one bad option each.

    /work/venv/bin/python bench/bench_fail_fast.py [--repeat 3]

Bad input must fail before any heavy work (no torch, Ray, data cache or database): the tests
check *that* (tests/test_search_driver.py: exit 2, one line, no Ray, nothing written, no heavy
import); this script measures *how long* it takes, as a fresh process would see it, next to
``run_search.py --help`` (the floor: Python start-up plus the command-line modules). Prints the
median per case; run it with ``uptime`` beside it, the machine's load moves the numbers.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "--help": ["--help"],
    "--trials 0": ["search", "--trials", "0"],
    "--data missing": ["search", "--data", "{tmp}/nowhere"],
    "--latency-device unknown": ["search", "--latency-device", "nokia-3310"],
    "--latency-budget-ms 0.001": ["search", "--latency-budget-ms", "0.001"],
    "--extra-arch bad": ["search", "--extra-arch", '{"depths": [1, 2]}'],
    "--resume nothing": ["search", "--study", "nothing-here", "--resume"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in CASES.items():
            argv = [a.replace("{tmp}", tmp) for a in argv]
            if argv[0] == "search":
                argv += ["--db", f"{tmp}/r.db", "--out", f"{tmp}/runs"]
            times, rcs = [], set()
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                r = subprocess.run([sys.executable, str(ROOT / "run_search.py"), *argv], cwd=tmp,
                                   env=env, capture_output=True, text=True)
                times.append(time.perf_counter() - t0)
                rcs.add(r.returncode)
            print(f"{name:28s} {statistics.median(times):6.2f} s  (exit {sorted(rcs)})",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
