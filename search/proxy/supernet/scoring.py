"""Scoring subnets of a trained supernet, and the XS/S/L1/L3 ranking check.

A subnet's score is its top-1 on the cached val split after its BatchNorm statistics are
re-estimated from ``recal_images`` train images (shared running statistics mean nothing for a
particular subnet; BigNAS and OFA recalibrate the same way). It uses search/proxy/train.py's
``recalibrate_bn`` and ``evaluate`` on the supernet directly (its BatchNorm layers act like
``nn.BatchNorm2d`` on the active channels), so nothing is copied or built per candidate:
a candidate costs one forward over ``recal_images`` + val images.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch
from scipy import stats

from search_space.spec import PRESETS, PUBLISHED, ArchSpec

from ..data import ProxyData
from ..fidelity import Fidelity
from ..train import evaluate, recalibrate_bn
from .config import SupernetConfig, to_proxy
from .model import Supernet

__all__ = ["score_subnets", "reference_specs", "reference_ranking", "REFERENCES"]

REFERENCES = ("XS", "S", "L1", "L3")


def score_subnets(net: Supernet, specs: Sequence[ArchSpec], data: ProxyData, fidelity: Fidelity,
                  *, recal_images: int, device: torch.device | str = "cpu",
                  channels_last: bool = True) -> list[dict[str, Any]]:
    """Top-1 (%) and val loss of each subnet (specs in the supernet's space, see to_proxy),
    with its wall and CPU seconds."""
    dev = torch.device(device)
    for spec in specs:  # every bad spec fails before any work
        net.check(spec)
    out = []
    for spec in specs:
        t0, c0 = time.perf_counter(), time.process_time()
        net.set_active(spec)
        recalibrate_bn(net, data, recal_images, fidelity.eval_batch_size, dev, channels_last)
        top1, val_loss = evaluate(net, data, fidelity, dev, channels_last)
        out.append({"arch_hash": spec.arch_hash, "top1": top1, "val_loss": val_loss,
                    "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0})
    net.set_active(net.max_spec)
    return out


def reference_specs(config: SupernetConfig, data: ProxyData, fidelity: Fidelity) -> dict[str, ArchSpec]:
    """XS/S/L1/L3 as the supernet scores them (proxy classes, resolution and widths)."""
    return {k: to_proxy(PRESETS[k], data.num_classes, fidelity.resolution, config.width_divisor)
            for k in REFERENCES}


def reference_ranking(net: Supernet, config: SupernetConfig, data: ProxyData, fidelity: Fidelity,
                      *, device: torch.device | str = "cpu",
                      channels_last: bool = True) -> dict[str, Any]:
    """Scores of XS/S/L1/L3 and Kendall tau of their top-1 against the published ImageNet top-1
    (75.7/78.5/80.9/83.0); also tau of -val loss (a continuous tie-breaker)."""
    specs = reference_specs(config, data, fidelity)
    scores = score_subnets(net, list(specs.values()), data, fidelity,
                           recal_images=config.recal_images, device=device,
                           channels_last=channels_last)
    imagenet = [PUBLISHED[k]["top1"] for k in REFERENCES]
    top1 = [s["top1"] for s in scores]
    neg_loss = [-s["val_loss"] for s in scores]
    return {"top1": dict(zip(REFERENCES, top1)),
            "val_loss": {k: s["val_loss"] for k, s in zip(REFERENCES, scores)},
            "tau": _tau(top1, imagenet), "tau_val_loss": _tau(neg_loss, imagenet),
            "score_cpu_seconds": float(sum(s["cpu_seconds"] for s in scores)),
            "score_seconds": float(sum(s["seconds"] for s in scores))}


def _tau(x: Sequence[float], y: Sequence[float]) -> float:
    if len(set(x)) < 2:
        return float("nan")
    return float(stats.kendalltau(np.asarray(x), np.asarray(y)).statistic)
