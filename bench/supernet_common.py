"""Shared parts of the supernet bench scripts (bench_supernet_band.py, bench_supernet_strategies.py).

* the one seed-0 supernet at the default SupernetConfig on DEFAULT_FIDELITY's data, trained once
  and shared through its checkpoint (train_supernet resumes a finished run by loading it):
  ``runs/supernet/<config key>-<fidelity key>/seed0/supernet.pt``, the layout of
  bench/bench_supernet.py, so ``bench_supernet.py --seeds 0 --out runs/supernet`` fills it too;
* the header every bench prints (command, date, ``uptime`` load, sgemm);
* Kendall tau with a percentile bootstrap interval over architectures (scipy.stats.bootstrap,
  paired resampling of architectures).
"""
from __future__ import annotations

import datetime
import os
import sys
from typing import Sequence

import numpy as np
from scipy import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.bench_supernet import sgemm_gflops, uptime  # noqa: E402
from search.proxy.data import ProxyData, prepare_data  # noqa: E402
from search.proxy.fidelity import DEFAULT_FIDELITY, Fidelity  # noqa: E402
from search.proxy.supernet.config import DEFAULT_SUPERNET, SupernetConfig  # noqa: E402
from search.proxy.supernet.training import train_supernet  # noqa: E402
from search_space.stats import kendall_tau, zero_if_no_ranking  # noqa: E402

__all__ = ["shared_supernet", "supernet_dir", "print_header", "tau_interval", "sgemm_gflops",
           "uptime"]


def supernet_dir(root: str = "runs/supernet", config: SupernetConfig = DEFAULT_SUPERNET,
                 fidelity: Fidelity = DEFAULT_FIDELITY, seed: int = 0) -> str:
    return os.path.join(root, f"{config.key}-{fidelity.key}", f"seed{seed}")


def shared_supernet(root: str = "runs/supernet", cache_dir: str = "runs/cache", threads: int = 1,
                    config: SupernetConfig = DEFAULT_SUPERNET,
                    fidelity: Fidelity = DEFAULT_FIDELITY, seed: int = 0):
    """(supernet, train summary, data): trained once, loaded from its checkpoint afterwards."""
    data = prepare_data(None, fidelity, cache_dir=cache_dir)
    net, info = train_supernet(config, fidelity, data, seed=seed, device="cpu", threads=threads,
                               channels_last=False,
                               checkpoint_dir=supernet_dir(root, config, fidelity, seed))
    net.eval()
    return net, info, data


def print_header(extra: Sequence[str] = ()) -> float:
    """Command, date, load, sgemm (2048^3 on 2 threads); returns the sgemm GFLOP/s."""
    print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv))
    print("date:", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    print("load before:", uptime())
    g = sgemm_gflops()
    print(f"sgemm 2048^3, 2 threads: {g:.0f} GFLOP/s (184 idle on this VM; slow machine 68)")
    for line in extra:
        print(line)
    sys.stdout.flush()
    return g


def _tau(x: np.ndarray, y: np.ndarray) -> float:
    """search_space.stats.kendall_tau, a constant side counted as 0 (zero_if_no_ranking, the
    rule bootstrap_over_seeds uses too)."""
    return zero_if_no_ranking(kendall_tau(x, y))


def tau_interval(x: Sequence[float], y: Sequence[float], n_boot: int = 2000,
                 seed: int = 0) -> tuple[float, float, float]:
    """(tau, low, high): Kendall tau-b of x vs y and its 95% percentile bootstrap interval,
    resampling architectures (pairs) with replacement."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    point = _tau(x, y)
    res = stats.bootstrap((x, y), _tau, paired=True, vectorized=False, n_resamples=n_boot,
                          method="percentile", random_state=np.random.default_rng(seed))
    lo, hi = res.confidence_interval
    return point, float(lo), float(hi)


def data_for(fidelity: Fidelity, cache_dir: str) -> ProxyData:
    return prepare_data(None, fidelity, cache_dir=cache_dir)
