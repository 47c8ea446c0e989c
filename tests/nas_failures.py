"""Test helper: ``run_search.py search`` with failures injected and training starts counted.

    python tests/nas_failures.py [--starts FILE] [--checkpoint-period S] PLAN search ...
        (PLAN e.g. "0:flat,1:raise,2:nan,3:weak"; the rest: run_search.py search options;
        PYTHONPATH must name the repository root)

The plan names candidates by index (from 0): "raise" raises RuntimeError before training;
"nan" reports top-1 50 after its first epoch, then raises NonFiniteLoss; "weak" reports top-1 0
after every epoch; "flat" reports top-1 50 after every epoch and trains on. What a scheduler
such as ASHA sees is then fixed (it stops "weak", never "flat"), whatever the tiny proxy
happens to score; the final result each trial records is its real one. An empty plan injects
nothing. ``--starts FILE`` appends the key of every trial that starts training (candidates and
baselines) to FILE, one line per start, so a test sees directly what was (re)trained.
``--checkpoint-period S`` has Tune save its experiment state (with the searcher's checkpoint)
every S seconds instead of the driver's 2: with a long period only the state saved at the
start exists when the driver is killed, so a resume must replay what finished from the store.

Both come from a trainable wrapper handed to ``search.nas.driver.run_search``
(``wrap_trainable``): production code has no hook for them. In a worker the wrapper swaps
``search.nas.trainable.run_candidate`` for the duration of one trial. Run as a script, the
wrapper lives in ``__main__`` and Ray pickles it by value; tests that import this module and
search in-process register it for pickling by value.
"""
from __future__ import annotations

import functools
import sys

import run_search
import search.nas.trainable as trainable_mod
from search.nas import cli, driver
from search.proxy.train import NonFiniteLoss

KINDS = ("raise", "nan", "weak", "flat")


def parse_plan(text: str) -> dict[int, str]:
    plan = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        idx, _, kind = part.partition(":")
        if not idx.isdigit() or kind not in KINDS:
            raise SystemExit(f"plan {text!r}: expected e.g. '0:flat,1:raise,2:nan,3:weak'")
        plan[int(idx)] = kind
    return plan


def faulty(real, kind: str):
    """``run_candidate`` whose per-epoch callback misbehaves as ``kind`` says."""
    def run(spec, fidelity, data, *, on_epoch=None, **kw):
        def hook(m: dict) -> None:
            m = {**m, "top1": 0.0 if kind == "weak" else 50.0}
            on_epoch(m)
            if kind == "nan":
                raise NonFiniteLoss(f"injected non-finite loss after epoch {m.get('epoch', 1)}")
        return real(spec, fidelity, data, on_epoch=hook, **kw)
    return run


def inject(plan: dict[int, str], starts: str | None = None):
    """A ``wrap_trainable`` for run_search: the plan's failures, everything else untouched;
    with ``starts``, every trial's key appended to that file as it starts."""
    def wrap(fn):
        @functools.wraps(fn)
        def trial(config, **kw):
            if starts:
                with open(starts, "a", encoding="utf-8") as f:  # one short append per start
                    f.write(config["trial_key"] + "\n")
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


def read_starts(path) -> list[str]:
    """The trial keys ``--starts`` recorded, in start order (none: the file never appeared)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def main(argv: list[str]) -> int:
    opts = {"--starts": None, "--checkpoint-period": None}
    while argv and argv[0] in opts:
        opts[argv[0]], argv = argv[1], argv[2:]
    if opts["--checkpoint-period"] is not None:
        driver.TUNE_ENV["TUNE_GLOBAL_CHECKPOINT_S"] = opts["--checkpoint-period"]
    starts = opts["--starts"]
    plan = parse_plan(argv[0])
    parser, _ = run_search.build_parser()
    args = parser.parse_args(argv[1:])
    if args.command != "search":
        raise SystemExit("usage: nas_failures.py [--starts FILE] [--checkpoint-period S] PLAN "
                         "search [options]")
    return cli.search_command(args, wrap_trainable=inject(plan, starts))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
