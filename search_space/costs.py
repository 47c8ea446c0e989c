"""Cost accounting for SwiftFormer-family specs: parameters, GMACs and a per-operation table.

``op_table(spec)`` lists every operation of the eval-mode forward pass with its shapes, MACs,
parameter count and activation sizes, computed from the spec alone (no torch). Sums of it give
``analytic_params`` and ``analytic_gmacs``; the latency predictor uses it as its feature source.

MACs follow fvcore's counting rules, so analytic GMACs match ``fvcore_count.fvcore_gmacs`` (tests check it):
- conv: out_h * out_w * out_ch * (in_ch / groups) * k * k  (bias not counted)
- linear / matmul: tokens * in * out
- batch_norm in eval mode: 2 * numel (fvcore's batchnorm_flop_jit with affine)
- activations, adds, layer-scale multiplies, normalize, mean: 0 (fvcore does not count them)
fvcore calls one multiply-add one "flop"; we call it what it is, a MAC.
"""
from __future__ import annotations

from typing import NamedTuple

from .spec import ArchSpec

# Operation kinds that appear in op_table. 'macs' is non-zero only where fvcore counts the op.
OP_KINDS = ("conv", "dwconv", "bn", "relu", "gelu", "linear", "matmul", "l2norm", "reduce",
            "add", "mul")


class Op(NamedTuple):
    kind: str           # one of OP_KINDS
    stage: int          # -1 stem, 0..3 stages, 4 head
    block: str          # 'stem', 'down', 'conv', 'attn', 'head'
    in_elems: int       # activation elements read (batch 1)
    out_elems: int      # activation elements written (batch 1)
    params: int         # weights (incl. bias) of this op
    macs: int           # multiply-adds, fvcore rules


def _down(h: int) -> int:
    # 3x3 conv, stride 2, padding 1: floor((h + 2 - 3) / 2) + 1
    return (h - 1) // 2 + 1


def op_table(spec: ArchSpec, resolution: int | None = None) -> list[Op]:
    """Every op of the eval-mode forward at ``resolution`` (default: the spec's), batch 1."""
    r = resolution or spec.resolution
    w = spec.widths
    ops: list[Op] = []

    def conv(stage, block, cin, cout, h_in, k, stride, groups=1):
        h_out = _down(h_in) if stride == 2 else h_in
        macs = h_out * h_out * cout * (cin // groups) * k * k
        kind = "dwconv" if groups > 1 else "conv"
        ops.append(Op(kind, stage, block, cin * h_in * h_in, cout * h_out * h_out,
                      cout * (cin // groups) * k * k + cout, macs))
        return h_out

    def bn(stage, block, c, h):
        n = c * h * h
        ops.append(Op("bn", stage, block, n, n, 2 * c, 2 * n))

    def elem(kind, stage, block, n, params=0, inputs=1):
        ops.append(Op(kind, stage, block, inputs * n, n, params, 0))

    def linear(stage, block, tokens, cin, cout, bias=True):
        ops.append(Op("linear", stage, block, tokens * cin, tokens * cout,
                      cin * cout + (cout if bias else 0), tokens * cin * cout))

    # Stem: conv-bn-relu twice, stride 4 in total.
    h = conv(-1, "stem", 3, w[0] // 2, r, 3, 2)
    bn(-1, "stem", w[0] // 2, h)
    elem("relu", -1, "stem", w[0] // 2 * h * h)
    h = conv(-1, "stem", w[0] // 2, w[0], h, 3, 2)
    bn(-1, "stem", w[0], h)
    elem("relu", -1, "stem", w[0] * h * h)

    for i, dim in enumerate(w):
        if i > 0:
            h = conv(i, "down", w[i - 1], dim, h, 3, 2)
            bn(i, "down", dim, h)
        n = h * h
        hid = spec.hidden_dim(i)
        for kind in spec.block_kinds(i):
            # Conv encoder, and the local representation of a SwiftFormer encoder, are the same
            # dwconv-bn-pw-gelu-pw-scale-add sequence; only the pointwise width differs.
            mid = hid if kind == "conv" else dim
            conv(i, kind, dim, dim, h, 3, 1, groups=dim)
            bn(i, kind, dim, h)
            conv(i, kind, dim, mid, h, 1, 1)
            elem("gelu", i, kind, mid * n)
            conv(i, kind, mid, dim, h, 1, 1)
            elem("mul", i, kind, dim * n, params=dim)        # layer scale
            elem("add", i, kind, dim * n, inputs=2)          # residual
            if kind == "conv":
                continue
            # Efficient additive attention (tokens = n): q, k projections, l2-normalised;
            # global query = sum_n softmax-free weights (q @ w_g) * q; out = final(proj(g*k) + q).
            linear(i, "attn", n, dim, dim)                   # to_query
            linear(i, "attn", n, dim, dim)                   # to_key
            elem("l2norm", i, "attn", 2 * dim * n)           # normalize q and k
            ops.append(Op("matmul", i, "attn", n * dim, n, dim, n * dim))  # q @ w_g
            elem("l2norm", i, "attn", n)                     # normalize over tokens
            elem("mul", i, "attn", dim * n, inputs=2)        # attn * q
            elem("reduce", i, "attn", dim * n)               # sum over tokens -> dim
            elem("mul", i, "attn", dim * n, inputs=2)        # g * k
            linear(i, "attn", n, dim, dim)                   # proj
            elem("add", i, "attn", dim * n, inputs=2)        # + q
            linear(i, "attn", n, dim, dim)                   # final
            elem("mul", i, "attn", dim * n, params=dim)      # layer_scale_1
            elem("add", i, "attn", dim * n, inputs=2)
            bn(i, "attn", dim, h)                            # Mlp.norm1
            conv(i, "attn", dim, hid, h, 1, 1)               # fc1
            elem("gelu", i, "attn", hid * n)
            conv(i, "attn", hid, dim, h, 1, 1)               # fc2
            elem("mul", i, "attn", dim * n, params=dim)      # layer_scale_2
            elem("add", i, "attn", dim * n, inputs=2)

    bn(4, "head", w[-1], h)
    elem("reduce", 4, "head", w[-1] * h * h)                 # global average pool
    if spec.num_classes > 0:
        for _ in range(2 if spec.distillation else 1):
            linear(4, "head", 1, w[-1], spec.num_classes)
    return ops


def analytic_params(spec: ArchSpec) -> int:
    """Exact parameter count (BatchNorm affine included; running statistics are buffers)."""
    return sum(op.params for op in op_table(spec))


def analytic_gmacs(spec: ArchSpec, resolution: int | None = None) -> float:
    """GMACs by fvcore's rules, from the spec alone (microseconds per spec)."""
    return sum(op.macs for op in op_table(spec, resolution)) / 1e9
