"""timm models as deployed on a phone: built untrained, re-parameterised, at their input size;
and the rule that tells a timm model name from a spec reference.

Light to import: timm (and with it torch) loads on first use, through ``search_space.lazy``.
"""
from __future__ import annotations

import os

from search_space.errors import UsageError
from search_space.lazy import lazy_import
from search_space.spec import PRESETS

timm = lazy_import("timm")
timm_model_utils = lazy_import("timm.utils.model")

# timm's SwiftFormer presets are built by our generator (identical op graph; no timm conversion).
SWIFTFORMER_TIMM = {"swiftformer_xs": "XS", "swiftformer_s": "S", "swiftformer_l1": "L1",
                    "swiftformer_l3": "L3"}


def is_spec_reference(ref: str) -> bool:
    """Whether a string names a spec (preset, inline JSON, an existing file) rather than a timm
    model: the one rule every command and ``featurize`` use to tell the two apart."""
    return ref.upper() in PRESETS or ref.lstrip().startswith("{") or os.path.isfile(ref)


def is_timm_model(name: str) -> bool:
    """Whether timm knows ``name`` (without building it)."""
    return name in timm.list_models()


def default_resolution(name: str) -> int:
    """The input side timm's pretrained config gives ``name`` (224 for SwiftFormer)."""
    if name in SWIFTFORMER_TIMM:
        return 224
    cfg = timm.get_pretrained_cfg(name)
    size = getattr(cfg, "input_size", None) or (3, 224, 224)
    return int(size[-1])


def reparameterize(model):
    """Fuse re-parameterisable branches (FastViT, MobileOne, RepViT) as deployed on phones."""
    try:
        return timm_model_utils.reparameterize_model(model)
    except Exception:  # noqa: BLE001 - models without reparam branches are returned unchanged
        return model


def timm_model(name: str, resolution: int | None = None):
    """(eval-mode untrained module, input resolution) of a timm model name."""
    if not is_timm_model(name):
        raise UsageError(f"model {name!r}: not a preset (XS/S/L1/L3), spec JSON file, "
                         "inline JSON or timm model name")
    m = reparameterize(timm.create_model(name, pretrained=False))
    res = resolution or int(m.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    return m.eval(), int(res)
