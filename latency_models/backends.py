"""Latency measurement backends: torch CPU eager, onnxruntime CPU, CoreML on macOS.

Protocol (every backend): batch 1, fixed thread count, warm-up runs, then ``runs`` timed runs;
the result carries the median, quartiles and spread of the timed runs. A fresh process runs its
first models several times slower than later ones (allocator, thread pool, oneDNN kernel caches),
so ``process_warmup`` should run once before the first measurement of a process, and comparisons
should interleave models across repeated rounds rather than time each model once.

Heavy: imports torch (onnxruntime and coremltools load on first use).
"""
from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from typing import Any, Callable

import numpy as np
import torch

from search_space.errors import NotFoundError, UsageError
from search_space.lazy import lazy_import
from search_space.spec import PRESETS

from .coreml import COMPUTE_UNITS
from .export import export_onnx
from .models import resolve_model

ort = lazy_import("onnxruntime")
ct = lazy_import("coremltools")


class PlatformError(UsageError):
    """This backend cannot run on this machine (the message says where it can)."""


def _stats(times_s: list[float], cpu_s: list[float] | None = None) -> dict[str, Any]:
    ms = np.asarray(times_s) * 1e3
    q25, med, q75 = np.percentile(ms, [25, 50, 75])
    out = {"latency_ms": float(med), "p25_ms": float(q25), "p75_ms": float(q75),
           "min_ms": float(ms.min()), "std_ms": float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
           "runs": len(ms), "times_ms": [round(float(t), 4) for t in ms]}
    if cpu_s is not None:
        cpu = np.asarray(cpu_s) * 1e3
        out.update(cpu_ms=float(np.median(cpu)), cpu_p25_ms=float(np.percentile(cpu, 25)),
                   cpu_p75_ms=float(np.percentile(cpu, 75)), cpu_min_ms=float(cpu.min()),
                   cpu_times_ms=[round(float(t), 4) for t in cpu])
    return out


def time_callable(fn: Callable[[], Any], warmup: int = 3, runs: int = 10) -> dict[str, Any]:
    """Wall time (perf_counter) and the calling thread's CPU time of each timed run.

    With a single inference thread the CPU time is the latency the model would have on an idle
    machine: on a shared machine wall time also measures how long the scheduler kept us waiting.
    """
    if runs < 1 or warmup < 0:
        raise UsageError(f"runs={runs}, warmup={warmup}: need runs >= 1 and warmup >= 0")
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        cpu.append(time.thread_time() - c0)
        times.append(time.perf_counter() - t0)
    return _stats(times, cpu)


def pool_rounds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several rounds of timing the same model (interleaved with other models,
    so a slow spell of a shared machine falls on one of its rounds, not all): every round's
    timed runs pooled and the statistics recomputed over them; the other fields from the first
    round; ``rounds`` says how many."""
    if not results:
        raise ValueError("pool_rounds: no rounds")
    out = dict(results[0])
    times = np.concatenate([r["times_ms"] for r in results]) / 1e3
    cpu = (np.concatenate([r["cpu_times_ms"] for r in results]) / 1e3
           if all("cpu_times_ms" in r for r in results) else None)
    out.update(_stats(list(times), None if cpu is None else list(cpu)), rounds=len(results))
    return out


def load_info() -> str:
    """The machine's load averages (measurements on a shared machine should carry them)."""
    try:
        return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on Windows
        return "load average unknown"


# -- torch CPU eager -------------------------------------------------------------------------------
def set_threads(threads: int) -> None:
    if threads < 1:
        raise UsageError(f"threads={threads}: need >= 1")
    torch.set_num_threads(threads)


def process_warmup(seconds: float = 3.0, threads: int = 1) -> None:
    """Run a mid-size SwiftFormer for a few seconds so later timings are steady-state."""
    set_threads(threads)
    m, _, _ = resolve_model(PRESETS["XS"].replace(resolution=160))
    x = torch.randn(1, 3, 160, 160)
    end = time.perf_counter() + seconds
    with torch.inference_mode():
        while time.perf_counter() < end:
            m(x)


def measure_torch_cpu(model_or_spec: Any, resolution: int | None = None, threads: int = 1,
                      warmup: int = 3, runs: int = 10) -> dict[str, Any]:
    """Eager-mode torch CPU latency, batch 1, ``threads`` intra-op threads."""
    set_threads(threads)
    model, res, name = resolve_model(model_or_spec, resolution)
    x = torch.randn(1, 3, res, res)
    with torch.inference_mode():
        out = time_callable(lambda: model(x), warmup, runs)
    out.update(model=name, resolution=res, runtime=f"torch {torch.__version__} eager",
               compute_unit="CPU", threads=threads, device=f"{platform.machine()} CPU "
               f"({platform.processor() or platform.system()})", os=platform.platform())
    return out


# -- onnxruntime CPU ---------------------------------------------------------------------------------
def time_onnx_file(path: str, threads: int, warmup: int, runs: int) -> dict[str, Any]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = time_callable(lambda: sess.run(None, {inp.name: x}), warmup, runs)
    out.update(resolution=int(shape[-1]), runtime=f"onnxruntime {ort.__version__}",
               compute_unit="CPU", threads=threads, os=platform.platform(),
               device=f"{platform.machine()} CPU")
    return out


def measure_onnxruntime_cpu(model_or_path: Any, resolution: int | None = None, threads: int = 1,
                            warmup: int = 3, runs: int = 10) -> dict[str, Any]:
    """onnxruntime CPUExecutionProvider latency of an .onnx file (or of a model, exported first)."""
    if isinstance(model_or_path, str) and model_or_path.endswith(".onnx"):
        if not os.path.isfile(model_or_path):
            raise NotFoundError(f"{model_or_path}: no such .onnx file")
        out = time_onnx_file(model_or_path, threads, warmup, runs)
        out["model"] = os.path.basename(model_or_path)
        return out
    with tempfile.TemporaryDirectory(prefix="latency-onnx-") as tmpdir:   # scratch export
        path = os.path.join(tmpdir, "model.onnx")
        export_onnx(model_or_path, path, resolution)
        out = time_onnx_file(path, threads, warmup, runs)
    out["model"] = str(model_or_path)
    return out


# -- CoreML (macOS only) -----------------------------------------------------------------------------
def measure_coreml(mlpackage: str, compute_unit: str = "ALL", warmup: int = 5,
                   runs: int = 50) -> dict[str, Any]:
    """Time ``MLModel.predict`` on a Mac (compute units ALL / CPU_AND_NE / ...).

    Mac timings are an approximation of an iPhone's: for the phone itself use Xcode's Core ML
    performance report and import the numbers (notes/latency.md, "Measuring on an iPhone").
    """
    if compute_unit not in COMPUTE_UNITS:
        raise UsageError(f"compute_unit={compute_unit!r}: allowed {COMPUTE_UNITS}")
    if platform.system() != "Darwin":
        raise PlatformError(
            f"CoreML timing needs macOS (this is {platform.system()}): coremltools can convert and "
            "save models here but cannot run them. Run `run_search.py latency measure --backend "
            "coreml` on a Mac, or measure on the iPhone with Xcode's Core ML performance report "
            "and import the CSV (see notes/latency.md).")
    if not os.path.exists(mlpackage):
        raise NotFoundError(f"{mlpackage}: no such .mlpackage")
    model = ct.models.MLModel(mlpackage, compute_units=getattr(ct.ComputeUnit, compute_unit))
    desc = model.get_spec().description.input[0]
    shape = tuple(desc.type.multiArrayType.shape)
    x = {desc.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    out = time_callable(lambda: model.predict(x), warmup, runs)
    out.update(model=os.path.basename(mlpackage), resolution=int(shape[-1]),
               runtime=f"CoreML via coremltools {ct.__version__} MLModel.predict",
               compute_unit=compute_unit, os=platform.platform(), device=platform.machine())
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)
