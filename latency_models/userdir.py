"""The user directory: calibrations made with ``latency calibrate`` and the cache of user-model
conversions live in ``$SWIFTFORMER_NAS_LATENCY_DIR``, else ``~/.config/swiftformer-nas/latency``.
"""
from __future__ import annotations

import os

ENV = "SWIFTFORMER_NAS_LATENCY_DIR"


def user_dir() -> str:
    """Where user calibrations live: $SWIFTFORMER_NAS_LATENCY_DIR or ~/.config/swiftformer-nas/latency."""
    return os.environ.get(ENV) or os.path.join(os.path.expanduser("~"), ".config",
                                               "swiftformer-nas", "latency")
