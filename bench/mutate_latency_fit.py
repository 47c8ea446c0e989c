#!/usr/bin/env python
"""Break the few-shot fit one way at a time and check that tests/test_latency_predictor.py
notices (issue 16: the predictor's tests must fail when the fit is wrong).

    /work/venv/bin/python bench/mutate_latency_fit.py [MUTATION ...]

Each mutation is applied in-process (monkeypatching ``latency_models.fewshot``) and the predictor
tests are run under it; a mutation is KILLED when at least one test fails. Prints the failing
tests per mutation and exits 1 if any mutation survives.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from latency_models import fewshot as fs  # noqa: E402

_MAP, _PRIOR, _LOO, _CHOOSE = fs._map, fs._prior_parts, fs.loo, fs.choose


def no_shrinkage(T, logy, theta0, name, h, w, cfg):
    """The prior pull removed: group / term log-multipliers free (within the bounds)."""
    wide = dict(h, tau_group=1e3 if h["tau_group"] else 0.0,
                tau_term=1e3 if h["tau_term"] else 0.0)
    return _MAP(T, logy, theta0, name, wide, w, cfg)


def absolute_objective(T, logy, theta0, name, h, w, cfg):
    """Residuals in milliseconds instead of log latency (relative error)."""
    P = fs.P_FULL[:, fs._ACTIVE[name]]
    sd = fs._prior_sds(name, h["tau_group"], h["tau_term"], cfg)
    keep = sd > 0
    P, sd = P[:, keep], sd[keep]
    lb, ub = (b[keep] for b in fs._bounds(name, cfg))
    y = np.exp(logy)
    scale = h["sigma"] * np.mean(y)

    def resid(z):
        return np.concatenate([(y - T @ (theta0 * np.exp(P @ z))) / scale, z / sd])

    z0 = np.zeros(len(sd))
    z0[0] = np.clip(np.mean(logy - np.log(T @ theta0)), lb[0], ub[0])
    return fs.optimize.least_squares(resid, z0, bounds=(lb, ub)).x, P, sd


def prior_ignored(prior):
    return _PRIOR(None)


def loo_leaks(T, logy, theta0, name, sigma0, prior_cov, cfg=fs.DEFAULT_CONFIG):
    """'Leave-one-out' that fits on every row, the held-out one included."""
    f = fs.fit_candidate(T, logy, theta0, name, sigma0, cfg)
    mu, s = fs.predictive(f, T, prior_cov)
    return logy - mu, s


def selection_best_score(errors, cfg=fs.DEFAULT_CONFIG):
    """The standard-error rules removed: the best mean leave-one-out error wins."""
    return min(errors, key=lambda c: float(np.mean(np.abs(errors[c]))))


MUTATIONS = {
    "no_shrinkage": {"_map": no_shrinkage},
    "selection_always_scale": {"choose": lambda scores, cfg=None: "scale"},
    "selection_always_richest": {"choose": lambda scores, cfg=None: list(scores)[-1]},
    "selection_best_score": {"choose": selection_best_score},
    "absolute_objective": {"_map": absolute_objective},
    "prior_ignored": {"_prior_parts": prior_ignored},
    "loo_leaks": {"loo": loo_leaks},
}


class Mutate:
    """A pytest plugin that applies one mutation for the whole session."""

    def __init__(self, patches: dict) -> None:
        self.patches, self.failed = patches, []

    def pytest_sessionstart(self, session):
        for k, v in self.patches.items():
            setattr(fs, k, v)

    def pytest_runtest_logreport(self, report):
        if report.when == "call" and report.failed:
            self.failed.append(report.nodeid.split("::")[-1])


def main() -> int:
    names = sys.argv[1:] or list(MUTATIONS)
    survived = []
    for name in names:
        plug = Mutate(MUTATIONS[name])
        pytest.main(["-q", "-p", "no:cacheprovider", "--no-header", "-o", "console_output_style=classic",
                     os.path.join(ROOT, "tests", "test_latency_predictor.py")], plugins=[plug])
        for k, v in (("_map", _MAP), ("_prior_parts", _PRIOR), ("loo", _LOO), ("choose", _CHOOSE)):
            setattr(fs, k, v)
        verdict = "KILLED" if plug.failed else "SURVIVED"
        if not plug.failed:
            survived.append(name)
        print(f"\n== {name}: {verdict} by {plug.failed}\n", flush=True)
    print(f"{len(names) - len(survived)}/{len(names)} mutations killed; survived: {survived}")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
