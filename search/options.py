"""Command-line options shared by the commands that train: ``--data``, ``--fidelity``,
``--torch-device`` and ``--threads``. Declared once here, parsed into typed values here.
"""
from __future__ import annotations

import argparse
import os
import re

from search_space.cli_types import number_type
from search_space.errors import UsageError
from search_space.io import parse_json, read_json

from .proxy.fidelity import DEFAULT_FIDELITY, FIDELITY_PRESETS, Fidelity
from .proxy.images import check_layout

TORCH_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?|mps")
# A bare word (no path separator, no extension) given to --fidelity is meant as a preset name.
PRESET_NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def add_data_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--data", metavar="DIR",
                        help="ImageFolder root with train/<class>/ and val/<class>/ (ImageNet "
                             "layout; default: the embedded CIFAR-10 subset)")


def check_data_option(data: str | None, what: str = "--data") -> None:
    """``--data``: None (the embedded subset) or an ImageFolder root with train/ and val/ class
    directories (search.proxy.images.check_layout); cheap, before any decoding."""
    if data is not None:
        check_layout(data, ("train", "val"), what)


def add_fidelity_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--fidelity", metavar="NAME|JSON|FILE",
                        help="proxy-training fidelity: a preset (" + ", ".join(FIDELITY_PRESETS)
                             + "; default cpu-cifar), or a JSON object or file of "
                             "search.proxy.fidelity.Fidelity fields overriding the default, "
                             "e.g. '{\"epochs\": 2}'; a \"preset\" key picks the preset the "
                             "fields override, e.g. '{\"preset\": \"imagenet-gpu\", \"epochs\": 5}'")


def _presets_line() -> str:
    return "presets: " + ", ".join(FIDELITY_PRESETS) + " (or a JSON object or file of Fidelity fields)"


def parse_fidelity(text: str | None, base: Fidelity = DEFAULT_FIDELITY) -> Fidelity:
    """``--fidelity``: None -> ``base``; a preset name -> that preset; inline JSON or a JSON
    file -> ``base`` (or the preset its ``"preset"`` key names) with the other keys as field
    overrides. Every error is one line naming the option (UsageError)."""
    if text is None or not text.strip():
        return base
    text = text.strip()
    if text in FIDELITY_PRESETS:
        return FIDELITY_PRESETS[text]
    if text.startswith(("{", "[")):   # inline JSON (a list is refused below, by its type)
        overrides = parse_json(text, "--fidelity")
    elif PRESET_NAME_PATTERN.fullmatch(text) and not os.path.exists(text):
        raise UsageError(f"--fidelity {text!r}: no such preset; {_presets_line()}")
    else:
        overrides = read_json(text, "--fidelity")
    if not isinstance(overrides, dict):
        raise UsageError(f"--fidelity: expected a JSON object of Fidelity fields, got "
                         f"{type(overrides).__name__}")
    overrides = dict(overrides)
    preset = overrides.pop("preset", None)
    if preset is not None:
        if not isinstance(preset, str) or preset not in FIDELITY_PRESETS:
            raise UsageError(f"--fidelity: \"preset\": {preset!r} is no preset; {_presets_line()}")
        base = FIDELITY_PRESETS[preset]
    return Fidelity.from_dict({**base.to_dict(), **overrides})


def add_torch_device_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--torch-device", default="auto", type=_torch_device, metavar="DEV",
                        help="torch device for training: auto (cuda when available), cpu, "
                             "cuda, cuda:N, mps (default auto)")


def _torch_device(text: str) -> str:
    if not TORCH_DEVICE_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r}: allowed auto, cpu, cuda, cuda:N, mps")
    return text


def add_threads_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                       default: int | None = None, default_text: str | None = None) -> None:
    """``--threads N``; ``default_text`` says what an absent option means when the command
    computes it (e.g. "cores / workers")."""
    shown = f"default: {default_text}" if default_text else (
        f"default {default}" if default else "default: torch's")
    parser.add_argument("--threads", type=number_type(int, 1), default=default, metavar="N",
                        help=f"torch intra-op threads per training process ({shown})")
