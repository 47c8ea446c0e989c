"""SwiftFormer-family search space: specs, the model generator, presets, costs and the space."""
from .spec import ArchSpec, PRESETS, PUBLISHED, SpecError, TIMM_NAMES, load_spec, preset

__all__ = ["ArchSpec", "PRESETS", "PUBLISHED", "SpecError", "TIMM_NAMES", "load_spec", "preset",
           "build_model"]


def build_model(*args, **kwargs):
    """Lazy import so spec-only users do not pay for torch (see swiftformer.build_model)."""
    from .swiftformer import build_model as _build
    return _build(*args, **kwargs)
