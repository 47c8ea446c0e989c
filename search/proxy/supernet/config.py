"""SupernetConfig: how the weight-sharing supernet is trained and its subnets scored.

A supernet proxy is defined by two frozen records: the :class:`~search.proxy.fidelity.Fidelity`
supplies the *data* (subset, resolution, augmentation, evaluation batch), this config the
*training recipe* of the supernet and the scoring of subnets. The Fidelity's optimisation
fields (epochs, lr, batch size, ...) describe stand-alone proxy training and are not used here.

This module imports no torch.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

from search_space.errors import UsageError
from search_space.fields import is_int, is_number, json_numbers, known_fields
from search_space.io import parse_json
from search_space.space import SearchSpace, attn_count
from search_space.spec import ArchSpec

__all__ = ["SupernetConfig", "DEFAULT_SUPERNET", "proxy_space", "to_proxy", "largest", "smallest",
           "REORDER_MODES", "SCORES"]

# "none": slice the first k channels as trained (BigNAS / AttentiveNAS / slimmable networks).
# "l1": OFA's re_organize_middle_weights at every epoch end: the MLP hidden units of every
#       block are sorted by the L1 norm of their outgoing weights (fc2 / pwconv2 columns), so a
#       smaller MLP ratio keeps the most important units. Function-preserving for the largest
#       subnet only.
REORDER_MODES = ("none", "l1")
SCORES = ("val_loss", "top1")


@dataclass(frozen=True)
class SupernetConfig:
    """The supernet recipe. Defaults = DEFAULT_SUPERNET; notes/supernet.md has the measurements.

    One training step follows the sandwich rule of BigNAS / AttentiveNAS (Yu et al. 2020,
    Wang et al. 2021): the largest subnet learns from the labels, then the smallest and
    ``num_random`` uniformly sampled subnets learn from the largest's soft predictions on the
    same batch (in-place distillation), gradients accumulate and the shared weights take one
    AdamW step.
    """

    # --- sandwich rule -----------------------------------------------------------------------
    # Epochs over the fidelity's train subset. Each step costs one forward+backward of the
    # largest, the smallest and num_random random subnets. 4 epochs of the 5,000 embedded
    # images at width_divisor 4: ~195 CPU-s (1 thread, 184 GFLOP/s machine) and the val-loss
    # ranking of XS/S/L1/L3 matched ImageNet in 3 of 3 seeds; 8 epochs (~395 CPU-s) did not
    # make top-1 rank them (tau 0.91 / -0.33 / 1.00) and its val loss tied XS and S in one seed.
    epochs: int = 4
    # Random subnets per step besides the largest and the smallest (BigNAS and AttentiveNAS
    # use 2: four subnets per step). More covers the space faster but costs a forward+backward
    # each.
    num_random: int = 2
    # Loss of the non-largest subnets: kd_weight * KD(soft labels of the largest) +
    # (1 - kd_weight) * label-smoothed CE. 1.0 = pure in-place distillation (BigNAS), made for
    # long schedules where the teacher is good early. In 4 epochs the teacher is itself weak:
    # with 1.0 the largest reached loss 1.87 and the subnets ~33% top-1, with 0.5 1.75 and
    # ~40% (seed 0); 0.0 (labels only) ranked XS/S/L1/L3 worse (val-loss tau 0.67).
    kd_weight: float = 0.5
    # Softmax temperature of the in-place distillation (1.0 in BigNAS/AttentiveNAS; the loss is
    # scaled by T^2 so gradients keep their size).
    kd_temperature: float = 1.0

    # --- optimisation: timm AdamW + per-step cosine with warmup, as search/proxy/train.py -----
    # Small batches give more steps in a short run, as for the stand-alone proxy.
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05  # timm skips it for norms and biases
    label_smoothing: float = 0.1  # the largest subnet's label loss (the paper's value)
    warmup_epochs: float = 0.5
    warmup_lr: float = 1e-5
    min_lr: float = 1e-5
    # Clip the accumulated gradient to this L2 norm before the step; 0 = off. AttentiveNAS
    # clips (by value, 1.0): four subnets' gradients add up on the shared weights.
    grad_clip: float = 0.0

    # --- the supernet itself ---------------------------------------------------------------
    # Every width of the space divided by this (1, or a common divisor of all widths: 2, 4 for
    # the default space). Fewer channels is one of EcoNAS's reduced-proxy factors (Zhou et al.
    # 2020). A sandwich step (batch 64, 32 px, 1 thread) measured 3.0 / 1.1 / 0.6 CPU-s at
    # divisor 1 / 2 / 4 (supernet 124M / 31M / 7.8M parameters): only 4 fits the default run's
    # budget with more than one epoch. The scored spec is the space's spec with widths /
    # width_divisor (see to_proxy).
    width_divisor: int = 4
    # Initial value of the conv encoders' layer scale (timm: 1.0). Small values start every
    # block near identity, so deeper subnets start no worse than shallower ones (BigNAS
    # zero-initialises the last BN of every residual block for that reason).
    conv_layer_scale_init: float = 1.0
    # Channel order of the MLP hidden units (REORDER_MODES).
    reorder: str = "none"

    # --- scoring -----------------------------------------------------------------------------
    # What a subnet's score is (higher = better): "val_loss" = minus the mean val cross-entropy,
    # "top1" = val top-1 (%). At the default budget the subnets' top-1 differ by about one point
    # on the 1,000 val images, inside the paired noise (XS/S/L1/L3 came out in three different
    # orders over three seeds), while the val loss ordered them correctly in every seed: it
    # uses every image's confidence instead of a 0/1 per image (notes/supernet.md).
    score: str = "val_loss"
    # BatchNorm statistics of a subnet are re-estimated from this many train images (evenly
    # spread over classes, no augmentation) before its top-1 is measured: shared running stats
    # mean nothing for a particular subnet (BigNAS/OFA recalibrate the same way).
    recal_images: int = 512

    def __post_init__(self) -> None:
        # Validate now: a bad setting fails before any training, as one line naming the field.
        def bad(name: str, allowed: str) -> UsageError:
            return UsageError(f"supernet.{name}={getattr(self, name)!r}: allowed {allowed}")

        for name in ("epochs", "batch_size", "width_divisor"):
            v = getattr(self, name)
            if not is_int(v) or v < 1:
                raise bad(name, "integers >= 1")
        for name in ("num_random", "recal_images"):
            v = getattr(self, name)
            if not is_int(v) or v < 0:
                raise bad(name, "integers >= 0")
        if self.batch_size < 2:
            raise bad("batch_size", "integers >= 2 (BatchNorm needs a batch)")
        for name in ("kd_weight", "kd_temperature", "lr", "weight_decay", "label_smoothing",
                     "warmup_epochs", "warmup_lr", "min_lr", "grad_clip", "conv_layer_scale_init"):
            v = getattr(self, name)
            if not is_number(v) or v < 0:
                raise bad(name, "finite numbers >= 0")
        if self.kd_weight > 1:
            raise bad("kd_weight", "numbers in [0, 1]")
        if self.kd_temperature <= 0:
            raise bad("kd_temperature", "numbers > 0")
        if self.lr <= 0:
            raise bad("lr", "numbers > 0")
        if self.label_smoothing >= 1:
            raise bad("label_smoothing", "numbers in [0, 1)")
        if self.reorder not in REORDER_MODES:
            raise bad("reorder", f"one of {REORDER_MODES}")
        if self.score not in SCORES:
            raise bad("score", f"one of {SCORES}")

    # --- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SupernetConfig":
        """Missing fields take the defaults; unknown fields are an error (typos must not pass)."""
        return cls(**json_numbers(cls, known_fields(cls, d, "supernet config")))

    @classmethod
    def from_json(cls, text: str) -> "SupernetConfig":
        return cls.from_dict(parse_json(text, "supernet config"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def key(self) -> str:
        """Stable 16-hex-digit id of this recipe (floats normalised so 1 and 1.0 agree)."""
        d = {f.name: (float(getattr(self, f.name)) if f.type in ("float", float)
                      else getattr(self, f.name)) for f in fields(self)}
        text = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> "SupernetConfig":
        return replace(self, **changes)


def _check_divisor(space: SearchSpace, width_divisor: int) -> None:
    for i, ws in enumerate(space.widths):
        for w in ws:
            q = w // width_divisor
            if w % width_divisor or (i == 0 and q % 2):
                raise UsageError(
                    f"supernet.width_divisor={width_divisor}: does not divide width {w} of stage "
                    f"{i} of the space{' into an even width' if i == 0 and not w % width_divisor else ''}"
                    "; allowed: common divisors of all widths (1 always works)")


def proxy_space(space: SearchSpace, num_classes: int, resolution: int,
                width_divisor: int = 1) -> SearchSpace:
    """The space the supernet covers: ``space`` at the proxy's class count and resolution,
    widths divided by ``width_divisor``. Resolution is not elastic in the proxy: every spec is
    scored at the fidelity's resolution (as stand-alone proxy training does)."""
    _check_divisor(space, width_divisor)
    return SearchSpace(
        depths=space.depths,
        widths=tuple(tuple(w // width_divisor for w in ws) for ws in space.widths),
        mlp_ratios=space.mlp_ratios, attn_modes=space.attn_modes, resolutions=(resolution,),
        num_classes=num_classes, distillation=space.distillation, fixed=space.fixed)


def to_proxy(spec: ArchSpec, num_classes: int, resolution: int, width_divisor: int = 1) -> ArchSpec:
    """The spec the supernet scores for a search-space spec (see :func:`proxy_space`)."""
    if any(w % width_divisor for w in spec.widths):
        raise UsageError(f"supernet.width_divisor={width_divisor}: does not divide the widths "
                         f"{list(spec.widths)} of spec {spec.arch_hash}")
    return spec.replace(widths=tuple(w // width_divisor for w in spec.widths),
                        num_classes=num_classes, resolution=resolution)


DEFAULT_SUPERNET = SupernetConfig()


def _extreme(space: SearchSpace, pick) -> ArchSpec:
    depths = tuple(pick(d) for d in space.depths)
    return space.from_params(
        {**{f"d{i}": depths[i] for i in range(len(depths))},
         **{f"w{i}": pick(w) for i, w in enumerate(space.widths)},
         **{f"m{i}": pick(space.mlp_ratios) for i in range(len(depths))},
         # attention encoders cost more than conv encoders at the same width: the largest
         # subnet has the most of them, the smallest the fewest
         **{f"a{i}": pick(space.attn_modes, key=lambda m, d=d: attn_count(m, d))
            for i, d in enumerate(depths)},
         "res": pick(space.resolutions)})


def largest(space: SearchSpace) -> ArchSpec:
    """The largest member: every dimension at its maximum (the sandwich rule's top)."""
    return _extreme(space, max)


def smallest(space: SearchSpace) -> ArchSpec:
    """The smallest member: every dimension at its minimum (the sandwich rule's bottom)."""
    return _extreme(space, min)
