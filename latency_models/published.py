"""Published on-device latencies (``data/published_latency.csv``) and the shipped default device.

``published_latency.csv`` is the project's reference table (sources cited per row in its
``source`` column); ``published_table`` is one phone's featurisable rows as arrays (what the
few-shot bench and tests calibrate and predict). Rows of non-SwiftFormer models are featurised
from the CoreML conversion of the timm model named in ``timm_name``, cached in
``data/published_features.json`` (``feature_cache``), so nothing converts at run time. ``calibrate_default`` fits the shipped
``iphone14-ane`` calibration on the SwiftFormer paper's iPhone 14 rows.
"""
from __future__ import annotations

import csv
import os
from typing import Any, Callable, NamedTuple

import numpy as np

from .devices import SHIPPED_DIR
from .feature_cache import DATA_DIR, cached_features
from .featurize import featurize_records
from .fewshot import fit
from .options import DEFAULT_DEVICE
from .predictor import LatencyPredictor
from .records import Record, parse_record
from .timm_models import default_resolution

PUBLISHED_CSV = os.path.join(DATA_DIR, "published_latency.csv")


def published_rows() -> list[dict[str, str]]:
    with open(PUBLISHED_CSV, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def published_models() -> list[tuple[str, int]]:
    """(timm_name, resolution) of every published row that names a timm model."""
    out = []
    for r in published_rows():
        name = (r.get("timm_name") or "").strip()
        if not name:
            continue
        res = int(float(r["resolution"])) if (r.get("resolution") or "").strip() else \
            default_resolution(name)
        if (name, res) not in out:
            out.append((name, res))
    return out


def published_records(device_prefix: str = "iPhone 14 (iOS 16)",
                      source_contains: str = "Table 2") -> list[Record]:
    """Published rows as Records (default: the SwiftFormer paper's iPhone 14 Table 2 rows)."""
    out = []
    for i, r in enumerate(published_rows(), start=2):
        if r["device"].startswith(device_prefix) and source_contains in r["source"] \
                and r["latency_ms"].strip():   # Swin-T has no published iPhone latency
            out.append(parse_record(r, PUBLISHED_CSV, i))
    return out


class PublishedTable(NamedTuple):
    """One phone's featurisable published rows, one per model (repeated measurements of a
    model averaged)."""
    features: np.ndarray       # (rows, N_FEATURES)
    latency_ms: np.ndarray     # (rows,)
    names: list[str]           # display name of each row's first record
    families: list[str]        # each row's model family (Record.family: the held-out folds)


def published_table(device_prefix: str, source_contains: str = "") -> PublishedTable:
    """The rows of ``published_records(device_prefix, source_contains)`` that can be
    featurised (SwiftFormer specs analytically, timm models from the shipped cache), one per
    model (Record.identity)."""
    recs = published_records(device_prefix=device_prefix, source_contains=source_contains)
    F, errs = featurize_records(recs)
    by: dict[str, list[tuple[Record, np.ndarray]]] = {}
    for r, f, e in zip(recs, F, errs):
        if e is None:
            by.setdefault(r.identity(), []).append((r, f))
    return PublishedTable(np.stack([v[0][1] for v in by.values()]),
                          np.array([np.mean([r.latency_ms for r, _ in v]) for v in by.values()]),
                          [v[0][0].model for v in by.values()],
                          [v[0][0].family() for v in by.values()])


def calibrate_default(device: str = DEFAULT_DEVICE, path: str | None = None,
                      log: Callable[[str], Any] = print) -> LatencyPredictor:
    """Fit the shipped default device on the published iPhone 14 rows (cached features)."""
    # Only rows featurisable without conversion (SwiftFormer analytically, others from the cache).
    recs = [r for r in published_records()
            if r.arch_spec() is not None or cached_features(r.timm_name, r.resolution) is not None]
    p = fit(recs, device, prior=None, meta={
        "description": "iPhone 14, CoreML, Neural Engine, batch 1 (SwiftFormer paper Table 2 rows, "
                       "arXiv:2303.15446); non-SwiftFormer rows featurised from the CoreML "
                       "conversion of their timm model (data/published_features.json)",
        "source_csv": "latency_models/data/published_latency.csv"})
    path = path or os.path.join(SHIPPED_DIR, f"{device}.json")
    p.save(path)
    log(f"{device}: {len(p.meta['records'])} records, skipped {len(p.meta['skipped'])}, "
        f"LOO MAPE {p.meta['loo_mape']:.3f}, candidate {p.meta['candidate']}, saved {path}")
    return p
