"""Benchmark: specs sampled+validated per second, analytic GMACs per second vs fvcore, build time.

    python bench/bench_search_space.py
"""
from __future__ import annotations

import os
import platform
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from search_space.costs import analytic_gmacs  # noqa: E402
from search_space.fvcore_count import fvcore_gmacs  # noqa: E402
from search_space.space import DEFAULT_SPACE  # noqa: E402
from search_space.spec import ArchSpec  # noqa: E402
from search_space.swiftformer import build_model  # noqa: E402


def main() -> None:
    import torch
    torch.set_num_threads(2)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, torch {torch.__version__}")
    rng = random.Random(0)
    n = 20000
    t = time.perf_counter()
    specs = [DEFAULT_SPACE.sample(rng) for _ in range(n)]
    dt = time.perf_counter() - t
    print(f"sample+validate: {n / dt:,.0f} specs/s ({n} specs)")

    t = time.perf_counter()
    for s in specs:
        ArchSpec.from_json(s.to_json())
    dt = time.perf_counter() - t
    print(f"JSON round trip + validate: {n / dt:,.0f} specs/s")

    t = time.perf_counter()
    for s in specs[:5000]:
        analytic_gmacs(s)
    a_rate = 5000 / (time.perf_counter() - t)
    m = 20
    builds, fv = [], []
    for s in specs[:m]:
        t = time.perf_counter()
        model = build_model(s)
        builds.append(time.perf_counter() - t)
        t = time.perf_counter()
        fvcore_gmacs(model, s.resolution)
        fv.append(time.perf_counter() - t)
    f_rate = 1 / statistics.mean(fv)
    print(f"analytic GMACs: {a_rate:,.0f} specs/s; fvcore (trace, batch 1): {f_rate:.2f} specs/s; "
          f"ratio analytic/fvcore = {a_rate / f_rate:,.0f}x")
    print(f"build_model: median {statistics.median(builds) * 1e3:.1f} ms, "
          f"max {max(builds) * 1e3:.1f} ms over {m} random specs of the default space")


if __name__ == "__main__":
    main()
