"""CLI of the search: ``run_search.py search ...`` and the no-argument default main job.

Imports stay light here (no torch / ray): the handlers import the driver.
"""
from __future__ import annotations

import argparse
import json
import os
import time


def _json_arg(text: str | None, what: str) -> dict | None:
    """Inline JSON object or a path to a JSON file; one-line ValueError otherwise."""
    if text is None:
        return None
    src = text
    if not text.lstrip().startswith("{"):
        if not os.path.isfile(text):
            raise FileNotFoundError(f"{what} {text!r}: not inline JSON and no such file")
        with open(text, encoding="utf-8") as f:
            src = f.read()
    try:
        d = json.loads(src)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{what}: expected a JSON object")
    return d


def default_study_name() -> str:
    return time.strftime("search-%Y%m%d-%H%M%S", time.gmtime())


def config_from_args(args: argparse.Namespace):
    from search.driver import DEFAULT_BASELINES, SearchConfig

    study = args.study or default_study_name()
    if args.resume and not args.study:
        raise ValueError("--resume: give the --study NAME to continue")
    baselines = list(DEFAULT_BASELINES)
    if args.baselines is not None:
        baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    baselines += list(args.extra_arch or [])
    return SearchConfig(
        study=study, data=args.data, device=args.device, strategy=args.strategy,
        n_trials=args.trials, latency_budget_ms=args.latency_budget_ms, seed=args.seed,
        fidelity=_json_arg(args.fidelity, "--fidelity"), baselines=baselines,
        space=_json_arg(args.space, "--space"), prerank=args.prerank, asha=args.asha,
        db=args.db, out_root=args.out, address=args.address,
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent, train_device=args.train_device)


def _search(args: argparse.Namespace) -> int:
    from search.driver import run_search

    cfg = config_from_args(args)
    rep = run_search(cfg, resume=args.resume)
    return 130 if rep.get("interrupted") else 0


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    from_ = p.add_argument_group("what to search")
    from_.add_argument("--study", help="study name (default search-<UTC time>); output in "
                       "<out>/<study>/; needed with --resume")
    from_.add_argument("--data", help="ImageFolder root with train/ and val/ "
                       "(default: the embedded CIFAR-10 subset)")
    from_.add_argument("--device", help="latency device (default: the iPhone 14 calibration; "
                       "see `run_search.py latency devices`)")
    from_.add_argument("--strategy", default="nsga2", choices=("nsga2", "tpe", "gp", "random"),
                       help="Optuna sampler inside Ray Tune (default nsga2; random = baseline)")
    from_.add_argument("--trials", type=int, default=12,
                       help="candidates to train, baselines not counted; suggestions over the "
                       "budget or already trained at this fidelity do not count (default 12)")
    from_.add_argument("--latency-budget-ms", type=float, default=None,
                       help="hard budget: candidates predicted slower are REJECTED untrained")
    from_.add_argument("--seed", type=int, default=0)
    from_.add_argument("--fidelity", help="proxy budget overrides, JSON object or file "
                       "(fields of search.proxy.fidelity.Fidelity, e.g. '{\"epochs\": 2}')")
    from_.add_argument("--space", help="search-space overrides, JSON object or file "
                       "(fields of search_space.space.SearchSpace)")
    from_.add_argument("--baselines", default=None,
                       help="comma-separated presets trained as baselines (default XS,S,L1,L3; "
                       "'' for none)")
    from_.add_argument("--extra-arch", action="append", metavar="SPEC",
                       help="also train this architecture as a baseline (preset, spec JSON "
                       "file or inline JSON); repeatable")
    from_.add_argument("--prerank", type=int, default=0, metavar="K",
                       help="ask K candidates, train the best by zero-cost rank (default off)")
    from_.add_argument("--asha", action="store_true",
                       help="stop unpromising trials early (ASHA on top-1); only full-budget "
                       "trials are on the front")
    run = p.add_argument_group("where and how it runs")
    run.add_argument("--db", default="runs/results.db", help="results database (default "
                     "runs/results.db, shared by studies so proxy results are reused)")
    run.add_argument("--out", default="runs", help="output root (default runs/)")
    run.add_argument("--address", help="connect to an existing Ray cluster (e.g. auto or "
                     "ray://head:10001) instead of starting a local one")
    run.add_argument("--cpus-per-trial", type=float, default=None,
                     help="CPUs (= torch threads) per trial (default: all local cores, one "
                     "trial at a time; 2 on a cluster)")
    run.add_argument("--gpus-per-trial", type=float, default=0.0)
    run.add_argument("--max-concurrent", type=int, default=None,
                     help="max trials at once (default: cores / cpus-per-trial locally)")
    run.add_argument("--train-device", default="auto", help="torch device for proxy training "
                     "(auto = cuda when the trial has a GPU)")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted --study (Tuner.restore); completed trials "
                     "are not re-run")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="run the hardware-aware architecture search "
                       "(Ray Tune + Optuna)",
                       description="Multi-objective search: maximise proxy top-1, minimise "
                       "predicted latency; XS/S/L1/L3 trained with the same proxy as baselines.")
    add_search_arguments(p)
    p.set_defaults(func=_search)


def default_main(args: argparse.Namespace) -> int:
    """``python run_search.py`` with no sub-command: the default search on the embedded data."""
    parser = argparse.ArgumentParser()
    add_search_arguments(parser)
    return _search(parser.parse_args([]))
