"""The one definition of the latency feature vector: per-operation costs summed per op class.

A model is described by the list of operations of its *converted CoreML program* (MIL ops after
coremltools' default passes: BatchNorm folded into the preceding conv, layer scales folded into
pointwise convs, ...). Each op is put in one of ``OP_CLASSES`` and contributes three numbers to
its class: MACs, activation bytes moved (read + written), weight bytes read (constants: weights,
biases, BN statistics, scales), at the program's precision, and one launch. The
4 x len(OP_CLASSES) sums (``FEATURE_NAMES``) are the feature vector every predictor uses.

Where the op lists come from (all produce this vector through :func:`aggregate` or the same
per-class columns):
- ``latency_models.analytic``: SwiftFormer specs in closed form, no torch, no conversion.
- ``latency_models.coreml``: any model that converts (timm baselines, torch modules).
- ``latency_models.feature_cache``: the shipped op lists of the published baselines.
``latency_models.featurize`` picks the right one for any object.

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


def class_column(klass: str) -> int:
    """Index of a class's first column (its GMACs); the next three are act MB, weight MB, count."""
    return _NQ * _CI[klass]


def aggregate(ops: Iterable[OpCost], bytes_per_elem: int = 2) -> np.ndarray:
    """Feature vector (len N_FEATURES) of an op list: per class GMACs, activation MB, weight MB,
    op count."""
    f = np.zeros(N_FEATURES)
    for op in ops:
        j = class_column(op.klass)
        f[j] += op.macs / 1e9
        f[j + 1] += bytes_per_elem * (op.in_elems + op.out_elems) / 1e6
        f[j + 2] += bytes_per_elem * op.weight_elems / 1e6
        f[j + 3] += 1
    return f


def gmacs_of(features: np.ndarray) -> np.ndarray:
    """Total GMACs from feature vector(s) (CoreML-program counting: BN folded, so a bit below fvcore)."""
    f = np.atleast_2d(features)
    return f[:, 0::_NQ].sum(axis=1)
