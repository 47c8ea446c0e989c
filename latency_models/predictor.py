"""Per-device latency predictor: a physically-motivated per-op cost model, few-shot calibrated.

latency = sum over cost terms j of  theta_j * term_j(features)      (theta >= 0)

with terms built from the per-op-class features (features.py):
  GMACs of k x k convs, 1 x 1 convs, depthwise convs, linears, activation x activation
  matmuls                                                  (compute: ms per GMAC per op kind)
  activation MB moved by all ops; extra for 1x1 and depthwise convs, transcendental
  activations (GELU...), norm/softmax, layout ops          (memory traffic, special functions,
                                                            layout conversions)
  weight MB read                                           (weight streaming: small-token GEMMs)
  number of ops                                            (launch / dispatch overhead)
  1                                                        (fixed per-inference overhead)

Fitting (``fit``) minimises the *relative* squared error (≈ least squares in log space, so a
0.7 ms and a 10 ms model count alike), with Huber re-weighting against outliers, subject to
theta >= 0 (scipy NNLS), plus a ridge pull towards a reference device's coefficients rescaled
by three fitted group multipliers (compute / memory / per-op overhead: "this device is 5x slower
at arithmetic but only 2x slower per op"). The pull strength is chosen by leave-one-out
cross-validation on the calibration records, so 10 measurements fit only what they can support
(mostly the group multipliers) while 100 measurements fit every term. The leave-one-out
relative error is kept as the predictor's uncertainty.

Calibration files are small versioned JSON (see ``LatencyPredictor.save``); where they live and
how a device name finds one is ``latency_models.devices``. Light to import: scipy loads on the
first fit.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Sequence

import numpy as np

from search_space.errors import UsageError
from search_space.io import read_json, write_json_atomic
from search_space.lazy import lazy_import
from search_space.spec import ArchSpec

from .analytic import spec_features_many
from .features import FEATURE_NAMES, N_FEATURES, OP_CLASSES
from .featurize import featurize, featurize_records

optimize = lazy_import("scipy.optimize")

FORMAT = "swiftformer-nas-latency-calibration"
FORMAT_VERSION = 1


def _col(klass: str, q: str) -> int:
    return FEATURE_NAMES.index(f"{klass}_{q}")


# Cost terms: name -> feature weights. Linear in the features, so fitting stays a (non-negative)
# least-squares problem and prediction is one matrix product.
TERMS: dict[str, dict[int, float]] = {
    "conv_gmacs": {_col("conv", "gmacs"): 1.0},
    "pwconv_gmacs": {_col("pwconv", "gmacs"): 1.0},
    "dwconv_gmacs": {_col("dwconv", "gmacs"): 1.0},
    "linear_gmacs": {_col("linear", "gmacs"): 1.0},
    "actmm_gmacs": {_col("actmm", "gmacs"): 1.0},
    "act_mbytes": {_col(k, "act_mbytes"): 1.0 for k in OP_CLASSES},
    "pwconv_mbytes": {_col("pwconv", "act_mbytes"): 1.0},
    "dwconv_mbytes": {_col("dwconv", "act_mbytes"): 1.0},
    "transcendental_mbytes": {_col("act", "act_mbytes"): 1.0},
    "norm_mbytes": {_col("norm", "act_mbytes"): 1.0},
    "layout_mbytes": {_col("layout", "act_mbytes"): 1.0},
    "weight_mbytes": {_col(k, "w_mbytes"): 1.0 for k in OP_CLASSES},
    "ops": {_col(k, "count"): 1.0 for k in OP_CLASSES},
    "const": {},
}
TERM_NAMES = tuple(TERMS)
_TERM_MATRIX = np.zeros((N_FEATURES, len(TERMS)))
for _j, _w in enumerate(TERMS.values()):
    for _i, _v in _w.items():
        _TERM_MATRIX[_i, _j] = _v

# A hand-set physical prior for a phone neural engine (A15/A16 class, fp16), used only when no
# reference calibration is given: ~4 TMAC/s effective on dense convs and linears, ~10x less on
# depthwise, ~50 GB/s activation and weight traffic, ~3x that for norm/softmax and layout ops
# (extra terms: conv activations +25%, transcendental +100%), ~4 us per op,
# 0.1 ms fixed; softmax-attention matmuls (activation x activation) ~4x slower than linears. Units: ms per GMAC / per MB / per op / per inference.
GENERIC_PRIOR = {"conv_gmacs": 0.25, "pwconv_gmacs": 0.25, "dwconv_gmacs": 2.5,
                 "linear_gmacs": 0.3, "actmm_gmacs": 1.0, "act_mbytes": 0.02,
                 "pwconv_mbytes": 0.005, "dwconv_mbytes": 0.005, "transcendental_mbytes": 0.02,
                 "norm_mbytes": 0.04, "layout_mbytes": 0.04, "weight_mbytes": 0.02,
                 "ops": 0.004, "const": 0.1}

LAMBDAS = (0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0, 1e4)
MIN_REL_STD = 0.03


def terms_matrix(F: np.ndarray) -> np.ndarray:
    F = np.atleast_2d(np.asarray(F, dtype=float))
    T = F @ _TERM_MATRIX
    T[:, TERM_NAMES.index("const")] = 1.0
    return T


def _solve(T: np.ndarray, y: np.ndarray, prior: np.ndarray, lam: float,
           huber: float = 0.1, iters: int = 3) -> np.ndarray:
    """NNLS on relative errors + ridge towards ``prior`` (already speed-scaled)."""
    A = T / y[:, None]                     # relative residual = A @ theta - 1
    b = np.ones(len(y))
    # Penalty scale per term: its typical share of latency under the prior, so lambda is unitless.
    m = np.maximum(np.abs(A).mean(axis=0), 1e-6)
    w = np.ones(len(y))
    theta = prior.copy()
    for _ in range(iters):
        sw = np.sqrt(w)
        if lam > 0:
            AA = np.vstack([A * sw[:, None], math.sqrt(lam * len(y)) * np.diag(m)])
            bb = np.concatenate([b * sw, math.sqrt(lam * len(y)) * m * prior])
        else:
            AA, bb = A * sw[:, None], b * sw
        theta, _ = optimize.nnls(AA, bb, maxiter=50 * AA.shape[1])
        r = np.abs(A @ theta - 1.0)
        w = np.where(r <= huber, 1.0, huber / np.maximum(r, 1e-12))   # Huber weights
    return theta


def _speed_scale(T: np.ndarray, y: np.ndarray, prior: np.ndarray) -> float:
    p = T @ prior
    ok = p > 0
    return float(np.exp(np.median(np.log(y[ok] / p[ok])))) if ok.any() else 1.0


# Term groups for the first, low-dimensional stage of a fit: how much slower/faster than the
# reference the device is at arithmetic, at moving bytes, and per op. Three multipliers are well
# determined by ~5 measurements even when the per-term coefficients are not.
GROUPS = {
    "compute": ("conv_gmacs", "pwconv_gmacs", "dwconv_gmacs", "linear_gmacs", "actmm_gmacs"),
    "memory": ("act_mbytes", "pwconv_mbytes", "dwconv_mbytes", "transcendental_mbytes",
               "norm_mbytes", "layout_mbytes", "weight_mbytes"),
    "overhead": ("ops", "const"),
}


def _group_prior(T: np.ndarray, y: np.ndarray, p0: np.ndarray, huber: float = 0.1,
                 huber_iters: int = 3) -> np.ndarray:
    """The reference coefficients with one fitted multiplier per group (NNLS, relative error)."""
    idx = [[TERM_NAMES.index(t) for t in ts] for ts in GROUPS.values()]
    G = np.stack([T[:, ix] @ p0[ix] for ix in idx], axis=1) / y[:, None]
    s = _speed_scale(T, y, p0)
    # A light pull of every multiplier towards the global speed factor keeps groups that the
    # records do not exercise (e.g. no attention anywhere) at a sensible value.
    lam = 0.01 * len(y)
    m = np.maximum(np.abs(G).mean(axis=0), 1e-9)
    w = np.ones(len(y))
    for _ in range(huber_iters):
        sw = np.sqrt(w)
        A = np.vstack([G * sw[:, None], math.sqrt(lam) * np.diag(m)])
        b = np.concatenate([sw, math.sqrt(lam) * m * s])
        mult, _ = optimize.nnls(A, b)
        r = np.abs(G @ mult - 1.0)
        w = np.where(r <= huber, 1.0, huber / np.maximum(r, 1e-12))   # robust to outlier rows
    out = p0.copy()
    for k, ix in enumerate(idx):
        out[ix] = p0[ix] * mult[k]
    return out


class LatencyPredictor:
    """Calibrated latency model of one device. ``predict`` returns (latency_ms, std_ms)."""

    def __init__(self, device: str, coef: Sequence[float], rel_std: float = 0.1,
                 meta: dict[str, Any] | None = None) -> None:
        self.device = device
        self.coef = np.asarray(coef, dtype=float)
        if self.coef.shape != (len(TERM_NAMES),):
            raise ValueError(f"coef: expected {len(TERM_NAMES)} values for terms {TERM_NAMES}")
        self.rel_std = float(rel_std)
        self.meta = dict(meta or {})
        digest = hashlib.sha256(json.dumps([device, self.coef.round(12).tolist(), self.rel_std])
                                .encode()).hexdigest()[:10]
        self.version = f"{FORMAT_VERSION}:{digest}"

    def __repr__(self) -> str:
        return f"LatencyPredictor(device={self.device!r}, version={self.version!r})"

    # -- prediction ---------------------------------------------------------------------------
    def predict_features(self, F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ms = terms_matrix(F) @ self.coef
        return ms, ms * self.rel_std

    def predict_many(self, specs: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised over ArchSpecs (analytic features); other items are featurised one by one."""
        specs = list(specs)
        if all(isinstance(s, ArchSpec) for s in specs):
            return self.predict_features(spec_features_many(specs))
        F = np.stack([featurize(s) for s in specs]) if specs else np.zeros((0, N_FEATURES))
        return self.predict_features(F)

    def predict(self, spec_or_model: Any) -> tuple[float, float]:
        ms, sd = self.predict_features(featurize(spec_or_model)[None])
        return float(ms[0]), float(sd[0])

    def breakdown(self, spec_or_model: Any) -> dict[str, float]:
        """Predicted milliseconds per cost term (sums to the prediction)."""
        t = terms_matrix(featurize(spec_or_model)[None])[0] * self.coef
        return dict(zip(TERM_NAMES, t.tolist()))

    # -- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "device": self.device,
                "version": self.version, "feature_names": list(FEATURE_NAMES),
                "terms": list(TERM_NAMES), "coef": self.coef.tolist(), "rel_std": self.rel_std,
                "meta": self.meta}

    def save(self, path: str) -> None:
        """Write the calibration JSON atomically (parent directories are created)."""
        write_json_atomic(path, self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "<calibration>") -> "LatencyPredictor":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise UsageError(f"{where}: not a latency calibration file (format != {FORMAT!r})")
        if d.get("format_version") != FORMAT_VERSION:
            raise UsageError(f"{where}: format_version {d.get('format_version')!r}; this version "
                             f"reads {FORMAT_VERSION}")
        if d.get("terms") != list(TERM_NAMES) or d.get("feature_names") != list(FEATURE_NAMES):
            raise UsageError(f"{where}: cost terms/features differ from this version's; recalibrate")
        p = cls(d["device"], d["coef"], d.get("rel_std", 0.1), d.get("meta"))
        return p

    @classmethod
    def load(cls, path: str) -> "LatencyPredictor":
        """Read a calibration file; a missing or malformed one is a one-line UsageError."""
        return cls.from_dict(read_json(path, "calibration file"), path)


# -- fitting ----------------------------------------------------------------------------------
def prior_coef(prior: "LatencyPredictor | dict | None") -> np.ndarray:
    if prior is None:
        return np.array([GENERIC_PRIOR[t] for t in TERM_NAMES])
    if isinstance(prior, LatencyPredictor):
        return prior.coef.copy()
    return np.array([float(prior[t]) for t in TERM_NAMES])


def fit_features(F: np.ndarray, y: np.ndarray, device: str,
                 prior: "LatencyPredictor | dict | None" = None,
                 lambdas: Sequence[float] = LAMBDAS, meta: dict[str, Any] | None = None
                 ) -> LatencyPredictor:
    """Fit on feature rows ``F`` and latencies ``y`` (ms). See module docstring."""
    F = np.atleast_2d(np.asarray(F, dtype=float))
    y = np.asarray(y, dtype=float)
    if len(y) < 2:
        raise UsageError(f"calibration needs at least 2 measured models, got {len(y)}")
    if F.shape != (len(y), N_FEATURES) or not np.all(np.isfinite(F)):
        raise UsageError("features: expected finite rows of length "
                         f"{N_FEATURES} matching the latencies")
    if np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise UsageError("latency_ms: every value must be a finite number > 0")
    T = terms_matrix(F)
    p0 = prior_coef(prior)
    s = _speed_scale(T, y, p0)
    prior_scaled = _group_prior(T, y, p0)
    n = len(y)
    # Leave-one-out relative error for each lambda. Leave-one-out on ~10 points is noisy, so
    # take the strongest prior pull whose error is within 5% of the best (one-SE-style rule).
    cv: dict[float, float] = {}
    loo: dict[float, np.ndarray] = {}
    for lam in lambdas:
        errs = np.empty(n)
        for i in range(n):
            keep = np.arange(n) != i
            th = _solve(T[keep], y[keep], _group_prior(T[keep], y[keep], p0), lam)
            errs[i] = (T[i] @ th - y[i]) / y[i]
        cv[lam] = float(np.sqrt(np.mean(errs ** 2)))
        loo[lam] = errs
    best = min(cv.values())
    lam = max(l for l in lambdas if cv[l] <= best * 1.05)
    rms, errs = cv[lam], loo[lam]
    theta = _solve(T, y, prior_scaled, lam)
    info = dict(meta or {})
    info.update(n_records=n, lambda_=lam, speed_scale_vs_prior=s, loo_rel_rmse=rms,
                loo_mape=float(np.mean(np.abs(errs))), cv={str(k): v for k, v in cv.items()},
                prior=(prior.device if isinstance(prior, LatencyPredictor) else
                       "generic-ane (hand-set)" if prior is None else "user"))
    return LatencyPredictor(device, theta, max(rms, MIN_REL_STD), info)


def fit(records: Sequence, device: str, prior: "LatencyPredictor | dict | None" = None,
        skip_unfeaturizable: bool = True, **kw: Any) -> LatencyPredictor:
    """Calibrate a device from measurement records (records.Record)."""
    F, errs = featurize_records(records)
    bad = [(r.model, e) for r, e in zip(records, errs) if e is not None]
    if bad and not skip_unfeaturizable:
        raise UsageError(f"record {bad[0][0]!r} cannot be featurised: {bad[0][1]}")
    ok = np.array([e is None for e in errs])
    y = np.array([r.latency_ms for r in records])
    meta = kw.pop("meta", {}) or {}
    meta.update(records=[r.model for r, k in zip(records, ok) if k],
                skipped=[f"{m}: {e}" for m, e in bad])
    return fit_features(F[ok], y[ok], device, prior, meta=meta, **kw)
