"""Where calibrations live, and how a device name finds one.

Shipped calibrations are in ``latency_models/data/devices/<name>.json``; yours in the user
directory (``$SWIFTFORMER_NAS_LATENCY_DIR``, else ``~/.config/swiftformer-nas/latency``), where
``run_search.py latency calibrate`` writes them. A user calibration with a shipped name shadows
the shipped one: ``latency calibrate`` refuses to create one unless asked to
(``--shadow-shipped``), says so loudly when it does, and ``latency devices`` shows which file
wins; loading a shadowed name warns once per process.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from search_space.errors import NotFoundError

from .options import DEFAULT_DEVICE
from .predictor import LatencyPredictor
from .userdir import user_dir

SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "devices")
_WARNED: set[str] = set()

__all__ = ["SHIPPED_DIR", "DeviceFile", "device_files", "list_devices", "load_predictor",
           "shipped_devices", "user_calibration_path", "user_dir"]


@dataclass(frozen=True)
class DeviceFile:
    """The calibration a device name resolves to, and the shipped one it shadows (if any)."""
    name: str
    path: str
    source: str                    # "shipped" or "user"
    shadows: str | None = None     # the shipped file a user file with the same name hides


def user_calibration_path(device: str) -> str:
    """Where ``latency calibrate`` saves a new device's calibration by default."""
    return os.path.join(user_dir(), f"{device}.json")


def _json_files(d: str) -> dict[str, str]:
    if not os.path.isdir(d):
        return {}
    return {f[:-5]: os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith(".json")
            and not f.startswith(".") and f != "feature_cache.json"}


def shipped_devices() -> dict[str, str]:
    """Shipped device name -> calibration file."""
    return _json_files(SHIPPED_DIR)


def device_files() -> dict[str, DeviceFile]:
    """Every device name and the file that wins for it (user files override shipped ones)."""
    shipped = shipped_devices()
    out = {n: DeviceFile(n, p, "shipped") for n, p in shipped.items()}
    for n, p in _json_files(user_dir()).items():
        out[n] = DeviceFile(n, p, "user", shipped.get(n))
    return out


def list_devices() -> list[str]:
    """Names of the shipped calibrations plus any in the user directory."""
    return sorted(device_files())


def load_predictor(device: str = DEFAULT_DEVICE) -> LatencyPredictor:
    """A shipped/user device name, or a path to a calibration JSON file."""
    files = device_files()
    if device in files:
        f = files[device]
        if f.shadows and device not in _WARNED:
            _WARNED.add(device)
            print(f"warning: latency device {device!r} is your calibration {f.path}, which "
                  f"shadows the shipped {f.shadows} (remove it to use the shipped one)",
                  file=sys.stderr)
        return LatencyPredictor.load(f.path)
    if device.endswith(".json") or os.sep in device:
        if not os.path.isfile(device):
            raise NotFoundError(f"{device}: no such calibration file")
        return LatencyPredictor.load(device)
    raise NotFoundError(f"latency device {device!r}: allowed {sorted(files)} or a path to a "
                        "calibration .json")
