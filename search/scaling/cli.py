"""CLI of the scaling explorer: ``scale`` (a compound-scaled family at target latencies),
``ladder`` (proxy-train a family into the results store), ``fit`` (scaling laws from stored
results).

Only this module sees argparse results: each handler turns them into typed values and calls
the library (``family.scale``, ``ladder.run_ladder``, ``fit.run_fit``). The ladder (torch) is
loaded on first use so ``run_search.py --help`` stays light.
"""
from __future__ import annotations

import argparse
from functools import partial

from latency_models import load_predictor
from latency_models.options import add_latency_device_option
from results.families import get_family
from results.options import add_db_option, check_db, open_store
from search.options import (add_data_option, add_fidelity_option, add_threads_option,
                            add_torch_device_option, check_data_option, parse_fidelity)
from search.proxy.data import prepare_data
from search_space.cli_types import NUMBER, SEED, number_type
from search_space.errors import UsageError
from search_space.io import check_name, check_writable_dir
from search_space.lazy import lazy_import

from . import compound
from . import family as family_mod
from . import fit as fit_mod

ladder_mod = lazy_import("search.scaling.ladder")  # torch: loaded only when a ladder runs

log = partial(print, flush=True)
LADDER_CACHE = "runs/cache"  # the proxy data cache of ladder runs (search.proxy.data)


def _scale_request(args: argparse.Namespace, *, save: bool = True):
    """The typed request from the scale options (validated: one line on bad input)."""
    return family_mod.ScaleRequest(
        base=args.base, targets=tuple(compound.parse_targets(args.targets)),
        tolerance=args.tolerance,
        coefficients=compound.Coefficients.parse(args.coefficients) if args.coefficients
        else None,
        max_share=args.max_share, name=args.name, out=args.out, save=save)


def _scale(args: argparse.Namespace) -> int:
    family_mod.scale(_scale_request(args, save=not args.no_save), db=args.db,
                     latency_device=args.latency_device, log=log)
    return 0


def _ladder_family(args: argparse.Namespace) -> dict:
    with open_store(args.db, readonly=True) as store:
        return get_family(store, args.family)  # unknown: one line


def _ladder(args: argparse.Namespace) -> int:
    fidelity = parse_fidelity(args.fidelity)
    if args.family is None and (args.base is None or args.targets is None):
        raise UsageError("ladder: give --family NAME (a stored family) or --base and --targets")
    request = _scale_request(args) if args.family is None else None  # validated before work
    if args.study is not None:
        check_name(args.study, "--study")
    if args.targets is not None:
        compound.parse_targets(args.targets)
    check_data_option(args.data)
    check_db(args.db, readonly=False)
    for path, what in ((args.out, "--out"), (LADDER_CACHE, "data cache")):
        if path is not None:
            check_writable_dir(path, what)
    if request is not None:
        family_mod.resolve_base(request.base, args.db)  # a bad --base before any decoding
    family = _ladder_family(args) if request is None else None
    predictor = load_predictor(args.latency_device)
    # Decode before anything is written: a broken image is refused with nothing stored.
    data = prepare_data(args.data, fidelity, cache_dir=LADDER_CACHE)
    if request is not None:
        args.family = family_mod.scale(request, db=args.db, latency_device=args.latency_device,
                                       log=log).name
        family = _ladder_family(args)
    with open_store(args.db, readonly=False) as store:
        res = ladder_mod.run_ladder(store, family, fidelity=fidelity, data=data, seed=args.seed,
                                    study=args.study, baselines=args.baselines,
                                    torch_device=args.torch_device, threads=args.threads,
                                    predictor=predictor if args.baselines else None, log=log)
    log(f"ladder study {res['study']} (id {res['study_id']}): {len(res['trials'])} trained; "
        f"fit with: run_search.py fit --db {args.db} --study {res['study']}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    req = fit_mod.FitRequest(
        studies=tuple(args.study) if args.study else None, costs=fit_mod.parse_costs(args.x),
        form=args.form, family=args.family, at=fit_mod.parse_at(args.at or []),
        max_ratio=args.max_ratio, max_ci=args.max_ci, n_boot=args.bootstrap, seed=args.seed,
        out=args.out)
    fit_mod.run_fit(req, db=args.db, latency_device=args.latency_device, log=log)
    return 0


# -- registration --------------------------------------------------------------------------------
def _add_scale_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--base", required=required,
                   help="XS/S/L1/L3, a spec JSON file, inline JSON, or trial:N (a trial in --db)")
    p.add_argument("--targets", required=required,
                   help="target predicted latencies in ms, comma-separated (e.g. 0.7,0.8,1.1,1.9)")
    add_latency_device_option(p, purpose="the targets are predicted latencies on it")
    p.add_argument("--tolerance", type=NUMBER, default=0.03,
                   help="allowed relative error of the predicted latency (default 0.03)")
    p.add_argument("--coefficients", metavar="A,B,C",
                   help="fix depth,width,resolution coefficients instead of searching them")
    p.add_argument("--max-share", type=NUMBER, default=0.5,
                   help="coefficient search: max fraction of the MAC growth one dimension may "
                        "supply (default 0.5)")
    p.add_argument("--name", help="family name in the store (default <base>-<device>-<UTC>)")
    add_db_option(p)


def _register_ladder(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ladder", help="proxy-train a family (data for `fit`), trials to the store")
    p.add_argument("--family", help="a stored family name or id (else --base/--targets scale one)")
    _add_scale_args(p, required=False)
    add_data_option(p)
    add_fidelity_option(p)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--study", help="study name (default ladder-<family>)")
    p.add_argument("--baselines", action="store_true", help="also train XS/S/L1/L3")
    p.add_argument("--out", help="with --base: output directory of the scaled family")
    add_torch_device_option(p)
    add_threads_option(p)
    p.set_defaults(func=_ladder)


def _register_fit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="scaling laws: proxy top-1 vs GMACs/params/latency, with "
                                   "held-out error, CIs and guarded extrapolation")
    add_db_option(p)
    p.add_argument("--study", action="append", help="study name (repeatable; default all)")
    p.add_argument("--x", default="gmacs,params,latency_ms",
                   help="costs to fit against, comma-separated (default %(default)s)")
    p.add_argument("--form", default="auto", choices=("auto", "power", "loglinear"))
    add_latency_device_option(p, default=None,
                              purpose="re-predict latency on it (default: the stored values)")
    p.add_argument("--family", help="extrapolate to this stored family's members")
    p.add_argument("--at", action="append", metavar="COST=VALUE",
                   help="extrapolate at e.g. gmacs=2.5 (repeatable)")
    p.add_argument("--max-ratio", type=NUMBER, default=2.0,
                   help="refuse extrapolating beyond the fitted range by more than this factor")
    p.add_argument("--max-ci", type=NUMBER, default=10.0,
                   help="refuse when the 95%% interval is wider than this (top-1 points)")
    p.add_argument("--bootstrap", type=number_type(int, 0), default=200,
                   help="bootstrap resamples")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--out", help="output directory (default runs/fit/<UTC>)")
    p.set_defaults(func=_fit)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scale", help="compound-scale an architecture to target latencies "
                                     "(a family), saved to the results store")
    _add_scale_args(p)
    p.add_argument("--out", help="output directory (default runs/scale/<name>)")
    p.add_argument("--no-save", action="store_true", help="do not write the family to --db")
    p.set_defaults(func=_scale)
    _register_ladder(sub)
    _register_fit(sub)
