"""The command-line option naming the phone a latency is for: ``--latency-device``.

Declared once here. Where a command also has a torch device (search, scale, ...) it is never
called ``--device``: the torch device (cpu, cuda) is ``--torch-device`` (``search.options``),
so the two can never be confused. The ``latency`` commands have no torch device, and there
``--device`` (the name the latency docs and issue 14 use: ``latency calibrate --records my.csv
--device my-phone``) is accepted as an alias (:data:`LATENCY_ALIASES`).
"""
from __future__ import annotations

import argparse

DEFAULT_DEVICE = "iphone14-ane"  # iPhone 14, Neural Engine, SwiftFormer paper Table 2 rows
# ``latency`` sub-commands only (no torch device there to confuse it with)
LATENCY_ALIASES = ("--device",)


def add_latency_device_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *,
                              default: str | None = DEFAULT_DEVICE, purpose: str = "",
                              aliases: tuple[str, ...] = ()) -> None:
    """``--latency-device NAME_OR_FILE``: a calibrated device (`latency devices` lists them) or
    a calibration .json file. ``aliases``: other option strings for it
    (:data:`LATENCY_ALIASES` in the ``latency`` commands)."""
    shown = f" (default {default})" if default else ""
    parser.add_argument("--latency-device", *aliases, default=default, metavar="NAME_OR_FILE",
                        help=f"phone whose latency is predicted: a calibrated device name (see "
                             f"`run_search.py latency devices`) or a calibration .json{shown}"
                             f"{'; ' + purpose if purpose else ''}")
