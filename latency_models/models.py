"""Anything a user can name -> the torch module to export or time.

An ArchSpec, a preset name (XS/S/L1/L3), a spec JSON file or inline JSON are built by our
generator (``search_space.swiftformer``); a timm model name is built untrained and
re-parameterised (``timm_models``); a torch module is used as it is. Heavy: imports torch.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from search_space.errors import UsageError
from search_space.spec import ArchSpec, load_spec
from search_space.swiftformer import build_model

from .timm_models import is_spec_reference, timm_model


def resolve_model(model_or_spec: Any, resolution: int | None = None):
    """(eval-mode torch module, resolution, name) for an ArchSpec, preset name, spec JSON,
    timm name or torch module."""
    if isinstance(model_or_spec, nn.Module):
        res = resolution or getattr(getattr(model_or_spec, "spec", None), "resolution", None) or 224
        return model_or_spec.eval(), int(res), type(model_or_spec).__name__
    if isinstance(model_or_spec, ArchSpec):
        spec = model_or_spec if resolution is None else model_or_spec.replace(resolution=resolution)
        return build_model(spec).eval(), spec.resolution, f"spec:{spec.arch_hash}"
    if isinstance(model_or_spec, str):
        if is_spec_reference(model_or_spec):
            return resolve_model(load_spec(model_or_spec), resolution)
        m, res = timm_model(model_or_spec, resolution)
        return m, res, model_or_spec
    raise UsageError(f"model: expected ArchSpec, preset/timm name or torch module, got "
                     f"{type(model_or_spec).__name__}")
