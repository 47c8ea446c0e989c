#!/usr/bin/env python
"""swiftformer-nas command line: thin dispatch to each package's ``cli`` module.

Each package registers its own sub-commands (``register(subparsers)``); this file parses,
dispatches, and turns usage errors (``search_space.errors.UsageError`` and its subclasses, which
name the input and what is allowed) into one line on stderr and exit status 2. Any other
exception is a bug: it propagates with its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from search_space.cli_types import OneLineParser
from search_space.errors import UsageError

# Packages that contribute sub-commands, in help order. A module missing here is skipped so
# a partial checkout still runs what it has.
COMMAND_MODULES = (
    "search_space.cli",      # arch, space
    "latency_models.cli",    # latency
    "results.cli",           # studies, pareto, compare, show
    "results.dashboard.cli", # dashboard, report
    "search.nas.cli",        # search (and the default main job)
    "search.fidelity.cli",   # fidelity
    "search.retrain.cli",    # export, retrain, evaluate
    "search.scaling.cli",    # scale, ladder, fit
)


def build_parser() -> tuple[argparse.ArgumentParser, list]:
    parser = OneLineParser(
        prog="run_search.py",
        description="Hardware-aware architecture search over the SwiftFormer family.")
    sub = parser.add_subparsers(dest="command")
    modules = []
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and (name == e.name or name.startswith(e.name + ".")):
                continue  # that package (or its cli) is not in this checkout
            raise
        mod.register(sub)
        modules.append(mod)
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command is None:
            # No sub-command: the main job. search.nas.cli provides it once the search exists.
            for mod in reversed(modules):
                if hasattr(mod, "default_main"):
                    return mod.default_main(args)
            from search_space.cli import presets_table
            print(presets_table())
            return 0
        return int(args.func(args) or 0)
    except UsageError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
