"""Deployment exports: CoreML ``.mlpackage`` (see coreml.py) and ONNX checked with onnxruntime."""
from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from .coreml import convert_coreml, export_coreml, load_program, resolve_model  # noqa: F401

ONNX_OPSETS = (11, 17)


def export_onnx(model_or_spec: Any, path: str, resolution: int | None = None, opset: int = 17,
                check: bool = True, rtol: float = 1e-3) -> dict:
    """Export to ONNX (TorchScript-based exporter, static batch-1 input ``x``) and, if ``check``,
    compare onnxruntime's output with torch's on a random input. Returns info incl. rel_diff."""
    if opset not in ONNX_OPSETS:
        raise ValueError(f"opset={opset}: allowed {ONNX_OPSETS}")
    if not str(path).endswith(".onnx"):
        raise ValueError(f"path {path!r}: must end with .onnx")
    import torch

    model, res, name = resolve_model(model_or_spec, resolution)
    x = torch.randn(1, 3, res, res, generator=torch.Generator().manual_seed(0))
    parent = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tmp-", suffix=".onnx")
    os.close(fd)
    try:
        with torch.no_grad():
            # dynamo=False: the TorchScript exporter supports opset 11 and needs no onnxscript
            # translation of every op; both opsets pass the onnxruntime check below.
            torch.onnx.export(model, (x,), tmp, input_names=["x"], output_names=["logits"],
                              opset_version=opset, dynamo=False, do_constant_folding=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    info: dict[str, Any] = dict(name=name, path=path, resolution=res, opset=opset)
    if check:
        info["rel_diff"] = check_onnx(path, model, x, rtol)
    return info


def check_onnx(path: str, model, x, rtol: float = 1e-3) -> float:
    """max|onnxruntime - torch| / max|torch| on ``x`` (scale-free: freshly initialised models have
    tiny outputs, so an absolute tolerance would pass anything); AssertionError above ``rtol``."""
    import onnxruntime as ort
    import torch

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
