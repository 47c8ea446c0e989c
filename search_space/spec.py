"""ArchSpec: the frozen, validated description of one SwiftFormer-family network.

The spec is the currency of the whole tool: every layer passes an ``ArchSpec`` (or its canonical
JSON / hash), never a half-built model or a loose dict. This module imports no torch so that
populations of specs can be validated, hashed and costed quickly.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping, Sequence

from .errors import UsageError
from .fields import is_int, is_number, known_fields
from .io import canonical_json, parse_json, read_json

NUM_STAGES = 4  # SwiftFormer's four stages at strides 4/8/16/32 (feature_info reductions).

# Hard limits: what the model can build (not the search space, which is narrower; see space.py).
MAX_DEPTH = 32
MIN_WIDTH, MAX_WIDTH = 8, 4096
# MIN_WIDTH x MIN_MLP_RATIO = 4: every MLP has at least 4 hidden units, no further check needed.
MIN_MLP_RATIO, MAX_MLP_RATIO = 0.5, 16.0
MIN_RESOLUTION, MAX_RESOLUTION = 32, 2048
RESOLUTION_MULTIPLE = 32  # total stride of the network; other sizes give ragged feature maps
SEQUENCE_FIELDS = ("depths", "widths", "mlp_ratios", "attn_blocks")  # one value per stage


class SpecError(UsageError):
    """A spec that cannot be built. The message names the field, the value and what is allowed."""


@dataclass(frozen=True)
class ArchSpec:
    """One SwiftFormer-family architecture.

    Attention placement is per stage: ``attn_blocks[i]`` is the number of *trailing* blocks of
    stage i that are SwiftFormer encoders (local representation + efficient additive attention +
    MLP); the blocks before them are conv encoders. 0 means none, ``depths[i]`` means all. The
    published models use 1 (the last block of every stage).
    """

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    mlp_ratios: tuple[float, ...]
    attn_blocks: tuple[int, ...]
    resolution: int = 224
    num_classes: int = 1000
    distillation: bool = True  # second (distillation) head, averaged with the first at inference
    drop_path_rate: float = 0.0
    layer_scale_init: float = 1e-5  # init of the attention/MLP layer scales (conv encoders use 1.0)

    def __post_init__(self) -> None:
        # Normalise sequence types so lists from JSON become tuples and hashing is stable. The
        # type checks come first: a JSON null, number or string where a list belongs must be a
        # one-line SpecError naming the field, not a TypeError from tuple().
        for name in SEQUENCE_FIELDS:
            v = getattr(self, name)
            if isinstance(v, (str, bytes)) or not isinstance(v, Sequence):
                raise SpecError(f"{name}={v!r}: need a list of {NUM_STAGES} values (one per "
                                "stage)")
            object.__setattr__(self, name, tuple(v))
        for i, r in enumerate(self.mlp_ratios):
            if not is_number(r):
                raise SpecError(f"mlp_ratios[{i}]={r!r}: allowed numbers "
                                f"{MIN_MLP_RATIO}..{MAX_MLP_RATIO}")
        object.__setattr__(self, "mlp_ratios", tuple(float(r) for r in self.mlp_ratios))
        validate(self)

    # -- derived views ------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return sum(self.depths)

    def block_kinds(self, stage: int) -> tuple[str, ...]:
        """'conv' or 'attn' for each block of a stage, in order."""
        d, k = self.depths[stage], self.attn_blocks[stage]
        return tuple("attn" if j >= d - k else "conv" for j in range(d))

    def hidden_dim(self, stage: int) -> int:
        # int() truncation exactly as timm / the official code compute the MLP width.
        return int(self.widths[stage] * self.mlp_ratios[stage])

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in SEQUENCE_FIELDS:
            d[k] = list(d[k])
        return d

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ArchSpec":
        d = known_fields(cls, d, "spec", SpecError)
        missing = [n for n in SEQUENCE_FIELDS if n not in d]
        if missing:
            raise SpecError(f"spec: missing required field(s) {missing}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "ArchSpec":
        return cls.from_dict(parse_json(text, "spec", SpecError))

    def canonical_json(self) -> str:
        """Compact JSON with sorted keys and floats in repr form: equal specs give equal text."""
        return canonical_json(self.to_dict())

    @property
    def arch_hash(self) -> str:
        """Stable 16-hex-digit id: the same architecture always gets the same id."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> "ArchSpec":
        return replace(self, **changes)


def validate(spec: ArchSpec) -> None:
    """Raise SpecError naming the field, the value and what is allowed."""
    for name in SEQUENCE_FIELDS:
        v = getattr(spec, name)
        if len(v) != NUM_STAGES:
            raise SpecError(f"{name}={list(v)}: need exactly {NUM_STAGES} values (one per stage)")
    for i, d in enumerate(spec.depths):
        if not is_int(d) or not 1 <= d <= MAX_DEPTH:
            raise SpecError(f"depths[{i}]={d!r}: allowed integers 1..{MAX_DEPTH}")
    for i, w in enumerate(spec.widths):
        if not is_int(w) or not MIN_WIDTH <= w <= MAX_WIDTH:
            raise SpecError(f"widths[{i}]={w!r}: allowed integers {MIN_WIDTH}..{MAX_WIDTH}")
    if spec.widths[0] % 2:
        # The stem's first conv has widths[0] // 2 channels; an odd width would silently lose one.
        raise SpecError(f"widths[0]={spec.widths[0]}: must be even (the stem uses widths[0]/2)")
    for i, r in enumerate(spec.mlp_ratios):
        if not is_number(r) or not MIN_MLP_RATIO <= r <= MAX_MLP_RATIO:
            raise SpecError(f"mlp_ratios[{i}]={r!r}: allowed numbers {MIN_MLP_RATIO}..{MAX_MLP_RATIO}")
    for i, k in enumerate(spec.attn_blocks):
        if not is_int(k) or not 0 <= k <= spec.depths[i]:
            raise SpecError(
                f"attn_blocks[{i}]={k!r}: allowed integers 0..depths[{i}]={spec.depths[i]} "
                "(number of trailing attention blocks; 0 = none, depth = all)")
    r = spec.resolution
    if not is_int(r) or not MIN_RESOLUTION <= r <= MAX_RESOLUTION or r % RESOLUTION_MULTIPLE:
        raise SpecError(f"resolution={r!r}: allowed integers, multiples of {RESOLUTION_MULTIPLE} in "
                        f"{MIN_RESOLUTION}..{MAX_RESOLUTION}")
    if not is_int(spec.num_classes) or spec.num_classes < 0:
        raise SpecError(f"num_classes={spec.num_classes!r}: allowed integers >= 0 (0 = no head)")
    if not isinstance(spec.distillation, bool):
        raise SpecError(f"distillation={spec.distillation!r}: allowed true or false")
    if not is_number(spec.drop_path_rate) or not 0.0 <= spec.drop_path_rate < 1.0:
        raise SpecError(f"drop_path_rate={spec.drop_path_rate!r}: allowed numbers in [0, 1)")
    if not is_number(spec.layer_scale_init) or not 0.0 < spec.layer_scale_init <= 10.0:
        raise SpecError(f"layer_scale_init={spec.layer_scale_init!r}: allowed numbers in (0, 10]")


# The published variants (Shaker et al., ICCV'23, Table 2 / official repo swiftformer.py):
# four stages, MLP ratio 4, one SwiftFormer encoder at the end of every stage, distilled heads.
_PRESET_TABLE: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "XS": ((3, 3, 6, 4), (48, 56, 112, 220)),
    "S": ((3, 3, 9, 6), (48, 64, 168, 224)),
    "L1": ((4, 3, 10, 5), (48, 96, 192, 384)),
    "L3": ((4, 4, 12, 6), (64, 128, 320, 512)),
}
PRESETS: dict[str, ArchSpec] = {
    name: ArchSpec(depths=d, widths=w, mlp_ratios=(4.0,) * 4, attn_blocks=(1,) * 4)
    for name, (d, w) in _PRESET_TABLE.items()
}
# Published ImageNet-1k top-1 (%) of the distilled 300-epoch models, and iPhone 14 Neural Engine
# latency (ms), from the paper's Table 2 and the official README.
PUBLISHED = {
    "XS": {"top1": 75.7, "latency_ms": 0.7},
    "S": {"top1": 78.5, "latency_ms": 0.8},
    "L1": {"top1": 80.9, "latency_ms": 1.1},
    "L3": {"top1": 83.0, "latency_ms": 1.9},
}
TIMM_NAMES = {"XS": "swiftformer_xs", "S": "swiftformer_s", "L1": "swiftformer_l1",
              "L3": "swiftformer_l3"}


def preset(name: str) -> ArchSpec:
    key = name.upper()
    if key not in PRESETS:
        raise SpecError(f"preset {name!r}: allowed {sorted(PRESETS)}")
    return PRESETS[key]


def load_spec(ref: str) -> ArchSpec:
    """A preset name (XS/S/L1/L3), a path to a spec JSON file, or inline JSON."""
    if ref.upper() in PRESETS:
        return PRESETS[ref.upper()]
    if ref.lstrip().startswith("{"):
        return ArchSpec.from_json(ref)
    if os.path.isfile(ref):
        try:
            return ArchSpec.from_dict(read_json(ref, "spec file"))
        except SpecError as e:
            raise SpecError(f"spec file {ref}: {e}") from None
    raise SpecError(f"architecture {ref!r}: not a preset ({'/'.join(PRESETS)}), "
                    "an existing spec JSON file, or inline JSON")
