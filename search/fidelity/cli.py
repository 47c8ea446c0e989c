"""CLI of the proxy fidelity study: ``run_search.py fidelity ...``.

Only this module sees argparse results: the handler validates every option into typed values
(``settings``: light, no torch) before any training, then calls ``study`` (torch), which is
loaded on first use so ``run_search.py --help`` stays light.
"""
from __future__ import annotations

import argparse
import os
import sys

from results.options import add_db_option, check_db, open_store
from search.options import (add_data_option, add_fidelity_option, add_threads_option,
                            check_data_option, parse_fidelity)
from search.proxy.data import prepare_data
from search.proxy.supernet.config import SupernetConfig
from search_space.cli_types import MAX_SEED, comma_items, number_type
from search_space.errors import UsageError
from search_space.io import check_name, check_writable_dir, dumps_json
from search_space.lazy import lazy_import

from . import settings as fsettings

study = lazy_import("search.fidelity.study")  # torch: loaded only when something is trained


def log(message: str) -> None:
    """Progress goes to stderr (looked up at each call: tests and callers may swap it)."""
    print(message, file=sys.stderr, flush=True)


def _seeds(text: str) -> list[int]:
    items = comma_items(text, "--seeds", "distinct integers, e.g. 0,1,2")
    try:
        seeds = [int(t) for t in items]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: allowed a comma-separated list of integers, "
                         "e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds) or not all(0 <= x <= MAX_SEED for x in seeds):
        raise UsageError(f"--seeds {text!r}: allowed distinct integers 0..{MAX_SEED}, at least "
                         "one")
    return seeds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fidelity", help="measure how well a proxy setting ranks XS/S/L1/L3 like ImageNet",
        description="Train the reference architectures under proxy settings over several seeds; "
                    "report Kendall tau / Spearman rho against published ImageNet top-1 with a "
                    "bootstrap interval over seeds, the cost in CPU-seconds, and the same for "
                    "zero-cost scores. Results are cached in --out (resumable) and stored as "
                    "studies 'fidelity-<setting>' in --db.")
    p.add_argument("--settings", default="default",
                   help="comma-separated names from the built-in sweep, 'all', 'supernet' (the "
                        "weight-sharing supernet proxy: one supernet per seed, the references "
                        "scored as its subnets; not in 'all'), or 'default' (a setting from "
                        "--fidelity; DEFAULT_FIDELITY if that is absent). See --list.")
    p.add_argument("--supernet", metavar="JSON", default=None,
                   help="SupernetConfig fields as JSON for the supernet setting, e.g. "
                        "'{\"epochs\": 8}' (default: the default SupernetConfig); the setting "
                        "is then named supernet-<key>")
    p.add_argument("--list", action="store_true", help="list the built-in sweep settings and exit")
    add_fidelity_option(p)
    p.add_argument("--name", default=None,
                   help="name of the --fidelity setting (default: custom-<key>)")
    add_data_option(p)
    p.add_argument("--cifar10", metavar="DIR",
                   help="the full CIFAR-10 as an ImageFolder root (train/<class>/, "
                        "val/<class>/): the data of the sweep settings that need it "
                        "(i1000-e1, i2000-e1, i5000-e1; refused without it, left out of 'all')")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--refs", default="XS,S,L1,L3",
                   help="reference presets, comma-separated (default XS,S,L1,L3)")
    p.add_argument("--workers", type=number_type(int, 1), default=1,
                   help="parallel training processes (default 1)")
    add_threads_option(p, default_text="cores / workers")
    p.add_argument("--out", default="runs/fidelity", help="cache + report directory")
    p.add_argument("--cache-dir", default="runs/cache", help="proxy data cache")
    add_db_option(p)
    p.add_argument("--no-db", action="store_true", help="do not write the results store")
    p.add_argument("--no-zero-cost", action="store_true", help="skip synflow/NASWOT/grad-norm")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: summarise what is cached in --out")
    p.add_argument("--boot", type=number_type(int, 1), default=2000,
                   help="bootstrap resamples (default 2000)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=handle)


def _list() -> int:
    for s in fsettings.SWEEP + fsettings.SUPERNET_SETTINGS:
        f = s.fidelity
        data = "full CIFAR-10 (--cifar10)" if s.needs_cifar10 else s.source or "embedded"
        epochs, bs = (s.supernet.epochs, s.supernet.batch_size) if s.supernet else (f.epochs,
                                                                                   f.batch_size)
        rule = "supernet" if s.supernet else s.epoch_rule
        print(f"{s.name:>16}  img/cls {f.images_per_class:>4}  epochs {epochs}  "
              f"{f.resolution}px  bs {bs}  {rule:<13} {data}  {s.note}")
    return 0


def _selected(args: argparse.Namespace, refs: list[str]) -> list:
    fidelity = parse_fidelity(args.fidelity)
    supernet = SupernetConfig.from_json(args.supernet) if args.supernet is not None else None
    default = fsettings.default_setting(fidelity, name=args.name, source=args.data,
                                        from_option=bool(args.fidelity))
    names = comma_items(args.settings, "--settings", "'default', 'all' or names from --list")
    selected = fsettings.select_settings(names, default=default, cifar10=args.cifar10,
                                         need_data=not args.report_only, log=log,
                                         supernet=supernet)
    for st in selected:
        fsettings.check_supernet_setting(st, refs)
    if not args.report_only:
        for st in selected:  # the layout of every data source, before anything is decoded
            check_data_option(st.source, "--data" if st.source == args.data else "--cifar10")
    return selected


def _check_outputs(args: argparse.Namespace) -> None:
    """Where results go, checked before any work (nothing is created by the checks)."""
    if args.boot < 1:
        raise UsageError(f"--boot {args.boot}: allowed integers >= 1")
    check_writable_dir(args.out, "--out")
    if not args.report_only:
        check_writable_dir(args.cache_dir, "--cache-dir")
        if not args.no_db:
            check_db(args.db, readonly=False)


def _train(args: argparse.Namespace, selected: list, seeds: list[int], refs: list[str],
           threads: int) -> list[dict]:
    kw = dict(refs=refs, out_dir=args.out, cache_dir=args.cache_dir, workers=args.workers,
              threads=threads, zero_cost=not args.no_zero_cost, log=log)
    for st in selected:  # decode (a broken image is refused here) before the store is written
        prepare_data(st.source, st.fidelity, cache_dir=args.cache_dir)
    if args.no_db:
        return study.run_study(selected, seeds, store=None, **kw)
    with open_store(args.db, readonly=False) as store:
        store.ensure_baselines()
        return study.run_study(selected, seeds, store=store, **kw)


def handle(args: argparse.Namespace) -> int:
    if args.list:
        return _list()
    # validate everything before any heavy work
    seeds = _seeds(args.seeds)
    if args.name is not None:  # it names the cache directory <out>/cache/<name>-<key>/
        check_name(args.name, "--name")
    refs = list(fsettings.reference_specs(comma_items(args.refs, "--refs",
                                                      "comma-separated XS, S, L1, L3")))
    if len(refs) < 2:
        raise UsageError(f"--refs {args.refs!r}: need at least 2 references to rank")
    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: allowed integers >= 1")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    _check_outputs(args)
    selected = _selected(args, refs)
    if args.report_only:
        results = study.load_cached(args.out)
        if args.settings != "all":
            want = {s.name for s in selected}
            results = [r for r in results if r["setting"] in want]
    else:
        results = _train(args, selected, seeds, refs, threads)
    results = [r for r in results if r["ref"] in refs and int(r["seed"]) in seeds]
    known = {s.name: s for s in list(fsettings.SWEEP + fsettings.SUPERNET_SETTINGS) + selected}
    order = [known[n] for n in dict.fromkeys(r["setting"] for r in results) if n in known]
    table = study.summarize(results, refs, order or None, n_boot=args.boot)
    paths = study.write_report(table, refs, args.out)
    if args.format == "json":
        print(dumps_json(table, indent=1), end="")
    else:
        print(study.format_table(table, refs))
        print(f"\nwritten: {paths['md']}, report.json" + (f", {paths['png']}" if paths["png"]
                                                          else ""))
    return 0
