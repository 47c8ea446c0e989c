"""timm models as deployed on a phone: built untrained, re-parameterised, at their input size;
and the rule that tells a timm model name from a spec reference.

Light to import: timm (and with it torch) loads on first use, through ``search_space.lazy``.
"""
from __future__ import annotations

import difflib
import os
import re
from functools import lru_cache

from search_space.errors import UsageError
from search_space.lazy import lazy_import
from search_space.spec import PRESETS

timm = lazy_import("timm")
timm_model_utils = lazy_import("timm.utils.model")
torch = lazy_import("torch")

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


# How papers spell what timm spells out: a size word is a letter ("ConvNeXt-T" is convnext_tiny,
# "EdgeNeXt-XS" edgenext_x_small), a width multiplier a decimal ("MobileViTV2-0.5" is
# mobilevitv2_050, "RepViT-M0.9" repvit_m0_9, "GhostNet 1.0x" ghostnet_100), and timm's default
# patch / window / 224-px suffixes go unsaid ("DeiT-S" is deit_small_patch16_224).
_SIZE_WORDS = {"tiny": "t", "ti": "t", "small": "s", "base": "b", "large": "l", "medium": "m",
               "xsmall": "xs", "xxsmall": "xxs", "nano": "n"}
_UNSAID = re.compile(r"^(patch\d+|window\d+|224)$")


def name_key(name: str) -> str:
    """A model name with the spelling differences above removed: a paper's display name and the
    timm name it means share one key."""
    s = re.sub(r"(?<!\d)(\d)_(\d)(?!\d)", r"\1.\2", name.lower())  # repvit_m0_9 -> m0.9
    s = re.sub(r"(?<![a-z])(x+)[_-]small", r"\1small", s)    # edgenext_x_small -> xsmall
    s = re.sub(r"(patch|window)[_-]?(\d)", r"\1\2", s)
    toks = re.findall(r"patch\d+|window\d+|[a-z]+|\d+\.\d+|\d+", s)
    decimal = [re.fullmatch(r"\d+\.\d+", t) is not None for t in toks] + [False]
    out = []
    for i, tok in enumerate(toks):
        if tok == "x" and (decimal[i - 1] or decimal[i + 1]) or _UNSAID.match(tok):
            continue                                          # "x1.0", "1.0x"; timm's defaults
        if decimal[i]:                                        # a multiplier: 0.5 -> 050
            tok = f"{round(float(tok) * 100):03d}"
        out.append(_SIZE_WORDS.get(tok, tok) if i else tok)   # tiny_vit stays tiny
    return "".join(out)


def _keys() -> dict[str, list[str]]:
    """name_key -> timm names, for the models registered now (a model registered later, such
    as this project's swiftformer_nas* on importing search_space.swiftformer, is seen)."""
    return _keys_of(tuple(timm.list_models()))


@lru_cache(maxsize=1)
def _keys_of(names: tuple[str, ...]) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for n in names:
        keys.setdefault(name_key(n), []).append(n)
    return keys


def timm_names_like(display: str) -> list[str]:
    """The timm models a display name (a paper's spelling) can mean: one name when it is
    unambiguous, several when it is not, none when nothing matches. A width multiplier left
    unsaid is 1.0 ("MobileNet-v3-Large" is mobilenetv3_large_100)."""
    key, keys = name_key(display), _keys()
    return sorted(keys.get(key) or keys.get(key + "100", []))


def close_timm_names(display: str, n: int = 3) -> list[str]:
    """Up to ``n`` timm models whose name is close to ``display`` (for an error's hint)."""
    keys = _keys()
    near = difflib.get_close_matches(name_key(display), list(keys), n=n, cutoff=0.75)
    return [name for k in near for name in keys[k]][:n]


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


def _create(name: str, resolution: int, default: int):
    """timm.create_model at ``resolution``: models with a fixed input size (ViTs, EfficientFormer
    V2, MobileViT) take ``img_size``; fully convolutional ones refuse the keyword and need none."""
    if resolution == default:
        return timm.create_model(name, pretrained=False)
    try:
        return timm.create_model(name, pretrained=False, img_size=resolution)
    except TypeError:
        return timm.create_model(name, pretrained=False)


def _resize_attention_biases(model, scale: float) -> int:
    """Rebuild the relative-position attention biases of modules fixed to one token grid
    (EfficientFormer's 7 x 7 at 224 px, which ignores ``img_size``) for a grid ``scale`` times
    larger per side. Returns how many modules were resized."""
    n = 0
    for mod in model.modules():
        idx = getattr(mod, "attention_bias_idxs", None)
        if idx is None or not hasattr(mod, "attention_biases") or idx.dim() != 2:
            continue
        side = int(round(idx.shape[0] ** 0.5))
        new = max(1, int(round(side * scale)))
        if new == side:
            continue
        pos = torch.stack(torch.meshgrid(torch.arange(new), torch.arange(new),
                                         indexing="ij")).flatten(1)
        rel = (pos[..., :, None] - pos[..., None, :]).abs()
        mod.attention_bias_idxs = rel[0] * new + rel[1]
        mod.attention_biases = torch.nn.Parameter(
            torch.zeros(mod.attention_biases.shape[0], new * new))
        if hasattr(mod, "attention_bias_cache"):
            mod.attention_bias_cache = {}
        n += 1
    return n


def _runs_at(model, resolution: int) -> str | None:
    """None if the model runs on a (1, 3, r, r) input, else the first line of the error."""
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, resolution, resolution))
        return None
    except (RuntimeError, ValueError, AssertionError) as e:
        return (str(e).splitlines() or [type(e).__name__])[0][:200]


def timm_model(name: str, resolution: int | None = None):
    """(eval-mode untrained module, input resolution) of a timm model name, built for
    ``resolution`` (default: its pretrained input size)."""
    if not is_timm_model(name):
        raise UsageError(f"model {name!r}: not a preset (XS/S/L1/L3), spec JSON file, "
                         "inline JSON or timm model name")
    default = default_resolution(name)
    res = int(resolution or default)
    m = _create(name, res, default).eval()
    if res != default:
        err = _runs_at(m, res)
        if err is not None and _resize_attention_biases(m, res / default):
            err = _runs_at(m, res)
        if err is not None:
            raise UsageError(f"timm model {name!r} cannot run at {res} px: {err}")
    return reparameterize(m).eval(), res
