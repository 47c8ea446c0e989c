"""CoreML conversion (coremltools 9, ML program, iOS 16+) and per-op costs read from the program.

Conversion path: ``torch.export.export`` -> ``ExportedProgram.run_decompositions({})`` ->
``ct.convert``. coremltools 9 accepts ExportedPrograms directly; this is the path it recommends
for recent torch and it converts every SwiftFormer-family spec and the timm baselines we tried
(see notes/latency.md). ``torch.jit.trace`` is kept as a fallback (method="trace"), and "auto"
tries export first, then trace, and says which one worked.

Everything here takes a torch module or a timm model name (or a saved ``.mlpackage``). Specs of
the SwiftFormer family never need a conversion to be featurised (``latency_models.analytic``);
to export one, ``latency_models.export`` builds it first. Light to import: torch, timm and
coremltools load on first use, so the predictor can fall back on a conversion without making
``import latency_models`` heavy.

On Linux coremltools can convert and save but not run predictions; nothing here predicts.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import warnings
from typing import Any

import numpy as np

from search_space.errors import NotFoundError, UsageError
from search_space.io import atomic_directory
from search_space.lazy import is_loaded, lazy_import
from search_space.spec import ArchSpec

from .features import MIL_SKIP, OpCost, aggregate, make_op
from .timm_models import timm_model

torch = lazy_import("torch")
ct = lazy_import("coremltools")
milproto = lazy_import("coremltools.converters.mil.frontend.milproto.load")

PRECISIONS = ("fp16", "fp32")
METHODS = ("auto", "export", "trace")
# Where a CoreML model may run (coremltools' ComputeUnit names); measured on a Mac by backends.
COMPUTE_UNITS = ("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY")


def _coremltools():
    """coremltools, imported with its Linux-only proxy warnings and progress bars silenced."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    if not is_loaded(ct):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            getattr(ct, "convert")  # the first attribute access imports it
    return ct


def check_options(precision: str, method: str = "auto") -> None:
    """Reject a precision / capture method before any model is built."""
    if precision not in PRECISIONS:
        raise UsageError(f"precision={precision!r}: allowed {PRECISIONS}")
    if method not in METHODS:
        raise UsageError(f"method={method!r}: allowed {METHODS}")


def module_of(model: Any, resolution: int | None = None):
    """(eval-mode torch module, input resolution, name) of a torch module or timm model name."""
    if isinstance(model, str):
        m, res = timm_model(model, resolution)
        return m, res, model
    if isinstance(model, ArchSpec):
        raise TypeError("an ArchSpec is featurised analytically (latency_models.analytic); to "
                        "convert one, build it first (latency_models.models.resolve_model) or "
                        "use latency_models.export.export_coreml")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch module or timm model name, got "
                        f"{type(model).__name__}")
    res = resolution or getattr(getattr(model, "spec", None), "resolution", None) or 224
    return model.eval(), int(res), type(model).__name__


def _capture(model, x, method: str):
    """(source program for ct.convert, explicit inputs or None) by one capture method."""
    with torch.no_grad(), warnings.catch_warnings():
        # timm's EfficientFormer fills an attention-bias cache in forward: torch.export says
        # so; harmless here (the cache holds what the exported graph computes anyway)
        warnings.filterwarnings("ignore", message=r".*was assigned during export",
                                category=UserWarning)
        if method == "export":
            return torch.export.export(model, (x,)).run_decompositions({}), None
        return torch.jit.trace(model, x), [_coremltools().TensorType(name="x", shape=tuple(x.shape))]


def _first_line(e: Exception, limit: int) -> str:
    return str(e).splitlines()[0][:limit] if str(e) else ""


def convert_coreml(model: Any, resolution: int | None = None, precision: str = "fp16",
                   method: str = "auto", name: str | None = None, quiet: bool = False):
    """Convert a torch module or timm model name to an in-memory ``ct.models.MLModel`` (ML
    program, iOS16 target). Returns (mlmodel, info). ``quiet``: without coremltools' progress
    bars (a caller reading features says what it converts in one line instead)."""
    check_options(precision, method)
    ct_ = _coremltools()
    module, res, default_name = module_of(model, resolution)
    name = name or default_name
    x = torch.zeros(1, 3, res, res)
    errors = []
    for m in (("export", "trace") if method == "auto" else (method,)):
        try:
            src, inputs = _capture(module, x, m)
            kw: dict[str, Any] = dict(
                convert_to="mlprogram", minimum_deployment_target=ct_.target.iOS16,
                compute_precision=ct_.precision.FLOAT16 if precision == "fp16"
                else ct_.precision.FLOAT32)
            if inputs is not None:
                kw["inputs"] = inputs
            with warnings.catch_warnings(), contextlib.ExitStack() as stack:
                warnings.simplefilter("ignore")
                if quiet:   # tqdm writes its bars to sys.stderr; errors still raise
                    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
                mlmodel = ct_.convert(src, **kw)
            return mlmodel, dict(name=name, resolution=res, precision=precision, method=m)
        except Exception as e:  # noqa: BLE001 - report every path's failure together
            errors.append(f"{m}: {type(e).__name__}: {_first_line(e, 300)}")
    raise RuntimeError(f"CoreML conversion of {name} failed: " + " | ".join(errors))


def save_mlpackage(mlmodel, path: str) -> None:
    """Save an ``.mlpackage`` atomically (built under a temporary name beside ``path``, then
    renamed over it; an older export at ``path`` is replaced)."""
    with atomic_directory(path) as tmp:
        staged = tmp / "model.mlpackage"    # coremltools insists on the .mlpackage suffix
        mlmodel.save(str(staged))
        for child in staged.iterdir():
            os.replace(child, tmp / child.name)
        staged.rmdir()
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def load_program(path: str):
    """Read the MIL program of a saved .mlpackage (works on Linux; no model compilation)."""
    if not os.path.exists(path):
        raise NotFoundError(f"{path}: no such .mlpackage")
    ct_ = _coremltools()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlmodel = ct_.models.MLModel(path, skip_model_load=True)
    spec = mlmodel.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise UsageError(f"{path}: not an ML program (neuralnetwork models are not supported)")
    return milproto.load(spec, spec.specificationVersion, file_weights_dir=mlmodel.weights_dir)


# -- per-op costs of a program -------------------------------------------------------------------
def _numel(var) -> int:
    shape = getattr(var, "shape", None)
    if shape is None:
        return 1
    n = 1
    for s in shape:
        if not isinstance(s, (int, np.integer)):
            return 0  # symbolic dims do not occur with our fixed input shapes
        n *= int(s)
    return n


_WEIGHT_KEYS = {"weight", "bias", "gamma", "beta", "mean", "variance", "x", "y"}


def _input_elems(op) -> tuple[int, int]:
    """(activation elements read, constant elements read) of one MIL op."""
    in_e = w_e = 0
    for key, v in op.inputs.items():
        for var in (v if isinstance(v, (list, tuple)) else [v]):
            if not hasattr(var, "shape"):
                continue
            if getattr(var, "val", None) is not None:
                # Constant tensors: count real data (weights, scales), not shape params.
                if key in _WEIGHT_KEYS and var.shape:
                    w_e += _numel(var)
                elif key in _WEIGHT_KEYS and op.op_type not in ("conv", "linear"):
                    w_e += 1
            else:
                in_e += _numel(var)
    return in_e, w_e


def _macs(op, in_e: int, out_e: int) -> int:
    t = op.op_type
    if t in ("conv", "conv_transpose"):
        wshape = op.inputs["weight"].shape          # (Cout, Cin/groups, kh, kw)
        k = int(np.prod(wshape[1:]))
        return (out_e if t == "conv" else _numel(op.inputs["x"])) * k
    if t == "linear":
        return out_e * int(op.inputs["weight"].shape[-1])
    if t == "matmul":
        x = op.inputs["x"]
        tx = bool(op.inputs["transpose_x"].val) if "transpose_x" in op.inputs else False
        kdim = x.shape[-2] if tx else x.shape[-1]
        return out_e * int(kdim)
    if t == "einsum":
        return int(np.sqrt(float(max(in_e, 1)) * out_e))  # rough; rare in our models
    if t == "scaled_dot_product_attention":
        q = op.inputs["query"].shape
        kv = op.inputs["key"].shape
        return 2 * int(np.prod(q)) * int(kv[-2])
    return 0


def _kernel_groups(op) -> tuple[int, int]:
    if op.op_type not in ("conv", "conv_transpose"):
        return 0, 1
    kernel = int(np.prod(op.inputs["weight"].shape[2:]))
    g = op.inputs.get("groups")
    return kernel, (int(g.val) if g is not None and g.val is not None else 1)


def _rank(op) -> int:
    """Largest rank among the op's non-constant inputs and its outputs."""
    ranks = [len(o.shape) for o in op.outputs if getattr(o, "shape", None) is not None]
    for v in op.inputs.values():
        for var in (v if isinstance(v, (list, tuple)) else [v]):
            if getattr(var, "shape", None) is not None and getattr(var, "val", None) is None:
                ranks.append(len(var.shape))
    return max(ranks, default=0)


# Reductions without an explicit axis input reduce over these (MIL defaults).
_DEFAULT_AXES = {"softmax": (-1,), "layer_norm": None, "instance_norm": (-2, -1),
                 "l2_norm": None}


def _axes(op, rank: int) -> tuple[int, ...] | None:
    """Reduced axes (non-negative) of a reduction / norm / softmax op, None for other ops."""
    t = op.op_type
    if not (t.startswith("reduce_") or t in _DEFAULT_AXES):
        return None
    for key in ("axes", "axis"):
        v = op.inputs.get(key)
        if v is not None and getattr(v, "val", None) is not None:
            return tuple(int(a) % rank for a in np.atleast_1d(v.val).tolist())
    default = _DEFAULT_AXES.get(t)
    return tuple(range(rank)) if default is None else tuple(a % rank for a in default)


def _reduction(op, rank: int) -> tuple[int, bool]:
    """(elements reduced over, reduces over a non-innermost axis other than H,W pooling)."""
    axes = _axes(op, rank)
    x = op.inputs.get("x")
    if axes is None or x is None or getattr(x, "shape", None) is None or rank == 0:
        return 0, False
    n = 1
    for a in axes:
        d = x.shape[a]
        n *= int(d) if isinstance(d, (int, np.integer)) else 1
    spatial = rank == 4 and set(axes) == {2, 3}
    nonlast = any(a != rank - 1 for a in axes) and not spatial
    return n, nonlast


def _block_ops(block, out: list[OpCost]) -> None:
    for op in block.operations:
        for b in getattr(op, "blocks", []) or []:
            _block_ops(b, out)
        if op.op_type in MIL_SKIP:
            continue
        in_e, w_e = _input_elems(op)
        out_e = sum(_numel(o) for o in op.outputs)
        kernel, groups = _kernel_groups(op)
        rank = _rank(op)
        axis_len, nonlast = _reduction(op, rank)
        out.append(make_op(op.op_type, int(_macs(op, in_e, out_e)), int(in_e), int(out_e),
                           int(w_e), kernel, groups, rank, axis_len, nonlast))


def program_ops(prog) -> list[OpCost]:
    """One OpCost per run-time op of the program's main function (nested blocks included)."""
    out: list[OpCost] = []
    _block_ops(prog.functions["main"], out)
    return out


def coreml_ops(model: Any = None, resolution: int | None = None, precision: str = "fp16",
               mlpackage: str | None = None, method: str = "auto",
               quiet: bool = False) -> list[OpCost]:
    """Per-op costs from a conversion of a torch module / timm model name, or from a saved
    .mlpackage when ``mlpackage`` is given."""
    if mlpackage is not None:
        return program_ops(load_program(mlpackage))
    mlmodel, _ = convert_coreml(model, resolution, precision, method, quiet=quiet)
    return program_ops(mlmodel._mil_program)


def coreml_features(model: Any = None, resolution: int | None = None,
                    precision: str = "fp16", mlpackage: str | None = None) -> np.ndarray:
    """Feature vector (features.FEATURE_NAMES) of any model that converts to CoreML."""
    ops = coreml_ops(model, resolution, precision, mlpackage)
    return aggregate(ops, 2 if precision == "fp16" else 4)
