"""Zero-cost proxies: architecture scores from one batch at initialisation, no training.

* synflow (Tanaka et al. 2020, "Pruning neural networks without any data by iteratively
  conserving synaptic flow"; as a NAS proxy in Abdelfattah et al. 2021, "Zero-Cost Proxies for
  Lightweight NAS", ICLR): with every parameter and buffer replaced by its absolute value, in
  float64, BN in eval mode (so with fresh running stats it is a fixed positive affine map, as
  the reference's BN-free copy), feed an all-ones input and backprop sum(output); the score is
  sum over conv/linear weights of |w * dR/dw|. Reported as log10 because raw values span
  hundreds of orders of magnitude across architectures (a monotone transform: ranks unchanged).
* naswot (Mellor et al. 2021, "Neural Architecture Search without Training", ICML): the
  binary activation codes c of each input over all rectifier units (ReLU; and GELU, whose
  sign pattern plays the same role) give K = c c^T + (1-c)(1-c)^T (Hamming similarity);
  score = log|det K|. Train-mode BN, one batch.
* grad_norm (Abdelfattah et al. 2021): sum over conv/linear layers of the L2 norm of the
  cross-entropy gradient w.r.t. the layer's weight, one batch, train mode.

Reference implementation: https://github.com/SamsungLabs/zero-cost-nas (synflow.py,
grad_norm.py) and https://github.com/BayesWatch/nas-without-training.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from search_space.spec import ArchSpec
from search_space.swiftformer import build_model

from .data import ProxyData
from .memory import release_memory
from .train import normalize

__all__ = ["zero_cost_scores", "synflow", "naswot", "grad_norm"]

_WEIGHTED = (nn.Conv2d, nn.Linear)


def _weighted_layers(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, _WEIGHTED)]


def synflow(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """log10 of the synaptic-flow score (modifies ``model``: pass a fresh copy).

    Only the conv/linear weights get gradients, and each layer's term is taken (and its
    gradient dropped) the moment the gradient is accumulated, so at most one float64 gradient
    is alive instead of all of them (L3: ~230 MB less at the peak). The terms are summed in
    module order afterwards, exactly as when they were read after the backward pass.
    """
    model = model.double().eval()
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    model.zero_grad(set_to_none=True)
    layers = _weighted_layers(model)
    wanted = {id(m.weight) for m in layers}
    for p in model.parameters():
        p.requires_grad_(id(p) in wanted)
    terms: dict[int, float] = {}

    def take(i: int):
        def hook(w: torch.Tensor) -> None:
            terms[i] = (w * w.grad).abs().sum().item()
            w.grad = None
        return hook

    handles = [m.weight.register_post_accumulate_grad_hook(take(i)) for i, m in enumerate(layers)]
    try:
        x = torch.ones((1,) + tuple(input_shape), dtype=torch.float64)
        model(x).sum().backward()
    finally:
        for h in handles:
            h.remove()
    total = 0.0
    for i in range(len(layers)):
        if i in terms:
            total += terms[i]
    return math.log10(total) if total > 0 else float("-inf")


def naswot(model: nn.Module, x: torch.Tensor) -> float:
    """log|det K| of the Hamming-similarity kernel of rectifier activation codes."""
    model.train()
    b = x.shape[0]
    k = torch.zeros((b, b), dtype=torch.float64)

    def hook(_m, inp, _out):
        c = (inp[0].detach().reshape(b, -1) > 0).double()
        k.add_(c @ c.t() + (1 - c) @ (1 - c).t())

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.ReLU, nn.GELU))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if sign > 0 else float("-inf")


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Sum of per-layer L2 norms of the loss gradient w.r.t. conv/linear weights."""
    model.train()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return float(sum(m.weight.grad.norm().item() for m in _weighted_layers(model)
                     if m.weight.grad is not None))


def zero_cost_scores(spec: ArchSpec, data: ProxyData, *, batch_size: int = 32, seed: int = 0) -> dict:
    """{"synflow", "naswot", "grad_norm"} for ``spec`` at data's classes and resolution.

    Deterministic for a fixed seed (same init, same batch: the first image of each class in
    turn, then a seeded draw). Runs on CPU in the calling process; a few seconds per spec.
    """
    pspec = spec.replace(num_classes=data.num_classes, resolution=data.resolution)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(data.train_y), size=min(batch_size, len(data.train_y)), replace=False))
    x = normalize(torch.from_numpy(np.ascontiguousarray(data.train_x[idx])), channels_last=False)
    y = torch.from_numpy(np.ascontiguousarray(data.train_y[idx]))
    out: dict[str, float] = {}

    def fresh() -> nn.Module:
        # The same initial weights for all three scores: re-seeding rebuilds them bit for bit,
        # so no second model and no copy of the weights is alive while a score runs. (With
        # drop_path_rate > 0 the drop masks of naswot/grad_norm come from a re-seeded stream;
        # the searched specs have drop_path_rate 0, so nothing else draws random numbers.)
        torch.manual_seed(seed)
        return build_model(pspec)

    with torch.random.fork_rng(devices=[]):
        out["synflow"] = synflow(fresh(), tuple(x.shape[1:]))
        out["naswot"] = naswot(fresh(), x)
        out["grad_norm"] = grad_norm(fresh(), x, y)
    release_memory()
    return out
