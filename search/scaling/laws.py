"""Scaling laws: proxy accuracy against a cost, fitted with honest error bars.

Accuracy against a cost x (GMACs, params, predicted latency), either the saturating power law
``acc = a - b * (x/x0)^(-c)`` or the log-linear ``acc = a + b * ln(x/x0)``, fitted with
scipy.optimize.curve_fit; leave-one-out and largest-x hold-out errors; 95 % intervals from the
covariance and from a pairs bootstrap; :meth:`ScalingFit.extrapolate` refuses when the data
cannot support the answer. :func:`fit_proxy_to_full` relates proxy top-1 to full-scale top-1.

Pure computation (numpy; scipy loaded on first use).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from search_space.errors import UsageError
from search_space.lazy import lazy_import

optimize = lazy_import("scipy.optimize")
scipy_stats = lazy_import("scipy.stats")

__all__ = ["FORMS", "ScalingFit", "fit_scaling_law", "fit_proxy_to_full"]


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
    f = FORMS[form]["f"]
    if form == "power":
        span = max(float(np.ptp(y)), 1.0)
        p0 = (float(y.max()) + 0.5 * span, span, 0.5)
        bounds = ([float(y.max()) - 1e-6, 0.0, _C_BOUNDS[0]], [np.inf, np.inf, _C_BOUNDS[1]])
        p0 = (max(p0[0], bounds[0][0] + 1e-3), p0[1], p0[2])
        return optimize.curve_fit(f, x, y, p0=p0, bounds=bounds, maxfev=20000)
    return optimize.curve_fit(f, x, y, p0=(float(y.mean()), 1.0), maxfev=20000)


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
        z = float(scipy_stats.norm.ppf(0.5 + level / 2))
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
            out.update(supported=False,
                       reason=f"too few points ({self.n} < {need} for {self.form})")
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


def _choose_form(xs: np.ndarray, y: np.ndarray, notes: list[str]) -> str:
    """``auto``: the lower leave-one-out error among the forms the point count supports; the
    power law only when its exponent is identified (not pinned at a bound)."""
    n = len(xs)
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
    return min(scored)[1]


def _bootstrap(form: str, xs: np.ndarray, y: np.ndarray, n_boot: int, seed: int
               ) -> tuple[np.ndarray, dict[str, tuple[float, float]]]:
    """Pairs bootstrap: the refitted parameters and their 2.5 / 97.5 percentiles (NaN with
    fewer than 20 successful refits)."""
    names = FORMS[form]["params"]
    n = len(xs)
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
    arr = np.array(boots) if boots else np.zeros((0, len(names)))
    if len(boots) < 20:
        return arr, {k: (float("nan"), float("nan")) for k in names}
    return arr, {k: (float(np.percentile(arr[:, j], 2.5)), float(np.percentile(arr[:, j], 97.5)))
                 for j, k in enumerate(names)}


def _fit_form(form: str, x: np.ndarray, xs: np.ndarray, y: np.ndarray, x_name: str,
              x0: float, n_boot: int, seed: int, notes: list[str]) -> ScalingFit:
    n = len(xs)
    try:
        theta, cov = _curve_fit(form, xs, y)
    except (RuntimeError, ValueError) as e:
        raise UsageError(f"scaling-law fit ({form}) of accuracy vs {x_name} failed: "
                         f"{str(e).splitlines()[0]}") from None
    names = FORMS[form]["params"]
    resid = FORMS[form]["f"](xs, *theta) - y
    dof = max(n - len(names), 1)
    rmse = float(np.sqrt(np.mean(resid ** 2)))
    residual_sd = float(np.sqrt(np.sum(resid ** 2) / dof))
    sd = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else \
        np.full(len(names), np.inf)
    q = float(scipy_stats.t.ppf(0.975, dof))
    ci_cov = {k: (float(v - q * s), float(v + q * s)) for k, v, s in zip(names, theta, sd)}
    boots, ci_boot = _bootstrap(form, xs, y, n_boot, seed)
    loo = _loo(form, xs, y) if n >= len(names) + 2 else None
    hold = _holdout(form, xs, y)
    return ScalingFit(x_name, form, {k: float(v) for k, v in zip(names, theta)}, ci_cov,
                      ci_boot, x0, n, (float(x.min()), float(x.max())), rmse, loo, hold,
                      residual_sd, boots, notes)


def fit_scaling_law(x: Sequence[float], y: Sequence[float], *, x_name: str = "x",
                    form: str = "auto", x0: float | None = None, n_boot: int = 200,
                    seed: int = 0) -> ScalingFit:
    """Fit accuracy ``y`` against cost ``x`` (> 0). ``form`` power / loglinear / auto (the
    lower leave-one-out error among the forms the point count supports). ``x0`` normalises x
    (default: geometric mean), so ``b`` is the accuracy gap to ``a`` at x = x0."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y = x[ok], y[ok]
    n = len(x)
    if form not in ("auto", *FORMS):
        raise UsageError(f"--form {form!r}: allowed auto, {', '.join(FORMS)}")
    if n < 3 or len(np.unique(x)) < 3:
        raise UsageError(f"scaling-law fit of accuracy vs {x_name}: {n} usable points with "
                         f"{len(np.unique(x))} distinct {x_name} values; need at least 3 "
                         "(run the ladder first)")
    x0 = float(np.exp(np.mean(np.log(x)))) if x0 is None else float(x0)
    xs = x / x0
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optimize.OptimizeWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        if form == "auto":
            form = _choose_form(xs, y, notes)
        fit = _fit_form(form, x, xs, y, x_name, x0, n_boot, seed, notes)
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
    p = np.asarray(proxy, float)
    f = np.asarray(full, float)
    n = len(p)
    if n < 3 or len(np.unique(p)) < 2:
        return {"n": n, "supported": False,
                "reason": f"{n} architecture(s) with both proxy and full-scale top-1; need >= 3"}
    r = scipy_stats.linregress(p, f)
    q = float(scipy_stats.t.ppf(0.975, n - 2))
    loo = []
    for i in range(n):
        k = np.arange(n) != i
        if len(np.unique(p[k])) < 2:
            continue
        ri = scipy_stats.linregress(p[k], f[k])
        loo.append(ri.intercept + ri.slope * p[i] - f[i])
    return {"n": n, "supported": True, "formula": "full_top1 = a + b * proxy_top1",
            "a": float(r.intercept), "b": float(r.slope),
            "a_ci95": [float(r.intercept - q * r.intercept_stderr),
                       float(r.intercept + q * r.intercept_stderr)],
            "b_ci95": [float(r.slope - q * r.stderr), float(r.slope + q * r.stderr)],
            "r": float(r.rvalue),
            "loo_rmse": float(np.sqrt(np.mean(np.square(loo)))) if loo else None}
