"""Fidelity: the proxy-training setting, one frozen record stored with every trial.

Fronts are only ever drawn between trials of equal fidelity (and equal dataset id), so
everything that changes what a proxy accuracy *means* lives here, and nothing else does
(device, threads, channels_last and AMP are execution details: they change speed, not the
meaning of the number, and are deliberately not part of the key).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

from search_space.errors import UsageError
from search_space.fields import json_numbers, known_fields
from search_space.io import parse_json


@dataclass(frozen=True)
class Fidelity:
    """How a candidate is trained and evaluated for the search (proxy training).

    The defaults are DEFAULT_FIDELITY: the embedded CIFAR-10 subset at native 32 px. See
    notes/search_proxy.md for the measurement behind the numbers.
    """

    # --- the data subset (chosen deterministically; see search/proxy/data.py) ---------------------
    # Classes are spread evenly over the sorted class list (for ImageNet the first 100 sorted
    # wnids are almost all animals; evenly spaced ones cover the hierarchy). 10 = all of CIFAR-10.
    classes: int = 10
    # First N files by sorted name per class: all 500 of the embedded set, for 2 epochs. Chosen
    # by the fidelity study (BENCHMARKS.md, notes/fidelity.md): of the settings that fit the
    # 15-minute default run, more images and fewer epochs (EcoNAS) came closest to the ImageNet
    # order of XS/S/L1/L3 (Kendall tau -0.33 [-0.67, 0.00] over 3 seeds, not significant; cheaper
    # settings -1.0 = exactly reversed) at 278 CPU-s for the four references (~70 per training,
    # 1 thread). Nothing measured reaches the ImageNet order, not even all 50,000 CIFAR-10
    # training images (tau 0.00, 1,264 CPU-s): treat proxy top-1 differences of a few points as
    # noise. Cost is linear in images x epochs.
    images_per_class: int = 500
    # Held-out images per class for top-1 (first N by sorted name of val/<class>/). 100 x 10 =
    # 1,000: the standard error of a top-1 near 40% is ~1.5 points, which is what separates
    # candidates here; more costs eval time in every epoch.
    val_per_class: int = 100
    # Training/eval resolution. The candidate's own spec.resolution (160-256, a searched
    # dimension) is overridden for the proxy: at 224 px one L3 epoch alone would blow the budget.
    # 32 is CIFAR's native size and the smallest the network's stride-32 pyramid accepts.
    resolution: int = 32
    epochs: int = 2

    # --- optimisation (AdamW + cosine, as the SwiftFormer paper, scaled down) --------------
    # Small batches = more optimizer steps in few epochs, which is what a short proxy needs
    # most (46 steps per epoch here).
    batch_size: int = 64
    # Peak LR: higher than the paper's 1e-3 @ bs 1024 because the schedule is ~150 steps long.
    lr: float = 2e-3
    weight_decay: float = 0.05  # the paper's value; timm skips it for norms/biases
    label_smoothing: float = 0.1  # the paper's value
    # Linear warmup (fraction of an epoch allowed) from warmup_lr to lr, then per-step cosine to min_lr.
    warmup_epochs: float = 0.5
    warmup_lr: float = 1e-5
    min_lr: float = 1e-5
    # --- augmentation, GPU-free, on uint8 batches in torch (search/proxy/train.py) ------------------
    # Random crop after zero padding of `crop_padding` px (CIFAR's classic 4 at 32 px) + hflip.
    crop_padding: int = 4
    hflip: bool = True
    eval_batch_size: int = 256  # no gradients: bigger batches are faster and change nothing
    # BN recalibration before every evaluation: reset the BatchNorm running statistics and
    # re-estimate them (cumulative average) from this many train images (no augmentation, no
    # gradients). A proxy run is only ~100-200 steps, too few for momentum-0.1 running stats
    # to catch up with the fast-moving weights, so eval-mode top-1 would measure stale stats,
    # not the architecture (measured: a toy run at 100% train fit scored chance without it).
    # Costs one forward over 512 images per epoch (~5% of an epoch here). 0 disables it.
    bn_recal_images: int = 512

    def __post_init__(self) -> None:
        # Validate now so a bad fidelity fails in the driver, not in trial 17 inside Ray.
        def bad(name: str, allowed: str) -> UsageError:  # a bad fidelity is bad user input
            return UsageError(f"fidelity.{name}={getattr(self, name)!r}: allowed {allowed}")

        for name in ("classes", "images_per_class", "val_per_class", "epochs", "batch_size",
                     "eval_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad(name, "integers >= 1")
        if self.classes < 2:
            raise bad("classes", "integers >= 2")
        r = self.resolution
        if not isinstance(r, int) or isinstance(r, bool) or r < 32 or r % 32:
            raise bad("resolution", "multiples of 32, >= 32 (the network's total stride)")
        for name in ("lr", "weight_decay", "label_smoothing", "warmup_epochs", "warmup_lr", "min_lr"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise bad(name, "finite numbers >= 0")
        if self.lr <= 0:
            raise bad("lr", "numbers > 0")
        if self.label_smoothing >= 1:
            raise bad("label_smoothing", "numbers in [0, 1)")
        if not isinstance(self.bn_recal_images, int) or isinstance(self.bn_recal_images, bool) \
                or self.bn_recal_images < 0:
            raise bad("bn_recal_images", "integers >= 0")
        if not isinstance(self.crop_padding, int) or not 0 <= self.crop_padding <= self.resolution // 2:
            raise bad("crop_padding", f"integers 0..resolution/2={self.resolution // 2}")
        if not isinstance(self.hflip, bool):
            raise bad("hflip", "true or false")

    # --- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Fidelity":
        """Missing fields take the defaults; unknown fields are an error (typos must not pass)."""
        return cls(**json_numbers(cls, known_fields(cls, d, "fidelity")))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Fidelity":
        return cls.from_dict(parse_json(text, "fidelity"))

    @property
    def key(self) -> str:
        """Stable 16-hex-digit id of this setting (floats normalised so 1 and 1.0 agree)."""
        d = {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool)
                 and f.type in ("float", float) else v)
             for f in fields(self) for k, v in [(f.name, getattr(self, f.name))]}
        text = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> "Fidelity":
        return replace(self, **changes)

    # Subset identity only (what the data cache depends on): classes, counts, resolution.
    def subset_dict(self) -> dict[str, int]:
        return {"classes": self.classes, "images_per_class": self.images_per_class,
                "val_per_class": self.val_per_class, "resolution": self.resolution}


DEFAULT_FIDELITY = Fidelity()

# -- named presets (``--fidelity NAME``; JSON may start from one: {"preset": NAME, ...}) ----------
# A preset is only a name for a Fidelity: trials store the Fidelity itself (and its key), so a
# preset changing later never relabels old results.
FIDELITY_PRESETS: dict[str, Fidelity] = {
    # The embedded CIFAR-10 subset on CPU = DEFAULT_FIDELITY (10 classes x 500 images, 32 px,
    # 2 epochs, batch 64: 156 optimizer steps). Cost (1 thread, the search's layout; measured
    # 2026-11-30 on a shared 2-core AMD EPYC at sgemm 46 GFLOP/s per thread, about half its idle
    # figure, notes/search_proxy.md): XS 21, S 29, L1 41, L3 88 CPU-s per training incl. BN
    # recalibration and eval; linear in images x epochs. The 15 MB cache builds in ~1 s from
    # the bundled archive.
    "cpu-cifar": DEFAULT_FIDELITY,
    # ImageNet on one GPU: --data pointing at an ImageFolder copy of ImageNet-1k (train/<wnid>/,
    # val/<wnid>/: the val images sorted into class folders). 100 classes evenly spaced over
    # the sorted wnids (the first 100 would be almost all animals), the first 300 train and 50
    # val images per class (30,000 + 5,000; top-1 standard error ~0.7 points near 50%), decoded
    # once at 128 px into a 1.7 GB uint8 cache by a process pool over all cores. 128 px keeps
    # the network's last stage at 4x4; 10 epochs of batch 256 = 1,170 AdamW steps (warmup 1
    # epoch), random crop after 16-px padding (the CPU preset's 1/8 of the side) + flip.
    # Cost: not measured yet (no GPU in the session that added it); bench/gpu_engine.py measures
    # img/s per preset model and the 10-epoch cost on generated data. FLOP estimate: a mid-size
    # candidate (~0.33 GMAC at 128 px) needs ~2 GFLOP per training image, 300,000 images =
    # 0.6 PFLOP: 6-12 s at 5-10% of an H200's ~1 PFLOP/s bf16 peak; networks this small are
    # usually bound by kernel launches and memory traffic instead, so expect up to a minute.
    "imagenet-gpu": Fidelity(classes=100, images_per_class=300, val_per_class=50, resolution=128,
                             epochs=10, batch_size=256, lr=2e-3, warmup_epochs=1.0,
                             crop_padding=16, eval_batch_size=500, bn_recal_images=2048),
}
