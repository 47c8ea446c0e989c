"""SwiftFormer specs -> latency features in closed form: no torch, no conversion.

Emits exactly the op sequence coremltools produces for our generator (``search_space.
swiftformer``), per stage and vectorised over a batch of specs, so a search can score thousands
of candidates per second. tests/test_latency_features.py checks it op for op against the
converted CoreML program. Each emitter call adds one op: class, MACs, activation elements read
and written, weight elements, all numpy arrays over the batch, times how often it occurs.

This module imports numpy only.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .features import N_FEATURES, OpCost, class_column, classify, make_op


class _Acc:
    """Accumulates op costs into an (n_specs, N_FEATURES) matrix, optionally listing ops."""

    def __init__(self, n: int, bytes_per_elem: int = 2, record: bool = False) -> None:
        self.F = np.zeros((n, N_FEATURES))
        self.bpe = bytes_per_elem
        self.ops: list[OpCost] | None = [] if record else None

    def op(self, op_type: str, macs, in_e, out_e, w_e=0, times=1, kernel=0, groups=1) -> None:
        """Add ``times`` ops; for convs ``groups`` may be an array (depthwise: groups = dim)."""
        g = int(np.max(np.asarray(groups)))
        klass = classify(op_type, kernel, g, 1 if np.any(np.asarray(w_e)) else 0)
        j = class_column(klass)
        times = np.asarray(times, dtype=float)
        self.F[:, j] += times * np.asarray(macs, dtype=float) / 1e9
        self.F[:, j + 1] += times * self.bpe * (np.asarray(in_e, dtype=float) + out_e) / 1e6
        self.F[:, j + 2] += times * self.bpe * np.asarray(w_e, dtype=float) / 1e6
        self.F[:, j + 3] += times
        if self.ops is not None:
            first = lambda v: int(np.asarray(v).reshape(-1)[0])  # noqa: E731
            for _ in range(first(times)):
                self.ops.append(make_op(op_type, first(macs), first(in_e), first(out_e),
                                        first(w_e), kernel, first(groups)))


def _down(h):
    return (h - 1) // 2 + 1


def _local_mixer(a: _Acc, dim, hid, h, times) -> None:
    """ConvEncoder / local representation as converted: dwconv(+BN) pw gelu pw(+scale) add."""
    n = h * h
    a.op("conv", dim * n * 9, dim * n, dim * n, dim * 9 + dim, times, 9, dim)  # depthwise, BN folded
    a.op("conv", n * dim * hid, dim * n, hid * n, dim * hid + hid, times, 1)
    a.op("gelu", 0, hid * n, hid * n, 0, times)
    a.op("conv", n * hid * dim, hid * n, dim * n, hid * dim + dim, times, 1)  # layer scale folded
    a.op("add", 0, 2 * dim * n, dim * n, 0, times)


def _attention(a: _Acc, dim, hid, h, times) -> None:
    """Efficient additive attention + MLP of a SwiftFormer encoder, after the local representation."""
    n = h * h
    nd = n * dim
    a.op("reshape", 0, nd, nd, 0, times)
    a.op("transpose", 0, nd, nd, 0, times)
    for _ in range(2):                                   # query and key: linear, then L2-normalise
        a.op("linear", nd * dim, nd, nd, dim * dim + dim, times)
        a.op("reduce_l2_norm", 0, nd, n, 0, times)
        a.op("maximum", 0, n, n, 1, times)
        a.op("tile", 0, n, nd, 0, times)
        a.op("real_div", 0, 2 * nd, nd, 0, times)
    a.op("linear", nd, nd, n, dim + 1, times)            # q @ w_g
    a.op("mul", 0, n, n, 1, times)                       # * scale_factor
    a.op("reduce_l2_norm", 0, n, 1, 0, times)            # normalise over tokens
    a.op("maximum", 0, 1, 1, 1, times)
    a.op("tile", 0, 1, n, 0, times)
    a.op("real_div", 0, 2 * n, n, 0, times)
    a.op("mul", 0, n + nd, nd, 0, times)                 # A * q
    a.op("reduce_sum", 0, nd, dim, 0, times)             # global query
    a.op("mul", 0, dim + nd, nd, 0, times)               # G * k
    a.op("linear", nd * dim, nd, nd, dim * dim + dim, times)   # proj
    a.op("add", 0, 2 * nd, nd, 0, times)                 # + q
    a.op("linear", nd * dim, nd, nd, dim * dim + dim, times)   # final
    a.op("transpose", 0, nd, nd, 0, times)
    a.op("reshape", 0, nd, nd, 0, times)
    a.op("mul", 0, nd, nd, dim, times)                   # layer_scale_1
    a.op("add", 0, 2 * nd, nd, 0, times)
    # MLP: BN (not foldable: it precedes a conv only through a residual branch input) fc1 gelu fc2
    a.op("batch_norm", 0, nd, nd, 4 * dim, times)
    a.op("conv", n * dim * hid, nd, hid * n, dim * hid + hid, times, 1)
    a.op("gelu", 0, hid * n, hid * n, 0, times)
    a.op("conv", n * hid * dim, hid * n, nd, hid * dim + dim, times, 1)   # layer_scale_2 folded
    a.op("add", 0, 2 * nd, nd, 0, times)


def _arrays(specs: Sequence) -> dict[str, np.ndarray]:
    return dict(
        depths=np.array([s.depths for s in specs], dtype=np.int64),
        widths=np.array([s.widths for s in specs], dtype=np.int64),
        hidden=np.array([[int(w * r) for w, r in zip(s.widths, s.mlp_ratios)] for s in specs],
                        dtype=np.int64),
        attn=np.array([s.attn_blocks for s in specs], dtype=np.int64),
        res=np.array([s.resolution for s in specs], dtype=np.int64),
        classes=np.array([s.num_classes for s in specs], dtype=np.int64),
        dist=np.array([1 if s.distillation else 0 for s in specs], dtype=np.int64),
    )


def _emit(a: _Acc, A: dict[str, np.ndarray]) -> None:
    w, hid, d, k, r = A["widths"], A["hidden"], A["depths"], A["attn"], A["res"]
    a.op("cast", 0, 3 * r * r, 3 * r * r)                # fp32 input -> fp16
    h = _down(r)
    c0 = w[:, 0] // 2
    a.op("conv", h * h * c0 * 27, 3 * r * r, c0 * h * h, c0 * 27 + c0, 1, 9)
    a.op("relu", 0, c0 * h * h, c0 * h * h)
    h2 = _down(h)
    a.op("conv", h2 * h2 * w[:, 0] * c0 * 9, c0 * h * h, w[:, 0] * h2 * h2,
         w[:, 0] * c0 * 9 + w[:, 0], 1, 9)
    a.op("relu", 0, w[:, 0] * h2 * h2, w[:, 0] * h2 * h2)
    h = h2
    for i in range(w.shape[1]):
        if i > 0:
            hn = _down(h)
            a.op("conv", hn * hn * w[:, i] * w[:, i - 1] * 9, w[:, i - 1] * h * h,
                 w[:, i] * hn * hn, w[:, i] * w[:, i - 1] * 9 + w[:, i], 1, 9)
            h = hn
        n_conv, n_attn = d[:, i] - k[:, i], k[:, i]
        _local_mixer(a, w[:, i], hid[:, i], h, n_conv)
        _local_mixer(a, w[:, i], w[:, i], h, n_attn)
        _attention(a, w[:, i], hid[:, i], h, n_attn)
    c = w[:, -1]
    a.op("batch_norm", 0, c * h * h, c * h * h, 4 * c)   # final norm (follows an add: not folded)
    a.op("reduce_mean", 0, c * h * h, c, 0)
    has_head = (A["classes"] > 0).astype(float)
    nc = A["classes"]
    a.op("linear", c * nc, c, nc, c * nc + nc, has_head)
    a.op("linear", c * nc, c, nc, c * nc + nc, has_head * A["dist"])
    # Distilled models average the two heads (identities when num_classes=0) at inference.
    no = np.where(nc > 0, nc, c)
    a.op("add", 0, 2 * no, no, 0, A["dist"])
    a.op("mul", 0, no, no, 1, A["dist"])


def spec_features_many(specs: Sequence, bytes_per_elem: int = 2) -> np.ndarray:
    """(len(specs), N_FEATURES) features of SwiftFormer specs, vectorised (no torch)."""
    if len(specs) == 0:
        return np.zeros((0, N_FEATURES))
    a = _Acc(len(specs), bytes_per_elem)
    _emit(a, _arrays(specs))
    return a.F


def spec_features(spec, bytes_per_elem: int = 2) -> np.ndarray:
    return spec_features_many([spec], bytes_per_elem)[0]


def spec_ops(spec, bytes_per_elem: int = 2) -> list[OpCost]:
    """The op list the analytic path assumes, in program order per emitter (for inspection/tests)."""
    a = _Acc(1, bytes_per_elem, record=True)
    _emit(a, _arrays([spec]))
    return a.ops or []
