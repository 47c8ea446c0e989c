"""Costs measured on a built model: fvcore's MAC count and the parameter count.

The analytic counts in ``search_space.costs`` (no torch, thousands of specs per second) are
tested to equal these exactly; this module builds the model, so it imports torch.
"""
from __future__ import annotations

import torch
from fvcore.nn import FlopCountAnalysis

from .spec import ArchSpec
from .swiftformer import build_model


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def fvcore_gmacs(model_or_spec, resolution: int | None = None) -> float:
    """GMACs measured by fvcore on the eval-mode model at batch 1."""
    if isinstance(model_or_spec, ArchSpec):
        resolution = resolution or model_or_spec.resolution
        model = build_model(model_or_spec)
    else:
        model = model_or_spec
        resolution = resolution or 224
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, 3, resolution, resolution)
        fca = FlopCountAnalysis(model, x)
        fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return fca.total() / 1e9
    finally:
        model.train(was_training)
