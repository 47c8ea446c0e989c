"""Shipped calibration data: published latencies and cached CoreML op lists of their models.

``data/published_latency.csv`` is a copy of the project's reference table (sources cited per
row in its ``source`` column). Rows of non-SwiftFormer models are featurised from the CoreML
conversion of the timm model named in ``timm_name``; those features are cached in
``data/published_features.json`` as packed per-op lists (built by ``build_feature_cache``;
re-aggregated at load) so nothing converts at run time.
"""
from __future__ import annotations

import csv
import json
import os
import time
from typing import Any

import numpy as np

from .features import aggregate, unpack_ops

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
PUBLISHED_CSV = os.path.join(DATA_DIR, "published_latency.csv")
FEATURE_CACHE = os.path.join(DATA_DIR, "published_features.json")
# timm's SwiftFormer presets are built by our generator (identical op graph; no timm conversion).
SWIFTFORMER_TIMM = {"swiftformer_xs": "XS", "swiftformer_s": "S", "swiftformer_l1": "L1",
                    "swiftformer_l3": "L3"}


def published_rows() -> list[dict[str, str]]:
    with open(PUBLISHED_CSV, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _key(timm_name: str, resolution: int) -> str:
    return f"{timm_name}@{resolution}"


def default_resolution(timm_name: str) -> int:
    if timm_name in SWIFTFORMER_TIMM:
        return 224
    import timm

    cfg = timm.get_pretrained_cfg(timm_name)
    size = getattr(cfg, "input_size", None) or (3, 224, 224)
    return int(size[-1])


CACHE_FORMAT = 1
_CACHE: dict[str, Any] = {}


def load_feature_cache(path: str = FEATURE_CACHE) -> dict[str, Any]:
    """The cache: per (timm_name, resolution) the packed op list of its CoreML program."""
    if path in _CACHE:
        return _CACHE[path]
    if not os.path.exists(path):
        return {"format": CACHE_FORMAT, "models": {}}
    with open(path, encoding="utf-8") as f:
        cache = json.load(f)
    if cache.get("format") != CACHE_FORMAT:
        raise ValueError(f"{path}: cache format {cache.get('format')!r}, expected {CACHE_FORMAT}; "
                         "rebuild it with bench/bench_latency_iphone.py --rebuild-cache")
    _CACHE[path] = cache
    return cache


def cached_features(timm_name: str, resolution: int | None = None,
                    cache: dict[str, Any] | None = None) -> np.ndarray | None:
    """Cached feature vector of a timm model (None if it is not cached or did not convert)."""
    cache = cache or load_feature_cache()
    if resolution is None:
        hits = [v for k, v in cache["models"].items() if k.split("@")[0] == timm_name]
        entry = hits[0] if hits else None
    else:
        entry = cache["models"].get(_key(timm_name, int(resolution)))
    if not entry or entry.get("ops") is None:
        return None
    return aggregate(unpack_ops(entry["ops"]))


def build_feature_cache(names_res: list[tuple[str, int]], path: str = FEATURE_CACHE,
                        log=print) -> dict[str, Any]:
    """Convert each (timm_name, resolution) with coremltools and store its features (incremental)."""
    from search_space.spec import PRESETS

    from .coreml import coreml_ops
    from .features import aggregate, gmacs_of, pack_ops, spec_ops

    cache = load_feature_cache(path)
    _CACHE.pop(path, None)
    for name, res in names_res:
        key = _key(name, res)
        if key in cache["models"]:
            continue
        t0 = time.perf_counter()
        entry: dict[str, Any] = {"timm_name": name, "resolution": res}
        try:
            if name in SWIFTFORMER_TIMM:
                spec = PRESETS[SWIFTFORMER_TIMM[name]].replace(resolution=res)
                ops = spec_ops(spec)
                method = "analytic (our generator; identical op graph)"
            else:
                ops = coreml_ops(name, res)
                method = "coremltools 9 ML program fp16 (method auto: torch.export, else jit.trace)"
            entry.update(ops=pack_ops(ops), n_ops=len(ops), method=method,
                         gmacs=round(float(gmacs_of(aggregate(ops))[0]), 4))
        except Exception as e:  # noqa: BLE001 - record the failure, keep going
            entry.update(ops=None, error=f"{type(e).__name__}: {str(e)[:300]}")
        entry["featurize_s"] = round(time.perf_counter() - t0, 2)
        cache["models"][key] = entry
        log(f"{key}: {'ok' if entry.get('ops') is not None else entry['error']} "
            f"({entry['featurize_s']} s)")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(cache, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    return cache


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


def published_records(device_prefix: str = "iPhone 14 (iOS 16)", source_contains: str = "Table 2"):
    """Published rows as Records (default: the SwiftFormer paper's iPhone 14 Table 2 rows)."""
    from .records import parse_record

    out = []
    for i, r in enumerate(published_rows(), start=2):
        if r["device"].startswith(device_prefix) and source_contains in r["source"] \
                and r["latency_ms"].strip():   # Swin-T has no published iPhone latency
            out.append(parse_record(r, PUBLISHED_CSV, i))
    return out


def calibrate_default(device: str = "iphone14-ane", path: str | None = None, log=print):
    """Fit the shipped default device on the published iPhone 14 rows (cached features)."""
    from .predictor import fit

    # Only rows featurisable without conversion (SwiftFormer analytically, others from the cache).
    recs = [r for r in published_records()
            if r.arch_spec() is not None or cached_features(r.timm_name, r.resolution) is not None]
    p = fit(recs, device, prior=None, meta={
        "description": "iPhone 14, CoreML, Neural Engine, batch 1 (SwiftFormer paper Table 2 rows, "
                       "arXiv:2303.15446); non-SwiftFormer rows featurised from the CoreML "
                       "conversion of their timm model (data/published_features.json)",
        "source_csv": "latency_models/data/published_latency.csv"})
    path = path or os.path.join(DATA_DIR, "devices", f"{device}.json")
    p.save(path)
    log(f"{device}: {len(p.meta['records'])} records, skipped {len(p.meta['skipped'])}, "
        f"LOO MAPE {p.meta['loo_mape']:.3f}, lambda {p.meta['lambda_']}, saved {path}")
    return p
