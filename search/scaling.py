"""Compound scaling of a SwiftFormer-family architecture to target latencies, and scaling laws.

Compound scaling (Tan & Le 2019, EfficientNet): one coefficient phi scales

    depth d = a^phi,   width w = b^phi,   resolution r = c^phi,   with  a * b^2 * c^2 ~= 2

so each unit of phi roughly doubles the MACs. (a, b, c) are *searched* on the Tan & Le grid
(step 0.05, every coefficient >= 1, the product within ``flops_tol`` of 2), see
:func:`search_coefficients`; phi is then solved per target latency on the device's latency
predictor, the spec is rounded (depths to ints, widths to multiples of 8, resolution to
multiples of 32; every spec validates as an ArchSpec) and fine-tuned by a local search over the
widths of the last two stages (and the depth of stage 2) until the predicted latency is within
``tolerance`` (default 3 %) of the target.

Scaling laws (:func:`fit_scaling_law`): accuracy against a cost x (GMACs, params, predicted
latency), either the saturating power law ``acc = a - b * (x/x0)^(-c)`` or the log-linear
``acc = a + b * ln(x/x0)``, fitted with scipy.optimize.curve_fit; leave-one-out and
largest-x hold-out errors; 95 % intervals from the covariance and from a pairs bootstrap;
:meth:`ScalingFit.extrapolate` refuses when the data cannot support the answer.

Everything here is pure computation (numpy/scipy; torch only in the ladder's training path,
imported there). The latency predictor is anything with ``predict_many(specs) -> (ms, std)``
(``latency_models.LatencyPredictor``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from search_space.spec import (MAX_DEPTH, MAX_RESOLUTION, MAX_WIDTH, MIN_RESOLUTION, MIN_WIDTH,
                               PRESETS, RESOLUTION_MULTIPLE, ArchSpec)

__all__ = ["Coefficients", "TAN_LE", "coefficient_grid", "scale_spec", "smallest_spec",
           "scale_to_target", "search_coefficients", "scale_family", "FamilyResult",
           "ScaledMember", "ScalingFit", "fit_scaling_law", "fit_proxy_to_full",
           "family_comparison", "parse_targets", "DEFAULT_TOLERANCE", "WIDTH_MULTIPLE"]

DEFAULT_TOLERANCE = 0.03  # the issue's +-3 % on predicted latency
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
        except ValueError:
            raise ValueError(f"--coefficients {text!r}: expected three numbers a,b,c "
                             "(depth,width,resolution), e.g. 1.2,1.1,1.15") from None
        if not all(math.isfinite(v) and v >= 1.0 for v in (a, b, c)) or a * b * b * c * c <= 1.0:
            raise ValueError(f"--coefficients {text!r}: each must be >= 1 and a*b^2*c^2 > 1")
        return cls(a, b, c)

    def __str__(self) -> str:
        return (f"a(depth)={self.depth:.2f} b(width)={self.width:.2f} "
                f"c(resolution)={self.resolution:.2f} [a*b^2*c^2={self.flops_factor:.3f}]")


TAN_LE = Coefficients(1.2, 1.1, 1.15)  # EfficientNet-B0's searched values, for reference


def coefficient_grid(step: float = 0.05, flops_target: float = 2.0, flops_tol: float = 0.05,
                     max_share: float = 0.5) -> list[Coefficients]:
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
        raise ValueError(f"coefficient grid empty (step {step}, flops target {flops_target}, "
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
    from search_space.costs import analytic_gmacs, analytic_params

    err = np.abs(np.log(path.ms / target))
    seeds = list(np.argsort(err)[:n_seeds])  # the phi's whose rounded specs come closest
    # ... and the closest from each side: a resolution step can leave a gap around the target.
    for side in (path.ms <= target, path.ms >= target):
        if side.any():
            seeds.append(int(np.flatnonzero(side)[np.argmin(err[side])]))
    seeds = list(dict.fromkeys(int(i) for i in seeds))
    cands: list[tuple[float, ArchSpec, float, dict]] = []
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
    of ``target_ms``. ValueError (one line) when the target is outside the space."""
    path = path or _scan(base, coef, predictor, [target_ms])
    check_targets([target_ms], base, predictor, tolerance, path)
    m = _member_from_path(path, target_ms, predictor, tolerance)
    if m is None:
        i = int(np.argmin(np.abs(np.log(path.ms / target_ms))))
        raise ValueError(f"target {target_ms:g} ms: no rounded member within "
                         f"+-{tolerance:.0%} (nearest {path.ms[i]:.3f} ms); widen --tolerance")
    return m


def check_targets(targets: Sequence[float], base: ArchSpec, predictor,
                  tolerance: float = DEFAULT_TOLERANCE, path: _Path | None = None) -> None:
    """ValueError (one line) for a target below the smallest member of the scaling space or
    above the largest member of the path."""
    for t in targets:
        if not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0):
            raise ValueError(f"--targets: {t!r} is not a latency in ms (> 0)")
    small = smallest_spec(base)
    lo = float(_predict(predictor, [small])[0][0])
    for t in targets:
        if t < lo * (1 - tolerance):
            raise ValueError(
                f"target {t:g} ms is below the smallest member of the scaling space "
                f"(depths {list(small.depths)}, widths {list(small.widths)}, resolution "
                f"{small.resolution}: {lo:.3f} ms predicted); allowed targets >= "
                f"{lo * (1 - tolerance):.3f} ms")
    if path is not None:
        hi = float(path.ms.max())
        for t in targets:
            if t > hi * (1 + tolerance):
                raise ValueError(f"target {t:g} ms is above the largest member of the scaling "
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
    from search_space.costs import analytic_gmacs

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
    """'0.7,0.8,1.1,1.9' -> sorted unique floats; ValueError naming the bad item."""
    out = []
    for item in str(text).split(","):
        item = item.strip()
        try:
            v = float(item)
        except ValueError:
            raise ValueError(f"--targets: {item!r} is not a number (expected e.g. "
                             "0.7,0.8,1.1,1.9 in ms)") from None
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"--targets: {item!r} must be a latency in ms > 0")
        out.append(v)
    if not out:
        raise ValueError("--targets: give at least one latency in ms")
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


# -- scaling laws ----------------------------------------------------------------------------------
def _power(x, a, b, c):
    return a - b * np.power(x, -c)


def _loglinear(x, a, b):
    return a + b * np.log(x)


FORMS: dict[str, dict[str, Any]] = {
    "power": {"f": _power, "params": ("a", "b", "c"), "min_points": 5,
              "text": "acc = a - b * (x/x0)^(-c)"},
    "loglinear": {"f": _loglinear, "params": ("a", "b"), "min_points": 4,
                  "text": "acc = a + b * ln(x/x0)"},
}


def _curve_fit(form: str, x: np.ndarray, y: np.ndarray):
    from scipy.optimize import curve_fit

    f = FORMS[form]["f"]
    if form == "power":
        span = max(float(np.ptp(y)), 1.0)
        p0 = (float(y.max()) + 0.5 * span, span, 0.5)
        bounds = ([float(y.max()) - 1e-6, 0.0, _C_BOUNDS[0]], [np.inf, np.inf, _C_BOUNDS[1]])
        p0 = (max(p0[0], bounds[0][0] + 1e-3), p0[1], p0[2])
        return curve_fit(f, x, y, p0=p0, bounds=bounds, maxfev=20000)
    return curve_fit(f, x, y, p0=(float(y.mean()), 1.0), maxfev=20000)


@dataclass
class ScalingFit:
    """A fitted scaling law of accuracy against one cost ``x_name`` (x normalised by x0)."""

    x_name: str
    form: str
    params: dict[str, float]
    params_ci_cov: dict[str, tuple[float, float]]  # 95 % from the curve_fit covariance
    params_ci_boot: dict[str, tuple[float, float]]  # 95 % pairs-bootstrap percentiles
    x0: float
    n: int
    x_range: tuple[float, float]
    rmse: float  # in-sample
    loo_rmse: float | None  # leave-one-out held-out error
    holdout_rmse: float | None  # fit on the smaller x's, error on the largest ~20 %
    residual_sd: float
    boot_params: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0)))
    warnings: list[str] = field(default_factory=list)

    @property
    def growth_significant(self) -> bool:
        """Accuracy grows with x at 95 % (b's covariance interval excludes 0, and for the power
        law the exponent is not stuck at a bound)."""
        lo = self.params_ci_cov["b"][0]
        ok = math.isfinite(lo) and lo > 0
        if self.form == "power":
            ok = ok and not _at_bound(self.params["c"])
        return ok

    @property
    def formula(self) -> str:
        return FORMS[self.form]["text"]

    def _f(self, x, theta) -> np.ndarray:
        return FORMS[self.form]["f"](np.asarray(x, float) / self.x0, *theta)

    def predict(self, x) -> np.ndarray:
        return self._f(x, [self.params[k] for k in FORMS[self.form]["params"]])

    def interval(self, x, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Prediction interval: bootstrap parameter spread plus residual noise."""
        x = np.atleast_1d(np.asarray(x, float))
        mean = self.predict(x)
        if self.boot_params.size:
            draws = np.stack([self._f(x, th) for th in self.boot_params])
            sd_par = draws.std(axis=0)
        else:
            sd_par = np.full_like(mean, np.inf)
        from scipy.stats import norm

        z = float(norm.ppf(0.5 + level / 2))
        half = z * np.sqrt(sd_par ** 2 + self.residual_sd ** 2)
        return mean - half, mean + half

    def extrapolate(self, x: float, *, max_ratio: float = 2.0, max_ci: float = 10.0
                    ) -> dict[str, Any]:
        """Prediction at ``x`` with its 95 % interval, or a refusal with the reason.

        Refused when: fewer points than the form needs; x outside [min/max_ratio,
        max*max_ratio] of the fitted x's; or the interval wider than ``max_ci`` (accuracy points).
        """
        lo_x, hi_x = self.x_range
        mean = float(self.predict([x])[0])
        lo, hi = (float(v[0]) for v in self.interval([x]))
        out = {"x_name": self.x_name, "x": float(x), "pred": mean, "lo": lo, "hi": hi,
               "inside_range": lo_x <= x <= hi_x, "supported": True, "reason": ""}
        need = FORMS[self.form]["min_points"]
        if self.n < need:
            out.update(supported=False, reason=f"too few points ({self.n} < {need} for {self.form})")
        elif x > hi_x * max_ratio or x < lo_x / max_ratio:
            out.update(supported=False, reason=(
                f"{self.x_name}={x:.4g} is outside the fitted range [{lo_x:.4g}, {hi_x:.4g}] "
                f"by more than {max_ratio:g}x"))
        elif not out["inside_range"] and not self.growth_significant:
            out.update(supported=False, reason=(
                f"accuracy does not grow significantly with {self.x_name} in the fitted data "
                "(95% CI of b includes 0): no trend to extrapolate"))
        elif not math.isfinite(hi - lo) or hi - lo > max_ci:
            out.update(supported=False, reason=f"95% interval {hi - lo:.1f} points wide "
                                               f"(> {max_ci:g})")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"x": self.x_name, "form": self.form, "formula": self.formula, "x0": self.x0,
                "params": self.params,
                "params_ci95_cov": {k: list(v) for k, v in self.params_ci_cov.items()},
                "params_ci95_bootstrap": {k: list(v) for k, v in self.params_ci_boot.items()},
                "n": self.n, "x_range": list(self.x_range), "rmse": self.rmse,
                "loo_rmse": self.loo_rmse, "holdout_rmse": self.holdout_rmse,
                "residual_sd": self.residual_sd, "growth_significant": self.growth_significant,
                "warnings": list(self.warnings)}


_C_BOUNDS = (1e-3, 5.0)


def _at_bound(c: float) -> bool:
    """The power-law exponent pinned at a bound: the saturating form is not identified (flat
    or falling data, or a straight line in log x)."""
    return c <= _C_BOUNDS[0] * 1.5 or c >= _C_BOUNDS[1] * 0.99


def _loo(form: str, x: np.ndarray, y: np.ndarray) -> float | None:
    errs = []
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        try:
            th, _ = _curve_fit(form, x[keep], y[keep])
        except (RuntimeError, ValueError):
            return None
        errs.append(FORMS[form]["f"](x[i:i + 1], *th)[0] - y[i])
    return float(np.sqrt(np.mean(np.square(errs))))


def _holdout(form: str, x: np.ndarray, y: np.ndarray, frac: float = 0.2) -> float | None:
    n = len(x)
    k = max(1, int(round(frac * n)))
    if n - k < FORMS[form]["min_points"] - 1:
        return None
    order = np.argsort(x)
    tr, te = order[:n - k], order[n - k:]
    try:
        th, _ = _curve_fit(form, x[tr], y[tr])
    except (RuntimeError, ValueError):
        return None
    return float(np.sqrt(np.mean((FORMS[form]["f"](x[te], *th) - y[te]) ** 2)))


def fit_scaling_law(x: Sequence[float], y: Sequence[float], *, x_name: str = "x",
                    form: str = "auto", x0: float | None = None, n_boot: int = 200,
                    seed: int = 0) -> ScalingFit:
    """Fit accuracy ``y`` against cost ``x`` (> 0). ``form`` power / loglinear / auto (the
    lower leave-one-out error among the forms the point count supports). ``x0`` normalises x
    (default: geometric mean), so ``b`` is the accuracy gap to ``a`` at x = x0."""
    import warnings

    from scipy.optimize import OptimizeWarning

    x = np.asarray(x, float)
    y = np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y = x[ok], y[ok]
    n = len(x)
    if form not in ("auto", *FORMS):
        raise ValueError(f"--form {form!r}: allowed auto, {', '.join(FORMS)}")
    if n < 3 or len(np.unique(x)) < 3:
        raise ValueError(f"scaling-law fit of accuracy vs {x_name}: {n} usable points with "
                         f"{len(np.unique(x))} distinct {x_name} values; need at least 3 "
                         "(run the ladder first)")
    x0 = float(np.exp(np.mean(np.log(x)))) if x0 is None else float(x0)
    xs = x / x0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        notes: list[str] = []
        if form == "auto":
            cands = [f for f in FORMS if n >= FORMS[f]["min_points"]] or ["loglinear"]
            if "power" in cands:
                try:
                    th, _ = _curve_fit("power", xs, y)
                    if _at_bound(th[2]):
                        cands.remove("power")
                        notes.append(f"power law not identified (exponent c={th[2]:.3g} at its "
                                     "bound); log-linear used")
                except (RuntimeError, ValueError):
                    cands.remove("power")
            scored = [(_loo(f, xs, y), f) for f in cands]
            scored = [(s, f) for s, f in scored if s is not None] or [(0.0, "loglinear")]
            form = min(scored)[1]
        try:
            theta, cov = _curve_fit(form, xs, y)
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"scaling-law fit ({form}) of accuracy vs {x_name} failed: "
                             f"{str(e).splitlines()[0]}") from None
        names = FORMS[form]["params"]
        resid = FORMS[form]["f"](xs, *theta) - y
        dof = max(n - len(names), 1)
        rmse = float(np.sqrt(np.mean(resid ** 2)))
        residual_sd = float(np.sqrt(np.sum(resid ** 2) / dof))
        sd = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else \
            np.full(len(names), np.inf)
        from scipy.stats import t as student_t

        q = float(student_t.ppf(0.975, dof))
        ci_cov = {k: (float(v - q * s), float(v + q * s)) for k, v, s in zip(names, theta, sd)}
        rng = np.random.default_rng(seed)
        boots = []
        for _ in range(n_boot):
            idx = rng.integers(0, n, n)
            if len(np.unique(xs[idx])) < len(names):
                continue
            try:
                th, _ = _curve_fit(form, xs[idx], y[idx])
            except (RuntimeError, ValueError):
                continue
            boots.append(th)
        boots_arr = np.array(boots) if boots else np.zeros((0, len(names)))
        ci_boot = ({k: (float(np.percentile(boots_arr[:, j], 2.5)),
                        float(np.percentile(boots_arr[:, j], 97.5)))
                    for j, k in enumerate(names)} if len(boots) >= 20 else
                   {k: (float("nan"), float("nan")) for k in names})
        loo = _loo(form, xs, y) if n >= len(names) + 2 else None
        hold = _holdout(form, xs, y)
    fit = ScalingFit(x_name, form, {k: float(v) for k, v in zip(names, theta)}, ci_cov, ci_boot,
                     x0, n, (float(x.min()), float(x.max())), rmse, loo, hold, residual_sd,
                     boots_arr, notes)
    if form == "power" and _at_bound(fit.params["c"]):
        fit.warnings.append(f"power-law exponent c={fit.params['c']:.3g} at its bound: the "
                            "saturating form is not identified by these points")
    if not fit.growth_significant:
        fit.warnings.append(f"accuracy does not grow significantly with {x_name} (95% CI of b "
                            "includes 0)")
    return fit


def fit_proxy_to_full(proxy: Sequence[float], full: Sequence[float]) -> dict[str, Any]:
    """Linear relation full = a + b * proxy over architectures with both results; 95 % CIs
    from the covariance; leave-one-out error. Fewer than 3 pairs -> {"supported": False}."""
    from scipy.stats import linregress, t as student_t

    p = np.asarray(proxy, float)
    f = np.asarray(full, float)
    n = len(p)
    if n < 3 or len(np.unique(p)) < 2:
        return {"n": n, "supported": False,
                "reason": f"{n} architecture(s) with both proxy and full-scale top-1; need >= 3"}
    r = linregress(p, f)
    q = float(student_t.ppf(0.975, n - 2))
    loo = []
    for i in range(n):
        k = np.arange(n) != i
        if len(np.unique(p[k])) < 2:
            continue
        ri = linregress(p[k], f[k])
        loo.append(ri.intercept + ri.slope * p[i] - f[i])
    return {"n": n, "supported": True, "formula": "full_top1 = a + b * proxy_top1",
            "a": float(r.intercept), "b": float(r.slope),
            "a_ci95": [float(r.intercept - q * r.intercept_stderr),
                       float(r.intercept + q * r.intercept_stderr)],
            "b_ci95": [float(r.slope - q * r.stderr), float(r.slope + q * r.stderr)],
            "r": float(r.rvalue),
            "loo_rmse": float(np.sqrt(np.mean(np.square(loo)))) if loo else None}


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
    from search_space.costs import analytic_gmacs, analytic_params
    from search_space.spec import PUBLISHED

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


def comparison_plot(rows: Sequence[Mapping[str, Any]], members: Sequence[Mapping[str, Any]],
                    path: str, title: str = "") -> str:
    """PNG: GMACs and params against predicted latency, family vs XS/S/L1/L3 (matplotlib Agg).
    Written temp-then-rename; returns the path."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    lat = [float(m["latency_ms"]) for m in members]
    for ax, key, label in ((axes[0], "gmacs", "GMACs"), (axes[1], "params", "params (M)")):
        scale = 1e-6 if key == "params" else 1.0
        ax.plot(lat, [float(m[key]) * scale for m in members], "o-", label="scaled family")
        ax.plot([r["baseline_latency_ms"] for r in rows],
                [r[f"baseline_{key}"] * scale for r in rows], "s--", label="SwiftFormer XS/S/L1/L3")
        for r in rows:
            ax.annotate(r["baseline"], (r["baseline_latency_ms"], r[f"baseline_{key}"] * scale),
                        textcoords="offset points", xytext=(4, -10), fontsize=8)
        ax.set_xlabel("predicted latency (ms)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def fit_plot(fits: Sequence[tuple[ScalingFit, np.ndarray, np.ndarray]], path: str) -> str:
    """PNG: data, fitted law and 95 % band for each (fit, x, y)."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(fits), figsize=(4.5 * len(fits), 3.8), squeeze=False)
    for ax, (ft, x, y) in zip(axes[0], fits):
        grid = np.geomspace(ft.x_range[0] / 1.5, ft.x_range[1] * 1.5, 100)
        lo, hi = ft.interval(grid)
        ax.fill_between(grid, lo, hi, alpha=0.2, label="95% prediction band")
        ax.plot(grid, ft.predict(grid), "-", label=ft.form)
        ax.plot(x, y, "o", ms=4, label="proxy results")
        ax.set_xscale("log")
        # Less than a decade of x: matplotlib labels every minor tick and they overlap.
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(ft.x_name)
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def iter_unique(items: Iterable[ArchSpec]) -> list[ArchSpec]:
    seen, out = set(), []
    for s in items:
        if s.arch_hash not in seen:
            seen.add(s.arch_hash)
            out.append(s)
    return out
