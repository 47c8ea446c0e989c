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
from typing import Any, Mapping, Sequence

import torch

from search_space.errors import UsageError
from search_space.spec import PRESETS, PUBLISHED, ArchSpec
from search_space.stats import kendall_tau

from ..data import ProxyData
from ..fidelity import Fidelity
from ..train import evaluate, recalibrate_bn
from .config import SCORES, SupernetConfig, to_proxy
from .model import Supernet

__all__ = ["score_subnets", "reference_specs", "reference_ranking", "reference_tau", "REFERENCES"]

REFERENCES = ("XS", "S", "L1", "L3")


def score_subnets(net: Supernet, specs: Sequence[ArchSpec], data: ProxyData, fidelity: Fidelity,
                  *, recal_images: int, device: torch.device | str = "cpu",
                  channels_last: bool = True, score: str = "val_loss") -> list[dict[str, Any]]:
    """Top-1 (%), val loss and ``score`` (higher = better: minus the val loss, or the top-1;
    see SupernetConfig.score) of each subnet (specs in the supernet's space, see to_proxy),
    with its wall and CPU seconds."""
    if score not in SCORES:
        raise UsageError(f"score={score!r}: allowed one of {SCORES}")
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
                    "score": top1 if score == "top1" else -val_loss,
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
    """XS/S/L1/L3 scored, and Kendall tau against their published ImageNet top-1
    (75.7/78.5/80.9/83.0): ``tau`` of config.score, ``tau_top1`` and ``tau_val_loss`` of each."""
    specs = reference_specs(config, data, fidelity)
    scores = score_subnets(net, list(specs.values()), data, fidelity,
                           recal_images=config.recal_images, device=device,
                           channels_last=channels_last, score=config.score)
    col = {key: dict(zip(REFERENCES, (s[key] for s in scores)))
           for key in ("top1", "val_loss", "score")}
    return {"top1": col["top1"], "val_loss": col["val_loss"], "score": col["score"],
            "score_metric": config.score, "tau": reference_tau(col["score"]),
            "tau_top1": reference_tau(col["top1"]),
            "tau_val_loss": reference_tau({k: -v for k, v in col["val_loss"].items()}),
            "score_cpu_seconds": float(sum(s["cpu_seconds"] for s in scores)),
            "score_seconds": float(sum(s["seconds"] for s in scores))}


def reference_tau(scores: Mapping[str, float]) -> float | None:
    """Kendall tau (search_space.stats.kendall_tau: NaN when every score is equal) of
    XS/S/L1/L3's scores (higher = better) against their published ImageNet top-1; None unless
    all four were scored."""
    if not all(k in scores for k in REFERENCES):
        return None
    return kendall_tau([scores[k] for k in REFERENCES],
                       [PUBLISHED[k]["top1"] for k in REFERENCES])
