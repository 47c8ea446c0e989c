"""Per-operation latency features, and the fast analytic path for SwiftFormer-family specs.

A model is described by the list of operations of its *converted CoreML program* (MIL ops after
coremltools' default passes: BatchNorm folded into the preceding conv, layer scales folded into
pointwise convs, ...). Each op is put in one of ``OP_CLASSES`` and contributes three numbers to
its class: MACs, activation bytes moved (read + written), weight bytes read (constants: weights,
biases, BN statistics, scales), at the program's precision, and one launch. The
4 x len(OP_CLASSES) sums are the feature vector every predictor uses.

Two feature sources give the same vector:
- ``latency_models.coreml.coreml_features(model)``: any model that converts (timm baselines, ...).
- ``spec_features(spec)`` / ``spec_features_many(specs)``: SwiftFormer specs, no torch, no
  conversion; it emits exactly the op sequence coremltools produces for our generator (checked
  op-for-op by tests/test_latency_features.py) in closed form per stage, vectorised over specs.

This module imports numpy only.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple, Sequence

import numpy as np

# Operation classes. Each class gets MACs, bytes and launch-count columns.
OP_CLASSES = (
    "conv",      # dense k x k convolution (k > 1): stems, patch embeddings, downsamples
    "pwconv",    # dense 1 x 1 convolution (a matmul over channels)
    "dwconv",    # grouped / depthwise convolution (groups > 1)
    "linear",    # linear layers and matmuls with a constant (weight) operand
    "actmm",     # activation x activation matmul / einsum / SDPA (softmax attention products)
    "act",       # transcendental activations: gelu, silu, sigmoid, tanh, exp, erf, ...
    "elem",      # cheap elementwise: add/mul/div/max, relu/clip, batch_norm, casts, tile
    "norm",      # normalisations and softmax: layer_norm, reduce_l2_norm, softmax, instance_norm
    "reduce",    # reductions and pooling: reduce_*, avg/max pool
    "layout",    # data movement: reshape, transpose, concat, split, slice, pad, gather
)
QUANTITIES = ("gmacs", "act_mbytes", "w_mbytes", "count")
_NQ = len(QUANTITIES)
FEATURE_NAMES = tuple(f"{c}_{q}" for c in OP_CLASSES for q in QUANTITIES)
N_FEATURES = len(FEATURE_NAMES)
_CI = {c: i for i, c in enumerate(OP_CLASSES)}

# MIL op type -> class. Unknown types fall into 'elem' (cheap, memory-bound) and are reported.
MIL_CLASS = {
    "conv": "conv", "conv_transpose": "conv",
    "linear": "linear", "matmul": "linear", "einsum": "linear",
    "gelu": "act", "silu": "act", "sigmoid": "act", "tanh": "act", "exp": "act", "erf": "act",
    "softplus": "act", "sigmoid_hard": "act", "elu": "act", "log": "act", "pow": "act",
    "sqrt": "act", "rsqrt": "act", "sin": "act", "cos": "act", "scaled_tanh": "act",
    "layer_norm": "norm", "instance_norm": "norm", "l2_norm": "norm", "local_response_norm": "norm",
    "reduce_l2_norm": "norm", "softmax": "norm", "scaled_dot_product_attention": "linear",
    "reduce_sum": "reduce", "reduce_mean": "reduce", "reduce_max": "reduce", "reduce_min": "reduce",
    "reduce_prod": "reduce", "reduce_l1_norm": "reduce", "reduce_log_sum_exp": "reduce",
    "reduce_sum_square": "reduce", "reduce_argmax": "reduce", "reduce_argmin": "reduce",
    "avg_pool": "reduce", "max_pool": "reduce", "l2_pool": "reduce",
    "reshape": "layout", "transpose": "layout", "concat": "layout", "split": "layout",
    "slice_by_index": "layout", "slice_by_size": "layout", "pad": "layout", "gather": "layout",
    "gather_nd": "layout", "gather_along_axis": "layout", "expand_dims": "layout",
    "squeeze": "layout", "stack": "layout", "pixel_shuffle": "layout", "pixel_unshuffle": "layout",
    "space_to_depth": "layout", "depth_to_space": "layout", "upsample_nearest_neighbor": "layout",
    "upsample_bilinear": "layout", "resize_bilinear": "layout", "sliding_windows": "layout",
    "flatten2d": "layout", "reverse": "layout", "band_part": "layout", "shape": "layout",
    "fill": "layout", "scatter": "layout", "scatter_nd": "layout", "crop": "layout",
    "crop_resize": "layout", "resample": "layout", "pad_v2": "layout", "reshape_like": "layout",
}
# Ops that are free at run time (constants) or fold away on every runtime.
MIL_SKIP = {"const", "constexpr_affine_dequantize", "constexpr_lut_to_dense",
            "constexpr_sparse_to_dense", "constexpr_cast", "identity"}


class OpCost(NamedTuple):
    """One operation of a converted program (batch 1)."""
    op_type: str      # MIL op type, e.g. 'conv', 'gelu'
    klass: str        # one of OP_CLASSES (see classify)
    macs: int
    in_elems: int     # non-constant activation elements read
    out_elems: int    # elements written
    weight_elems: int  # constant tensor elements read (weights, biases, BN statistics, scales)
    kernel: int = 0   # convs: kh * kw
    groups: int = 1   # convs: groups

    def bytes(self, bytes_per_elem: int = 2) -> int:
        return bytes_per_elem * (self.in_elems + self.out_elems + self.weight_elems)


def classify(op_type: str, kernel: int = 0, groups: int = 1, weight_elems: int = 0) -> str:
    """The OP_CLASSES class of a MIL op."""
    if op_type in ("conv", "conv_transpose"):
        if groups > 1:
            return "dwconv"
        return "pwconv" if kernel == 1 else "conv"
    klass = MIL_CLASS.get(op_type, "elem")
    if klass == "linear" and op_type != "linear" and weight_elems == 0:
        return "actmm"   # both operands are activations (attention scores / token mixing)
    return klass


def make_op(op_type: str, macs: int, in_elems: int, out_elems: int, weight_elems: int,
            kernel: int = 0, groups: int = 1) -> OpCost:
    return OpCost(op_type, classify(op_type, kernel, groups, weight_elems), int(macs),
                  int(in_elems), int(out_elems), int(weight_elems), int(kernel), int(groups))


def pack_ops(ops: Iterable[OpCost]) -> list[list]:
    """Compact, JSON-able op list: identical ops merged, [op_type, macs, in, out, w, kernel,
    groups, n]. The class is re-derived on unpacking, so class changes need no reconversion."""
    counts: dict[tuple, int] = {}
    for o in ops:
        k = (o.op_type, o.macs, o.in_elems, o.out_elems, o.weight_elems, o.kernel, o.groups)
        counts[k] = counts.get(k, 0) + 1
    return [list(k) + [n] for k, n in counts.items()]


def unpack_ops(packed: Sequence[Sequence]) -> list[OpCost]:
    out = []
    for t, macs, i, o, w, kernel, groups, n in packed:
        out.extend([make_op(t, macs, i, o, w, kernel, groups)] * int(n))
    return out


def aggregate(ops: Iterable[OpCost], bytes_per_elem: int = 2) -> np.ndarray:
    """Feature vector (len N_FEATURES) of an op list: per class GMACs, activation MB, weight MB,
    op count."""
    f = np.zeros(N_FEATURES)
    for op in ops:
        j = _NQ * _CI[op.klass]
        f[j] += op.macs / 1e9
        f[j + 1] += bytes_per_elem * (op.in_elems + op.out_elems) / 1e6
        f[j + 2] += bytes_per_elem * op.weight_elems / 1e6
        f[j + 3] += 1
    return f


def gmacs_of(features: np.ndarray) -> np.ndarray:
    """Total GMACs from feature vector(s) (CoreML-program counting: BN folded, so a bit below fvcore)."""
    f = np.atleast_2d(features)
    return f[:, 0::_NQ].sum(axis=1)


# -- analytic path -----------------------------------------------------------------------------
# Each emitter call adds one op: klass, macs, in_elems, out_elems, weight_elems, all numpy arrays
# over a batch of specs (or over stages), multiplied by how many times that op occurs.

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
        j = _NQ * _CI[klass]
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
