"""CLI commands of the results database: studies, pareto, compare, show, results-upgrade.

Module-level imports stay light (argparse only); SQLAlchemy/numpy load inside the handlers.
"""
from __future__ import annotations

import argparse

DEFAULT_DB = "runs/results.db"
FORMATS = ("table", "json", "csv")


def _common(p: argparse.ArgumentParser, filters: bool = True) -> None:
    p.add_argument("--db", default=DEFAULT_DB,
                   help=f"results database: a path or SQLAlchemy URL (default {DEFAULT_DB})")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format")
    if filters:
        p.add_argument("--study", action="append", metavar="NAME",
                       help="only this study (repeatable; default all)")
        p.add_argument("--device", help="only studies whose latency target is this device")
        p.add_argument("--dataset", help="only studies on this dataset id")
        p.add_argument("--fidelity", default="full",
                       help="full (default: trials that reached their study's full proxy "
                            "budget), any, or a study fidelity key (JSON shown by `studies`)")
        p.add_argument("--latency-device", metavar="DEVICE",
                       help="latency_ms from the stored latency predictions for DEVICE instead "
                            "of each trial's prediction for its study's device")
        p.add_argument("--predictor-version", metavar="V",
                       help="with --latency-device: this predictor version (default newest)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("studies", help="list the searches in a results database")
    _common(p, filters=False)
    p.set_defaults(func=_studies)

    p = sub.add_parser("pareto", help="Pareto front over 2 or 3 objectives, with hypervolume")
    _common(p)
    p.add_argument("--objectives", default="top1,latency_ms",
                   help="comma-separated metric[:min|max], 2 or 3 (default top1,latency_ms; "
                        "metrics: top1 top5 val_loss latency_ms params gmacs synflow naswot "
                        "grad_norm train_seconds ...)")
    p.add_argument("--ref", help="hypervolume reference point, one number per objective "
                                 "(default: worst considered value + 10%% of the range)")
    p.set_defaults(func=_pareto)

    p = sub.add_parser("compare", help="searched architectures vs XS/S/L1/L3")
    _common(p)
    p.add_argument("--accuracy", default="top1", help="accuracy metric (maximised; default top1)")
    p.add_argument("--cost", default="latency_ms", help="cost metric (minimised; default latency_ms)")
    p.set_defaults(func=_compare)

    p = sub.add_parser("show", help="one trial: metrics, epochs, architecture, latencies")
    _common(p, filters=False)
    p.add_argument("trial", help="trial id (see `pareto`), or STUDY:TRIAL_KEY")
    p.set_defaults(func=_show)

    p = sub.add_parser("results-upgrade",
                       help="upgrade a results database to this code's schema (Alembic)")
    p.add_argument("--db", default=DEFAULT_DB, help=f"results database (default {DEFAULT_DB})")
    p.set_defaults(func=_upgrade)


def _open(db: str, readonly: bool = True):
    import os

    from .store import ResultsStore
    if "://" not in db and not os.path.exists(db):
        raise FileNotFoundError(f"--db {db}: no such results database (run a search first, "
                                "or pass --db PATH)")
    return ResultsStore(db, readonly=readonly)


def _filter(args):
    from .queries import TrialFilter
    if args.predictor_version and not args.latency_device:
        raise ValueError("--predictor-version needs --latency-device DEVICE")
    return TrialFilter(studies=tuple(args.study) if args.study else None, device=args.device,
                       dataset_id=args.dataset, fidelity=args.fidelity,
                       latency_device=args.latency_device,
                       predictor_version=args.predictor_version)


def _studies(args) -> int:
    from .report import render
    store = _open(args.db)
    rows = store.studies()
    cols = ["id", "name", "device", "dataset_id", "fidelity", "trials", "completed",
            "full_budget", "failed", "rejected", "pruned", "running", "seed", "code_version",
            "created_at"]
    print(render(args.format, rows, rows, cols, title=f"studies in {args.db}"))
    return 0


def _parse_ref(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"--ref {text!r}: expected comma-separated numbers, e.g. 0,5") from None


def _pareto(args) -> int:
    from .queries import parse_objectives, pareto_front
    from .report import render
    objs = parse_objectives(args.objectives)  # validate before opening anything
    ref = _parse_ref(args.ref)
    if ref is not None and len(ref) != len(objs):
        raise ValueError(f"--ref {args.ref!r}: need {len(objs)} numbers (one per objective)")
    store = _open(args.db)
    res = pareto_front(store, objs, _filter(args), reference=ref)
    rows = res["front"]
    cols = ["trial_id", "study", "trial_key", "arch_hash", "baseline"] + [o.name for o in objs] + [
        c for c in ("top1", "latency_ms", "params", "gmacs") if c not in {o.name for o in objs}]
    hv = res["hypervolume"]
    footer = [f"{res['n_front']} on the front of {res['n_considered']:,} trials "
              f"(fidelity={args.fidelity}); hypervolume "
              + ("-" if hv is None else f"{hv:.6g} w.r.t. reference "
                 "(" + ", ".join(f"{o}={r:.6g}" for o, r in zip(res["objectives"], res["reference_point"]))
                 + f") [{res['reference_rule']}]")]
    print(render(args.format, res, rows, cols,
                 title=f"Pareto front over {', '.join(res['objectives'])}", footer=footer))
    return 0


def _compare(args) -> int:
    from .queries import compare_baselines
    from .report import render
    store = _open(args.db)
    res = compare_baselines(store, _filter(args), accuracy=args.accuracy, cost=args.cost)
    a, c = args.accuracy, args.cost
    cols = ["baseline", f"baseline_{a}", f"baseline_{c}", f"{c}_source", "published_top1",
            "published_latency_ms", f"best_{a}_at_le_{c}", f"best_{a}_trial_id",
            f"lowest_{c}_at_ge_{a}", f"lowest_{c}_trial_id", "n_dominating",
            "dominating_trial_ids"]
    footer = [f"searched: {res['n_considered']:,} trials on {res['dataset_id']} "
              f"(budget {res['fidelity_key']}), device {res['device']}; baseline {a} is its "
              "proxy result at the same budget (published ImageNet figures shown for reference)"]
    footer += [f"note: {n}" for n in res["notes"]]
    print(render(args.format, res, res["baselines"], cols,
                 title=f"baselines vs search ({a} up, {c} down)", footer=footer))
    return 0


def _show(args) -> int:
    import json

    from .report import render, table
    store = _open(args.db)
    ref = args.trial
    if ref.isdigit():
        tid = int(ref)
    elif ":" in ref:
        # Names and keys may themselves contain ':'; try every split point, first match wins.
        parts = ref.split(":")
        tid = None
        for i in range(1, len(parts)):
            try:
                tid = store.trial_id(":".join(parts[:i]), ":".join(parts[i:]))
                break
            except ValueError:
                continue
        if tid is None:
            raise ValueError(f"trial {ref!r}: no such STUDY:TRIAL_KEY (see: run_search.py studies)")
    else:
        raise ValueError(f"trial {ref!r}: expected a trial id (integer) or STUDY:TRIAL_KEY")
    d = store.trial(tid)
    if args.format == "json":
        print(render("json", d, []))
        return 0
    if args.format == "csv":
        print(render("csv", d, d["epochs"]))
        return 0
    skip = {"epochs", "spec", "latency_predictions", "latency_measurements", "metrics"}
    lines = [f"trial {d['id']} ({d['study']}:{d['trial_key']})"]
    lines += [f"  {k:<17} {json.dumps(v) if isinstance(v, (dict, list)) else v}"
              for k, v in d.items() if k not in skip and v is not None]
    lines.append(f"  {'metrics':<17} {json.dumps(d['metrics'], sort_keys=True)}")
    lines.append(f"  {'spec':<17} {json.dumps(d['spec'], sort_keys=True)}")
    for k in ("epochs", "latency_predictions", "latency_measurements"):
        if d[k]:
            lines += [f"{k}:", table(d[k])]
    print("\n".join(lines))
    return 0


def _upgrade(args) -> int:
    import os

    from .store import ResultsStore
    if "://" not in args.db and not os.path.exists(args.db):
        raise FileNotFoundError(f"--db {args.db}: no such results database")
    store = ResultsStore(args.db)
    print(f"{args.db}: results schema at revision {store.revision()}")
    return 0
