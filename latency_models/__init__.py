"""Latency prediction for SwiftFormer-family specs (and any CoreML-convertible model) on phones.

Light to import (numpy only): torch / coremltools / scipy load on first use.

    from latency_models import load_predictor
    p = load_predictor()                 # iPhone 14 Neural Engine (SwiftFormer paper Table 2)
    ms, sd = p.predict(spec)             # one ArchSpec / preset name / timm name / torch module
    ms, sd = p.predict_many(specs)       # vectorised over ArchSpecs

One module per concern (docs/latency.md has the map): features (the feature vector), analytic
(SwiftFormer specs in closed form), coreml (conversion, per-op costs of a program), featurize (any
model -> features), feature_cache / published (shipped data), records (measurement CSV/JSON),
predictor (terms, predict, uncertainty), fewshot (the empirical-Bayes fit), devices (where calibrations live), models / export / backends (torch:
build, export, time), cli.
"""
from __future__ import annotations

from .devices import SHIPPED_DIR, list_devices, load_predictor, user_dir
from .options import DEFAULT_DEVICE
from .fewshot import fit, fit_features
from .predictor import LatencyPredictor

__all__ = ["DEFAULT_DEVICE", "LatencyPredictor", "list_devices", "load_predictor", "fit",
           "fit_features", "user_dir", "SHIPPED_DIR"]
