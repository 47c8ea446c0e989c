"""Test helper: ``run_search.py`` with failures injected into chosen candidates.

    python tests/nas_failures.py "1:raise,2:nan,3:weak" search --study ... (run_search.py args)

Candidate #1 raises RuntimeError before training, #2 raises NonFiniteLoss right after its first
epoch's report, #3 reports top-1 0 after every epoch (so a scheduler such as ASHA stops it
deterministically); indices start at 0. The failures come from a trainable wrapper handed to
``search.nas.driver.run_search`` (``wrap_trainable``): production code has no hook for them.
The wrapper is defined in this script (``__main__``), so Ray pickles it by value into its
workers; inside a worker it swaps ``search.nas.trainable.run_candidate`` for the duration of
one trial.
"""
from __future__ import annotations

import functools
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import run_search  # noqa: E402
import search.nas.trainable as trainable_mod  # noqa: E402
from search.nas import cli  # noqa: E402
from search.proxy.train import NonFiniteLoss  # noqa: E402

KINDS = ("raise", "nan", "weak")


def parse_plan(text: str) -> dict[int, str]:
    plan = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        idx, _, kind = part.partition(":")
        if not idx.isdigit() or kind not in KINDS:
            raise SystemExit(f"plan {text!r}: expected e.g. '1:raise,2:nan,3:weak'")
        plan[int(idx)] = kind
    return plan


def faulty(real, kind: str):
    """``run_candidate`` whose per-epoch callback misbehaves as ``kind`` says."""
    def run(spec, fidelity, data, *, on_epoch=None, **kw):
        def hook(m: dict) -> None:
            if kind == "weak":
                m = {**m, "top1": 0.0}
            on_epoch(m)
            if kind == "nan":
                raise NonFiniteLoss(f"injected non-finite loss after epoch {m.get('epoch', 1)}")
        return real(spec, fidelity, data, on_epoch=hook, **kw)
    return run


def inject(plan: dict[int, str]):
    """A ``wrap_trainable`` for run_search: the plan's failures, everything else untouched."""
    def wrap(fn):
        @functools.wraps(fn)
        def trial(config, **kw):
            kind = plan.get(config.get("index")) if config.get("kind") == "candidate" else None
            if kind == "raise":
                raise RuntimeError(f"injected failure for candidate {config['index']}")
            if kind is None:
                return fn(config, **kw)
            real = trainable_mod.run_candidate
            trainable_mod.run_candidate = faulty(real, kind)
            try:
                return fn(config, **kw)
            finally:
                trainable_mod.run_candidate = real
        return trial
    return wrap


def main(argv: list[str]) -> int:
    plan = parse_plan(argv[0])
    parser, _ = run_search.build_parser()
    args = parser.parse_args(argv[1:])
    if args.command != "search":
        raise SystemExit("usage: nas_failures.py PLAN search [run_search.py search options]")
    return cli.search_command(args, wrap_trainable=inject(plan))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
