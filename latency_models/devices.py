"""Where calibrations live, and how a device name finds one.

Shipped calibrations are in ``latency_models/data/devices/<name>.json``; yours in the user
directory (``$SWIFTFORMER_NAS_LATENCY_DIR``, else ``~/.config/swiftformer-nas/latency``), where
``run_search.py latency calibrate`` writes them. A user calibration overrides a shipped one of
the same name.
"""
from __future__ import annotations

import os

from search_space.errors import NotFoundError

from .options import DEFAULT_DEVICE
from .predictor import LatencyPredictor

SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "devices")


def user_dir() -> str:
    """Where user calibrations live: $SWIFTFORMER_NAS_LATENCY_DIR or ~/.config/swiftformer-nas/latency."""
    return os.environ.get("SWIFTFORMER_NAS_LATENCY_DIR") or os.path.join(
        os.path.expanduser("~"), ".config", "swiftformer-nas", "latency")


def user_calibration_path(device: str) -> str:
    """Where ``latency calibrate`` saves a new device's calibration by default."""
    return os.path.join(user_dir(), f"{device}.json")


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
            raise NotFoundError(f"{device}: no such calibration file")
        return LatencyPredictor.load(device)
    raise NotFoundError(f"latency device {device!r}: allowed {sorted(files)} or a path to a "
                        "calibration .json")
