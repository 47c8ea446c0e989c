"""Which models to measure on a new phone: greedy Bayesian experimental design.

Calibrating a device fits the log multipliers z = [a, b (groups), c (terms)] of a prior
device's coefficients (``latency_models.fewshot``); a measured model i contributes one row
x_i = shares_i @ P (its latency's split over the cost terms under the prior, mapped to z).
``choose_rows`` picks, one at a time, the candidate that most increases log det of the
posterior precision of z, X^T X / sigma^2 + Lambda0^-1 (Bayesian D-optimality; Lambda0 = the
fit's prior covariance): each pick is the model whose latency the current design predicts least
well, so ten picks spread over what the cost terms can tell apart (attention-heavy,
depthwise-heavy, tiny, large, rank-5 ...) instead of ten similar mid-size nets. On the local
CPU as a device this is what makes 10 measurements enough (bench/bench_latency_fewshot.py:
MAPE 2.7% on 140 random specs vs 11% for 10 random ones); ``criterion="V"`` (mean predictive
variance over a target set) is kept for comparison.

``candidate_pool`` is what can be suggested: SwiftFormer-space members (analytic features) and
the timm models whose CoreML op lists ship (``feature_cache``); ``write_template`` writes the
CSV to fill in (``model`` filled, ``latency_ms`` blank) and the spec JSON files it names.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from search_space.io import atomic_write, write_text_atomic
from search_space.space import DEFAULT_SPACE
from search_space.spec import PRESETS, ArchSpec

from .analytic import spec_features_many
from .feature_cache import cached_features, load_feature_cache
from .fewshot import N_GROUPS, P_FULL
from .predictor import LatencyPredictor, prior_coef, terms_matrix
from .timm_models import SWIFTFORMER_TIMM

# Prior sds of z the design assumes (a: any speed; groups x1.6; terms x1.35) and the noise sd:
# the typical few-shot posture (fewshot.FitConfig picks its own by evidence once measured).
DESIGN_SCALE_SD = 3.0
DESIGN_TAU_GROUP = 0.5
DESIGN_TAU_TERM = 0.3
DESIGN_SIGMA = 0.1


@dataclass(frozen=True)
class Candidate:
    """A model that can be suggested: its name in a records CSV, and what it is."""
    name: str                      # spec file stem or timm name
    spec: ArchSpec | None = None
    timm_name: str = ""
    resolution: int | None = None


def _prior_sd(q: int) -> np.ndarray:
    return np.concatenate([[DESIGN_SCALE_SD], np.full(N_GROUPS, DESIGN_TAU_GROUP),
                           np.full(q - 1 - N_GROUPS, DESIGN_TAU_TERM)])


def design_rows(F: np.ndarray, prior: LatencyPredictor | None) -> np.ndarray:
    """x_i = shares_i @ P_FULL under the prior's coefficients (one row per candidate)."""
    theta = prior_coef(prior)
    T = terms_matrix(F)
    W = T * theta / (T @ theta)[:, None]
    return W @ P_FULL


def _update(S: np.ndarray, x: np.ndarray) -> np.ndarray:
    Sx = S @ x
    return S - np.outer(Sx, Sx) / (DESIGN_SIGMA ** 2 + x @ Sx)


def _strata(latency: np.ndarray, n: int) -> np.ndarray:
    """Stratum (0..n-1) of each row: the n equal-count bins of log latency."""
    rank = np.argsort(np.argsort(np.log(latency), kind="stable"), kind="stable")
    return rank * n // len(latency)


def choose_rows(X: np.ndarray, n: int, start: Sequence[int] = (), criterion: str = "D",
                target: np.ndarray | None = None,
                latency: np.ndarray | None = None) -> list[int]:
    """Greedy Bayesian design: ``n`` row indices of X, one rank-one posterior update at a time
    (``start`` rows count as already measured). "D" (default) picks the row that most increases
    log det of the posterior precision (pins the coefficients down); "V" the row that most
    reduces the mean predictive variance of log latency over ``target`` (default: X itself);
    "S" is "D" with one row per latency stratum (``latency``: the prior's prediction per row,
    cut into ``n`` equal-count bins, each used once), so the set also spreads over the latency
    range like a representative sample."""
    if criterion not in ("V", "D", "S"):
        raise ValueError(f"criterion {criterion!r}: 'V', 'D' or 'S'")
    if criterion == "S" and (latency is None or len(latency) != len(X)):
        raise ValueError("criterion 'S' needs latency: one predicted latency per row of X")
    S = np.diag(_prior_sd(X.shape[1]) ** 2)
    Y = X if target is None else target
    for i in start:
        S = _update(S, X[i])
    stratum = _strata(latency, n) if criterion == "S" else np.zeros(len(X), dtype=int)
    chosen: list[int] = []
    for _ in range(min(n, len(X))):
        own = np.einsum("ij,jk,ik->i", X, S, X)
        if criterion == "V":
            A = (Y @ S) @ X.T                       # covariances target x candidate
            gain = np.sum(A * A, axis=0) / (DESIGN_SIGMA ** 2 + own)
        else:
            gain = np.log1p(own / DESIGN_SIGMA ** 2)
        gain[list(start) + chosen] = -np.inf
        if criterion == "S":                        # n strata, n picks: one row each
            gain[np.isin(stratum, stratum[chosen])] = -np.inf
        i = int(np.argmax(gain))
        chosen.append(i)
        S = _update(S, X[i])
    return chosen


def candidate_pool(n_space: int = 1000, seed: int = 0
                   ) -> tuple[list[Candidate], np.ndarray]:
    """(candidates, features): the presets, ``n_space`` random SwiftFormer-space members and
    every timm model with shipped features (at each shipped resolution)."""
    specs = [PRESETS[k] for k in ("XS", "S", "L1", "L3")] + \
        DEFAULT_SPACE.sample_many(n_space, seed=seed)
    cands = [Candidate(k, PRESETS[k]) for k in ("XS", "S", "L1", "L3")]
    cands += [Candidate(f"space-{seed}-{i:04d}", s) for i, s in enumerate(specs[4:])]
    rows = [spec_features_many(specs)]
    for key, entry in sorted(load_feature_cache()["models"].items()):
        name, res = key.split("@")
        if entry.get("ops") is None or name in SWIFTFORMER_TIMM:
            continue
        f = cached_features(name, int(res))
        cands.append(Candidate(name if entry.get("default", True) else f"{name}@{res}",
                               timm_name=name, resolution=int(res)))
        rows.append(f[None])
    return cands, np.vstack(rows)


def template_rows(chosen: Sequence[Candidate], packages: dict[str, str]) -> list[dict]:
    """Rows of the CSV to fill in: model (spec file or timm name), resolution, mlpackage."""
    out = []
    for c in chosen:
        model = f"{c.name}.json" if c.spec is not None else c.timm_name
        out.append({"model": model, "latency_ms": "",
                    "resolution": c.spec.resolution if c.spec is not None else c.resolution,
                    "mlpackage": packages.get(c.name, ""), "std_ms": "", "source": ""})
    return out


def write_template(out_dir: str, chosen: Sequence[Candidate],
                   packages: dict[str, str] | None = None) -> str:
    """Write ``<out_dir>/measure.csv`` (latency_ms blank) and one spec JSON per SwiftFormer
    member it names. Returns the CSV path."""
    for c in chosen:
        if c.spec is not None:
            write_text_atomic(os.path.join(out_dir, f"{c.name}.json"), c.spec.to_json(indent=1)
                              + "\n")
    rows = template_rows(chosen, packages or {})
    path = os.path.join(out_dir, "measure.csv")
    cols = ["model", "latency_ms", "resolution", "mlpackage", "std_ms", "source"]

    def write(tmp: Path) -> None:
        lines = [",".join(cols)] + [",".join(str(r[c]) for c in cols) for r in rows]
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")

    atomic_write(path, write)
    return path


def design_quality(X: np.ndarray, rows: Sequence[int]) -> dict[str, float]:
    """How much measuring ``rows`` pins down: log det of the posterior precision of z, and the
    mean predictive sd of log latency it leaves over all of X."""
    A = np.diag(1 / _prior_sd(X.shape[1]) ** 2) + \
        X[list(rows)].T @ X[list(rows)] / DESIGN_SIGMA ** 2
    var = np.einsum("ij,jk,ik->i", X, np.linalg.inv(A), X)
    return {"log_det": float(np.linalg.slogdet(A)[1]),
            "mean_pred_sd": float(np.mean(np.sqrt(var + DESIGN_SIGMA ** 2)))}
