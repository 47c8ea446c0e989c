"""The command-line option naming the phone a latency is for: ``--latency-device``.

Declared once here. It is never called ``--device``: the torch device (cpu, cuda) is
``--torch-device`` (``search.options``), so the two can never be confused.
"""
from __future__ import annotations

import argparse

DEFAULT_DEVICE = "iphone14-ane"  # iPhone 14, Neural Engine, SwiftFormer paper Table 2 rows


def add_latency_device_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *,
                              default: str | None = DEFAULT_DEVICE, purpose: str = "") -> None:
    """``--latency-device NAME_OR_FILE``: a calibrated device (`latency devices` lists them) or
    a calibration .json file."""
    shown = f" (default {default})" if default else ""
    parser.add_argument("--latency-device", default=default, metavar="NAME_OR_FILE",
                        help=f"phone whose latency is predicted: a calibrated device name (see "
                             f"`run_search.py latency devices`) or a calibration .json{shown}"
                             f"{'; ' + purpose if purpose else ''}")
