"""The proxy settings the fidelity study compares, and the reference architectures it ranks.

Light to import (no torch): the command line validates ``--settings``, ``--refs`` and
``--cifar10`` here before any training starts.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Sequence

from search.proxy.fidelity import Fidelity
from search.proxy.supernet.config import DEFAULT_SUPERNET, SupernetConfig, proxy_space, to_proxy
from search_space.costs import analytic_gmacs
from search_space.errors import NotFoundError, UsageError
from search_space.io import canonical_json
from search_space.space import DEFAULT_SPACE
from search_space.spec import PRESETS, PUBLISHED, ArchSpec

__all__ = ["Setting", "REFERENCE_NAMES", "SWEEP", "SUPERNET", "reference_specs", "published_top1",
           "default_setting", "select_settings", "setting_key", "check_supernet_setting",
           "SUPERNET_SETTINGS"]

REFERENCE_NAMES = ("XS", "S", "L1", "L3")


@dataclass(frozen=True)
class Setting:
    """One proxy setting of the study."""

    name: str
    fidelity: Fidelity
    # None = the embedded CIFAR-10 subset (500 train / 100 val per class); a path = an
    # ImageFolder root (train/<class>/, val/<class>/).
    source: str | None = None
    # "fixed" trains every architecture for fidelity.epochs; "equal_compute" gives each the
    # training compute of budget_ref at fidelity.epochs (epochs = round(epochs * gmacs(ref) /
    # gmacs(arch)), at least 1): the fixed-compute-budget alternative to fixed epochs.
    epoch_rule: str = "fixed"
    budget_ref: str = "S"
    note: str = ""  # free text for the report; not part of the setting's identity
    # Reads the full CIFAR-10 (50,000 training images), which does not ship with the package:
    # its directory comes from the command line (--cifar10 DIR) and fills ``source``
    # (:meth:`with_source`). A machine path never lives in code.
    needs_cifar10: bool = False
    # None = every reference is trained stand-alone at ``fidelity``. A SupernetConfig = the
    # weight-sharing supernet proxy (search/proxy/supernet/): per seed ONE supernet is trained
    # on ``fidelity``'s data (subset, resolution, augmentation, eval batch; the Fidelity's
    # optimisation fields are unused, the config has its own) and the references are scored as
    # its subnets. Its cost is the supernet's training plus the scoring, so it is comparable
    # with the stand-alone settings' cost of training every reference.
    supernet: SupernetConfig | None = None

    def __post_init__(self) -> None:
        if self.epoch_rule not in ("fixed", "equal_compute"):
            raise UsageError(f"setting {self.name}: epoch_rule={self.epoch_rule!r}: allowed "
                             "fixed, equal_compute")
        if self.supernet is not None and self.epoch_rule != "fixed":
            raise UsageError(f"setting {self.name}: a supernet setting trains one supernet per "
                             f"seed; epoch_rule={self.epoch_rule!r} allowed only 'fixed'")

    def with_source(self, source: str) -> "Setting":
        return replace(self, source=source)

    def fidelity_for(self, name: str, spec: ArchSpec) -> Fidelity:
        """The fidelity ``spec`` (reference ``name``) is trained at under this setting."""
        if self.epoch_rule == "fixed":
            return self.fidelity
        r = self.fidelity.resolution
        g_ref = analytic_gmacs(PRESETS[self.budget_ref].replace(resolution=r))
        g = analytic_gmacs(spec.replace(resolution=r))
        return self.fidelity.replace(epochs=max(1, int(round(self.fidelity.epochs * g_ref / g))))

    def study_fidelity(self) -> dict[str, Any]:
        """The fidelity stored with the setting's study (with the epoch rule when not fixed)."""
        extra = ({"epoch_rule": self.epoch_rule, "budget_ref": self.budget_ref}
                 if self.epoch_rule != "fixed" else {})
        if self.supernet is not None:
            extra = {"proxy": "supernet", "supernet": self.supernet.to_dict()}
        return {**self.fidelity.to_dict(), **extra}

    def to_dict(self) -> dict[str, Any]:
        # needs_cifar10 is left out: it is implied by the source, and this dict is the
        # identity of cached results and stored studies (unchanged since the study began);
        # "supernet" only where set, so the stand-alone settings' identities do not move.
        d = {"name": self.name, "fidelity": self.fidelity.to_dict(), "source": self.source,
             "epoch_rule": self.epoch_rule, "budget_ref": self.budget_ref, "note": self.note}
        if self.supernet is not None:
            d["supernet"] = self.supernet.to_dict()
        return d


def setting_key(setting: Setting, data_id: str) -> str:
    """12 hex digits: the identity of a setting's results on a dataset (name and note left
    out), the name of its cache directory (and of its supernet checkpoints)."""
    return hashlib.sha256(canonical_json({**setting.to_dict(), "name": None, "note": None,
                                          "data": data_id}).encode()).hexdigest()[:12]


def reference_specs(names: Iterable[str] = REFERENCE_NAMES) -> dict[str, ArchSpec]:
    out = {}
    for n in names:
        if n.upper() not in PRESETS:
            raise UsageError(f"--refs {n!r}: allowed {', '.join(PRESETS)}")
        out[n.upper()] = PRESETS[n.upper()]
    return out


def published_top1(names: Iterable[str]) -> list[float]:
    return [float(PUBLISHED[n]["top1"]) for n in names]


# The sweep planned for a 2-core machine (32 px; ~28 ms CPU per image-epoch for all four refs).
# The sweep's base: 300 images x 3 epochs, the embedded default before this study (pinned
# here so the sweep and its cache keys do not move when DEFAULT_FIDELITY does).
_B = Fidelity(images_per_class=300, epochs=3)
# Cheapest first: on a loaded machine the run is cut short, and the cheap end of the curve is
# what the embedded default must come from.
SWEEP: tuple[Setting, ...] = (
    Setting("i100-e1", _B.replace(images_per_class=100, epochs=1), note="cheapest"),
    Setting("i100-e3", _B.replace(images_per_class=100, epochs=3),
            note="same image-epochs as i300-e1: fewer images, more epochs"),
    Setting("i300-e1", _B.replace(epochs=1),
            note="same image-epochs as i100-e3: more images, fewer epochs"),
    Setting("i300-e3", _B, note="DEFAULT_FIDELITY before the study"),
    Setting("i500-e2", _B.replace(images_per_class=500, epochs=2),
            note="more images, fewer epochs; DEFAULT_FIDELITY"),
    Setting("i100-e9", _B.replace(images_per_class=100, epochs=9),
            note="fewer images, more epochs"),
    Setting("i300-e3-eqc", _B, epoch_rule="equal_compute", budget_ref="S",
            note="equal compute (S's) per arch, not equal epochs"),
    Setting("i1000-e1", _B.replace(images_per_class=1000, epochs=1), needs_cifar10=True,
            note="full CIFAR-10 JPEGs"),
    Setting("i300-e3-plain", _B.replace(label_smoothing=0.0, crop_padding=0, hflip=False),
            note="no label smoothing, no augmentation"),
    Setting("i300-e3-bs32", _B.replace(batch_size=32), note="batch 32 (twice the steps)"),
    Setting("i500-e5", _B.replace(images_per_class=500, epochs=5), note="expensive"),
    Setting("i2000-e1", _B.replace(images_per_class=2000, epochs=1), needs_cifar10=True,
            note="full CIFAR-10, more images"),
    Setting("i5000-e1", _B.replace(images_per_class=5000, val_per_class=500, epochs=1),
            needs_cifar10=True, note="all of CIFAR-10's training set once; 5,000 val images"),
    Setting("r64-i100-e2",
            _B.replace(images_per_class=100, epochs=2, resolution=64, crop_padding=8),
            note="64 px"),
)
# The weight-sharing supernet: its data are all 500 embedded images per class at 32 px with
# the stand-alone default's augmentation (pinned, as _B; its key equals DEFAULT_FIDELITY's at
# the time of writing, so bench/bench_supernet.py's seed checkpoints resume here), its recipe
# the default SupernetConfig (4 epochs, widths / 4; notes/supernet.md).
SUPERNET = Setting("supernet", Fidelity(images_per_class=500, epochs=2), supernet=DEFAULT_SUPERNET,
                   note="weight-sharing supernet, default SupernetConfig; cost includes training")
# Selectable by name; not in 'all' (each seed trains a supernet, ~195 CPU-s at the default).
SUPERNET_SETTINGS: tuple[Setting, ...] = (SUPERNET,)


def default_setting(fidelity: Fidelity, *, name: str | None, source: str | None,
                    from_option: bool) -> Setting:
    """The ``default`` setting: ``fidelity`` (from --fidelity, else DEFAULT_FIDELITY) on
    ``source`` (--data; None = the embedded subset)."""
    return Setting(name or f"custom-{fidelity.key[:8]}", fidelity, source=source,
                   note="from --fidelity" if from_option else "DEFAULT_FIDELITY")


def _resolve(s: Setting, cifar10: str | None, asked: str, need_data: bool) -> Setting:
    if not s.needs_cifar10 or (cifar10 is None and not need_data):
        return s
    if cifar10 is None:
        raise UsageError(f"--settings {asked}: {s.name} reads the full CIFAR-10; give --cifar10 "
                         "DIR (an ImageFolder root with train/<class>/ and val/<class>/)")
    return s.with_source(cifar10)


def _with_supernet(s: Setting, config: SupernetConfig | None) -> Setting:
    """``s`` with the recipe from --supernet; a recipe other than the default gets its own
    name (supernet-<key>), so its studies and caches never mix with the default's."""
    if s.supernet is None or config is None or config == s.supernet:
        return s
    return replace(s, name=f"{s.name}-{config.key[:8]}", supernet=config,
                   note=f"{s.note}; --supernet {config.key[:8]}")


def check_supernet_setting(setting: Setting, refs: Iterable[str]) -> None:
    """Before any work: the supernet's width divisor divides the space, and every reference is
    one of its subnets (at the setting's classes and resolution). One-line UsageError."""
    cfg, fid = setting.supernet, setting.fidelity
    if cfg is None:
        return
    space = proxy_space(DEFAULT_SPACE, fid.classes, fid.resolution, cfg.width_divisor)
    for name, spec in reference_specs(refs).items():
        why = space.why_not(to_proxy(spec, fid.classes, fid.resolution, cfg.width_divisor))
        if why:
            raise UsageError(f"--refs {name}: not a subnet of the supernet of setting "
                             f"{setting.name} ({why})")


def select_settings(names: Sequence[str], *, default: Setting, cifar10: str | None = None,
                    need_data: bool = True, log: Callable[[str], None] = print,
                    supernet: SupernetConfig | None = None) -> list[Setting]:
    """The settings named by ``--settings`` (``default``, ``all``, sweep names or ``supernet``),
    in order, without repeats. Sweep settings on the full CIFAR-10 take their data from
    ``cifar10``; without it, ``all`` leaves them out (said in ``log``) and naming one is an
    error -- unless ``need_data`` is False (a report of cached results trains nothing).
    ``supernet`` (from --supernet) replaces the supernet settings' recipe; it is an error when
    no supernet setting is selected."""
    if cifar10 is not None and not os.path.isdir(cifar10):
        raise NotFoundError(f"--cifar10 {cifar10}: no such directory")
    by = {s.name: s for s in SWEEP + SUPERNET_SETTINGS}
    if not names:
        raise UsageError("--settings: empty; allowed 'default', 'all' or names from --list")
    out: list[Setting] = []
    for n in names:
        if n == "all":
            skipped = [s.name for s in SWEEP if s.needs_cifar10 and cifar10 is None and need_data]
            if skipped:
                log(f"--settings all: skipping {', '.join(skipped)} (full CIFAR-10; give "
                    "--cifar10 DIR to include them)")
            out += [_resolve(s, cifar10, n, need_data) for s in SWEEP if s.name not in skipped]
        elif n == "default":
            out.append(default)
        elif n in by:
            out.append(_resolve(by[n], cifar10, n, need_data))
        else:
            raise UsageError(f"--settings {n!r}: allowed default, all, {', '.join(by)}")
    if supernet is not None and not any(s.supernet is not None for s in out):
        raise UsageError("--supernet: applies only to a supernet setting; add --settings "
                         f"{', '.join(s.name for s in SUPERNET_SETTINGS)}")
    out = [_with_supernet(s, supernet) for s in out]
    seen: set[str] = set()
    return [s for s in out if not (s.name in seen or seen.add(s.name))]
