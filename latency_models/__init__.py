"""Latency prediction for SwiftFormer-family specs (and any CoreML-convertible model) on phones.

Light to import (numpy only): torch / coremltools load inside the functions that need them.

    from latency_models import load_predictor
    p = load_predictor()                 # iPhone 14 Neural Engine (SwiftFormer paper Table 2)
    ms, sd = p.predict(spec)             # one ArchSpec / preset name / timm name / torch module
    ms, sd = p.predict_many(specs)       # vectorised over ArchSpecs
"""
from __future__ import annotations

import os

from .options import DEFAULT_DEVICE
from .predictor import LatencyPredictor, fit, fit_features

__all__ = ["DEFAULT_DEVICE", "LatencyPredictor", "list_devices", "load_predictor", "fit",
           "fit_features", "user_dir", "SHIPPED_DIR"]

SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "devices")


def user_dir() -> str:
    """Where user calibrations live: $SWIFTFORMER_NAS_LATENCY_DIR or ~/.config/swiftformer-nas/latency."""
    return os.environ.get("SWIFTFORMER_NAS_LATENCY_DIR") or os.path.join(
        os.path.expanduser("~"), ".config", "swiftformer-nas", "latency")


def _device_files() -> dict[str, str]:
    found: dict[str, str] = {}
    for d in (SHIPPED_DIR, user_dir()):          # user calibrations override shipped ones
        if os.path.isdir(d):
            for f in sorted(os.listdir(d)):
                if f.endswith(".json"):
                    found[f[:-5]] = os.path.join(d, f)
    return found


def list_devices() -> list[str]:
    """Names of the shipped calibrations plus any in the user directory."""
    return sorted(_device_files())


def load_predictor(device: str = DEFAULT_DEVICE) -> LatencyPredictor:
    """A shipped/user device name, or a path to a calibration JSON file."""
    files = _device_files()
    if device in files:
        return LatencyPredictor.load(files[device])
    if device.endswith(".json") or os.sep in device:
        if not os.path.isfile(device):
            raise FileNotFoundError(f"{device}: no such calibration file")
        return LatencyPredictor.load(device)
    raise ValueError(f"latency device {device!r}: allowed {sorted(files)} or a path to a "
                     "calibration .json")
