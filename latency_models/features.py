"""The one definition of the latency feature vector: per-operation costs summed per op class,
plus a few Neural-Engine-specific sums.

A model is described by the list of operations of its *converted CoreML program* (MIL ops after
coremltools' default passes: BatchNorm folded into the preceding conv, layer scales folded into
pointwise convs, ...). Each op is put in one of ``OP_CLASSES`` and contributes four numbers to
its class: MACs, activation bytes moved (read + written), weight bytes read (constants: weights,
biases, BN statistics, scales) at the program's precision, and one launch. On top of those
4 x len(OP_CLASSES) sums come ``ANE_FEATURES``: activation bytes of the ops the Neural Engine is
known to handle badly, read from each op's tensor ranks and reduction axes (``OpCost.rank``,
``axis_len``, ``nonlast``) and its bytes per MAC. ``FEATURE_NAMES`` is the whole vector every
predictor uses.

Where the op lists come from (all produce this vector through :func:`aggregate` or the same
columns):
- ``latency_models.analytic``: SwiftFormer specs in closed form, no torch, no conversion.
- ``latency_models.coreml``: any model that converts (timm baselines, torch modules, packages).
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
    "layout",    # data movement: reshape, transpose, concat, split, slice, pad
    "gather",    # index-driven data movement: gather*, scatter* (run off the Neural Engine)
)
QUANTITIES = ("gmacs", "act_mbytes", "w_mbytes", "count")
_NQ = len(QUANTITIES)

# Neural Engine behaviour that per-class sums cannot see (activation MB moved by such ops):
#   hirank   ops on a tensor of rank >= HIRANK (unfold/fold patch rearrangements of MobileViT,
#            5-D group norms): the engine works on rank-4 (N, C, H, W) layouts; higher ranks are
#            emulated by extra copies or leave the engine.
#   chreduce reductions / normalisations / softmax over an axis that is not the innermost one
#            (layer norm over channels, GroupNorm(1), token sums) -- except the spatial pair
#            (H, W) of a rank-4 tensor (global pooling), which the engine pools natively.
#   bigsoftmax softmax over an axis of >= BIG_SOFTMAX elements (attention over many tokens).
#   lowai    dense convs / linears with fewer than LOW_AI MACs per byte moved (memory-bound:
#            the A15/A16 engine does ~8 TMAC/s fp16 against ~60 GB/s of DRAM, a ridge near 130
#            MAC/B; below ~64 the op waits on memory whatever its MAC count).
HIRANK = 5
BIG_SOFTMAX = 128
LOW_AI = 64.0
ANE_FEATURES = ("hirank_mbytes", "chreduce_mbytes", "bigsoftmax_mbytes", "lowai_mbytes")
LOWAI_CLASSES = ("conv", "pwconv", "linear")  # dense MAC ops tested for memory-boundness
_REDUCING = ("norm", "reduce")

FEATURE_NAMES = tuple(f"{c}_{q}" for c in OP_CLASSES for q in QUANTITIES) + ANE_FEATURES
N_FEATURES = len(FEATURE_NAMES)
_CI = {c: i for i, c in enumerate(OP_CLASSES)}
_ANE0 = _NQ * len(OP_CLASSES)

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
    "slice_by_index": "layout", "slice_by_size": "layout", "pad": "layout", "gather": "gather",
    "gather_nd": "gather", "gather_along_axis": "gather", "expand_dims": "layout",
    "squeeze": "layout", "stack": "layout", "pixel_shuffle": "layout", "pixel_unshuffle": "layout",
    "space_to_depth": "layout", "depth_to_space": "layout", "upsample_nearest_neighbor": "layout",
    "upsample_bilinear": "layout", "resize_bilinear": "layout", "sliding_windows": "layout",
    "flatten2d": "layout", "reverse": "layout", "band_part": "layout", "shape": "layout",
    "fill": "layout", "scatter": "gather", "scatter_nd": "gather", "crop": "layout",
    "crop_resize": "layout", "resample": "gather", "pad_v2": "layout", "reshape_like": "layout",
    "scatter_along_axis": "gather",
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
    rank: int = 4     # largest rank among its non-constant inputs and outputs
    axis_len: int = 0  # reductions / norms / softmax: elements reduced over (0 for other ops)
    nonlast: bool = False  # reduces over an axis other than the innermost (not H,W pooling)

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
            kernel: int = 0, groups: int = 1, rank: int = 4, axis_len: int = 0,
            nonlast: bool = False) -> OpCost:
    return OpCost(op_type, classify(op_type, kernel, groups, weight_elems), int(macs),
                  int(in_elems), int(out_elems), int(weight_elems), int(kernel), int(groups),
                  int(rank), int(axis_len), bool(nonlast))


_PACKED = ("op_type", "macs", "in_elems", "out_elems", "weight_elems", "kernel", "groups",
           "rank", "axis_len", "nonlast")


def pack_ops(ops: Iterable[OpCost]) -> list[list]:
    """Compact, JSON-able op list: identical ops merged, [op_type, macs, in, out, w, kernel,
    groups, rank, axis_len, nonlast (0/1), n]. The class is re-derived on unpacking, so class
    changes need no reconversion."""
    counts: dict[tuple, int] = {}
    for o in ops:
        k = tuple(int(getattr(o, f)) if f != "op_type" else o.op_type for f in _PACKED)
        counts[k] = counts.get(k, 0) + 1
    return [list(k) + [n] for k, n in counts.items()]


def unpack_ops(packed: Sequence[Sequence]) -> list[OpCost]:
    out = []
    for row in packed:
        *fields, n = row
        out.extend([make_op(*fields)] * int(n))
    return out


def class_column(klass: str) -> int:
    """Index of a class's first column (its GMACs); the next three are act MB, weight MB, count."""
    return _NQ * _CI[klass]


def ane_column(name: str) -> int:
    return _ANE0 + ANE_FEATURES.index(name)


def ane_flags(klass: str, op_type: str, macs, act_bytes, w_bytes, rank: int, axis_len: int,
              nonlast: bool):
    """Which ANE_FEATURES an op's activation bytes count towards (numpy-broadcastable over a
    batch for ``macs`` / bytes): a dict name -> bool or bool array."""
    flags = {"hirank_mbytes": rank >= HIRANK,
             "chreduce_mbytes": bool(nonlast) and klass in _REDUCING,
             "bigsoftmax_mbytes": op_type == "softmax" and axis_len >= BIG_SOFTMAX}
    if klass in LOWAI_CLASSES:
        flags["lowai_mbytes"] = np.asarray(macs) < LOW_AI * (np.asarray(act_bytes) +
                                                              np.asarray(w_bytes))
    else:
        flags["lowai_mbytes"] = False
    return flags


def aggregate(ops: Iterable[OpCost], bytes_per_elem: int = 2) -> np.ndarray:
    """Feature vector (len N_FEATURES) of an op list: per class GMACs, activation MB, weight MB,
    op count; then the ANE_FEATURES (activation MB of the flagged ops)."""
    f = np.zeros(N_FEATURES)
    for op in ops:
        j = class_column(op.klass)
        act = bytes_per_elem * (op.in_elems + op.out_elems)
        wb = bytes_per_elem * op.weight_elems
        f[j] += op.macs / 1e9
        f[j + 1] += act / 1e6
        f[j + 2] += wb / 1e6
        f[j + 3] += 1
        for name, on in ane_flags(op.klass, op.op_type, op.macs, act, wb, op.rank,
                                  op.axis_len, op.nonlast).items():
            if on:
                f[ane_column(name)] += act / 1e6
    return f


def gmacs_of(features: np.ndarray) -> np.ndarray:
    """Total GMACs from feature vector(s) (CoreML-program counting: BN folded, so a bit below fvcore)."""
    f = np.atleast_2d(features)
    return f[:, 0:_ANE0:_NQ].sum(axis=1)
