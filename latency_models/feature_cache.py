"""The shipped per-op features of the published baselines, so nothing converts at run time.

``data/published_features.json`` holds, per (timm_name, resolution), the packed op list of the
model's CoreML program (``features.pack_ops``; re-aggregated at load, so a change of op classes
needs no reconversion). ``build_feature_cache`` (re)builds it incrementally with coremltools
(``bench/bench_latency_iphone.py --rebuild-cache``); SwiftFormer presets are emitted by the
analytic path instead (identical op graph).
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable

import numpy as np

from search_space.errors import UsageError
from search_space.io import read_json, write_json_atomic
from search_space.spec import PRESETS

from .analytic import spec_ops
from .coreml import coreml_ops
from .features import aggregate, gmacs_of, pack_ops, unpack_ops
from .timm_models import SWIFTFORMER_TIMM

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
FEATURE_CACHE = os.path.join(DATA_DIR, "published_features.json")
CACHE_FORMAT = 1
_CACHE: dict[str, Any] = {}  # path -> parsed cache (read once per process)


def cache_key(timm_name: str, resolution: int) -> str:
    return f"{timm_name}@{resolution}"


def load_feature_cache(path: str = FEATURE_CACHE) -> dict[str, Any]:
    """The cache: per (timm_name, resolution) the packed op list of its CoreML program."""
    if path in _CACHE:
        return _CACHE[path]
    if not os.path.exists(path):
        return {"format": CACHE_FORMAT, "models": {}}
    cache = read_json(path, "feature cache")
    if cache.get("format") != CACHE_FORMAT:
        raise UsageError(f"{path}: cache format {cache.get('format')!r}, expected {CACHE_FORMAT}; "
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
        entry = cache["models"].get(cache_key(timm_name, int(resolution)))
    if not entry or entry.get("ops") is None:
        return None
    return aggregate(unpack_ops(entry["ops"]))


def _featurize_entry(name: str, res: int) -> dict[str, Any]:
    """One cache entry: the op list of (name, res), or the error that prevented it."""
    t0 = time.perf_counter()
    entry: dict[str, Any] = {"timm_name": name, "resolution": res}
    try:
        if name in SWIFTFORMER_TIMM:
            ops = spec_ops(PRESETS[SWIFTFORMER_TIMM[name]].replace(resolution=res))
            method = "analytic (our generator; identical op graph)"
        else:
            ops = coreml_ops(name, res)
            method = "coremltools 9 ML program fp16 (method auto: torch.export, else jit.trace)"
        entry.update(ops=pack_ops(ops), n_ops=len(ops), method=method,
                     gmacs=round(float(gmacs_of(aggregate(ops))[0]), 4))
    except Exception as e:  # noqa: BLE001 - record the failure, keep going
        entry.update(ops=None, error=f"{type(e).__name__}: {str(e)[:300]}")
    entry["featurize_s"] = round(time.perf_counter() - t0, 2)
    return entry


def build_feature_cache(names_res: list[tuple[str, int]], path: str = FEATURE_CACHE,
                        log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Convert each (timm_name, resolution) with coremltools and store its features (incremental:
    the file is rewritten after each model, so an interrupted build keeps what it did)."""
    cache = load_feature_cache(path)
    _CACHE.pop(path, None)
    for name, res in names_res:
        key = cache_key(name, res)
        if key in cache["models"]:
            continue
        entry = cache["models"][key] = _featurize_entry(name, res)
        log(f"{key}: {'ok' if entry.get('ops') is not None else entry['error']} "
            f"({entry['featurize_s']} s)")
        write_json_atomic(path, cache, indent=1)
    return cache
