"""Test helper: ``run_search.py search`` whose first trials wait until every node has one.

    python tests/cluster_barrier.py BARRIER_DIR NODES search --study ... (run_search.py args)

On a tiny test search a trial takes about a second once its worker is warm, while starting a
worker on a second node (runtime environment, importing torch) takes tens of seconds on a
loaded machine: Tune then hands every trial to the first warm worker (actor reuse) and the
second node never trains. This wrapper makes each trial, before it trains, leave a marker
named after its node in BARRIER_DIR (a directory every node sees) and wait until markers of
NODES distinct nodes are there (at most 300 s), so the first trials provably spread over the
nodes. It changes nothing else: training and results are those of the plain trainable. Like
tests/nas_failures.py, the wrapper is defined in this script (``__main__``), so Ray pickles it
by value into the workers; production code has no hook for it.
"""
from __future__ import annotations

import functools
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import ray  # noqa: E402

import run_search  # noqa: E402
from search.nas import cli  # noqa: E402

TIMEOUT_S = 300.0


def barrier(directory: str, nodes: int):
    """A ``wrap_trainable`` holding each trial until ``nodes`` nodes have one."""
    def wrap(fn):
        @functools.wraps(fn)
        def trial(config, **kw):
            node = ray.get_runtime_context().get_node_id()
            os.makedirs(directory, exist_ok=True)
            open(os.path.join(directory, f"{node}.{config['trial_key']}"), "w").close()
            deadline = time.monotonic() + TIMEOUT_S
            while time.monotonic() < deadline:
                seen = {name.split(".", 1)[0] for name in os.listdir(directory)}
                if len(seen) >= nodes:
                    break
                time.sleep(0.2)
            return fn(config, **kw)
        return trial
    return wrap


def main(argv: list[str]) -> int:
    directory, nodes = argv[0], int(argv[1])
    parser, _ = run_search.build_parser()
    args = parser.parse_args(argv[2:])
    if args.command != "search":
        raise SystemExit("usage: cluster_barrier.py DIR NODES search [run_search.py options]")
    return cli.search_command(args, wrap_trainable=barrier(directory, nodes))


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except run_search.UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
