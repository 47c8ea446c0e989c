"""Any model -> its latency feature vector (``features.FEATURE_NAMES``), by the cheapest route.

SwiftFormer specs (ArchSpec, preset name, spec JSON, a module of our generator, a record with a
spec) take the analytic path; timm names the shipped feature cache, else a CoreML conversion;
any other torch module a conversion. Light to import: a conversion loads torch on first use.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np

from search_space.errors import UsageError
from search_space.spec import ArchSpec, load_spec

from .analytic import spec_features
from .coreml import coreml_features, coreml_ops
from .feature_cache import (cached_features, store_user_failure, store_user_ops,
                            user_cache_key, user_cached_features)
from .features import N_FEATURES, aggregate
from .records import Record
from .timm_models import is_spec_reference


def timm_features(name: str, resolution: int | None,
                  log: Callable[[str], Any] | None = None) -> np.ndarray:
    """A timm model's features: from the shipped cache, else the user cache, else by converting
    it (and remembering the op list in the user cache: the next run converts nothing; a failed
    conversion is remembered too, and raises ConversionFailed next time without retrying)."""
    f = cached_features(name, resolution)
    if f is not None:
        return f
    key = user_cache_key(name, resolution)
    f = user_cached_features(key)
    if f is not None:
        return f
    if log is not None:
        size = f"{resolution} px" if resolution else "its default size"
        log(f"converting the timm model {name} at {size} to Core ML to read its ops (once: "
            "the user cache keeps them)")
    try:
        ops = coreml_ops(name, resolution, quiet=True)
    except RuntimeError as e:   # coreml_ops' "CoreML conversion of NAME failed: ..." (one line)
        store_user_failure(key, f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
        raise
    store_user_ops(key, ops, log)
    return aggregate(ops)


def mlpackage_features(path: str) -> np.ndarray:
    """Features of a saved .mlpackage (its program is read, not converted; cached by path and
    modification time)."""
    p = os.path.abspath(path)
    stamp = os.stat(p).st_mtime_ns if os.path.exists(p) else 0
    key = user_cache_key(f"mlpackage:{p}:{stamp}", None)
    f = user_cached_features(key)
    if f is not None:
        return f
    ops = coreml_ops(mlpackage=p)
    store_user_ops(key, ops)
    return aggregate(ops)


def _record_features(record: Record, log: Callable[[str], Any] | None = None) -> np.ndarray:
    spec = record.arch_spec()
    if spec is not None:
        return spec_features(spec)
    if record.timm_name:
        return timm_features(record.timm_name, record.resolution, log)
    if record.mlpackage:
        return mlpackage_features(record.mlpackage)
    raise UsageError(f"record {record.model!r}: no spec, timm_name or mlpackage to featurise")


def featurize(obj: Any) -> np.ndarray:
    """Feature vector of an ArchSpec / preset / spec JSON (analytic), a timm name (shipped cache,
    else CoreML conversion), a torch module (conversion) or a Record."""
    if isinstance(obj, ArchSpec):
        return spec_features(obj)
    if isinstance(obj, np.ndarray) and obj.shape == (N_FEATURES,):
        return obj
    if isinstance(obj, Record):
        return _record_features(obj)
    if isinstance(obj, dict):
        return spec_features(ArchSpec.from_dict(obj))
    if isinstance(obj, str):
        if is_spec_reference(obj) and not obj.rstrip("/").endswith(".mlpackage"):
            return spec_features(load_spec(obj))
        if obj.rstrip("/").endswith(".mlpackage"):
            return mlpackage_features(obj)
        return timm_features(obj, None)
    # A torch module: convert. (Our own generator's modules use the analytic path.)
    spec = getattr(obj, "spec", None)
    if isinstance(spec, ArchSpec):
        return spec_features(spec)
    return coreml_features(obj)


def featurize_records(records: Sequence, log: Callable[[str], Any] | None = None
                      ) -> tuple[np.ndarray, list[str | None]]:
    """(features, per-record error or None). Records that cannot be featurised get NaN rows.
    ``log`` hears of each timm model converted (tens of seconds each)."""
    F = np.full((len(records), N_FEATURES), np.nan)
    errs: list[str | None] = []
    for i, r in enumerate(records):
        try:
            F[i] = _record_features(r, log) if isinstance(r, Record) else featurize(r)
            errs.append(None)
        except Exception as e:  # noqa: BLE001 - reported per record
            errs.append(f"{type(e).__name__}: {str(e)[:200]}")
    return F, errs
