"""Deployment exports of anything ``models.resolve_model`` accepts: CoreML ``.mlpackage``
(converted by ``coreml``) and ONNX checked with onnxruntime. Heavy: imports torch."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from search_space.errors import UsageError
from search_space.io import atomic_write
from search_space.lazy import lazy_import
from search_space.spec import ArchSpec

from .coreml import check_options, convert_coreml, save_mlpackage
from .models import resolve_model

ort = lazy_import("onnxruntime")

ONNX_OPSETS = (11, 17)


def _tag(mlmodel, info: dict, model_or_spec: Any) -> None:
    """Record what was exported, so a measurement on the phone can be traced back to the spec."""
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


def export_coreml(model_or_spec: Any, path: str, resolution: int | None = None,
                  precision: str = "fp16", method: str = "auto") -> dict:
    """Convert and save an ``.mlpackage`` (atomically; an older one at ``path`` is replaced).
    Returns info: name, resolution, precision, capture method, spec (for specs), path."""
    if not str(path).endswith(".mlpackage"):
        raise UsageError(f"path {path!r}: must end with .mlpackage")
    check_options(precision, method)
    model, res, name = resolve_model(model_or_spec, resolution)
    mlmodel, info = convert_coreml(model, res, precision, method, name=name)
    _tag(mlmodel, info, model_or_spec)
    save_mlpackage(mlmodel, path)
    info["path"] = path
    return info


def export_onnx(model_or_spec: Any, path: str, resolution: int | None = None, opset: int = 17,
                check: bool = True, rtol: float = 1e-3) -> dict:
    """Export to ONNX (TorchScript-based exporter, static batch-1 input ``x``) and, if ``check``,
    compare onnxruntime's output with torch's on a random input. Returns info incl. rel_diff."""
    if opset not in ONNX_OPSETS:
        raise UsageError(f"opset={opset}: allowed {ONNX_OPSETS}")
    if not str(path).endswith(".onnx"):
        raise UsageError(f"path {path!r}: must end with .onnx")
    model, res, name = resolve_model(model_or_spec, resolution)
    x = torch.randn(1, 3, res, res, generator=torch.Generator().manual_seed(0))

    def write(tmp: Path) -> None:
        with torch.no_grad():
            # dynamo=False: the TorchScript exporter supports opset 11 and needs no onnxscript
            # translation of every op; both opsets pass the onnxruntime check below.
            torch.onnx.export(model, (x,), str(tmp), input_names=["x"], output_names=["logits"],
                              opset_version=opset, dynamo=False, do_constant_folding=True)

    atomic_write(path, write)
    info: dict[str, Any] = dict(name=name, path=path, resolution=res, opset=opset)
    if check:
        info["rel_diff"] = check_onnx(path, model, x, rtol)
    return info


def check_onnx(path: str, model, x, rtol: float = 1e-3) -> float:
    """max|onnxruntime - torch| / max|torch| on ``x`` (scale-free: freshly initialised models have
    tiny outputs, so an absolute tolerance would pass anything); AssertionError above ``rtol``."""
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ref = model(x)
    ref = ref[0] if isinstance(ref, (tuple, list)) else ref
    ref = ref.numpy()
    if got.shape != ref.shape:
        raise AssertionError(f"{path}: onnxruntime output shape {got.shape} != torch {ref.shape}")
    diff = float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-12))
    if not diff <= rtol:
        raise AssertionError(f"{path}: onnxruntime differs from torch by {diff:.2e} of the output "
                             f"scale (> {rtol:.0e})")
    return diff
