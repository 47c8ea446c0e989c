"""CoreML export (coremltools 9, ML program, iOS 16+) and per-op features read from the program.

Conversion path: ``torch.export.export`` -> ``ExportedProgram.run_decompositions({})`` ->
``ct.convert``. coremltools 9 accepts ExportedPrograms directly; this is the path it recommends
for recent torch and it converts every SwiftFormer-family spec and the timm baselines we tried
(see notes/latency.md). ``torch.jit.trace`` is kept as a fallback (method="trace"), and "auto"
tries export first, then trace, and says which one worked.

On Linux coremltools can convert and save but not run predictions; nothing here predicts.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from typing import Any

import numpy as np

from .features import MIL_SKIP, OpCost, aggregate, make_op

PRECISIONS = ("fp16", "fp32")
METHODS = ("auto", "export", "trace")
log = logging.getLogger(__name__)


def _quiet_coremltools():
    """Import coremltools with its Linux-only proxy warnings and progress bars silenced."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import coremltools as ct
    return ct


def resolve_model(model_or_spec: Any, resolution: int | None = None):
    """(eval-mode torch module, resolution, name) for an ArchSpec, preset name, timm name or module."""
    import torch.nn as nn

    from search_space.spec import PRESETS, ArchSpec, load_spec

    if isinstance(model_or_spec, nn.Module):
        res = resolution or getattr(getattr(model_or_spec, "spec", None), "resolution", None) or 224
        return model_or_spec.eval(), int(res), type(model_or_spec).__name__
    if isinstance(model_or_spec, ArchSpec):
        from search_space.swiftformer import build_model

        spec = model_or_spec if resolution is None else model_or_spec.replace(resolution=resolution)
        return build_model(spec).eval(), spec.resolution, f"spec:{spec.arch_hash}"
    if isinstance(model_or_spec, str):
        if model_or_spec.upper() in PRESETS or model_or_spec.lstrip().startswith("{") \
                or os.path.isfile(model_or_spec):
            return resolve_model(load_spec(model_or_spec), resolution)
        import timm

        if model_or_spec not in timm.list_models():
            raise ValueError(f"model {model_or_spec!r}: not a preset (XS/S/L1/L3), spec JSON file, "
                             "inline JSON or timm model name")
        m = timm.create_model(model_or_spec, pretrained=False)
        m = _reparameterize(m)
        res = resolution or int(m.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
        return m.eval(), res, model_or_spec
    raise ValueError(f"model: expected ArchSpec, preset/timm name or torch module, got "
                     f"{type(model_or_spec).__name__}")


def _reparameterize(model):
    """Fuse re-parameterisable branches (FastViT, MobileOne, RepViT) as deployed on phones."""
    try:
        from timm.utils.model import reparameterize_model
        return reparameterize_model(model)
    except Exception:  # noqa: BLE001 - models without reparam branches are returned unchanged
        return model


def _to_program(model, x, method: str):
    import torch

    ct = _quiet_coremltools()
    errors = []
    for m in (("export", "trace") if method == "auto" else (method,)):
        try:
            with torch.no_grad():
                if m == "export":
                    src = torch.export.export(model, (x,)).run_decompositions({})
                    inputs = None
                else:
                    src = torch.jit.trace(model, x)
                    inputs = [ct.TensorType(name="x", shape=tuple(x.shape))]
            return src, inputs, m
        except Exception as e:  # noqa: BLE001 - report every path's failure together
            errors.append(f"{m}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    raise RuntimeError("could not capture the model for CoreML: " + " | ".join(errors))


def convert_coreml(model_or_spec: Any, resolution: int | None = None, precision: str = "fp16",
                   method: str = "auto"):
    """Convert to an in-memory ``ct.models.MLModel`` (ML program, iOS16 target). Returns (mlmodel, info)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: allowed {PRECISIONS}")
    if method not in METHODS:
        raise ValueError(f"method={method!r}: allowed {METHODS}")
    import torch

    ct = _quiet_coremltools()
    model, res, name = resolve_model(model_or_spec, resolution)
    x = torch.zeros(1, 3, res, res)
    errors = []
    for m in (("export", "trace") if method == "auto" else (method,)):
        try:
            src, inputs, used = _to_program(model, x, m)
            kw: dict[str, Any] = dict(
                convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32)
            if inputs is not None:
                kw["inputs"] = inputs
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mlmodel = ct.convert(src, **kw)
            return mlmodel, dict(name=name, resolution=res, precision=precision, method=used)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{m}: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
    raise RuntimeError(f"CoreML conversion of {name} failed: " + " | ".join(errors))


def export_coreml(model_or_spec: Any, path: str, resolution: int | None = None,
                  precision: str = "fp16", method: str = "auto") -> dict:
    """Convert and save an ``.mlpackage`` (written to a temp dir, then renamed). Returns info."""
    if not str(path).endswith(".mlpackage"):
        raise ValueError(f"path {path!r}: must end with .mlpackage")
    mlmodel, info = convert_coreml(model_or_spec, resolution, precision, method)
    # Record what was exported, so a measurement on the phone can be traced back to the spec.
    from search_space.spec import ArchSpec

    spec = model_or_spec if isinstance(model_or_spec, ArchSpec) else \
        getattr(model_or_spec, "spec", None)
    meta = mlmodel.user_defined_metadata
    meta["swiftformer_nas.model"] = str(info["name"])
    meta["swiftformer_nas.resolution"] = str(info["resolution"])
    if isinstance(spec, ArchSpec):
        spec = spec.replace(resolution=info["resolution"])
        meta["swiftformer_nas.spec"] = spec.canonical_json()
        info["spec"] = spec.canonical_json()
    mlmodel.short_description = f"swiftformer-nas export of {info['name']} at {info['resolution']} px"
    parent = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-coreml-")
    try:
        tmp_pkg = os.path.join(tmp, "model.mlpackage")
        mlmodel.save(tmp_pkg)
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(tmp_pkg, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    info["path"] = path
    return info


def load_program(path: str):
    """Read the MIL program of a saved .mlpackage (works on Linux; no model compilation)."""
    ct = _quiet_coremltools()
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such .mlpackage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlmodel = ct.models.MLModel(path, skip_model_load=True)
    spec = mlmodel.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise ValueError(f"{path}: not an ML program (neuralnetwork models are not supported)")
    return milproto_load(spec, spec.specificationVersion, file_weights_dir=mlmodel.weights_dir)


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


def program_ops(prog) -> list[OpCost]:
    """One OpCost per run-time op of the program's main function (nested blocks included)."""
    out: list[OpCost] = []

    def visit(block):
        for op in block.operations:
            for b in getattr(op, "blocks", []) or []:
                visit(b)
            t = op.op_type
            if t in MIL_SKIP:
                continue
            in_e = w_e = 0
            for key, v in op.inputs.items():
                vs = v if isinstance(v, (list, tuple)) else [v]
                for var in vs:
                    if not hasattr(var, "shape"):
                        continue
                    if getattr(var, "val", None) is not None:
                        # Constant tensors: count real data (weights, scales), not shape params.
                        if key in _WEIGHT_KEYS and var.shape:
                            w_e += _numel(var)
                        elif key in _WEIGHT_KEYS and t not in ("conv", "linear"):
                            w_e += 1
                    else:
                        in_e += _numel(var)
            out_e = sum(_numel(o) for o in op.outputs)
            macs = 0
            if t in ("conv", "conv_transpose"):
                wshape = op.inputs["weight"].shape          # (Cout, Cin/groups, kh, kw)
                k = int(np.prod(wshape[1:]))
                macs = (out_e if t == "conv" else _numel(op.inputs["x"])) * k
            elif t == "linear":
                macs = out_e * int(op.inputs["weight"].shape[-1])
            elif t == "matmul":
                x = op.inputs["x"]
                tx = bool(op.inputs["transpose_x"].val) if "transpose_x" in op.inputs else False
                kdim = x.shape[-2] if tx else x.shape[-1]
                macs = out_e * int(kdim)
            elif t == "einsum":
                macs = int(np.sqrt(float(max(in_e, 1)) * out_e))  # rough; rare in our models
            elif t == "scaled_dot_product_attention":
                q = op.inputs["query"].shape
                kv = op.inputs["key"].shape
                macs = 2 * int(np.prod(q)) * int(kv[-2])
            kernel, groups = 0, 1
            if t in ("conv", "conv_transpose"):
                wshape = op.inputs["weight"].shape
                kernel = int(np.prod(wshape[2:]))
                g = op.inputs.get("groups")
                groups = int(g.val) if g is not None and g.val is not None else 1
            out.append(make_op(t, int(macs), int(in_e), int(out_e), int(w_e), kernel, groups))
    visit(prog.functions["main"])
    return out


def coreml_ops(model_or_spec: Any = None, resolution: int | None = None, precision: str = "fp16",
               mlpackage: str | None = None, method: str = "auto") -> list[OpCost]:
    """Per-op costs from a conversion (or from a saved .mlpackage when ``mlpackage`` is given)."""
    if mlpackage is not None:
        return program_ops(load_program(mlpackage))
    mlmodel, _ = convert_coreml(model_or_spec, resolution, precision, method)
    return program_ops(mlmodel._mil_program)


def coreml_features(model_or_spec: Any = None, resolution: int | None = None,
                    precision: str = "fp16", mlpackage: str | None = None) -> np.ndarray:
    """Feature vector (features.FEATURE_NAMES) of any model that converts to CoreML."""
    ops = coreml_ops(model_or_spec, resolution, precision, mlpackage)
    return aggregate(ops, 2 if precision == "fp16" else 4)
