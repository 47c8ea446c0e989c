"""One seed of the supernet fidelity measurement: train, rank XS/S/L1/L3, time candidate scoring.

Used by bench/bench_supernet.py (CPU) and bench/gpu_supernet.py (one GPU); the fidelity study
of ``run_search.py fidelity`` can call it per seed. Imports only torch, timm, numpy, scipy and
this repository's search_space / search.proxy modules.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch

from search_space.space import DEFAULT_SPACE, SearchSpace

from ..data import ProxyData
from ..fidelity import Fidelity
from .config import SupernetConfig
from .scoring import reference_ranking, score_subnets
from .training import train_supernet

__all__ = ["run_seed"]


def run_seed(config: SupernetConfig, fidelity: Fidelity, data: ProxyData, seed: int, *,
             space: SearchSpace = DEFAULT_SPACE, device: str = "auto", threads: int | None = None,
             channels_last: bool | None = None, checkpoint_dir: str | None = None,
             candidates: int = 0, report: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train (or resume) one supernet, score XS/S/L1/L3 and ``candidates`` random subnets.

    Returns the training summary (per-step losses dropped), the reference ranking (top-1,
    Kendall tau vs ImageNet) and the scoring cost per candidate. CPU seconds are this
    process's (``time.process_time``: every thread counted)."""
    net, info = train_supernet(config, fidelity, data, seed=seed, space=space, device=device,
                               threads=threads, channels_last=channels_last,
                               checkpoint_dir=checkpoint_dir, report=report)
    cl = info["channels_last"]
    dev = net.head.weight.device
    ranking = reference_ranking(net, config, data, fidelity, device=dev, channels_last=cl)
    out: dict[str, Any] = {
        "seed": seed, "train_cpu_seconds": info["cpu_seconds"],
        "train_seconds": sum(h["seconds"] for h in info["history"]),
        "epochs": info["epochs_done"], "params": info["params"], "device": info["device"],
        "threads": info["threads"], "config_key": info["config_key"],
        "fidelity_key": info["fidelity_key"], "dataset_id": info["dataset_id"],
        "history": [{k: v for k, v in h.items() if k != "step_losses"} for h in info["history"]],
        **ranking}
    out["cpu_seconds"] = out["train_cpu_seconds"] + ranking["score_cpu_seconds"]
    if candidates > 0:
        specs = net.space.sample_many(candidates, seed=10_000 + seed)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        scores = score_subnets(net, specs, data, fidelity, recal_images=config.recal_images,
                               device=dev, channels_last=cl, score=config.score)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        out["candidates"] = {"n": candidates, "seconds_per_candidate": wall / candidates,
                             "cpu_seconds_per_candidate": cpu / candidates,
                             "candidates_per_minute": 60 * candidates / max(wall, 1e-9),
                             "top1": [s["top1"] for s in scores]}
    return out
