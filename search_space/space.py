"""SearchSpace: the ranges the search explores, with seeded sampling, mutation, crossover,
a flat numeric encoding for predictors, its size, and membership.

Every dimension is a finite set of choices so that samplers (Optuna's NSGA-II/TPE, evolution)
and the flat encoding see the same space. The default space contains XS/S/L1/L3 exactly.
Parameters are named flatly (d0..d3 depth, w0..w3 width, m0..m3 MLP ratio, a0..a3 attention
placement, res resolution) so Optuna trials, Tune configs and the database all agree.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .fields import is_int
from .spec import (MAX_DEPTH, MAX_MLP_RATIO, MAX_RESOLUTION, MAX_WIDTH, MIN_MLP_RATIO,
                   MIN_RESOLUTION, MIN_WIDTH, NUM_STAGES, PRESETS, RESOLUTION_MULTIPLE, ArchSpec,
                   SpecError)

ATTN_MODES = ("none", "last1", "last2", "all")


def attn_count(mode: str, depth: int) -> int:
    """Number of trailing attention blocks for a placement mode at a given depth."""
    if mode == "none":
        return 0
    if mode == "all":
        return depth
    if mode.startswith("last") and mode[4:].isdecimal():
        return min(int(mode[4:]), depth)
    raise SpecError(f"attention mode {mode!r}: allowed {ATTN_MODES}")


def attn_mode(count: int, depth: int) -> str | None:
    """The placement mode for a count, or None if no mode of ATTN_MODES gives it."""
    for m in ATTN_MODES:
        if attn_count(m, depth) == count:
            return m
    return None


def _is_ratio(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and \
        MIN_MLP_RATIO <= v <= MAX_MLP_RATIO


def _is_mode(v: Any) -> bool:
    return isinstance(v, str) and (v in ATTN_MODES or (v.startswith("last") and v[4:].isdecimal()))


def _is_resolution(v: Any) -> bool:
    return is_int(v) and MIN_RESOLUTION <= v <= MAX_RESOLUTION and v % RESOLUTION_MULTIPLE == 0


def _choices(v: Any, name: str, ok: Any, allowed: str) -> tuple:
    """A non-empty list of choices, each passing ``ok``; SpecError naming the field."""
    if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or not v:
        raise SpecError(f"space.{name}={v!r}: need a non-empty list of choices ({allowed})")
    for i, c in enumerate(v):
        if not ok(c):
            raise SpecError(f"space.{name}[{i}]={c!r}: allowed {allowed}")
    return tuple(v)


def _stage_choices(v: Any, name: str) -> tuple[tuple[int, ...], ...]:
    """depths / widths: one non-empty list of integer choices per stage."""
    lo, hi = (1, MAX_DEPTH) if name == "depths" else (MIN_WIDTH, MAX_WIDTH)
    if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) != NUM_STAGES:
        raise SpecError(f"space.{name}={v!r}: need {NUM_STAGES} lists of choices (one per "
                        f"stage), e.g. [[2, 3], [2, 3], [4, 6], [3, 4]]")
    out = []
    for i, c in enumerate(v):
        even = name == "widths" and i == 0  # the stem uses widths[0] / 2 channels
        out.append(_choices(c, f"{name}[{i}]",
                            lambda x: is_int(x) and lo <= x <= hi and not (even and x % 2),
                            f"{'even ' if even else ''}integers {lo}..{hi}"))
    return tuple(out)


def _check_head_and_fixed(space: Any) -> None:
    """num_classes, distillation and the fixed ArchSpec fields (checked by building the
    space's smallest member, so ArchSpec's own rules apply)."""
    if not is_int(space.num_classes) or space.num_classes < 0:
        raise SpecError(f"space.num_classes={space.num_classes!r}: allowed integers >= 0")
    if not isinstance(space.distillation, bool):
        raise SpecError(f"space.distillation={space.distillation!r}: allowed true or false")
    fixed = space.fixed
    allowed = sorted(FIXED_FIELDS)
    if not isinstance(fixed, Mapping):
        raise SpecError(f"space.fixed={fixed!r}: need an object of ArchSpec fields {allowed}")
    unknown = sorted(set(fixed) - FIXED_FIELDS)
    if unknown:
        raise SpecError(f"space.fixed: unknown or searched field(s) {unknown}; allowed {allowed}")
    try:
        ArchSpec(depths=tuple(min(c) for c in space.depths),
                 widths=tuple(min(c) for c in space.widths),
                 mlp_ratios=(float(min(space.mlp_ratios)),) * NUM_STAGES,
                 attn_blocks=(0,) * NUM_STAGES, resolution=min(space.resolutions),
                 num_classes=space.num_classes, distillation=space.distillation, **dict(fixed))
    except SpecError as e:
        raise SpecError(f"space.fixed: {e}") from None


# ArchSpec fields a space may fix (the rest are searched or are the space's own fields).
FIXED_FIELDS = frozenset({"drop_path_rate", "layer_scale_init"})


@dataclass(frozen=True)
class SearchSpace:
    """Finite choices per stage. Defaults bracket the published family generously."""

    depths: tuple[tuple[int, ...], ...] = (
        (2, 3, 4, 5, 6), (2, 3, 4, 5, 6), (4, 6, 8, 9, 10, 12, 14), (3, 4, 5, 6, 8))
    widths: tuple[tuple[int, ...], ...] = (
        (32, 40, 48, 56, 64),
        (48, 56, 64, 80, 96, 112, 128),
        (96, 112, 128, 160, 168, 192, 224, 256, 288, 320, 352, 384),
        (160, 192, 220, 224, 256, 288, 320, 384, 448, 512, 576, 640))
    mlp_ratios: tuple[float, ...] = (2.0, 3.0, 4.0)
    attn_modes: tuple[str, ...] = ATTN_MODES
    resolutions: tuple[int, ...] = (160, 192, 224, 256)
    num_classes: int = 1000
    distillation: bool = True
    # Fixed, not searched: they are training settings, not architecture.
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # JSON types are checked field by field (a number where a list belongs is a one-line
        # SpecError naming the field, not a TypeError from len()); lists become tuples.
        for name in ("depths", "widths"):
            object.__setattr__(self, name, _stage_choices(getattr(self, name), name))
        object.__setattr__(self, "mlp_ratios", _choices(
            self.mlp_ratios, "mlp_ratios", _is_ratio, f"numbers {MIN_MLP_RATIO}..{MAX_MLP_RATIO}"))
        object.__setattr__(self, "attn_modes", _choices(
            self.attn_modes, "attn_modes", _is_mode, f"{', '.join(ATTN_MODES)} or lastN"))
        object.__setattr__(self, "resolutions", _choices(
            self.resolutions, "resolutions", _is_resolution,
            f"integers, multiples of {RESOLUTION_MULTIPLE} in {MIN_RESOLUTION}..{MAX_RESOLUTION}"))
        _check_head_and_fixed(self)

    # -- flat parameters (shared by Optuna, Tune and the database) ----------------------------
    def param_choices(self) -> dict[str, tuple]:
        p: dict[str, tuple] = {}
        for i in range(NUM_STAGES):
            p[f"d{i}"] = tuple(self.depths[i])
            p[f"w{i}"] = tuple(self.widths[i])
            p[f"m{i}"] = tuple(self.mlp_ratios)
            p[f"a{i}"] = tuple(self.attn_modes)
        p["res"] = tuple(self.resolutions)
        return p

    def from_params(self, params: Mapping[str, Any]) -> ArchSpec:
        d = tuple(int(params[f"d{i}"]) for i in range(NUM_STAGES))
        return ArchSpec(
            depths=d,
            widths=tuple(int(params[f"w{i}"]) for i in range(NUM_STAGES)),
            mlp_ratios=tuple(float(params[f"m{i}"]) for i in range(NUM_STAGES)),
            attn_blocks=tuple(attn_count(str(params[f"a{i}"]), d[i]) for i in range(NUM_STAGES)),
            resolution=int(params["res"]), num_classes=self.num_classes,
            distillation=self.distillation, **dict(self.fixed))

    def to_params(self, spec: ArchSpec) -> dict[str, Any]:
        if not self.contains(spec):
            raise SpecError(f"spec {spec.arch_hash} is not a member of this space: {self.why_not(spec)}")
        p: dict[str, Any] = {}
        for i in range(NUM_STAGES):
            p[f"d{i}"], p[f"w{i}"], p[f"m{i}"] = spec.depths[i], spec.widths[i], spec.mlp_ratios[i]
            p[f"a{i}"] = attn_mode(spec.attn_blocks[i], spec.depths[i])
        p["res"] = spec.resolution
        return p

    def suggest(self, trial) -> ArchSpec:
        """Define-by-run for an Optuna trial: categorical suggestions, returns the spec."""
        params = {k: trial.suggest_categorical(k, list(v)) for k, v in self.param_choices().items()}
        return self.from_params(params)

    # -- membership and size --------------------------------------------------------------------
    def why_not(self, spec: ArchSpec) -> str | None:
        """None if the spec is in the space, else the first reason it is not."""
        for i in range(NUM_STAGES):
            if spec.depths[i] not in self.depths[i]:
                return f"depths[{i}]={spec.depths[i]} not in {self.depths[i]}"
            if spec.widths[i] not in self.widths[i]:
                return f"widths[{i}]={spec.widths[i]} not in {self.widths[i]}"
            if spec.mlp_ratios[i] not in self.mlp_ratios:
                return f"mlp_ratios[{i}]={spec.mlp_ratios[i]} not in {self.mlp_ratios}"
            modes = {attn_count(m, spec.depths[i]) for m in self.attn_modes}
            if spec.attn_blocks[i] not in modes:
                return f"attn_blocks[{i}]={spec.attn_blocks[i]} not in {sorted(modes)}"
        if spec.resolution not in self.resolutions:
            return f"resolution={spec.resolution} not in {self.resolutions}"
        if spec.num_classes != self.num_classes or spec.distillation != self.distillation:
            return "num_classes/distillation differ from the space's"
        return None

    def contains(self, spec: ArchSpec) -> bool:
        return self.why_not(spec) is None

    __contains__ = contains

    def size(self) -> int:
        """Number of distinct architectures (placements that coincide at a depth count once)."""
        total = len(self.resolutions)
        for i in range(NUM_STAGES):
            per_depth = sum(len({attn_count(m, d) for m in self.attn_modes}) for d in self.depths[i])
            total *= per_depth * len(self.widths[i]) * len(self.mlp_ratios)
        return total

    # -- sampling and evolution -----------------------------------------------------------------
    def sample(self, rng: random.Random | int | None = None) -> ArchSpec:
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        return self.from_params({k: rng.choice(v) for k, v in self.param_choices().items()})

    def sample_many(self, n: int, seed: int = 0) -> list[ArchSpec]:
        rng = random.Random(seed)
        return [self.sample(rng) for _ in range(n)]

    def mutate(self, spec: ArchSpec, rng: random.Random | int | None = None,
               n_changes: int = 1) -> ArchSpec:
        """Move ``n_changes`` parameters to a neighbouring choice (ordinal dims) or another mode."""
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        params = self.to_params(spec)
        choices = self.param_choices()
        for _ in range(100):
            new = dict(params)
            for key in rng.sample(sorted(choices), n_changes):
                opts = choices[key]
                if len(opts) < 2:
                    continue
                if key[0] == "a":
                    new[key] = rng.choice([o for o in opts if o != new[key]])
                else:
                    j = opts.index(new[key]) + rng.choice((-1, 1))
                    new[key] = opts[min(max(j, 0), len(opts) - 1)]
            child = self.from_params(new)
            if child != spec:
                return child
        return spec  # a space with a single member

    def crossover(self, a: ArchSpec, b: ArchSpec,
                  rng: random.Random | int | None = None) -> ArchSpec:
        """Uniform crossover by stage: each stage (depth, width, ratio, placement) from one parent."""
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        pa, pb = self.to_params(a), self.to_params(b)
        child = {}
        for i in range(NUM_STAGES):
            src = pa if rng.random() < 0.5 else pb
            for k in "dwma":
                child[f"{k}{i}"] = src[f"{k}{i}"]
        child["res"] = (pa if rng.random() < 0.5 else pb)["res"]
        return self.from_params(child)

    # -- encoding for predictors ----------------------------------------------------------------
    def feature_names(self) -> list[str]:
        names = []
        for i in range(NUM_STAGES):
            names += [f"depth{i}", f"width{i}", f"mlp{i}", f"attn_frac{i}"]
        return names + ["resolution"]

    def encode(self, spec: ArchSpec) -> list[float]:
        """Flat vector in [0, 1]: ordinal dims scaled by the space's range, attention as the
        fraction of blocks that use it. Works for specs outside the space too (may leave [0,1])."""
        def scale(v: float, opts: Sequence[float]) -> float:
            lo, hi = min(opts), max(opts)
            return 0.0 if hi == lo else (v - lo) / (hi - lo)

        x: list[float] = []
        for i in range(NUM_STAGES):
            x += [scale(spec.depths[i], self.depths[i]), scale(spec.widths[i], self.widths[i]),
                  scale(spec.mlp_ratios[i], self.mlp_ratios),
                  spec.attn_blocks[i] / spec.depths[i]]
        x.append(scale(spec.resolution, self.resolutions))
        return x

    def describe(self) -> str:
        lines = ["stage  depths                   widths"]
        for i in range(NUM_STAGES):
            lines.append(f"{i:>5}  {str(list(self.depths[i])):<24} {list(self.widths[i])}")
        lines += [f"mlp ratios (per stage): {list(self.mlp_ratios)}",
                  f"attention placement (per stage): {list(self.attn_modes)}",
                  f"resolutions: {list(self.resolutions)}",
                  f"num_classes={self.num_classes} distillation={self.distillation}",
                  f"size: {self.size():,} architectures (~10^{math.log10(self.size()):.1f})",
                  "presets in space: " + ", ".join(
                      f"{n}={'yes' if self.contains(s) else 'no'}" for n, s in PRESETS.items())]
        return "\n".join(lines)


DEFAULT_SPACE = SearchSpace()
