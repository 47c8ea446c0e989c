"""SwiftFormer-family search space: specs, presets, the search space, costs and the model.

Light to import (no torch): ``spec`` (ArchSpec, presets), ``space`` (SearchSpace), ``errors``,
``io`` and ``lazy``. The model generator (``search_space.swiftformer.build_model``) and the
cost counters (``search_space.costs``) import torch; import them where you build models.
"""
from .errors import NotFoundError, UsageError
from .spec import PRESETS, PUBLISHED, TIMM_NAMES, ArchSpec, SpecError, load_spec, preset

__all__ = ["ArchSpec", "NotFoundError", "PRESETS", "PUBLISHED", "SpecError", "TIMM_NAMES",
           "UsageError", "load_spec", "preset"]
