"""CLI of the proxy fidelity study: ``run_search.py fidelity ...``.

Imports stay light here (no torch): the handler imports search.fidelity_study.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(t) for t in _csv(text)]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: allowed a comma-separated list of integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r}: allowed distinct integers, at least one")
    return seeds


def register(sub) -> None:
    p = sub.add_parser(
        "fidelity", help="measure how well a proxy setting ranks XS/S/L1/L3 like ImageNet",
        description="Train the reference architectures under proxy settings over several seeds; "
                    "report Kendall tau / Spearman rho against published ImageNet top-1 with a "
                    "bootstrap interval over seeds, the cost in CPU-seconds, and the same for "
                    "zero-cost scores. Results are cached in --out (resumable) and stored as "
                    "studies 'fidelity-<setting>' in --db.")
    p.add_argument("--settings", default="default",
                   help="comma-separated names from the built-in sweep, 'all', or 'default' "
                        "(a setting from --fidelity; DEFAULT_FIDELITY if that is absent). "
                        "See --list.")
    p.add_argument("--list", action="store_true", help="list the built-in sweep settings and exit")
    p.add_argument("--fidelity", help="Fidelity fields as inline JSON or a JSON file, for the "
                                      "'default' setting (e.g. '{\"epochs\": 2}')")
    p.add_argument("--name", default=None, help="name of the --fidelity setting (default: custom-<key>)")
    p.add_argument("--data", default=None,
                   help="ImageFolder root (train/<class>/, val/<class>/) for the --fidelity "
                        "setting; default: the embedded CIFAR-10 subset")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--refs", default="XS,S,L1,L3", help="reference presets (default XS,S,L1,L3)")
    p.add_argument("--workers", type=int, default=1, help="parallel training processes (default 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per training (default: cores / workers)")
    p.add_argument("--out", default="runs/fidelity", help="cache + report directory")
    p.add_argument("--cache-dir", default="runs/cache", help="proxy data cache")
    p.add_argument("--db", default="runs/results.db", help="results database (path or SQLAlchemy URL)")
    p.add_argument("--no-db", action="store_true", help="do not write the results store")
    p.add_argument("--no-zero-cost", action="store_true", help="skip synflow/NASWOT/grad-norm")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: summarise what is cached in --out")
    p.add_argument("--boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=handle)


def _settings(args):
    from search.proxy.fidelity import DEFAULT_FIDELITY, Fidelity
    from search.fidelity_study import SWEEP, Setting

    by = {s.name: s for s in SWEEP}
    names = _csv(args.settings)
    if not names:
        raise ValueError("--settings: empty; allowed 'default', 'all' or names from --list")
    out = []
    for n in names:
        if n == "all":
            out += [s for s in SWEEP if s.source is None or os.path.isdir(s.source)]
        elif n == "default":
            if args.fidelity:
                from search.cli import _json_arg
                fid = Fidelity.from_dict(_json_arg(args.fidelity, "--fidelity"))
            else:
                fid = DEFAULT_FIDELITY
            out.append(Setting(args.name or f"custom-{fid.key[:8]}", fid, source=args.data,
                               note="from --fidelity" if args.fidelity else "DEFAULT_FIDELITY"))
        elif n in by:
            s = by[n]
            if s.source is not None and not os.path.isdir(s.source):
                raise FileNotFoundError(f"--settings {n}: needs the dataset at {s.source} (absent here)")
            out.append(s)
        else:
            raise ValueError(f"--settings {n!r}: allowed default, all, {', '.join(by)}")
    seen, uniq = set(), []
    for s in out:
        if s.name not in seen:
            seen.add(s.name)
            uniq.append(s)
    return uniq


def handle(args: argparse.Namespace) -> int:
    from search.fidelity_study import (SWEEP, format_table, plot_curve, reference_specs, run_study,
                                       summarize)

    if args.list:
        for s in SWEEP:
            f = s.fidelity
            print(f"{s.name:>16}  img/cls {f.images_per_class:>4}  epochs {f.epochs}  {f.resolution}px  "
                  f"bs {f.batch_size}  {s.epoch_rule:<13} {s.source or 'embedded'}  {s.note}")
        return 0
    # validate everything before any heavy work
    seeds = _seeds(args.seeds)
    refs = list(reference_specs(_csv(args.refs)))
    if len(refs) < 2:
        raise ValueError(f"--refs {args.refs!r}: need at least 2 references to rank")
    if args.workers < 1:
        raise ValueError(f"--workers {args.workers}: allowed integers >= 1")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    if threads < 1:
        raise ValueError(f"--threads {args.threads}: allowed integers >= 1")
    settings = _settings(args)

    results = []
    if args.report_only:
        from search.fidelity_study import load_cached
        results = load_cached(args.out)
        want = {s.name for s in settings} if args.settings != "all" else None
        if want is not None:
            results = [r for r in results if r["setting"] in want]
    else:
        store = None
        if not args.no_db:
            from results.store import ResultsStore
            store = ResultsStore(args.db)
            store.ensure_baselines()
        try:
            results = run_study(settings, seeds, refs=refs, out_dir=args.out, cache_dir=args.cache_dir,
                                workers=args.workers, threads=threads, store=store,
                                zero_cost=not args.no_zero_cost,
                                log=lambda m: print(m, file=sys.stderr, flush=True))
        finally:
            if store is not None:
                store.close()
    results = [r for r in results if r["ref"] in refs and int(r["seed"]) in seeds]
    known = {s.name: s for s in list(SWEEP) + settings}
    order = [known[n] for n in dict.fromkeys(r["setting"] for r in results) if n in known]
    table = summarize(results, refs, order or None, n_boot=args.boot)
    os.makedirs(args.out, exist_ok=True)
    from search.fidelity_study import _atomic_json
    _atomic_json(os.path.join(args.out, "report.json"), table)
    md = format_table(table, refs)
    tmp = os.path.join(args.out, ".report.md.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(md + "\n")
    os.replace(tmp, os.path.join(args.out, "report.md"))
    png = plot_curve(table, os.path.join(args.out, "fidelity_curve.png")) if table else None
    if args.format == "json":
        print(json.dumps(table, indent=1))
    else:
        print(md)
        print(f"\nwritten: {os.path.join(args.out, 'report.md')}, report.json"
              + (f", {png}" if png else ""))
    return 0
