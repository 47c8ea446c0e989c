"""CLI: ``run_search.py latency predict|measure|calibrate|evaluate|export|devices``.

Module-level imports stay light; torch / coremltools / onnxruntime load inside handlers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

BACKENDS = ("torch", "onnxruntime", "coreml")
EXPORT_FORMATS = ("coreml", "onnx")


def register(sub) -> None:
    p = sub.add_parser("latency", help="predict, measure and calibrate on-device latency",
                       description="Latency prediction for SwiftFormer specs and CoreML-"
                                   "convertible models (per-op cost model, per-device calibration).")
    lsub = p.add_subparsers(dest="latency_command", required=True)

    q = lsub.add_parser("predict", help="predicted latency (ms +- std) of architectures")
    q.add_argument("arch", nargs="+", help="preset (XS/S/L1/L3), spec JSON file, inline JSON, "
                                           "or timm model name")
    q.add_argument("--device", default=None, help="calibrated device name or calibration file")
    q.add_argument("--resolution", type=int, default=None)
    q.add_argument("--breakdown", action="store_true", help="also print ms per cost term")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_predict)

    m = lsub.add_parser("measure", help="measure latency here (torch / onnxruntime CPU; CoreML on macOS)")
    m.add_argument("arch", nargs="+")
    m.add_argument("--backend", default="torch", help=f"one of {BACKENDS}")
    m.add_argument("--resolution", type=int, default=None)
    m.add_argument("--threads", type=int, default=1)
    m.add_argument("--warmup", type=int, default=5)
    m.add_argument("--runs", type=int, default=30)
    m.add_argument("--compute-unit", default="ALL", help="CoreML: ALL, CPU_AND_NE, CPU_AND_GPU, CPU_ONLY")
    m.add_argument("--clock", default="wall", help="wall: median wall time; cpu: median CPU time "
                   "of the inference thread (threads=1 only; robust on a shared machine)")
    m.add_argument("--device-name", default=None, help="device column of the records (default: host)")
    m.add_argument("--out", default=None, help="append records to this CSV")
    m.set_defaults(func=_measure)

    c = lsub.add_parser("calibrate", help="fit a device's predictor from measurement records")
    c.add_argument("--records", required=True, help="CSV or JSON records (notes/latency.md)")
    c.add_argument("--device", required=True, help="name of the calibrated device (letters, "
                                                   "digits, '-', '_', '.')")
    c.add_argument("--match", default=None, help="use only records whose device column contains this")
    c.add_argument("--prior", default=None, help="reference device for few-shot fits "
                                                 "(default: the default device; 'generic' = hand-set)")
    c.add_argument("--out", default=None, help="calibration file (default: user dir/<device>.json)")
    c.set_defaults(func=_calibrate)

    e = lsub.add_parser("evaluate", help="accuracy of a predictor on measurement records")
    e.add_argument("--records", required=True)
    e.add_argument("--device", default=None, help="predictor to evaluate (default: the default device)")
    e.add_argument("--match", default=None)
    e.add_argument("--loo", action="store_true", help="leave-one-out: recalibrate on the other "
                                                      "records for each row instead")
    e.add_argument("--prior", default=None, help="with --loo: reference device")
    e.set_defaults(func=_evaluate)

    x = lsub.add_parser("export", help="export an architecture to CoreML (.mlpackage) or ONNX")
    x.add_argument("arch")
    x.add_argument("--format", default="coreml", help=f"one of {EXPORT_FORMATS}")
    x.add_argument("--out", required=True, help=".mlpackage or .onnx path")
    x.add_argument("--resolution", type=int, default=None)
    x.add_argument("--precision", default="fp16", help="CoreML: fp16 or fp32")
    x.add_argument("--opset", type=int, default=17, help="ONNX: 17 or 11")
    x.add_argument("--features", action="store_true", help="CoreML: print the per-op feature sums")
    x.set_defaults(func=_export)

    d = lsub.add_parser("devices", help="list calibrated devices")
    d.set_defaults(func=_devices)


# -- helpers ------------------------------------------------------------------------------------
def _predictor(device: str | None):
    from . import DEFAULT_DEVICE, load_predictor

    return load_predictor(device or DEFAULT_DEVICE)


def _resolve_arch(ref: str, resolution: int | None = None):
    """An ArchSpec for presets/JSON, else the timm name (validated without building it)."""
    from search_space.spec import PRESETS, load_spec

    if ref.upper() in PRESETS or ref.lstrip().startswith("{") or os.path.isfile(ref):
        spec = load_spec(ref)
        return spec.replace(resolution=resolution) if resolution else spec
    if ref.endswith(".json"):
        raise FileNotFoundError(f"{ref}: no such spec file")
    import timm

    if ref not in timm.list_models():
        raise ValueError(f"architecture {ref!r}: not a preset (XS/S/L1/L3), spec JSON file, inline "
                         "JSON or timm model name")
    return ref


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"--{name} {value!r}: allowed {list(allowed)}")


def _check_positive(name: str, value: int | None, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise ValueError(f"--{name} {value}: must be >= {minimum}")


def _select(records, match: str | None):
    if match is None:
        return records
    sel = [r for r in records if match.lower() in r.device.lower()]
    if not sel:
        devices = sorted({r.device for r in records})
        raise ValueError(f"--match {match!r}: no record's device contains it; devices: {devices}")
    return sel


def _load_prior(name: str | None):
    if name == "generic":
        return None
    return _predictor(name)


# -- handlers ------------------------------------------------------------------------------------
def _predict(args: argparse.Namespace) -> int:
    _check_positive("resolution", args.resolution, 32)
    archs = [_resolve_arch(a, args.resolution) for a in args.arch]
    pred = _predictor(args.device)
    rows = []
    for ref, a in zip(args.arch, archs):
        ms, sd = pred.predict(a if not isinstance(a, str) else a)
        row = {"arch": ref, "device": pred.device, "latency_ms": round(ms, 4), "std_ms": round(sd, 4)}
        if args.breakdown:
            row["breakdown_ms"] = {k: round(v, 4) for k, v in pred.breakdown(a).items()}
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            print(f"{r['arch']}: {r['latency_ms']:.3f} ms +- {r['std_ms']:.3f} on {r['device']} "
                  f"(calibration {pred.version})")
            for k, v in r.get("breakdown_ms", {}).items():
                print(f"    {k:<14} {v:8.4f} ms")
    return 0


def _measure(args: argparse.Namespace) -> int:
    _check_choice("backend", args.backend, BACKENDS)
    _check_positive("threads", args.threads)
    _check_positive("runs", args.runs)
    _check_positive("warmup", args.warmup, 0)
    _check_positive("resolution", args.resolution, 32)
    from .backends import COMPUTE_UNITS, load_info

    _check_choice("compute-unit", args.compute_unit, COMPUTE_UNITS)
    _check_choice("clock", args.clock, ("wall", "cpu"))
    if args.clock == "cpu" and (args.threads != 1 or args.backend == "coreml"):
        raise ValueError("--clock cpu: needs --threads 1 and a CPU backend (torch, onnxruntime)")
    if args.out and not args.out.endswith(".csv"):
        raise ValueError(f"--out {args.out!r}: must be a .csv file")
    if args.backend == "coreml":
        for a in args.arch:
            if not a.endswith(".mlpackage"):
                raise ValueError(f"{a!r}: the coreml backend times .mlpackage files (make one with "
                                 "`latency export`)")
    archs = args.arch if args.backend == "coreml" else [_resolve_arch(a, args.resolution)
                                                         for a in args.arch]
    from .backends import measure_coreml, measure_onnxruntime_cpu, measure_torch_cpu, process_warmup
    from .records import Record, read_records, write_records

    if args.backend in ("torch", "onnxruntime"):
        process_warmup(2.0, args.threads)
    records = []
    for ref, a in zip(args.arch, archs):
        if args.backend == "torch":
            r = measure_torch_cpu(a, args.resolution, args.threads, args.warmup, args.runs)
        elif args.backend == "onnxruntime":
            r = measure_onnxruntime_cpu(a, args.resolution, args.threads, args.warmup, args.runs)
        else:
            from .backends import PlatformError

            try:
                r = measure_coreml(a, args.compute_unit, args.warmup, args.runs)
            except PlatformError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
        if args.clock == "cpu":
            r["latency_ms"], r["p25_ms"], r["p75_ms"] = r["cpu_ms"], r["cpu_p25_ms"], r["cpu_p75_ms"]
        spec = a.canonical_json() if hasattr(a, "canonical_json") else ""
        rec = Record(model=ref, device=args.device_name or r["device"], latency_ms=r["latency_ms"],
                     spec=spec, timm_name=a if isinstance(a, str) and not spec and
                     args.backend != "coreml" else "", os=r["os"], runtime=r["runtime"],
                     compute_unit=r["compute_unit"], resolution=r["resolution"],
                     std_ms=round(r["p75_ms"] - r["p25_ms"], 4),
                     source=f"measured, median {args.clock} time of {r['runs']} runs after "
                            f"{args.warmup} warm-up, "
                            f"{r.get('threads', '')} threads, {load_info()}")
        records.append(rec)
        print(f"{ref}: {r['latency_ms']:.3f} ms (IQR {r['p25_ms']:.3f}-{r['p75_ms']:.3f}, "
              f"{r['runs']} runs, {args.backend})")
    if args.out:
        old = read_records(args.out) if os.path.exists(args.out) else []
        write_records(old + records, args.out)
        print(f"appended {len(records)} record(s) to {args.out}")
    return 0


def _valid_device_name(name: str) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise ValueError(f"--device {name!r}: use 1-64 letters, digits, '.', '_' or '-'")


def _calibrate(args: argparse.Namespace) -> int:
    from . import user_dir
    from .predictor import fit
    from .records import read_records

    _valid_device_name(args.device)
    if args.out and not args.out.endswith(".json"):
        raise ValueError(f"--out {args.out!r}: must be a .json file")
    records = _select(read_records(args.records), args.match)
    if len(records) < 2:
        raise ValueError(f"{args.records}: calibration needs at least 2 records, found {len(records)}")
    prior = _load_prior(args.prior)
    p = fit(records, args.device, prior=prior, meta={"records_file": os.path.abspath(args.records)})
    if len(p.meta["records"]) < 2:
        raise ValueError(f"{args.records}: fewer than 2 records could be featurised: {p.meta['skipped']}")
    out = args.out or os.path.join(user_dir(), f"{args.device}.json")
    p.save(out)
    for s in p.meta["skipped"]:
        print(f"skipped {s}", file=sys.stderr)
    print(f"calibrated {args.device} on {p.meta['n_records']} records (prior {p.meta['prior']}, "
          f"lambda {p.meta['lambda_']}): leave-one-out MAPE {100 * p.meta['loo_mape']:.1f}%, "
          f"saved {out} (version {p.version})")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from .predictor import featurize_records, fit_features
    from .records import read_records

    records = _select(read_records(args.records), args.match)
    F, errs = featurize_records(records)
    ok = [i for i, e in enumerate(errs) if e is None]
    if len(ok) < (3 if args.loo else 1):
        raise ValueError(f"{args.records}: too few featurisable records ({len(ok)})")
    y = np.array([records[i].latency_ms for i in ok])
    Fk = F[ok]
    if args.loo:
        prior = _load_prior(args.prior)
        pred = np.empty(len(ok))
        for j in range(len(ok)):
            keep = np.arange(len(ok)) != j
            pred[j] = fit_features(Fk[keep], y[keep], "loo", prior).predict_features(Fk[j:j + 1])[0][0]
    else:
        pred = _predictor(args.device).predict_features(Fk)[0]
    from scipy.stats import kendalltau

    rel = (pred - y) / y
    for i, j in enumerate(ok):
        print(f"{records[j].model:<40} measured {y[i]:8.3f}  predicted {pred[i]:8.3f}  "
              f"error {100 * rel[i]:+6.1f}%")
    for i, e in enumerate(errs):
        if e is not None:
            print(f"{records[i].model:<40} skipped: {e}")
    tau = kendalltau(pred, y).statistic if len(ok) > 1 else float("nan")
    print(f"n={len(ok)}  MAPE {100 * np.mean(np.abs(rel)):.1f}%  within 10%: "
          f"{100 * np.mean(np.abs(rel) <= 0.1):.0f}%  Kendall tau {tau:.3f}"
          f"{'  (leave-one-out)' if args.loo else ''}")
    return 0


def _export(args: argparse.Namespace) -> int:
    _check_choice("format", args.format, EXPORT_FORMATS)
    _check_positive("resolution", args.resolution, 32)
    if args.format == "coreml":
        _check_choice("precision", args.precision, ("fp16", "fp32"))
        if not args.out.endswith(".mlpackage"):
            raise ValueError(f"--out {args.out!r}: CoreML export needs a .mlpackage path")
    else:
        _check_choice("opset", args.opset, (11, 17))
        if not args.out.endswith(".onnx"):
            raise ValueError(f"--out {args.out!r}: ONNX export needs a .onnx path")
    a = _resolve_arch(args.arch, args.resolution)
    from .export import export_coreml, export_onnx

    if args.format == "coreml":
        info = export_coreml(a, args.out, args.resolution, args.precision)
        if args.features:
            from .coreml import coreml_ops
            from .features import FEATURE_NAMES, aggregate

            f = aggregate(coreml_ops(mlpackage=args.out))
            info["features"] = {n: round(float(v), 5) for n, v in zip(FEATURE_NAMES, f)}
    else:
        info = export_onnx(a, args.out, args.resolution, args.opset)
    print(json.dumps(info, indent=1, default=str))
    if args.format == "coreml":
        # A records-CSV line to complete after measuring on the phone (notes/latency.md).
        import csv
        import io

        buf = io.StringIO()
        csv.writer(buf).writerow([args.arch, info.get("spec", ""), "" if info.get("spec") else args.arch,
                                  "<device, e.g. iPhone 15 Pro>", "<iOS version>",
                                  "CoreML (Xcode performance report)", "ALL", info["resolution"],
                                  "<Prediction median ms>", "", "<date, your name>"])
        print("records CSV line to fill in (columns: model,spec,timm_name,device,os,runtime,"
              "compute_unit,resolution,latency_ms,std_ms,source):")
        print(buf.getvalue().strip())
    return 0


def _devices(args: argparse.Namespace) -> int:
    from . import DEFAULT_DEVICE, list_devices, load_predictor

    for d in list_devices():
        p = load_predictor(d)
        n = p.meta.get("n_records", "?")
        print(f"{d}{' (default)' if d == DEFAULT_DEVICE else ''}: version {p.version}, "
              f"{n} records, leave-one-out MAPE {100 * p.meta.get('loo_mape', float('nan')):.1f}%")
    return 0
