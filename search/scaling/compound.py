"""Compound scaling of a SwiftFormer-family architecture to target latencies.

Compound scaling (Tan & Le 2019, EfficientNet): one coefficient phi scales

    depth d = a^phi,   width w = b^phi,   resolution r = c^phi,   with  a * b^2 * c^2 ~= 2

so each unit of phi roughly doubles the MACs. (a, b, c) are *searched* on the Tan & Le grid
(step 0.05, every coefficient >= 1, the product within ``flops_tol`` of 2), see
:func:`search_coefficients`; phi is then solved per target latency on the device's latency
predictor, the spec is rounded (depths to ints, widths to multiples of 8, resolution to
multiples of 32; every spec validates as an ArchSpec) and fine-tuned by a local search over the
widths of the last two stages (and the depth of stage 2) until the predicted latency is within
``tolerance`` (default 3 %) of the target. :func:`family_comparison` sets a family against
XS/S/L1/L3 at equal predicted latency (plain data; the drawing is in ``plots``).

Pure computation (numpy): the latency predictor is anything with
``predict_many(specs) -> (ms, std)`` (``latency_models.LatencyPredictor``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from search_space.cli_types import comma_items
from search_space.costs import analytic_gmacs, analytic_params
from search_space.errors import UsageError
from search_space.spec import (MAX_DEPTH, MAX_RESOLUTION, MAX_WIDTH, MIN_RESOLUTION, MIN_WIDTH,
                               PRESETS, PUBLISHED, RESOLUTION_MULTIPLE, ArchSpec)

__all__ = ["Coefficients", "TAN_LE", "coefficient_grid", "scale_spec", "smallest_spec",
           "scale_to_target", "check_targets", "search_coefficients", "scale_family",
           "FamilyResult", "ScaledMember", "family_comparison", "parse_targets",
           "DEFAULT_TOLERANCE", "DEFAULT_MAX_SHARE", "WIDTH_MULTIPLE"]

DEFAULT_TOLERANCE = 0.03  # the issue's +-3 % on predicted latency
# Largest fraction of the MAC growth one dimension may supply in the coefficient search: keeps
# the scaling compound (without it the search picks pure width scaling on the iPhone predictor).
DEFAULT_MAX_SHARE = 0.5
WIDTH_MULTIPLE = 8
PHI_RANGE = (-15.0, 15.0)  # wide enough that every dimension reaches its floor / a huge model


# -- compound scaling ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Coefficients:
    """Per-unit-phi multipliers of depth (a), width (b) and resolution (c)."""

    depth: float
    width: float
    resolution: float

    @property
    def flops_factor(self) -> float:
        """a * b^2 * c^2: MAC growth per unit of phi (Tan & Le keep it ~2)."""
        return self.depth * self.width ** 2 * self.resolution ** 2

    def shares(self) -> tuple[float, float, float]:
        """Fraction of the log-MAC growth each dimension supplies (sums to 1)."""
        parts = np.array([math.log(self.depth), 2 * math.log(self.width),
                          2 * math.log(self.resolution)])
        total = parts.sum()
        return tuple((parts / total).tolist()) if total > 0 else (1 / 3, 1 / 3, 1 / 3)

    def to_dict(self) -> dict[str, float]:
        return {"depth": self.depth, "width": self.width, "resolution": self.resolution}

    @classmethod
    def parse(cls, text: str) -> "Coefficients":
        try:
            a, b, c = (float(v) for v in text.split(","))
        except ValueError:  # float() of a bad item, or not three items
            raise UsageError(f"--coefficients {text!r}: expected three numbers a,b,c "
                             "(depth,width,resolution), e.g. 1.2,1.1,1.15") from None
        if not all(math.isfinite(v) and v >= 1.0 for v in (a, b, c)) or a * b * b * c * c <= 1.0:
            raise UsageError(f"--coefficients {text!r}: each must be >= 1 and a*b^2*c^2 > 1")
        return cls(a, b, c)

    def __str__(self) -> str:
        return (f"a(depth)={self.depth:.2f} b(width)={self.width:.2f} "
                f"c(resolution)={self.resolution:.2f} [a*b^2*c^2={self.flops_factor:.3f}]")


TAN_LE = Coefficients(1.2, 1.1, 1.15)  # EfficientNet-B0's searched values, for reference


def coefficient_grid(step: float = 0.05, flops_target: float = 2.0, flops_tol: float = 0.05,
                     max_share: float = DEFAULT_MAX_SHARE) -> list[Coefficients]:
    """The Tan & Le grid: a, b, c >= 1 in ``step`` increments with a*b^2*c^2 within
    ``flops_tol`` (relative) of ``flops_target``, and no dimension supplying more than
    ``max_share`` of the MAC growth (keeps the scaling compound, not single-dimension)."""
    vals = np.round(np.arange(1.0, 2.0 + 1e-9, step), 6)
    out = []
    for a in vals:
        for b in vals:
            for c in vals:
                co = Coefficients(float(a), float(b), float(c))
                f = co.flops_factor
                if abs(f / flops_target - 1) <= flops_tol and max(co.shares()) <= max_share + 1e-9:
                    out.append(co)
    if not out:
        raise UsageError(f"coefficient grid empty (step {step}, flops target {flops_target}, "
                         f"max share {max_share}); loosen --max-share")
    return out


def _round_width(w: float) -> int:
    return int(min(MAX_WIDTH, max(MIN_WIDTH, WIDTH_MULTIPLE * round(w / WIDTH_MULTIPLE))))


def _round_res(r: float) -> int:
    m = RESOLUTION_MULTIPLE
    return int(min(MAX_RESOLUTION, max(MIN_RESOLUTION, m * round(r / m))))


def _attn(base: ArchSpec, i: int, depth: int) -> int:
    # "All blocks are attention" stays all; otherwise keep the trailing count (capped by depth).
    if base.attn_blocks[i] == base.depths[i]:
        return depth
    return min(base.attn_blocks[i], depth)


def _make(base: ArchSpec, depths: Sequence[int], widths: Sequence[int], res: int) -> ArchSpec:
    depths = tuple(int(d) for d in depths)
    return base.replace(depths=depths, widths=tuple(int(w) for w in widths), resolution=int(res),
                        attn_blocks=tuple(_attn(base, i, d) for i, d in enumerate(depths)))


def scale_spec(base: ArchSpec, coef: Coefficients, phi: float) -> ArchSpec:
    """The base scaled by ``phi``: depths round to ints (1..32), widths to multiples of 8
    (8..4096; so widths[0] stays even), resolution to multiples of 32 (32..2048)."""
    dm, wm, rm = coef.depth ** phi, coef.width ** phi, coef.resolution ** phi
    depths = [int(min(MAX_DEPTH, max(1, round(d * dm)))) for d in base.depths]
    widths = [_round_width(w * wm) for w in base.widths]
    return _make(base, depths, widths, _round_res(base.resolution * rm))


def smallest_spec(base: ArchSpec) -> ArchSpec:
    """The smallest member of the scaling space: every dimension at its floor."""
    return _make(base, [1] * 4, [MIN_WIDTH] * 4, MIN_RESOLUTION)


def _predict(predictor, specs: Sequence[ArchSpec]) -> tuple[np.ndarray, np.ndarray]:
    ms, sd = predictor.predict_many(list(specs))
    return np.asarray(ms, dtype=float), np.asarray(sd, dtype=float)


@dataclass
class _Path:
    """The compound-scaling path of one coefficient triple, sampled over phi."""

    phis: np.ndarray
    specs: list[ArchSpec]
    ms: np.ndarray


def _scan_phis(base: ArchSpec, coef: Coefficients, predictor, phis: Iterable[float]
               ) -> tuple[list[float], list[ArchSpec], np.ndarray]:
    specs, keep, seen = [], [], set()
    for p in phis:
        s = scale_spec(base, coef, float(p))
        if s.arch_hash in seen:
            continue  # plateaus of the rounding: keep the first phi that reaches each spec
        seen.add(s.arch_hash)
        specs.append(s)
        keep.append(float(p))
    ms, _ = _predict(predictor, specs)
    return keep, specs, ms


def _scan(base: ArchSpec, coef: Coefficients, predictor, targets: Sequence[float] | None = None,
          step: float = 0.01, phi_range: tuple[float, float] = PHI_RANGE) -> _Path:
    """Sample the path coarsely (phi step 0.1) over ``phi_range``, then finely (``step``)
    around the phi's that bracket ``targets`` (latency is ~monotone in phi)."""
    coarse = np.round(np.arange(phi_range[0], phi_range[1] + 1e-9, 0.1), 6)
    phis, specs, ms = _scan_phis(base, coef, predictor, coarse)
    # The floor of the space (every dimension at its minimum) belongs to the path even when
    # phi_range[0] does not quite reach it (a wide stage rounds to 16 long after the others).
    floor = smallest_spec(base)
    if floor.arch_hash not in {s.arch_hash for s in specs}:
        phis.insert(0, phi_range[0])
        specs.insert(0, floor)
        ms = np.concatenate([_predict(predictor, [floor])[0], ms])
    if targets:
        p = np.asarray(phis)
        lo_ok = p[ms <= min(targets) * 0.8]
        hi_ok = p[ms >= max(targets) * 1.25]
        lo = (lo_ok.max() if lo_ok.size else phi_range[0]) - 0.2
        hi = (hi_ok.min() if hi_ok.size else phi_range[1]) + 0.2
        fine = np.round(np.arange(max(lo, phi_range[0]), min(hi, phi_range[1]) + 1e-9, step), 6)
        seen = {s.arch_hash for s in specs}
        f_phis, f_specs, f_ms = _scan_phis(base, coef, predictor, fine)
        sel = [i for i, s in enumerate(f_specs) if s.arch_hash not in seen]
        phis += [f_phis[i] for i in sel]
        specs += [f_specs[i] for i in sel]
        ms = np.concatenate([ms, f_ms[sel]]) if sel else ms
    return _Path(np.asarray(phis), specs, np.asarray(ms))


@dataclass
class ScaledMember:
    """One family member: the spec chosen for one target latency."""

    target_latency_ms: float
    spec: ArchSpec
    latency_ms: float
    latency_std_ms: float
    phi: float  # compound coefficient of the rounded spec the fine-tuning started from
    params: int
    gmacs: float
    adjustments: dict[str, int] = field(default_factory=dict)  # fine-tuning steps applied

    @property
    def rel_error(self) -> float:
        return self.latency_ms / self.target_latency_ms - 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"target_latency_ms": self.target_latency_ms, "latency_ms": self.latency_ms,
                "latency_std_ms": self.latency_std_ms, "rel_error": self.rel_error,
                "phi": self.phi, "params": self.params, "gmacs": self.gmacs,
                "arch_hash": self.spec.arch_hash, "spec": self.spec.to_dict(),
                "adjustments": dict(self.adjustments)}


def _neighbours(spec: ArchSpec, w3_steps: int = 6, w2_steps: int = 4
                ) -> tuple[list[ArchSpec], list[dict[str, int]]]:
    """Local search space around a rounded spec: widths of the last two stages in steps of 8
    and the depth of stage 2 (the deepest) by +-1."""
    out, adj = [], []
    for dd in (0, -1, 1):
        d2 = spec.depths[2] + dd
        if not 1 <= d2 <= MAX_DEPTH:
            continue
        for k2 in range(-w2_steps, w2_steps + 1):
            w2 = spec.widths[2] + WIDTH_MULTIPLE * k2
            if not MIN_WIDTH <= w2 <= MAX_WIDTH:
                continue
            for k3 in range(-w3_steps, w3_steps + 1):
                w3 = spec.widths[3] + WIDTH_MULTIPLE * k3
                if not MIN_WIDTH <= w3 <= MAX_WIDTH:
                    continue
                depths = list(spec.depths)
                depths[2] = d2
                widths = list(spec.widths)
                widths[2], widths[3] = w2, w3
                attn = list(spec.attn_blocks)
                attn[2] = min(attn[2], d2) if attn[2] < spec.depths[2] else d2
                out.append(spec.replace(depths=tuple(depths), widths=tuple(widths),
                                        attn_blocks=tuple(attn)))
                adj.append({"depth2": dd, "width2": WIDTH_MULTIPLE * k2,
                            "width3": WIDTH_MULTIPLE * k3})
    return out, adj


# One 8-channel step of a last-stage width (or one block) is "worth" 0.5 % latency error: the
# fine-tuning prefers the compound design unless a small change lands much closer to target.
_STEP_PENALTY = 0.005


def _member_from_path(path: _Path, target: float, predictor, tolerance: float,
                      n_seeds: int = 4) -> ScaledMember | None:
    err = np.abs(np.log(path.ms / target))
    seeds = list(np.argsort(err)[:n_seeds])  # the phi's whose rounded specs come closest
    # ... and the closest from each side: a resolution step can leave a gap around the target.
    for side in (path.ms <= target, path.ms >= target):
        if side.any():
            seeds.append(int(np.flatnonzero(side)[np.argmin(err[side])]))
    seeds = list(dict.fromkeys(int(i) for i in seeds))
    specs, adjs, phis = [], [], []
    for i in seeds:
        nb, adj = _neighbours(path.specs[i])
        specs += nb
        adjs += adj
        phis += [float(path.phis[i])] * len(nb)
    ms, sd = _predict(predictor, specs)
    rel = ms / target - 1.0
    steps = np.array([abs(a["depth2"]) + (abs(a["width2"]) + abs(a["width3"])) // WIDTH_MULTIPLE
                      for a in adjs])
    ok = np.abs(rel) <= tolerance
    if not ok.any():
        return None
    score = np.where(ok, np.abs(rel) + _STEP_PENALTY * steps, np.inf)
    j = int(np.argmin(score))
    s = specs[j]
    return ScaledMember(target, s, float(ms[j]), float(sd[j]), phis[j], int(analytic_params(s)),
                        float(analytic_gmacs(s)), {k: v for k, v in adjs[j].items() if v})


def scale_to_target(base: ArchSpec, coef: Coefficients, predictor, target_ms: float,
                    tolerance: float = DEFAULT_TOLERANCE, path: _Path | None = None
                    ) -> ScaledMember:
    """The member of ``base``'s compound path whose predicted latency is within ``tolerance``
    of ``target_ms``. UsageError (one line) when the target is outside the space."""
    path = path or _scan(base, coef, predictor, [target_ms])
    check_targets([target_ms], base, predictor, tolerance, path)
    m = _member_from_path(path, target_ms, predictor, tolerance)
    if m is None:
        i = int(np.argmin(np.abs(np.log(path.ms / target_ms))))
        raise UsageError(f"target {target_ms:g} ms: no rounded member within "
                         f"+-{tolerance:.0%} (nearest {path.ms[i]:.3f} ms); widen --tolerance")
    return m


def check_targets(targets: Sequence[float], base: ArchSpec, predictor,
                  tolerance: float = DEFAULT_TOLERANCE, path: _Path | None = None) -> None:
    """UsageError (one line) for a target below the smallest member of the scaling space or
    above the largest member of the path."""
    for t in targets:
        if not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
            raise UsageError(f"--targets: {t!r} is not a latency in ms (> 0)")
    small = smallest_spec(base)
    lo = float(_predict(predictor, [small])[0][0])
    for t in targets:
        if t < lo * (1 - tolerance):
            raise UsageError(
                f"target {t:g} ms is below the smallest member of the scaling space "
                f"(depths {list(small.depths)}, widths {list(small.widths)}, resolution "
                f"{small.resolution}: {lo:.3f} ms predicted); allowed targets >= "
                f"{lo * (1 - tolerance):.3f} ms")
    if path is not None:
        hi = float(path.ms.max())
        for t in targets:
            if t > hi * (1 + tolerance):
                raise UsageError(f"target {t:g} ms is above the largest member of the scaling "
                                 f"path ({hi:.3f} ms predicted); allowed targets <= "
                                 f"{hi * (1 + tolerance):.3f} ms")


def search_coefficients(base: ArchSpec, predictor, targets: Sequence[float],
                        grid: Sequence[Coefficients] | None = None, step: float = 0.02,
                        ) -> list[dict[str, Any]]:
    """Rank coefficient triples for ``base`` on this device, best first.

    Objective (stated, because no accuracy is available before training): the mean over the
    targets of ln(GMACs at exactly the target latency), log-log interpolated between the
    path's rounded members just below and just above each target, i.e. how much compute the
    family gets for its latency. Under any accuracy law that grows with GMACs (the ones ``fit``
    finds), this is the triple with the highest predicted accuracy at equal latency. The grid's
    per-dimension share cap keeps it from degenerating to width-only scaling.
    """
    grid = list(grid) if grid is not None else coefficient_grid()
    ranked = []
    for co in grid:
        path = _scan(base, co, predictor, targets, step=step)
        score, nearest = [], []
        for t in targets:
            below, above = path.ms <= t, path.ms >= t
            idx = []
            for side, pick in ((below, np.argmax), (above, np.argmin)):
                if side.any():
                    cand = np.flatnonzero(side)
                    idx.append(int(cand[pick(path.ms[cand])]))
            (i, j) = (idx[0], idx[-1])
            gi, gj = analytic_gmacs(path.specs[i]), analytic_gmacs(path.specs[j])
            mi, mj = float(path.ms[i]), float(path.ms[j])
            w = 0.0 if mj == mi else (math.log(t) - math.log(mi)) / (math.log(mj) - math.log(mi))
            score.append((1 - w) * math.log(gi) + w * math.log(gj))
            nearest.append(mi if abs(math.log(mi / t)) <= abs(math.log(mj / t)) else mj)
        ranked.append({"coefficients": co, "score": float(np.mean(score)),
                       "nearest_ms": nearest, "shares": co.shares()})
    # Ties (equal to 1e-3): prefer the most balanced triple (smallest largest share).
    ranked.sort(key=lambda r: (-round(r["score"], 3), max(r["shares"])))
    return ranked


@dataclass
class FamilyResult:
    base: ArchSpec
    coefficients: Coefficients
    members: list[ScaledMember]
    device: str
    predictor_version: str
    tolerance: float
    coefficient_search: list[dict[str, Any]]  # top of the ranking (empty if fixed)

    def config(self) -> dict[str, Any]:
        return {"tolerance": self.tolerance, "width_multiple": WIDTH_MULTIPLE,
                "resolution_multiple": RESOLUTION_MULTIPLE,
                "targets_ms": [m.target_latency_ms for m in self.members],
                "coefficient_search": [
                    {"coefficients": r["coefficients"].to_dict(), "score": r["score"],
                     "shares": list(r["shares"])} for r in self.coefficient_search[:5]],
                "adjustments": [m.adjustments for m in self.members]}


def parse_targets(text: str) -> list[float]:
    """'0.7,0.8,1.1,1.9' -> sorted unique floats; UsageError naming the bad item."""
    out = []
    for item in comma_items(text, "--targets", "latencies in ms > 0, e.g. 0.7,0.8,1.1,1.9"):
        try:
            v = float(item)
        except ValueError:
            raise UsageError(f"--targets: {item!r} is not a number (expected e.g. "
                             "0.7,0.8,1.1,1.9 in ms)") from None
        if not math.isfinite(v) or v <= 0:
            raise UsageError(f"--targets: {item!r} must be a latency in ms > 0")
        out.append(v)
    if not out:
        raise UsageError("--targets: give at least one latency in ms")
    return sorted(set(out))


def scale_family(base: ArchSpec, targets: Sequence[float], predictor, *,
                 tolerance: float = DEFAULT_TOLERANCE, coefficients: Coefficients | None = None,
                 grid: Sequence[Coefficients] | None = None,
                 progress: Callable[[str], None] | None = None) -> FamilyResult:
    """One architecture per target latency, each predicted within ``tolerance``."""
    targets = sorted(float(t) for t in targets)
    check_targets(targets, base, predictor, tolerance)  # cheap: before any search
    ranking: list[dict[str, Any]] = []
    if coefficients is None:
        ranking = search_coefficients(base, predictor, targets, grid)
        coefficients = ranking[0]["coefficients"]
        if progress:
            progress(f"coefficient search: {len(ranking)} triples, best {coefficients}")
    path = _scan(base, coefficients, predictor, targets)
    check_targets(targets, base, predictor, tolerance, path)
    members = [scale_to_target(base, coefficients, predictor, t, tolerance, path)
               for t in targets]
    return FamilyResult(base, coefficients, members,
                        getattr(predictor, "device", "unknown"),
                        getattr(predictor, "version", "unknown"), tolerance, ranking)


# -- comparison against the published family ----------------------------------------------------
def _interp_loglog(x: float, xs: np.ndarray, ys: np.ndarray) -> float | None:
    """Log-log interpolation of ys at x inside [min xs, max xs]; None outside."""
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    if x < xs[0] * (1 - 1e-9) or x > xs[-1] * (1 + 1e-9):
        return None
    return float(np.exp(np.interp(math.log(x), np.log(xs), np.log(ys))))


def family_comparison(members: Sequence[Mapping[str, Any]], predictor,
                      baselines: Mapping[str, ArchSpec] | None = None,
                      accuracy: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Pure data: the family against XS/S/L1/L3 at equal predicted latency.

    ``members``: dicts with spec (ArchSpec or dict), latency_ms, params, gmacs (as in
    FamilyResult.members' to_dict or results.families.get_family). ``accuracy``: optional
    top-1 by arch_hash (e.g. proxy ladder results) and by baseline name. One row per baseline:
    its predicted latency, params, GMACs, published top-1; the family member nearest in
    predicted latency; and the family's params/GMACs log-log interpolated to the baseline's
    latency (None when outside the family's latency range).
    """
    baselines = dict(baselines or PRESETS)
    accuracy = dict(accuracy or {})
    names = list(baselines)
    b_ms, _ = _predict(predictor, [baselines[n] for n in names])
    mem = []
    for m in members:
        spec = m["spec"] if isinstance(m["spec"], ArchSpec) else ArchSpec.from_dict(m["spec"])
        mem.append({"spec": spec, "latency_ms": float(m["latency_ms"]),
                    "params": int(m["params"]), "gmacs": float(m["gmacs"])})
    lat = np.array([m["latency_ms"] for m in mem])
    par = np.array([m["params"] for m in mem], float)
    gm = np.array([m["gmacs"] for m in mem])
    rows = []
    for name, ms in zip(names, b_ms):
        spec = baselines[name]
        j = int(np.argmin(np.abs(np.log(lat / ms))))
        m = mem[j]
        bp, bg = int(analytic_params(spec)), float(analytic_gmacs(spec))
        ip = _interp_loglog(float(ms), lat, par) if len(mem) > 1 else None
        ig = _interp_loglog(float(ms), lat, gm) if len(mem) > 1 else None
        rows.append({
            "baseline": name, "baseline_latency_ms": float(ms), "baseline_params": bp,
            "baseline_gmacs": bg, "baseline_published_top1": PUBLISHED.get(name, {}).get("top1"),
            "baseline_published_latency_ms": PUBLISHED.get(name, {}).get("latency_ms"),
            "baseline_top1": accuracy.get(name, accuracy.get(spec.arch_hash)),
            "member_position": j, "member_arch_hash": m["spec"].arch_hash,
            "member_latency_ms": m["latency_ms"], "member_params": m["params"],
            "member_gmacs": m["gmacs"], "member_top1": accuracy.get(m["spec"].arch_hash),
            "latency_ratio": m["latency_ms"] / float(ms),
            "params_ratio": m["params"] / bp, "gmacs_ratio": m["gmacs"] / bg,
            "family_params_at_latency": ip, "family_gmacs_at_latency": ig,
        })
    return rows


