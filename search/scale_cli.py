"""CLI: ``scale`` (compound-scaled family at target latencies), ``ladder`` (proxy-train a family
into the results store), ``fit`` (scaling laws from stored results). Heavy imports in handlers.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

DEFAULT_DB = "runs/results.db"


# -- shared helpers -----------------------------------------------------------------------------
def _resolve_base(ref: str, db: str):
    """(spec, source text) for --base: preset / spec JSON file / inline JSON / trial id."""
    from search_space.spec import PRESETS, SpecError, load_spec

    text = str(ref).strip()
    trial = text[6:] if text.lower().startswith("trial:") else text if text.isdigit() else None
    if trial is not None:
        if not trial.isdigit():
            raise SpecError(f"--base {ref!r}: a trial reference is trial:<id> with an integer id")
        if "://" not in db and not os.path.isfile(db):
            raise FileNotFoundError(f"--db {db}: no such results database (needed for --base "
                                    f"{ref})")
        from search_space.spec import ArchSpec
        from results.store import ResultsStore

        with ResultsStore(db, readonly=True) as store:
            t = store.trial(int(trial))  # one-line ValueError if unknown
        return ArchSpec.from_dict(t["spec"]), f"trial:{trial} (study {t.get('study')}, {db})"
    try:
        spec = load_spec(text)
    except SpecError as e:
        if text.upper() in PRESETS or text.lstrip().startswith("{") or os.path.isfile(text):
            raise SpecError(f"--base {ref!r}: {str(e).splitlines()[0]}") from None
        raise SpecError(f"--base {ref!r}: not a preset ({'/'.join(PRESETS)}), an existing spec "
                        "JSON file, inline JSON, or a trial id (trial:N, from --db)") from None
    except OSError as e:
        raise SpecError(f"--base {ref!r}: unreadable ({e.strerror})") from None
    label = text.upper() if text.upper() in PRESETS else (
        os.path.abspath(text) if os.path.isfile(text) else "inline JSON")
    return spec, label


def _predictor(device: str | None):
    from latency_models import DEFAULT_DEVICE, load_predictor

    return load_predictor(device or DEFAULT_DEVICE)


def _utc_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _write_json(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True, default=str)
    os.replace(tmp, path)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-")[:80]


def members_table(members: list[dict]) -> str:
    head = (f"{'#':>2} {'target_ms':>9} {'pred_ms':>8} {'err':>6} {'phi':>6}  {'depths':<14}"
            f"{'widths':<22}{'res':>4} {'params_M':>9} {'GMACs':>7}  adjust")
    lines = [head]
    for i, m in enumerate(members):
        spec = m["spec"]
        lines.append(
            f"{i:>2} {m['target_latency_ms']:>9.3f} {m['latency_ms']:>8.3f} "
            f"{100 * (m['latency_ms'] / m['target_latency_ms'] - 1):>+5.1f}% "
            f"{(m.get('phi') if m.get('phi') is not None else float('nan')):>6.2f}  "
            f"{str(list(spec['depths'])):<14}{str(list(spec['widths'])):<22}"
            f"{spec['resolution']:>4} {m['params'] / 1e6:>9.2f} {m['gmacs']:>7.3f}  "
            f"{m.get('adjustments') or ''}")
    return "\n".join(lines)


def comparison_table(rows: list[dict]) -> str:
    lines = [f"{'baseline':<8} {'pred_ms':>8} {'params_M':>9} {'GMACs':>7} {'pub_top1':>8} | "
             f"{'member':>6} {'pred_ms':>8} {'params_M':>9} {'GMACs':>7} | "
             f"{'family@lat params_M':>19} {'GMACs':>7}"]
    for r in rows:
        ip, ig = r["family_params_at_latency"], r["family_gmacs_at_latency"]
        lines.append(
            f"{r['baseline']:<8} {r['baseline_latency_ms']:>8.3f} {r['baseline_params'] / 1e6:>9.2f} "
            f"{r['baseline_gmacs']:>7.3f} {r['baseline_published_top1'] or float('nan'):>8.1f} | "
            f"{r['member_position']:>6} {r['member_latency_ms']:>8.3f} "
            f"{r['member_params'] / 1e6:>9.2f} {r['member_gmacs']:>7.3f} | "
            f"{(ip / 1e6 if ip is not None else float('nan')):>19.2f} "
            f"{(ig if ig is not None else float('nan')):>7.3f}")
    return "\n".join(lines)


# -- scale --------------------------------------------------------------------------------------
def _scale(args: argparse.Namespace) -> int:
    from search.scaling import (Coefficients, coefficient_grid, comparison_plot,
                                family_comparison, parse_targets, scale_family)

    targets = parse_targets(args.targets)
    if not 0 < args.tolerance < 0.5:
        raise ValueError(f"--tolerance {args.tolerance}: allowed 0 < tolerance < 0.5 (fraction)")
    coef = Coefficients.parse(args.coefficients) if args.coefficients else None
    grid = None if coef else coefficient_grid(max_share=args.max_share)
    base, source = _resolve_base(args.base, args.db)
    predictor = _predictor(args.device)
    t0 = time.perf_counter()
    fam = scale_family(base, targets, predictor, tolerance=args.tolerance, coefficients=coef,
                       grid=grid, progress=lambda s: print(s, flush=True))
    seconds = time.perf_counter() - t0
    members = [m.to_dict() for m in fam.members]
    name = args.name or _slug(f"{source.split()[0].split('/')[-1].replace('.json', '')}-"
                              f"{predictor.device}-{_utc_stamp()}")
    print(f"family {name}: base {source} on {predictor.device} (predictor {predictor.version}); "
          f"{fam.coefficients}; tolerance +-{fam.tolerance:.0%}; {seconds:.1f} s")
    print(members_table(members))
    rel_std = getattr(predictor, "rel_std", None)
    if rel_std is not None and rel_std > args.tolerance:
        print(f"note: +-{args.tolerance:.0%} is relative to the predictor; its own error on "
              f"{predictor.device} is ~{rel_std:.0%} (leave-one-out), measure before trusting "
              "the ordering of close members")
    rows = family_comparison(members, predictor)
    print("\nagainst SwiftFormer at equal predicted latency (member = nearest in latency; "
          "family@lat = log-log interpolation)")
    print(comparison_table(rows))
    out = args.out or os.path.join("runs", "scale", name)
    os.makedirs(out, exist_ok=True)
    payload = {"name": name, "base": base.to_dict(), "base_source": source,
               "device": predictor.device, "predictor_version": predictor.version,
               "coefficients": fam.coefficients.to_dict(), "config": fam.config(),
               "members": members, "comparison": rows, "seconds": seconds}
    _write_json(os.path.join(out, "family.json"), payload)
    for i, m in enumerate(members):
        _write_json(os.path.join(out, f"member{i}.json"), m["spec"])
    png = comparison_plot(rows, members, os.path.join(out, "comparison.png"),
                          title=f"{name} vs SwiftFormer ({predictor.device})")
    if not args.no_save:
        from results.families import save_family
        from results.store import ResultsStore

        with ResultsStore(args.db) as store:
            store.ensure_baselines()  # the dashboard's family view shows them next to members
            fid = save_family(store, name, base_spec=base, base_source=source,
                              device=predictor.device, predictor_version=predictor.version,
                              coefficients=fam.coefficients.to_dict(), config={**fam.config(), "comparison": rows},
                              members=[{**m.to_dict(), "spec": m.spec} for m in fam.members])
        print(f"saved family {name} (id {fid}) to {args.db}")
        args.saved_family = name
    print(f"wrote {out}/family.json, member*.json, {os.path.basename(png)}")
    return 0


# -- ladder -------------------------------------------------------------------------------------
def run_ladder(store, family: dict, *, fidelity, data, seed: int = 0, study: str | None = None,
               baselines: bool = False, train_device: str = "auto", threads: int | None = None,
               predictor=None, log=print) -> dict:
    """Proxy-train every member of a stored family (and optionally XS/S/L1/L3) at ``fidelity``
    on ``data``; each run is a trial of study ``study`` (default ladder-<family>). Resumable:
    COMPLETED trials are skipped. Returns {"study_id", "trials": [...]}."""
    from search.driver import code_version as _code_version  # one git-describe helper
    from search.proxy.train import NonFiniteLoss, train_proxy
    from search_space.spec import PRESETS, ArchSpec

    study = study or f"ladder-{family['name']}"
    sid = store.get_or_create_study(
        study, config={"kind": "ladder", "family": family["name"], "baselines": bool(baselines)},
        seed=seed, dataset_id=data.dataset_id, fidelity=fidelity.to_dict(),
        device=family["device"], code_version=_code_version())
    done = {t["trial_key"]: t for t in store.trials(sid)}
    jobs = [(f"member{m['position']}", ArchSpec.from_dict(m["spec"]), m.get("latency_ms"),
             m.get("latency_std_ms")) for m in family["members"]]
    if baselines:
        jobs += [(name, spec, None, None) for name, spec in PRESETS.items()]
    out = []
    for key, spec, lat, lat_sd in jobs:
        tkey = f"{key}:seed{seed}"
        if tkey in done and done[tkey]["status"] == "COMPLETED":
            log(f"{tkey}: already trained (top-1 {done[tkey]['top1']:.2f}%), skipped")
            out.append(done[tkey])
            continue
        if lat is None and predictor is not None:
            lat, lat_sd = predictor.predict(spec)
        h = store.upsert_architecture(spec)
        tid = store.start_trial(sid, tkey, h, config={"ladder": key, "family": family["name"]},
                                seed=seed)
        t0 = time.perf_counter()
        try:
            res = train_proxy(spec, fidelity, data, seed=seed, device=train_device,
                              threads=threads,
                              report=lambda m, tid=tid: store.log_epoch(tid, m["epoch"], m))
        except NonFiniteLoss as e:
            store.finish_trial(tid, "FAILED", metrics={}, fidelity_reached={}, error=str(e))
            log(f"{tkey}: FAILED ({e})")
            continue
        from search_space.costs import analytic_gmacs, analytic_params

        metrics = {k: res[k] for k in ("top1", "val_loss", "train_loss", "train_seconds",
                                       "img_per_s") if k in res}
        metrics.update(latency_ms=lat, latency_std_ms=lat_sd, params=analytic_params(spec),
                       gmacs=analytic_gmacs(spec))
        store.finish_trial(tid, "COMPLETED", metrics=metrics,
                           fidelity_reached={**fidelity.to_dict(), "epochs": res["epochs_done"]},
                           timings={"wall_seconds": time.perf_counter() - t0})
        log(f"{tkey}: top-1 {res['top1']:.2f}%  ({res['train_seconds']:.1f} s, "
            f"{metrics['gmacs']:.3f} GMACs, {metrics['params'] / 1e6:.2f} M params)")
        out.append({"trial_key": tkey, "id": tid, "top1": res["top1"], **metrics})
    return {"study_id": sid, "study": study, "trials": out}


def _ladder(args: argparse.Namespace) -> int:
    from search.proxy.fidelity import Fidelity
    from search.scaling import parse_targets

    fid = Fidelity()
    if args.fidelity:
        text = args.fidelity
        if not text.lstrip().startswith("{"):
            if not os.path.isfile(text):
                raise FileNotFoundError(f"--fidelity {text}: not a JSON object or an existing file")
            with open(text, encoding="utf-8") as f:
                text = f.read()
        fid = Fidelity.from_dict({**fid.to_dict(), **json.loads(text)}) \
            if text.strip() else fid
    if args.family is None and (args.base is None or args.targets is None):
        raise ValueError("ladder: give --family NAME (a stored family) or --base and --targets")
    if args.targets is not None:
        parse_targets(args.targets)  # validate before any heavy work
    if args.family is not None and "://" not in args.db and not os.path.isfile(args.db):
        raise FileNotFoundError(f"--db {args.db}: no such results database (needed for --family)")
    from results.families import get_family
    from results.store import ResultsStore

    if args.family is None:
        ns = argparse.Namespace(**{**vars(args), "no_save": False,
                                   "coefficients": args.coefficients, "name": args.name})
        _scale(ns)
        args.family = ns.saved_family
    from search.proxy.data import prepare_data

    with ResultsStore(args.db) as store:
        family = get_family(store, args.family)  # unknown family: one line, before any work
    predictor = _predictor(args.device) if args.baselines else None
    data = prepare_data(args.data, fid)
    with ResultsStore(args.db) as store:
        res = run_ladder(store, family, fidelity=fid, data=data, seed=args.seed, study=args.study,
                         baselines=args.baselines, train_device=args.train_device,
                         threads=args.threads, predictor=predictor)
    print(f"ladder study {res['study']} (id {res['study_id']}): {len(res['trials'])} trained; "
          f"fit with: run_search.py fit --db {args.db} --study {res['study']}")
    return 0


# -- fit ----------------------------------------------------------------------------------------
def collect_points(store, studies: list[str] | None, device: str | None = None,
                   predictor=None) -> dict:
    """COMPLETED trials with a top-1 from the chosen studies (default all), which must share
    one dataset and proxy fidelity. Latency is re-predicted on ``predictor`` when given."""
    from results.store import fidelity_key

    all_studies = store.studies()
    if studies:
        known = {s["name"]: s for s in all_studies}
        missing = [n for n in studies if n not in known]
        if missing:
            raise ValueError(f"--study {missing[0]!r}: not in this database (have: "
                             f"{', '.join(sorted(known)[:8]) or 'none'})")
        chosen = [known[n] for n in studies]
    else:
        chosen = all_studies
    keys = {(s["dataset_id"], fidelity_key(s["fidelity"])) for s in chosen}
    if len(keys) > 1:
        raise ValueError(f"the selected studies use {len(keys)} different dataset/fidelity "
                         "settings (proxy accuracies are not comparable); pick --study")
    rows = []
    for s in chosen:
        for t in store.trials(s["id"], status="COMPLETED"):
            if t["top1"] is None:
                continue
            rows.append({"arch_hash": t["arch_hash"], "top1": t["top1"], "gmacs": t["gmacs"],
                         "params": t["params"], "latency_ms": t["latency_ms"],
                         "study": s["name"]})
    if predictor is not None and rows:
        specs = {h: store.spec(h) for h in {r["arch_hash"] for r in rows}}
        hs = list(specs)
        ms, _ = predictor.predict_many([specs[h] for h in hs])
        lat = dict(zip(hs, [float(v) for v in ms]))
        for r in rows:
            r["latency_ms"] = lat[r["arch_hash"]]
    return {"rows": rows, "studies": [s["name"] for s in chosen],
            "fidelity": chosen[0]["fidelity"] if chosen else None}


def _fit(args: argparse.Namespace) -> int:
    import numpy as np

    from search.scaling import fit_plot, fit_proxy_to_full, fit_scaling_law

    xs = [x.strip() for x in args.x.split(",") if x.strip()]
    bad = [x for x in xs if x not in ("gmacs", "params", "latency_ms")]
    if bad or not xs:
        raise ValueError(f"--x {args.x!r}: allowed a comma list of gmacs, params, latency_ms")
    at: dict[str, list[float]] = {}
    for item in args.at or []:
        k, _, v = item.partition("=")
        try:
            val = float(v)
        except ValueError:
            raise ValueError(f"--at {item!r}: expected COST=VALUE, e.g. gmacs=2.5") from None
        if k not in ("gmacs", "params", "latency_ms") or val <= 0:
            raise ValueError(f"--at {item!r}: COST is gmacs/params/latency_ms, VALUE > 0")
        at.setdefault(k, []).append(val)
    if "://" not in args.db and not os.path.isfile(args.db):
        raise FileNotFoundError(f"--db {args.db}: no such results database (run a ladder first)")
    from results.store import ResultsStore

    predictor = _predictor(args.device) if args.device else None
    with ResultsStore(args.db, readonly=True) as store:
        pts = collect_points(store, args.study, predictor=predictor)
        family = None
        if args.family:
            from results.families import get_family

            family = get_family(store, args.family)
        runs = [r for r in store.training_runs() if r["status"] == "COMPLETED"
                and r["top1"] is not None]
    rows = pts["rows"]
    print(f"{len(rows)} proxy results from {len(pts['studies'])} stud(ies); fidelity "
          f"{json.dumps(pts['fidelity'], sort_keys=True) if pts['fidelity'] else '-'}")
    report: dict[str, Any] = {"studies": pts["studies"], "n": len(rows), "fits": {},
                              "extrapolations": [], "proxy_to_full": None}
    plots = []
    for xn in xs:
        x = np.array([r[xn] if r[xn] is not None else np.nan for r in rows], float)
        y = np.array([r["top1"] for r in rows], float)
        try:
            ft = fit_scaling_law(x, y, x_name=xn, form=args.form, n_boot=args.bootstrap,
                                 seed=args.seed)
        except ValueError as e:
            print(f"{xn}: cannot fit: {e}")
            report["fits"][xn] = {"error": str(e)}
            continue
        report["fits"][xn] = ft.to_dict()
        plots.append((ft, x, y))
        ps = ", ".join(f"{k}={v:.4g} [{ft.params_ci_cov[k][0]:.4g}, {ft.params_ci_cov[k][1]:.4g}]"
                       for k, v in ft.params.items())
        print(f"\ntop-1 vs {xn}: {ft.formula}, x0={ft.x0:.4g}, n={ft.n}\n  {ps}  (95% CI, covariance)")
        pb = ", ".join(f"{k} [{lo:.4g}, {hi:.4g}]" for k, (lo, hi) in ft.params_ci_boot.items())
        print(f"  bootstrap 95% CI: {pb}")
        print(f"  in-sample RMSE {ft.rmse:.2f}  leave-one-out RMSE "
              f"{ft.loo_rmse if ft.loo_rmse is not None else float('nan'):.2f}  largest-20% "
              f"hold-out RMSE {ft.holdout_rmse if ft.holdout_rmse is not None else float('nan'):.2f}"
              " (top-1 points)")
        for w in ft.warnings:
            print(f"  warning: {w}")
        targets = list(at.get(xn, []))
        if family is not None:
            targets += [float(m[xn]) for m in family["members"]]
        for v in targets:
            e = ft.extrapolate(v, max_ratio=args.max_ratio, max_ci=args.max_ci)
            report["extrapolations"].append(e)
            verdict = "" if e["supported"] else f"  NOT SUPPORTED: {e['reason']}"
            print(f"  at {xn}={v:.4g}: top-1 {e['pred']:.2f} [{e['lo']:.2f}, {e['hi']:.2f}]"
                  f"{' (extrapolated)' if not e['inside_range'] else ''}{verdict}")
    # proxy -> full-scale, per architecture with both
    proxy_by_arch: dict[str, list[float]] = {}
    for r in rows:
        proxy_by_arch.setdefault(r["arch_hash"], []).append(r["top1"])
    full_by_arch: dict[str, list[float]] = {}
    for r in runs:
        full_by_arch.setdefault(r["arch_hash"], []).append(r["top1"])
    both = sorted(set(proxy_by_arch) & set(full_by_arch))
    p2f = fit_proxy_to_full([float(np.mean(proxy_by_arch[h])) for h in both],
                            [float(np.mean(full_by_arch[h])) for h in both])
    report["proxy_to_full"] = p2f
    if p2f["supported"]:
        print(f"\nproxy -> full-scale: {p2f['formula']}: a={p2f['a']:.3g} {p2f['a_ci95']}, "
              f"b={p2f['b']:.3g} {p2f['b_ci95']}, r={p2f['r']:.3f}, n={p2f['n']}, LOO RMSE "
              f"{p2f['loo_rmse']}")
    else:
        print(f"\nproxy -> full-scale: not fitted: {p2f['reason']}")
    out = args.out or os.path.join("runs", "fit", _utc_stamp())
    _write_json(os.path.join(out, "fit.json"), report)
    if plots:
        fit_plot(plots, os.path.join(out, "fit.png"))
    print(f"wrote {out}/fit.json{' and fit.png' if plots else ''}")
    return 0


# -- registration --------------------------------------------------------------------------------
def _add_scale_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--base", required=required,
                   help="XS/S/L1/L3, a spec JSON file, inline JSON, or trial:N (a trial in --db)")
    p.add_argument("--targets", required=required,
                   help="target predicted latencies in ms, comma-separated (e.g. 0.7,0.8,1.1,1.9)")
    p.add_argument("--device", help="latency device (default: the iPhone 14 calibration); a "
                                    "name from `latency devices` or a calibration .json")
    p.add_argument("--tolerance", type=float, default=0.03,
                   help="allowed relative error of the predicted latency (default 0.03)")
    p.add_argument("--coefficients", metavar="A,B,C",
                   help="fix depth,width,resolution coefficients instead of searching them")
    p.add_argument("--max-share", type=float, default=0.5,
                   help="coefficient search: max fraction of the MAC growth one dimension may "
                        "supply (default 0.5)")
    p.add_argument("--name", help="family name in the store (default <base>-<device>-<UTC>)")
    p.add_argument("--db", default=DEFAULT_DB, help=f"results database (default {DEFAULT_DB})")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scale", help="compound-scale an architecture to target latencies "
                                     "(a family), saved to the results store")
    _add_scale_args(p)
    p.add_argument("--out", help="output directory (default runs/scale/<name>)")
    p.add_argument("--no-save", action="store_true", help="do not write the family to --db")
    p.set_defaults(func=_scale)

    p = sub.add_parser("ladder", help="proxy-train a family (data for `fit`), trials to the store")
    p.add_argument("--family", help="a stored family name or id (else --base/--targets scale one)")
    _add_scale_args(p, required=False)
    p.add_argument("--data", help="ImageFolder root (default: the embedded CIFAR-10 subset)")
    p.add_argument("--fidelity", help="proxy budget overrides, JSON object or file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--study", help="study name (default ladder-<family>)")
    p.add_argument("--baselines", action="store_true", help="also train XS/S/L1/L3")
    p.add_argument("--out", help="with --base: output directory of the scaled family")
    p.add_argument("--train-device", default="auto", help="torch device (auto/cpu/cuda)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.set_defaults(func=_ladder)

    p = sub.add_parser("fit", help="scaling laws: proxy top-1 vs GMACs/params/latency, with "
                                   "held-out error, CIs and guarded extrapolation")
    p.add_argument("--db", default=DEFAULT_DB)
    p.add_argument("--study", action="append", help="study name (repeatable; default all)")
    p.add_argument("--x", default="gmacs,params,latency_ms", help="costs to fit against")
    p.add_argument("--form", default="auto", choices=("auto", "power", "loglinear"))
    p.add_argument("--device", help="re-predict latency on this device (default: stored values)")
    p.add_argument("--family", help="extrapolate to this stored family's members")
    p.add_argument("--at", action="append", metavar="COST=VALUE",
                   help="extrapolate at e.g. gmacs=2.5 (repeatable)")
    p.add_argument("--max-ratio", type=float, default=2.0,
                   help="refuse extrapolating beyond the fitted range by more than this factor")
    p.add_argument("--max-ci", type=float, default=10.0,
                   help="refuse when the 95%% interval is wider than this (top-1 points)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output directory (default runs/fit/<UTC>)")
    p.set_defaults(func=_fit)
