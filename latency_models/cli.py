"""CLI: ``run_search.py latency predict|measure|calibrate|evaluate|export|devices``.

The phone is always ``--latency-device`` (``latency_models.options``); ``calibrate`` names the
device it creates with the same option. Bad input raises ``UsageError`` (one line, exit 2)
before any heavy work. Light to import: the torch-heavy modules (backends, export) are declared
with ``lazy_import`` and load when a command needs them.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import re
import sys
import tempfile

import numpy as np

from search_space.cli_types import SEED, number_type
from search_space.errors import NotFoundError, UsageError
from search_space.io import check_writable_dir, check_writable_file
from search_space.lazy import lazy_import
from search_space.spec import load_spec
from search_space.stats import kendall_tau

from .coreml import COMPUTE_UNITS, coreml_ops
from .devices import device_files, load_predictor, shipped_devices, user_calibration_path
from .features import FEATURE_NAMES, aggregate
from .featurize import featurize, timm_features
from .fewshot import fit
from .options import DEFAULT_DEVICE, LATENCY_ALIASES, add_latency_device_option
from .predictor import LatencyPredictor, latency_interval, prior_coef, within_interval
from .records import Record, read_records, write_records
from .suggest import candidate_pool, choose_rows, design_quality, design_rows, write_template
from .timm_models import is_spec_reference
from .transfer import loo_predictions, render_curve, render_summary, summarise, transfer
from .userdir import ENV as USER_DIR_ENV
from .userrecords import Loaded, featurise, load_user_records, timm_model_named

SKIP_UNKNOWN_HELP = ("skip (and list) rows whose model is not a preset, spec JSON, .mlpackage, "
                     "published name or timm model, or is a broken .mlpackage, instead of "
                     "stopping at the first (a timm model Core ML cannot convert is always "
                     "skipped and listed)")
FEW_SHOT_DRAWS = 20  # evaluate --few-shot: random draws, as bench/bench_latency_fewshot.py
backends = lazy_import("latency_models.backends")   # torch, onnxruntime, coremltools
export = lazy_import("latency_models.export")       # torch, coremltools, onnxruntime

BACKENDS = ("torch", "onnxruntime", "coreml")
EXPORT_FORMATS = ("coreml", "onnx")
CLOCKS = ("wall", "cpu")
STATS = ("median", "min")
DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Number options are checked where they are parsed (search_space.cli_types: one message form).
RESOLUTION = number_type(int, 32)    # the stem and four stages halve it 5 times: 32 px -> 1x1
COUNT = number_type(int, 1)
COUNT0 = number_type(int, 0)
DRAWS = number_type(int, 1, 10_000)     # each draw is two fits: 10^4 is minutes already
POOL = number_type(int, 0, 100_000)     # suggest's random space members: features of 10^5 in s


def _match_text(text: str) -> str:
    """``--match``: part of a device name (empty would match every device)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: allowed a non-empty part of a device name")
    return text


def register(sub) -> None:
    p = sub.add_parser("latency", help="predict, measure and calibrate on-device latency",
                       description="Latency prediction for SwiftFormer specs and CoreML-"
                                   "convertible models (per-op cost model, per-device calibration).")
    lsub = p.add_subparsers(dest="latency_command", required=True)
    _register_predict(lsub)
    _register_measure(lsub)
    _register_calibrate(lsub)
    _register_evaluate(lsub)
    _register_export(lsub)
    _register_suggest(lsub)
    d = lsub.add_parser("devices", help="list calibrated devices and the file each name uses")
    d.set_defaults(func=_devices)


def _register_predict(lsub) -> None:
    q = lsub.add_parser("predict", help="predicted latency (ms +- std) of architectures")
    q.add_argument("arch", nargs="+", help="preset (XS/S/L1/L3), spec JSON file, inline JSON, "
                                           "or timm model name")
    add_latency_device_option(q, aliases=LATENCY_ALIASES)
    q.add_argument("--resolution", type=RESOLUTION, default=None)
    q.add_argument("--breakdown", action="store_true", help="also print ms per cost term")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_predict)


def _register_measure(lsub) -> None:
    m = lsub.add_parser("measure", help="measure latency here (torch / onnxruntime CPU; CoreML "
                                        "on macOS)")
    m.add_argument("arch", nargs="+")
    m.add_argument("--backend", default="torch", help=f"one of {BACKENDS}")
    m.add_argument("--resolution", type=RESOLUTION, default=None)
    m.add_argument("--threads", type=COUNT, default=1)
    m.add_argument("--warmup", type=COUNT0, default=5)
    m.add_argument("--runs", type=COUNT, default=30)
    m.add_argument("--compute-unit", default="ALL", help=f"CoreML: one of {COMPUTE_UNITS}")
    m.add_argument("--clock", default="wall", help="wall: wall time; cpu: CPU time of the "
                   "inference thread (threads=1 only; robust on a shared machine)")
    m.add_argument("--rounds", type=COUNT, default=1,
                   help="time every model in this many interleaved rounds (a fresh order each "
                        "round) of --warmup + --runs, the runs pooled: on a shared VM, whose "
                        "speed drifts over seconds, use --clock cpu --rounds 10 --stat min")
    m.add_argument("--stat", default="median", help=f"one of {STATS}: the recorded latency is "
                   "this statistic of the pooled runs (min: the run least slowed by the machine)")
    m.add_argument("--record-device", default=None, metavar="TEXT",
                   help="device column of the written records (default: this host's CPU)")
    m.add_argument("--out", default=None, help="append records to this CSV")
    m.set_defaults(func=_measure)


def _register_calibrate(lsub) -> None:
    c = lsub.add_parser("calibrate", help="fit a device's predictor from measured latencies",
                        description="Calibrate a device from a records CSV/JSON; "
                                    "`model,latency_ms` columns are enough (docs/latency.md).")
    c.add_argument("--records", required=True, help="CSV (, ; or tab) or JSON records")
    c.add_argument("--latency-device", *LATENCY_ALIASES, required=True, metavar="NAME",
                   help="name of the device this calibrates (letters, digits, '-', '_', '.'); "
                        "later found by `--latency-device NAME`; also the device of rows "
                        "without a device column")
    c.add_argument("--match", type=_match_text, default=None,
                   help="use only records whose device column contains "
                                                 "this")
    c.add_argument("--skip-unknown", action="store_true", help=SKIP_UNKNOWN_HELP)
    c.add_argument("--prior", default=None, help="reference device for few-shot fits "
                                                 "(default: the default device; 'generic' = hand-set)")
    c.add_argument("--out", default=None, help="calibration file (default: user dir/<NAME>.json)")
    c.add_argument("--shadow-shipped", action="store_true",
                   help="allow NAME to be a shipped device: your calibration then replaces it "
                        "for every command (`latency devices` shows which file wins)")
    c.set_defaults(func=_calibrate)


def _register_evaluate(lsub) -> None:
    e = lsub.add_parser("evaluate", help="accuracy of a predictor on measurement records")
    e.add_argument("--records", required=True)
    add_latency_device_option(e, purpose="the predictor evaluated (without --loo); also the "
                                         "device of rows without a device column",
                              aliases=LATENCY_ALIASES)
    e.add_argument("--match", type=_match_text, default=None,
                   help="use only records whose device column contains this")
    e.add_argument("--skip-unknown", action="store_true", help=SKIP_UNKNOWN_HELP)
    e.add_argument("--loo", action="store_true", help="leave-one-out: recalibrate on the other "
                                                      "records for each row instead")
    e.add_argument("--few-shot", type=COUNT, nargs="+", default=None, metavar="N",
                   help="how well N measured rows calibrate this device: --draws random sets of "
                        "N rows (and the set `latency suggest` picks) each calibrate from "
                        "--prior and predict the other rows; against prior x one factor and a "
                        "GMACs line fitted on the same rows. Several N (e.g. 5 10 15): one "
                        "table each, then how the error falls with N (how many to measure)")
    e.add_argument("--draws", type=DRAWS, default=None, help="with --few-shot: random draws "
                                                             f"(default {FEW_SHOT_DRAWS})")
    e.add_argument("--seed", type=SEED, default=None, help="with --few-shot: seed of the draws "
                                                          "(default 0)")
    e.add_argument("--prior", default=None, help="with --loo / --few-shot: reference device "
                                                 "(default: the default device; 'generic' = "
                                                 "hand-set)")
    e.set_defaults(func=_evaluate)


def _register_suggest(lsub) -> None:
    s = lsub.add_parser("suggest", help="which models to measure on a new phone (greedy Bayesian design)",
                        description="Choose the SwiftFormer-space members and timm models whose "
                                    "latencies best pin down a new device's coefficients; "
                                    "write them as .mlpackage files and a CSV to fill in.")
    s.add_argument("--n", type=COUNT, default=10, help="how many models (default 10)")
    s.add_argument("--out", required=True, help="directory for measure.csv, spec JSON files "
                                                "and .mlpackage exports")
    add_latency_device_option(s, purpose="the prior whose cost terms the design targets "
                                         "('generic' = the hand-set ANE prior)",
                              aliases=LATENCY_ALIASES)
    s.add_argument("--pool", type=POOL, default=1000,
                   help="random SwiftFormer-space members considered (default 1000, at most "
                        "100000)")
    s.add_argument("--seed", type=SEED, default=0)
    s.add_argument("--no-export", action="store_true",
                   help="write the CSV and spec files only (no CoreML conversion)")
    s.set_defaults(func=_suggest)


def _register_export(lsub) -> None:
    x = lsub.add_parser("export", help="export an architecture to CoreML (.mlpackage) or ONNX")
    x.add_argument("arch")
    x.add_argument("--format", default="coreml", help=f"one of {EXPORT_FORMATS}")
    x.add_argument("--out", required=True, help=".mlpackage or .onnx path")
    x.add_argument("--resolution", type=RESOLUTION, default=None)
    x.add_argument("--precision", default="fp16", help="CoreML: fp16 or fp32")
    x.add_argument("--opset", type=number_type(int, 11, 11, also=(17,), allowed="11 or 17"),
                   default=17, help="ONNX: 17 or 11")
    x.add_argument("--features", action="store_true", help="CoreML: print the per-op feature sums")
    x.set_defaults(func=_export)


# -- helpers ------------------------------------------------------------------------------------
ARCH_FORMS = "a preset (XS/S/L1/L3), a spec JSON file, inline JSON or a timm model name"


def _resolve_arch(ref: str, resolution: int | None = None):
    """An ArchSpec for presets/JSON, else the timm model name (validated without building it;
    a published display name or a paper's spelling is read as its timm model, said)."""
    if is_spec_reference(ref):
        spec = load_spec(ref)
        return spec.replace(resolution=resolution) if resolution else spec
    if ref.endswith(".json"):
        raise NotFoundError(f"{ref}: no such spec file")
    name, from_paper = timm_model_named(ref, "architecture", ARCH_FORMS)
    if from_paper:
        print(f"warning: architecture: {ref!r} read as the timm model {name!r}", file=sys.stderr)
    return name


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise UsageError(f"--{name} {value!r}: allowed {list(allowed)}")


def _load_prior(name: str | None):
    if name == "generic":
        return None
    return load_predictor(name or DEFAULT_DEVICE)


# -- handlers ------------------------------------------------------------------------------------
def _predict(args: argparse.Namespace) -> int:
    archs = [_resolve_arch(a, args.resolution) for a in args.arch]
    pred = load_predictor(args.latency_device)
    rows = []
    for ref, a in zip(args.arch, archs):
        # a timm model is built at --resolution (featurize(name) would take its default size)
        f = timm_features(a, args.resolution) if isinstance(a, str) else featurize(a)
        ms, sd = (float(v[0]) for v in pred.predict_features(f[None]))
        row = {"arch": ref, "device": pred.device, "latency_ms": round(ms, 4),
               "std_ms": round(sd, 4),
               "interval_ms": [round(float(v), 4) for v in latency_interval(ms, sd)],
               "extrapolation": pred.extrapolation(f[None])[0]}
        if args.breakdown:
            row["breakdown_ms"] = {k: round(v, 4) for k, v in pred.breakdown(f).items()}
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        lo, hi = r["interval_ms"]
        print(f"{r['arch']}: {r['latency_ms']:.3f} ms +- {r['std_ms']:.3f} (2-sigma interval "
              f"{lo:.3f}-{hi:.3f}) on {r['device']} (calibration {pred.version})")
        if r["extrapolation"]:
            print(f"    warning: extrapolates beyond the calibration set: {r['extrapolation']}")
        for k, v in r.get("breakdown_ms", {}).items():
            print(f"    {k:<18} {v:8.4f} ms")
    return 0


def _check_measure(args: argparse.Namespace) -> None:
    _check_choice("backend", args.backend, BACKENDS)
    _check_choice("compute-unit", args.compute_unit, COMPUTE_UNITS)
    _check_choice("clock", args.clock, CLOCKS)
    _check_choice("stat", args.stat, STATS)
    if args.clock == "cpu" and (args.threads != 1 or args.backend == "coreml"):
        raise UsageError("--clock cpu: needs --threads 1 and a CPU backend (torch, onnxruntime)")
    if args.out and not args.out.endswith(".csv"):
        raise UsageError(f"--out {args.out!r}: must be a .csv file")
    if args.out:
        check_writable_file(args.out, "--out")
    if args.backend == "coreml":
        for a in args.arch:
            if not a.endswith(".mlpackage"):
                raise UsageError(f"{a!r}: the coreml backend times .mlpackage files (make one "
                                 "with `latency export`)")


def _measure_target(args: argparse.Namespace, ref: str):
    """What a backend times: a .mlpackage (coreml) or .onnx file (onnxruntime) as given, else
    the resolved architecture (ArchSpec or timm name)."""
    if args.backend == "coreml" or (args.backend == "onnxruntime" and ref.endswith(".onnx")):
        if args.backend == "onnxruntime" and not os.path.isfile(ref):
            raise NotFoundError(f"{ref}: no such .onnx file")
        return ref
    return _resolve_arch(ref, args.resolution)


def _time_once(args: argparse.Namespace, a) -> dict:
    """One round of one model: --warmup untimed and --runs timed runs."""
    if args.backend == "torch":
        return backends.measure_torch_cpu(a, args.resolution, args.threads, args.warmup,
                                          args.runs)
    if args.backend == "onnxruntime":
        return backends.measure_onnxruntime_cpu(a, args.resolution, args.threads, args.warmup,
                                                args.runs)
    return backends.measure_coreml(a, args.compute_unit, args.warmup, args.runs)


# the keys of backends' statistics (backends._stats) per --clock: median, min, quartiles
_STAT_KEYS = {"wall": ("latency_ms", "min_ms", "p25_ms", "p75_ms"),
              "cpu": ("cpu_ms", "cpu_min_ms", "cpu_p25_ms", "cpu_p75_ms")}


def _latency_of(args: argparse.Namespace, r: dict) -> dict:
    """``latency_ms`` (--stat of the --clock times) and its quartiles, from a result's own
    statistics (one round's, or the pooled rounds' of ``backends.pool_rounds``)."""
    median, low, q25, q75 = (r[k] for k in _STAT_KEYS[args.clock])
    return {**r, "latency_ms": low if args.stat == "min" else median, "p25_ms": q25,
            "p75_ms": q75}


def _measure_all(args: argparse.Namespace, refs: list[str], archs: list) -> list[dict]:
    """Every model in --rounds interleaved rounds, a fresh (seeded) order each round; per model
    the rounds' runs pooled."""
    per: list[list[dict]] = [[] for _ in archs]
    order = list(range(len(archs)))
    rng = random.Random(0)
    for k in range(args.rounds):
        for i in order:
            per[i].append(_time_once(args, archs[i]))
            if args.rounds == 1:
                print(_measured_line(args, refs[i], _latency_of(args, per[i][0])), flush=True)
        if args.rounds > 1:
            print(f"round {k + 1}/{args.rounds} done ({backends.load_info()})", flush=True)
            rng.shuffle(order)
    out = [_latency_of(args, backends.pool_rounds(p)) for p in per]
    if args.rounds > 1:
        for ref, r in zip(refs, out):
            print(_measured_line(args, ref, r))
    return out


def _measured_line(args: argparse.Namespace, ref: str, r: dict) -> str:
    rounds = f" in {args.rounds} rounds" if args.rounds > 1 else ""
    return (f"{ref}: {r['latency_ms']:.3f} ms ({args.stat} {args.clock} time; IQR "
            f"{r['p25_ms']:.3f}-{r['p75_ms']:.3f}, {r['runs']} runs{rounds}, {args.backend})")


def _measured_record(args: argparse.Namespace, ref: str, a, r: dict) -> Record:
    spec = a.canonical_json() if hasattr(a, "canonical_json") else ""
    is_file = args.backend == "coreml" or str(a).endswith(".onnx")
    timm_name = a if isinstance(a, str) and not spec and not is_file else ""
    return Record(model=ref, device=args.record_device or r["device"], latency_ms=r["latency_ms"],
                  spec=spec, timm_name=timm_name, os=r["os"], runtime=r["runtime"],
                  compute_unit=r["compute_unit"], resolution=r["resolution"],
                  std_ms=round(r["p75_ms"] - r["p25_ms"], 4),
                  source=f"measured, {args.stat} {args.clock} time of {r['runs']} runs "
                         f"({args.rounds} interleaved round(s) of {args.runs} after "
                         f"{args.warmup} warm-up), "
                         f"{r.get('threads', '')} threads, {backends.load_info()}")


def _onnx_file(a, path: str, resolution: int | None) -> str:
    export.export_onnx(a, path, resolution)
    return path


def _measure(args: argparse.Namespace) -> int:
    _check_measure(args)
    # the records already there, read before measuring: a bad file fails before the work
    old = read_records(args.out) if args.out and os.path.exists(args.out) else []
    archs = [_measure_target(args, a) for a in args.arch]
    if args.backend in ("torch", "onnxruntime"):
        backends.process_warmup(2.0, args.threads)
    with tempfile.TemporaryDirectory(prefix="latency-onnx-") as tmp:
        # onnxruntime times a file: a model is exported once, not once per round
        timed = [_onnx_file(a, os.path.join(tmp, f"{i}.onnx"), args.resolution)
                 if args.backend == "onnxruntime" and not str(a).endswith(".onnx") else a
                 for i, a in enumerate(archs)]
        results = _measure_all(args, args.arch, timed)
    records = [_measured_record(args, ref, a, r) for ref, a, r in zip(args.arch, archs, results)]
    if args.out:
        write_records(old + records, args.out)
        print(f"appended {len(records)} record(s) to {args.out}")
    return 0


def _check_calibration_target(args: argparse.Namespace) -> str:
    """The file a calibration will be written to; refuse a shipped name unless asked to."""
    name = args.latency_device
    if not DEVICE_NAME.fullmatch(name):
        raise UsageError(f"--latency-device {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    if args.out and not args.out.endswith(".json"):
        raise UsageError(f"--out {args.out!r}: must be a .json file")
    shipped = shipped_devices()
    if args.out is None and name in shipped and not args.shadow_shipped:
        raise UsageError(f"--latency-device {name!r} is a shipped calibration ({shipped[name]}); "
                         "pick another name, or pass --shadow-shipped to replace it for every "
                         "command")
    out = args.out or user_calibration_path(name)
    # the default path is in the user directory: name what set it, not an option not given
    what = "--out" if args.out else (f"${USER_DIR_ENV}" if os.environ.get(USER_DIR_ENV) else
                                     "the user calibration file")
    check_writable_file(out, what)
    return out


def _featurised_input(args: argparse.Namespace, device: str | None
                      ) -> tuple[Loaded, np.ndarray]:
    """The records file of ``args`` read and featurised, saying what it read how (paper names
    before the conversions they cause), what each conversion is, and what was skipped."""
    loaded = load_user_records(args.records, device=device, match=args.match,
                               skip_unknown=args.skip_unknown)
    for line in loaded.read_as:
        print(f"warning: {line}", file=sys.stderr, flush=True)
    loaded, F = featurise(loaded, args.skip_unknown, log=_progress)
    for line in loaded.skipped + loaded.merged:
        print(f"warning: {line}", file=sys.stderr)
    return loaded, F


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _calibrate(args: argparse.Namespace) -> int:
    out = _check_calibration_target(args)
    name = args.latency_device
    prior = _load_prior(args.prior)
    loaded, F = _featurised_input(args, name)
    models = {r.identity() for r in loaded.records}
    if len(models) < 2:
        raise UsageError(f"{args.records}: calibration needs at least 2 distinct measured "
                         f"models, found {len(models)}")
    p = fit(loaded.records, name, prior=prior, features=F,
            meta={"records_file": os.path.abspath(args.records)})
    shadowed = shipped_devices().get(name) if args.out is None else None
    p.save(out)
    if shadowed:
        print(f"WARNING: {out} now SHADOWS the shipped calibration {shadowed}: every "
              f"--latency-device {name} (and searches using it) get yours. Delete {out} to "
              "restore the shipped one.", file=sys.stderr)
    held = "leave-one-family-out" if p.meta["held_out"] == "families" else "leave-one-out"
    print(f"calibrated {name} on {p.meta['n_records']} records (prior {p.meta['prior']}, "
          f"fit {p.meta['candidate']}): {held} MAPE {100 * p.meta['loo_mape']:.1f}%, "
          f"+-2 sigma coverage {100 * p.meta['loo_coverage_2sigma']:.0f}%, saved {out} "
          f"(version {p.version})")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if args.loo and args.few_shot is not None:
        raise UsageError("--loo and --few-shot: choose one")
    if args.few_shot is None and (args.draws is not None or args.seed is not None):
        raise UsageError("--draws / --seed: only with --few-shot N")
    prior = _load_prior(args.prior) if args.loo or args.few_shot is not None else None
    loaded, F = _featurised_input(args, args.latency_device)
    records = loaded.records
    n_rows = len(records)
    need = 3 if args.loo else 1 if args.few_shot is None else max(args.few_shot) + 2
    if n_rows < need:
        what = f" for --few-shot {max(args.few_shot)} (N + 2: some rows must be left to " \
            "predict)" if args.few_shot is not None else ""
        raise UsageError(f"{args.records}: too few featurisable records ({n_rows}; need "
                         f"{need}{what})")
    y = np.array([r.latency_ms for r in records])
    families = [r.family() for r in records]
    if args.few_shot is not None:
        draws = FEW_SHOT_DRAWS if args.draws is None else args.draws
        prior_name = "generic" if prior is None else prior.device
        curve = {}
        for i, n in enumerate(sorted(set(args.few_shot))):
            curve[n] = summarise(transfer(F, y, prior, n, draws, args.seed or 0, families))
            print(("\n" if i else "") + render_summary(
                f"few-shot calibration: {n} of {n_rows} rows calibrate (prior "
                f"{prior_name}), the other {n_rows - n} are predicted; "
                f"{draws} random draws (median, worst) + the `latency suggest` set", curve[n]))
        if len(curve) > 1:
            print("\n" + render_curve(curve))
        return 0
    if args.loo:
        pred, sd = loo_predictions(F, y, prior, families)
        why = ["" for _ in records]
    else:
        predictor = load_predictor(args.latency_device)
        pred, sd = predictor.predict_features(F)
        why = predictor.extrapolation(F)
    rel = (pred - y) / y
    for i, r in enumerate(records):
        print(f"{r.model:<40} measured {y[i]:8.3f}  predicted {pred[i]:8.3f} +- "
              f"{sd[i]:7.3f}  error {100 * rel[i]:+6.1f}%{'  [extrapolates: ' + why[i] + ']' if why[i] else ''}")
    tau = kendall_tau(pred, y) if n_rows > 1 else float("nan")
    print(f"n={n_rows}  MAPE {100 * np.mean(np.abs(rel)):.1f}%  within 10%: "
          f"{100 * np.mean(np.abs(rel) <= 0.1):.0f}%  Kendall tau {tau:.3f}  within +-2 sigma: "
          f"{100 * np.mean(within_interval(pred, sd, y)):.0f}%"
          f"{'  (leave-one-out)' if args.loo else ''}")
    return 0


def _check_export(args: argparse.Namespace) -> None:
    _check_choice("format", args.format, EXPORT_FORMATS)
    check_writable_dir(os.path.dirname(os.path.abspath(args.out)), "--out", shown=args.out)
    if args.format == "coreml":
        _check_choice("precision", args.precision, ("fp16", "fp32"))
        if not args.out.endswith(".mlpackage"):
            raise UsageError(f"--out {args.out!r}: CoreML export needs a .mlpackage path")
    elif not args.out.endswith(".onnx"):  # --opset: checked by its parse step (11 or 17)
        raise UsageError(f"--out {args.out!r}: ONNX export needs a .onnx path")


def _records_line(arch: str, info: dict) -> str:
    """A records-CSV line to complete after measuring on the phone (docs/latency.md)."""
    buf = io.StringIO()
    csv.writer(buf).writerow([arch, info.get("spec", ""), "" if info.get("spec") else arch,
                              "<device, e.g. iPhone 15 Pro>", "<iOS version>",
                              "CoreML (Xcode performance report)", "ALL", info["resolution"],
                              "<Prediction median ms>", "", "<date, your name>"])
    return buf.getvalue().strip()


def _export(args: argparse.Namespace) -> int:
    _check_export(args)
    a = _resolve_arch(args.arch, args.resolution)
    if args.format == "coreml":
        info = export.export_coreml(a, args.out, args.resolution, args.precision)
        if args.features:
            f = aggregate(coreml_ops(mlpackage=args.out))
            info["features"] = {n: round(float(v), 5) for n, v in zip(FEATURE_NAMES, f)}
    else:
        info = export.export_onnx(a, args.out, args.resolution, args.opset)
    print(json.dumps(info, indent=1, default=str))
    if args.format == "coreml":
        print("records CSV line to fill in (columns: model,spec,timm_name,device,os,runtime,"
              "compute_unit,resolution,latency_ms,std_ms,source):")
        print(_records_line(args.arch, info))
    return 0


def _devices(args: argparse.Namespace) -> int:
    for name, f in sorted(device_files().items()):
        p = load_predictor(f.path)
        n = p.meta.get("n_records", "?")
        print(f"{name}{' (default)' if name == DEFAULT_DEVICE else ''}: {f.source} {f.path}; "
              f"version {p.version}, {n} records, leave-one-out MAPE "
              f"{100 * p.meta.get('loo_mape', float('nan')):.1f}%")
        if f.shadows:
            print(f"    SHADOWS the shipped {f.shadows} (delete {f.path} to use the shipped one)")
    return 0


def _suggest(args: argparse.Namespace) -> int:
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out!r}: exists and is not a directory")
    check_writable_dir(args.out, "--out")
    prior = (LatencyPredictor("generic-ane", prior_coef(None)) if args.latency_device == "generic"
             else load_predictor(args.latency_device))
    cands, F = candidate_pool(args.pool, args.seed)
    if args.n > len(cands):   # before any export: each is a CoreML conversion
        n_timm = sum(c.spec is None for c in cands)
        raise UsageError(f"--n {args.n}: allowed 1..{len(cands)}, the candidates (the 4 presets, "
                         f"{len(cands) - 4 - n_timm} space members of --pool {args.pool}, "
                         f"{n_timm} timm models)")
    X = design_rows(F, prior)
    rows = choose_rows(X, args.n)
    chosen = [cands[i] for i in rows]
    q = design_quality(X, rows)
    packages = {}
    if not args.no_export:
        for c in chosen:
            path = os.path.join(args.out, f"{c.name}.mlpackage")
            export.export_coreml(c.spec if c.spec is not None else c.timm_name, path,
                                 c.resolution)
            packages[c.name] = f"{c.name}.mlpackage"
            print(f"exported {path}", flush=True)
    csv_path = write_template(args.out, chosen, packages)
    ms = prior.predict_features(F[rows])[0]
    for c, m in zip(chosen, ms):
        print(f"{c.name:<28} predicted on {prior.device}: {m:7.3f} ms")
    print(f"{len(chosen)} models (of {len(cands)} candidates; design log det {q['log_det']:.1f}, "
          f"mean predictive sd {q['mean_pred_sd']:.3f} in log latency): fill in latency_ms in "
          f"{csv_path}, then `run_search.py latency calibrate --records {csv_path} "
          "--latency-device <your-phone>`")
    return 0
