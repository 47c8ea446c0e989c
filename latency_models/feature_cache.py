"""The shipped per-op features of the published baselines, so nothing converts at run time.

``data/published_features.json`` holds, per (timm_name, resolution), the packed op list of the
model's CoreML program (``features.pack_ops``; re-aggregated at load, so a change of op classes
needs no reconversion). ``build_feature_cache`` (re)builds it incrementally with coremltools
(``bench/bench_latency_iphone.py --rebuild-cache``); SwiftFormer presets are emitted by the
analytic path instead (identical op graph).
"""
from __future__ import annotations

import importlib.metadata
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
from .timm_models import SWIFTFORMER_TIMM, default_resolution
from .userdir import user_dir

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
FEATURE_CACHE = os.path.join(DATA_DIR, "published_features.json")
CACHE_FORMAT = 2   # 2: ops carry rank, reduced-axis length and non-innermost flag
_CACHE: dict[str, Any] = {}  # path -> parsed cache (read once per process)


# Models whose op lists also ship although no published latency table has them: candidates that
# ``latency suggest`` may ask a user to measure, chosen for the Neural-Engine behaviour they
# exercise (5-D unfold/fold + GroupNorm: MobileViTV2-0.5/0.75; large plain conv nets: ConvNeXt;
# attention with gathered biases at 224 px: LeViT). Features only, never latencies.
EXTRA_MODELS = (("mobilevitv2_050", 256), ("mobilevitv2_075", 256), ("convnext_atto", 224),
                ("convnext_small", 224), ("levit_128s", 224), ("efficientformer_l1", 512),
                ("mobilevitv2_050", 512), ("resnet18", 224))


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
    if resolution is None:   # the entry at timm's default input size
        hits = [v for k, v in cache["models"].items() if k.split("@")[0] == timm_name]
        hits.sort(key=lambda v: not v.get("default", False))
        entry = hits[0] if hits else None
    else:
        entry = cache["models"].get(cache_key(timm_name, int(resolution)))
    if not entry or entry.get("ops") is None:
        return None
    return aggregate(unpack_ops(entry["ops"]))


def _featurize_entry(name: str, res: int) -> dict[str, Any]:
    """One cache entry: the op list of (name, res), or the error that prevented it."""
    t0 = time.perf_counter()
    entry: dict[str, Any] = {"timm_name": name, "resolution": res,
                             "default": res == default_resolution(name)}
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
    try:
        cache = load_feature_cache(path)
    except UsageError:               # an older format: rebuild from scratch
        cache = {"format": CACHE_FORMAT, "models": {}}
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


# -- user conversions -------------------------------------------------------------------------
USER_CACHE_NAME = "feature_cache.json"


def coremltools_version() -> str:
    """The installed coremltools version, without importing it (part of every user cache key:
    another converter may emit another program)."""
    try:
        return importlib.metadata.version("coremltools")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def user_cache_key(model: str, resolution: int | None) -> str:
    return f"{model}@{resolution or 'default'}@coremltools-{coremltools_version()}"


def user_cache_path() -> str:
    return os.path.join(user_dir(), USER_CACHE_NAME)


def _read_user_cache(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        return {"format": CACHE_FORMAT, "models": {}}
    try:
        cache = read_json(path, "user feature cache")
    except UsageError:
        return {"format": CACHE_FORMAT, "models": {}}   # unreadable: rebuilt as we go
    if not isinstance(cache, dict) or cache.get("format") != CACHE_FORMAT:
        return {"format": CACHE_FORMAT, "models": {}}
    return cache


class ConversionFailed(RuntimeError):
    """A conversion that failed before with this coremltools version (remembered in the user
    cache, so a second run does not spend a minute failing again)."""


def user_cached_features(key: str) -> np.ndarray | None:
    """Features of a user model converted before (``user_cache_key``), or None; a conversion
    that failed before raises ConversionFailed with its error."""
    entry = _read_user_cache(user_cache_path())["models"].get(key)
    if entry is None:
        return None
    if entry.get("ops") is None:
        raise ConversionFailed(f"{entry.get('error', 'conversion failed')} (remembered from "
                               f"{entry.get('stored', 'an earlier run')}; {user_cache_path()})")
    return aggregate(unpack_ops(entry["ops"]))


def _store_user_entry(key: str, entry: dict[str, Any]) -> str:
    path = user_cache_path()
    cache = _read_user_cache(path)
    cache["models"][key] = {**entry, "stored": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json_atomic(path, cache, indent=1)
    return path


def store_user_failure(key: str, error: str) -> None:
    """Remember that a conversion failed (with this coremltools version: it is in ``key``)."""
    _store_user_entry(key, {"ops": None, "error": error})


def store_user_ops(key: str, ops: list, log: Callable[[str], Any] | None = None) -> None:
    """Remember a conversion's op list in the user cache (rewritten atomically)."""
    path = _store_user_entry(key, {"ops": pack_ops(ops), "n_ops": len(ops)})
    if log is not None:
        log(f"converted {key.split('@')[0]} and cached its op list in {path}")
