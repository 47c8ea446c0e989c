"""CLI commands of the results database: studies, pareto, compare, show, results-upgrade.

Only this module sees argparse results; it turns them into ``results.queries.TrialFilter`` and
plain arguments. The query and rendering modules load on first use (``lazy_import``), so
``run_search.py --help`` does not import numpy for them.
"""
from __future__ import annotations

import argparse
import json
import math

from latency_models.options import add_latency_device_option
from search_space.cli_types import comma_items
from search_space.errors import NotFoundError, UsageError
from search_space.lazy import lazy_import

from .options import add_db_option, open_store
from .schema import RUNGS, STANDALONE

queries = lazy_import("results.queries")
report = lazy_import("results.report")
study_front = lazy_import("results.study_front")

FORMATS = ("table", "json", "csv")


def _common(p: argparse.ArgumentParser, filters: bool = True) -> None:
    add_db_option(p, purpose="opened read-only")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format")
    if filters:
        p.add_argument("--study", action="append", metavar="NAME",
                       help="only this study (repeatable; default all)")
        p.add_argument("--study-latency-device", metavar="DEVICE",
                       help="only studies searched for this latency device (their target)")
        p.add_argument("--dataset", help="only studies on this dataset id")
        p.add_argument("--fidelity", default="full",
                       help="full (default: trials that reached their study's full proxy "
                            "budget), any, or a study fidelity key (JSON shown by `studies`)")
        add_latency_device_option(p, default=None, purpose=(
            "here: latency_ms from the latency predictions stored for this device instead of "
            "each trial's prediction for its study's device"))
        p.add_argument("--predictor-version", metavar="V",
                       help="with --latency-device: this predictor version (default newest)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("studies", help="list the searches in a results database")
    _common(p, filters=False)
    p.set_defaults(func=_studies)

    p = sub.add_parser("pareto", help="Pareto front of the searched architectures over 2 or 3 "
                                      "objectives, baselines against it, hypervolume")
    _common(p)
    p.add_argument("--objectives", default="top1,latency_ms",
                   help="comma-separated metric[:min|max], 2 or 3 (default top1,latency_ms; "
                        "metrics: top1 top5 val_loss latency_ms params gmacs synflow naswot "
                        "grad_norm train_seconds ...)")
    p.add_argument("--ref", help="hypervolume reference point, comma-separated, one number per "
                                 "objective (default: worst value over the searched and "
                                 "baseline points + 10%% of the range)")
    p.add_argument("--rung", choices=RUNGS, default=STANDALONE,
                   help="rung of the fidelity ladder: standalone (trained proxies' top-1, "
                        "default) or supernet (one --proxy supernet study's candidates by "
                        "their supernet score; needs one --study)")
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
    add_db_option(p, purpose="must exist")
    p.set_defaults(func=_upgrade)


def _filter(args):
    if args.predictor_version and not args.latency_device:
        raise UsageError("--predictor-version needs --latency-device DEVICE")
    return queries.TrialFilter(
        studies=tuple(args.study) if args.study else None,
        study_latency_device=args.study_latency_device, dataset_id=args.dataset,
        fidelity=args.fidelity, latency_device=args.latency_device,
        predictor_version=args.predictor_version,
        rung=getattr(args, "rung", STANDALONE))   # `pareto` only


def _studies(args) -> int:
    store = open_store(args.db, readonly=True)
    rows = store.studies()
    cols = ["id", "name", "device", "dataset_id", "fidelity", "trials", "completed",
            "full_budget", "failed", "rejected", "pruned", "running", "seed", "code_version",
            "created_at"]
    print(report.render(args.format, rows, rows, cols, title=f"studies in {args.db}"))
    return 0


def _parse_ref(text: str | None, n: int) -> list[float] | None:
    if text is None:
        return None
    items = comma_items(text, "--ref", "comma-separated numbers, e.g. 0,5")
    try:
        ref = [float(x) for x in items]
    except ValueError:
        raise UsageError(f"--ref {text!r}: expected comma-separated numbers, e.g. 0,5") from None
    if not all(math.isfinite(x) for x in ref):
        raise UsageError(f"--ref {text!r}: allowed finite numbers, e.g. 0,5")
    if len(ref) != n:
        raise UsageError(f"--ref {text!r}: need {n} numbers (one per objective)")
    return ref


def _pareto(args) -> int:
    objs = queries.parse_objectives(args.objectives)  # validate before opening anything
    ref = _parse_ref(args.ref, len(objs))
    flt = _filter(args)
    store = open_store(args.db, readonly=True)
    res = queries.pareto_front(store, objs, flt, reference=ref)
    names = [o.split(":")[0] for o in res["objectives"]]   # the supernet rung: score, not top1
    extra = [c for c in (res["metric"], "latency_ms", "params", "gmacs") if c not in names]
    cols = ["trial_id", "study", "trial_key", "arch_hash"] + names + extra
    if any("latency_std_ms" in r for r in res["front"]):    # one study: intervals known
        cols.insert(cols.index("latency_ms") + 1, "latency_std_ms")
        cols.append("advantage_within_interval")
    print(report.render(args.format, res, res["front"], cols,
                        title=f"Pareto front over {', '.join(res['objectives'])}"
                              + (f" (study {res['study']})" if res["study"] else "")
                              + (f", {res['rung']} rung" if res["rung"] != STANDALONE else ""),
                        footer=_pareto_footer(res, args.fidelity, names)))
    return 0


def _pareto_footer(res: dict, fidelity: str, names: list[str]) -> list[str]:
    hv, ref = res["hypervolume"], res["reference_point"]
    lines = [f"{res['n_front']} on the front of {res['n_considered']:,} searched trials "
             f"(fidelity={fidelity}); hypervolume "
             + ("-" if hv is None else f"{hv:.6g} w.r.t. reference ("
                + ", ".join(f"{o}={r:.6g}" for o, r in zip(res["objectives"], ref))
                + f") [{res['reference_rule']}]")]
    for b in res["baselines"]:
        vals = ", ".join(f"{n}={report.cell(b.get(n))}" for n in names)
        dom = {True: "dominated by the front", False: "not dominated by the front",
               None: "incomplete (not compared)"}[b["dominated_by_front"]]
        if b["dominated_by_front"] and "dominated_beyond_interval" in b:
            dom += {True: " beyond the latency interval", None: " (latency interval unknown)",
                    False: " ONLY INSIDE the latency interval: the predictor cannot tell which "
                           "is faster"}[b["dominated_beyond_interval"]]
        lines.append(f"baseline {b['baseline']}: {vals}; {dom}")
    if any(r.get("advantage_within_interval") for r in res["front"]):
        lines.append(f"advantage_within_interval: the member dominates these baselines only by "
                     f"a latency ratio inside +-{study_front.INTERVAL_SIGMAS:g} combined sigma of "
                     "log latency (not resolved)")
    return lines


def _compare(args) -> int:
    flt = _filter(args)
    store = open_store(args.db, readonly=True)
    res = queries.compare_baselines(store, flt, accuracy=args.accuracy, cost=args.cost)
    a, c = args.accuracy, args.cost
    cols = ["baseline", f"baseline_{a}", f"baseline_{c}", f"{c}_source", "published_top1",
            "published_latency_ms", f"best_{a}_at_le_{c}", f"best_{a}_trial_id",
            f"lowest_{c}_at_ge_{a}", f"lowest_{c}_trial_id", "n_dominating",
            "dominating_trial_ids"]
    footer = [f"searched: {res['n_considered']:,} trials on {res['dataset_id']} "
              f"(budget {res['fidelity_key']}), device {res['device']}; baseline {a} is its "
              "proxy result at the same budget (published ImageNet figures shown for reference)"]
    footer += [f"note: {n}" for n in res["notes"]]
    print(report.render(args.format, res, res["baselines"], cols,
                        title=f"baselines vs search ({a} up, {c} down)", footer=footer))
    return 0


def _trial_ref(store, ref: str) -> int:
    """A trial id from ``ID`` or ``STUDY:TRIAL_KEY`` (names and keys may contain ':'; every
    split point is tried, the first match wins)."""
    if ref.isdecimal():
        return int(ref)
    if ":" not in ref:
        raise UsageError(f"trial {ref!r}: expected a trial id (integer) or STUDY:TRIAL_KEY")
    parts = ref.split(":")
    for i in range(1, len(parts)):
        try:
            return store.trial_id(":".join(parts[:i]), ":".join(parts[i:]))
        except NotFoundError:
            continue
    raise NotFoundError(f"trial {ref!r}: no such STUDY:TRIAL_KEY (see: run_search.py studies)")


def _show(args) -> int:
    store = open_store(args.db, readonly=True)
    d = store.trial(_trial_ref(store, args.trial))
    if args.format == "json":
        print(report.render("json", d, []))
        return 0
    if args.format == "csv":
        print(report.render("csv", d, d["epochs"]))
        return 0
    skip = {"epochs", "spec", "latency_predictions", "latency_measurements", "metrics"}
    lines = [f"trial {d['id']} ({d['study']}:{d['trial_key']})"]
    lines += [f"  {k:<17} {json.dumps(v) if isinstance(v, (dict, list)) else v}"
              for k, v in d.items() if k not in skip and v is not None]
    lines.append(f"  {'metrics':<17} {json.dumps(d['metrics'], sort_keys=True)}")
    lines.append(f"  {'spec':<17} {json.dumps(d['spec'], sort_keys=True)}")
    for k in ("epochs", "latency_predictions", "latency_measurements"):
        if d[k]:
            lines += [f"{k}:", report.table(d[k])]
    print("\n".join(lines))
    return 0


def _upgrade(args) -> int:
    store = open_store(args.db, readonly=False, create=False)
    print(f"{args.db}: results schema at revision {store.revision()}")
    return 0
