"""Per-device latency predictor: a physically-motivated per-op cost model with an uncertainty
that grows where the calibration did not look.

latency = sum over cost terms j of  theta_j * term_j(features)      (theta >= 0)

with terms built from the per-op-class features (features.py):
  GMACs of k x k convs, 1 x 1 convs, depthwise convs, linears, activation x activation
  matmuls                                                  (compute: ms per GMAC per op kind)
  activation MB moved by all ops; extra for 1x1 and depthwise convs, transcendental
  activations (GELU...), norm/softmax, layout ops          (memory traffic, special functions,
                                                            layout conversions)
  weight MB read                                           (weight streaming: small-token GEMMs)
  number of ops; gather ops                                (launch / dispatch, graph splits)
  MB of rank-5 ops, of reductions over a non-innermost axis, of large softmaxes, of
  memory-bound dense MAC ops                               (what the Neural Engine does badly)
  1                                                        (fixed per-inference overhead)

The uncertainty of a prediction is log-normal: sd(log latency)^2 = kappa^2 * (w L L^T w^T +
sigma^2), where w are the prediction's term shares (which terms its latency comes from), L L^T
the covariance of the log coefficients (from the fit, plus the prior device's own), sigma the
misfit of the cost model on this device and kappa a factor calibrated by leave-one-out
(``latency_models.fewshot``). ``std_ms = latency * sd``. A model made of terms the calibration
never exercised therefore gets a wide interval, and ``extrapolation`` names why.

Fitting lives in ``latency_models.fewshot``; where calibrations live in ``latency_models.devices``.
Light to import (numpy only).
"""
from __future__ import annotations

import hashlib
import json
import math
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from search_space.errors import UsageError
from search_space.io import read_json, write_json_atomic
from search_space.spec import ArchSpec

from .analytic import SpecArrays, compile_plan, evaluate_plan
from .features import FEATURE_NAMES, N_FEATURES, OP_CLASSES
from .featurize import featurize

FORMAT = "swiftformer-nas-latency-calibration"
FORMAT_VERSION = 2   # 2: ANE-aware terms, log-normal uncertainty (issue 14)


def _col(name: str) -> int:
    return FEATURE_NAMES.index(name)


# Cost terms: name -> feature weights. Linear in the features, so prediction is one matrix
# product and a fit is a small (log-space) least-squares problem.
TERMS: dict[str, dict[int, float]] = {
    "conv_gmacs": {_col("conv_gmacs"): 1.0},
    "pwconv_gmacs": {_col("pwconv_gmacs"): 1.0},
    "dwconv_gmacs": {_col("dwconv_gmacs"): 1.0},
    "linear_gmacs": {_col("linear_gmacs"): 1.0},
    "actmm_gmacs": {_col("actmm_gmacs"): 1.0},
    "act_mbytes": {_col(f"{k}_act_mbytes"): 1.0 for k in OP_CLASSES},
    "pwconv_mbytes": {_col("pwconv_act_mbytes"): 1.0},
    "dwconv_mbytes": {_col("dwconv_act_mbytes"): 1.0},
    "transcendental_mbytes": {_col("act_act_mbytes"): 1.0},
    "norm_mbytes": {_col("norm_act_mbytes"): 1.0},
    "layout_mbytes": {_col("layout_act_mbytes"): 1.0},
    "weight_mbytes": {_col(f"{k}_w_mbytes"): 1.0 for k in OP_CLASSES},
    "ops": {_col(f"{k}_count"): 1.0 for k in OP_CLASSES},
    "gather_ops": {_col("gather_count"): 1.0},
    "hirank_mbytes": {_col("hirank_mbytes"): 1.0},
    "chreduce_mbytes": {_col("chreduce_mbytes"): 1.0},
    "bigsoftmax_mbytes": {_col("bigsoftmax_mbytes"): 1.0},
    "lowai_mbytes": {_col("lowai_mbytes"): 1.0},
    "const": {},
}
TERM_NAMES = tuple(TERMS)
N_TERMS = len(TERM_NAMES)
CONST = TERM_NAMES.index("const")
TERM_MATRIX = np.zeros((N_FEATURES, N_TERMS))
for _j, _w in enumerate(TERMS.values()):
    for _i, _v in _w.items():
        TERM_MATRIX[_i, _j] = _v

# Term groups: how much slower/faster than the reference a device is at arithmetic, at moving
# bytes, per op, and at what the Neural Engine handles badly. The few-shot fit moves groups
# before it moves single terms (latency_models.fewshot).
GROUPS = {
    "compute": ("conv_gmacs", "pwconv_gmacs", "dwconv_gmacs", "linear_gmacs", "actmm_gmacs"),
    "memory": ("act_mbytes", "pwconv_mbytes", "dwconv_mbytes", "transcendental_mbytes",
               "norm_mbytes", "layout_mbytes", "weight_mbytes"),
    "overhead": ("ops", "const"),
    "ane": ("gather_ops", "hirank_mbytes", "chreduce_mbytes", "bigsoftmax_mbytes",
            "lowai_mbytes"),
}
GROUP_OF = np.array([next(i for i, ts in enumerate(GROUPS.values()) if t in ts)
                     for t in TERM_NAMES])

# A hand-set physical prior for a phone neural engine (A15/A16 class, fp16), used only when no
# reference calibration is given: ~4 TMAC/s effective on dense convs and linears, ~10x less on
# depthwise, ~50 GB/s activation and weight traffic, ~3x that for norm/softmax and layout ops
# (extra terms: conv activations +25%, transcendental +100%), ~4 us per op, 0.1 ms fixed;
# softmax-attention matmuls (activation x activation) ~4x slower than linears. The Neural-
# Engine terms start small (a quarter of a layout byte per rank-5 / channel-reduction /
# large-softmax byte, 10 us per gather, memory-bound MAC bytes a quarter more): the published
# iPhone 14 rows show PoolFormer and MobileViT-v2 (GroupNorm on 5-D tensors) fast, so a larger
# prior only hurts there; a device that is slow at them learns it from rows that have them
# (`latency suggest` picks such rows). Units: ms per GMAC / per MB / per op / per inference.
GENERIC_PRIOR = {"conv_gmacs": 0.25, "pwconv_gmacs": 0.25, "dwconv_gmacs": 2.5,
                 "linear_gmacs": 0.3, "actmm_gmacs": 1.0, "act_mbytes": 0.02,
                 "pwconv_mbytes": 0.005, "dwconv_mbytes": 0.005, "transcendental_mbytes": 0.02,
                 "norm_mbytes": 0.04, "layout_mbytes": 0.04, "weight_mbytes": 0.02,
                 "ops": 0.004, "gather_ops": 0.01, "hirank_mbytes": 0.01,
                 "chreduce_mbytes": 0.01, "bigsoftmax_mbytes": 0.01, "lowai_mbytes": 0.005,
                 "const": 0.1}
GENERIC_SIGMA = 0.3          # how far (log) the hand-set prior's cost model misses a real model
MIN_REL_STD = 0.03
# A prediction's uncertainty is log-normal: std_ms = ms x s, s the standard deviation of the
# log latency (what the fit estimates and its leave-one-out coverage checks). Its interval is
# multiplicative, [ms e^(-k s), ms e^(k s)]: never below zero (ms -+ k std_ms goes negative for
# s > 1/k: a device calibrated from a few rows), and the band the coverage figures count.
INTERVAL_SIGMAS = 2.0   # about 95% for a calibrated predictor (`latency evaluate` reports it)
# A prediction extrapolates when its latency is outside [min / RANGE_FACTOR, max * RANGE_FACTOR]
# of the calibration latencies, or a cost term that makes up at least SHARE_FLOOR of it exceeds
# RANGE_FACTOR x the largest value that term had in the calibration set (0 if never exercised:
# its coefficient is then the prior's, unchecked on this device).
RANGE_FACTOR = 2.0
SHARE_FLOOR = 0.02


def terms_matrix(F: np.ndarray) -> np.ndarray:
    F = np.atleast_2d(np.asarray(F, dtype=float))
    T = F @ TERM_MATRIX
    T[:, CONST] = 1.0
    return T


@lru_cache(maxsize=1)
def _plan():
    return compile_plan()


def prior_coef(prior: "LatencyPredictor | dict | None") -> np.ndarray:
    if prior is None:
        return np.array([GENERIC_PRIOR[t] for t in TERM_NAMES])
    if isinstance(prior, LatencyPredictor):
        return prior.coef.copy()
    return np.array([float(prior[t]) for t in TERM_NAMES])


def latency_interval(ms: Any, std_ms: Any, k: float = INTERVAL_SIGMAS) -> tuple[Any, Any]:
    """(low, high) ms of the +-k sigma interval of predictions ``ms`` +- ``std_ms`` (floats or
    arrays): ms e^(-k s), ms e^(k s) with s = std_ms / ms."""
    ms, std = np.asarray(ms, dtype=float), np.asarray(std_ms, dtype=float)
    spread = np.exp(k * std / ms)
    return ms / spread, ms * spread


def within_interval(ms: Any, std_ms: Any, measured: Any, k: float = INTERVAL_SIGMAS) -> Any:
    """Whether each ``measured`` latency lies inside its prediction's +-k sigma interval."""
    ms, std = np.asarray(ms, dtype=float), np.asarray(std_ms, dtype=float)
    return np.abs(np.log(np.asarray(measured, dtype=float) / ms)) <= k * std / ms


class LatencyPredictor:
    """Calibrated latency model of one device. ``predict`` returns (latency_ms, std_ms).

    ``sigma``: log-space misfit; ``cov_factor`` (n_terms x r): L with L L^T the covariance of
    the log coefficients; ``kappa``: leave-one-out calibration of the interval; ``ranges``: what
    the calibration set covered (``extrapolation``). A bare predictor (coefficients only) has
    a relative uncertainty ``rel_std``."""

    def __init__(self, device: str, coef: Sequence[float], rel_std: float = 0.1,
                 meta: dict[str, Any] | None = None, *, sigma: float | None = None,
                 cov_factor: Any = None, kappa: float = 1.0,
                 ranges: dict[str, Any] | None = None) -> None:
        self.device = device
        self.coef = np.asarray(coef, dtype=float)
        if self.coef.shape != (N_TERMS,):
            raise ValueError(f"coef: expected {N_TERMS} values for terms {TERM_NAMES}")
        self.rel_std = float(rel_std)
        self.sigma = float(rel_std if sigma is None else sigma)
        L = np.zeros((N_TERMS, 0)) if cov_factor is None else np.asarray(cov_factor, float)
        self.cov_factor = L.reshape(N_TERMS, -1)
        self.kappa = float(kappa)
        self.ranges = dict(ranges or {})
        self.meta = dict(meta or {})
        blob = json.dumps([device, self.coef.round(12).tolist(), round(self.rel_std, 12),
                           round(self.sigma, 12), round(self.kappa, 12),
                           self.cov_factor.round(10).tolist()])
        self.version = f"{FORMAT_VERSION}:{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    def __repr__(self) -> str:
        return f"LatencyPredictor(device={self.device!r}, version={self.version!r})"

    # -- prediction ---------------------------------------------------------------------------
    def _sd_log(self, ms: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """kappa * sqrt(||shares L||^2 + sigma^2); Z = (T * coef) @ L."""
        var = np.sum(Z * Z, axis=1) / np.maximum(ms, 1e-12) ** 2 + self.sigma ** 2
        return self.kappa * np.sqrt(var)

    def predict_features(self, F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        T = terms_matrix(F)
        ms = T @ self.coef
        sd = self._sd_log(ms, (T * self.coef) @ self.cov_factor)
        return ms, ms * sd

    def _fast_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """(N_FEATURES, 1 + r) feature weights and the constant row of [ms | Z] (fast path)."""
        cols = np.column_stack([self.coef, self.coef[:, None] * self.cov_factor])
        return TERM_MATRIX @ cols, cols[CONST]   # TERM_MATRIX's const column is zero

    def predict_arrays(self, A: SpecArrays) -> tuple[np.ndarray, np.ndarray]:
        """The fast path: SwiftFormer specs as arrays -> (ms, std_ms), features never formed
        (``analytic.evaluate_plan``; > 10^6 specs per second on one core)."""
        W, c = self._fast_weights()
        out = evaluate_plan(_plan(), A, W) + c
        ms = out[:, 0]
        return ms, ms * self._sd_log(ms, out[:, 1:])

    def predict_many(self, specs: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised over ArchSpecs or a SpecArrays batch (the fast path); other items are
        featurised one by one."""
        if isinstance(specs, SpecArrays):
            return self.predict_arrays(specs)
        specs = list(specs)
        if all(isinstance(s, ArchSpec) for s in specs):
            if not specs:
                return np.zeros(0), np.zeros(0)
            return self.predict_arrays(SpecArrays.from_specs(specs))
        F = np.stack([featurize(s) for s in specs]) if specs else np.zeros((0, N_FEATURES))
        return self.predict_features(F)

    def predict(self, spec_or_model: Any) -> tuple[float, float]:
        ms, sd = self.predict_features(featurize(spec_or_model)[None])
        return float(ms[0]), float(sd[0])

    def breakdown(self, spec_or_model: Any) -> dict[str, float]:
        """Predicted milliseconds per cost term (sums to the prediction)."""
        t = terms_matrix(featurize(spec_or_model)[None])[0] * self.coef
        return dict(zip(TERM_NAMES, t.tolist()))

    def extrapolation(self, F: np.ndarray) -> list[str]:
        """Per row: why its prediction extrapolates beyond the calibration set ("" if it does
        not, or if this predictor carries no calibration ranges)."""
        T = terms_matrix(F)
        ms = T @ self.coef
        out = ["" for _ in ms]
        if not self.ranges:
            return out
        lo, hi = self.ranges["latency_ms"]
        term_max = np.asarray(self.ranges["term_max"])
        shares = (T * self.coef) / np.maximum(ms, 1e-12)[:, None]
        beyond = (T > RANGE_FACTOR * term_max[None, :]) & (shares >= SHARE_FLOOR)
        for i in range(len(ms)):
            why = []
            if ms[i] < lo / RANGE_FACTOR or ms[i] > hi * RANGE_FACTOR:
                why.append(f"{ms[i]:.3g} ms is outside the calibrated {lo:.3g}-{hi:.3g} ms "
                           f"(x{RANGE_FACTOR:g})")
            why += [f"{TERM_NAMES[j]} = {T[i, j]:.3g} ({shares[i, j]:.0%} of it; at most "
                    f"{term_max[j]:.3g} in calibration)" for j in np.flatnonzero(beyond[i])]
            out[i] = "; ".join(why)
        return out

    # -- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "device": self.device,
                "version": self.version, "feature_names": list(FEATURE_NAMES),
                "terms": list(TERM_NAMES), "coef": self.coef.tolist(), "rel_std": self.rel_std,
                "uncertainty": {"sigma": self.sigma, "kappa": self.kappa,
                                "cov_factor": self.cov_factor.tolist()},
                "ranges": self.ranges, "meta": self.meta}

    def save(self, path: str) -> None:
        """Write the calibration JSON atomically (parent directories are created)."""
        write_json_atomic(path, self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "<calibration>") -> "LatencyPredictor":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise UsageError(f"{where}: not a latency calibration file (format != {FORMAT!r})")
        if d.get("format_version") != FORMAT_VERSION:
            rec = (d.get("meta") or {}).get("records_file") or "<your records CSV>"
            raise UsageError(f"{where}: format_version {d.get('format_version')!r}; this version "
                             f"reads {FORMAT_VERSION} (new cost terms): recalibrate with "
                             f"`run_search.py latency calibrate --records {rec}`")
        if d.get("terms") != list(TERM_NAMES) or d.get("feature_names") != list(FEATURE_NAMES):
            raise UsageError(f"{where}: cost terms/features differ from this version's; recalibrate")
        u = d.get("uncertainty") or {}
        coef = d.get("coef")
        if not isinstance(coef, list) or len(coef) != N_TERMS or not all(
                isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in coef):
            raise UsageError(f"{where}: coef must be a list of {N_TERMS} finite numbers >= 0")
        if not isinstance(d.get("device"), str) or not d["device"]:
            raise UsageError(f"{where}: device must be a non-empty name, got {d.get('device')!r}")
        return cls(d["device"], coef, d.get("rel_std", 0.1), d.get("meta"),
                   sigma=u.get("sigma"), cov_factor=u.get("cov_factor"),
                   kappa=u.get("kappa", 1.0), ranges=d.get("ranges"))

    @classmethod
    def load(cls, path: str) -> "LatencyPredictor":
        """Read a calibration file; a missing or malformed one is a one-line UsageError."""
        return cls.from_dict(read_json(path, "calibration file"), path)

