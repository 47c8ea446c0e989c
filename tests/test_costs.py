"""Analytic costs (no torch) equal the measured ones exactly: fvcore's MAC count and the
parameter count of the built model. Exact equality on a few specs catches a MAC-count bug that
a tolerance over many specs would hide; the specs cover every block kind (conv / attention
encoders, every attention placement), odd widths and MLP ratios, and several resolutions.

The op table's shapes are checked against the built model itself (forward hooks on every
conv / linear / BN / activation module: input and output sizes, parameters), and its
parameter-free ops (adds, multiplies, norms, reductions, the attention matmul) against golden
per-stage totals worked out from the block structure (see op_table's comments)."""
import collections

import pytest
import torch
import torch.nn as nn

from search_space import PRESETS
from search_space.costs import OP_KINDS, analytic_gmacs, analytic_params, op_table
from search_space.fvcore_count import count_params, fvcore_gmacs
from search_space.space import SearchSpace
from search_space.spec import ArchSpec
from search_space.swiftformer import build_model


# Same structure as the default space, small enough that fvcore traces in about a second.
SMALL = SearchSpace(widths=((16, 24, 32), (32, 48), (48, 64, 96), (64, 96, 128)),
                    resolutions=(32, 64, 96), depths=((1, 2, 3), (1, 2), (1, 2, 3, 4), (1, 2, 3)))
SPECS = SMALL.sample_many(5, seed=0) + [
    PRESETS["XS"].replace(resolution=64),
    PRESETS["L3"].replace(resolution=64, distillation=False, num_classes=10),
    ArchSpec(depths=(2, 1, 3, 2), widths=(18, 40, 72, 104), mlp_ratios=(2.5, 3.0, 4.0, 3.5),
             attn_blocks=(2, 0, 3, 1), resolution=96, num_classes=7),
]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.arch_hash)
def test_analytic_costs_equal_fvcore_and_params_exactly(spec):
    model = build_model(spec)
    assert analytic_params(spec) == count_params(model)
    assert analytic_gmacs(spec) == fvcore_gmacs(model, spec.resolution)


def test_op_table_sums_and_positive():
    ops = op_table(PRESETS["L1"])
    assert all(o.macs >= 0 and o.in_elems > 0 and o.out_elems > 0 for o in ops)
    assert sum(o.params for o in ops) == 12_057_920
    assert analytic_gmacs(PRESETS["XS"]) == pytest.approx(0.605, abs=5e-4)  # arch show / README
    # a resolution override is the same as a spec at that resolution
    assert analytic_gmacs(PRESETS["L1"], 448) == analytic_gmacs(PRESETS["L1"].replace(resolution=448))


MODULE_KINDS = {nn.Conv2d: "conv", nn.Linear: "linear", nn.BatchNorm2d: "bn", nn.ReLU: "relu",
                nn.GELU: "gelu"}


def _module_ops(spec, resolution: int | None = None) -> collections.Counter:
    """(kind, input elements, output elements, parameters) of every conv / linear / BN /
    activation module the built model runs in one batch-1 forward pass (on the meta device:
    shapes only, no weights, no arithmetic)."""
    with torch.device("meta"):
        model = build_model(spec).eval()
    seen: list[tuple] = []

    def hook(mod, inp, out):
        kind = MODULE_KINDS[type(mod)]
        if kind == "conv" and mod.groups > 1:
            kind = "dwconv"
        seen.append((kind, inp[0].numel(), out.numel(),
                     sum(p.numel() for p in mod.parameters(recurse=False))))

    for mod in model.modules():
        if type(mod) in MODULE_KINDS:
            mod.register_forward_hook(hook)
    with torch.no_grad():
        r = resolution or spec.resolution
        model(torch.zeros(1, 3, r, r, device="meta"))
    return collections.Counter(seen)


HEADS = [SPECS[2].replace(num_classes=0), SPECS[2].replace(num_classes=1, distillation=False)]


@pytest.mark.parametrize("spec", SPECS + HEADS, ids=lambda s: s.arch_hash)
def test_op_table_shapes_are_the_built_models(spec):
    kinds = set(MODULE_KINDS.values()) | {"dwconv"}
    table = collections.Counter((o.kind, o.in_elems, o.out_elems, o.params)
                                for o in op_table(spec) if o.kind in kinds)
    assert table == _module_ops(spec)
    assert all(type(v) is int for o in op_table(spec) for v in o[3:])  # counts, not floats


def test_op_table_at_another_resolution_is_that_forward():
    """The resolution override (latency features at other input sizes), also at a size where
    the stride-2 convolutions meet odd maps (100 -> 50 -> 25 -> 13 -> 7 -> 4)."""
    spec = SPECS[2]
    kinds = set(MODULE_KINDS.values()) | {"dwconv"}
    for r in (100, 160):
        table = collections.Counter((o.kind, o.in_elems, o.out_elems, o.params)
                                    for o in op_table(spec, r) if o.kind in kinds)
        assert table == _module_ops(spec.replace(resolution=160) if r == 160 else spec, r)
    assert analytic_gmacs(spec, 160) == analytic_gmacs(spec.replace(resolution=160))


def test_preset_totals_exactly():
    """Parameters are the published counts; MACs the fvcore counts at 224 px (exact integers:
    GMACs are MACs / 1e9)."""
    params = {"XS": 3_475_360, "S": 6_092_128, "L1": 12_057_920, "L3": 28_494_736}
    macs = {"XS": 605_483_572, "S": 988_135_904, "L1": 1_600_353_792, "L3": 4_014_991_104}
    for name, spec in PRESETS.items():
        assert analytic_params(spec) == params[name]
        assert analytic_gmacs(spec) == macs[name] / 1e9


# Per kind/block/stage: [count, MACs, params, input elements, output elements]. The parameter-
# free ops of two specs, and for one of them also the module ops (their numbers are checked
# against the model above; here their stage and block labels, which the latency features use).
GOLDEN_MODULE_OPS = {
    "4d3ea880128b6b72": {
        "bn/attn/0": [4, 12288, 192, 6144, 6144], "bn/attn/1": [2, 2048, 128, 1024, 1024],
        "bn/attn/2": [2, 1536, 384, 768, 768], "bn/conv/3": [1, 256, 256, 128, 128],
        "bn/down/1": [1, 1024, 64, 512, 512], "bn/down/2": [1, 768, 192, 384, 384],
        "bn/down/3": [1, 256, 256, 128, 128], "bn/head/4": [1, 256, 256, 128, 128],
        "bn/stem/-1": [2, 9216, 72, 4608, 4608], "conv/attn/0": [8, 737280, 11856, 21504, 21504],
        "conv/attn/1": [4, 98304, 6304, 2560, 2560],
        "conv/attn/2": [4, 294912, 74304, 2304, 2304],
        "conv/conv/3": [2, 98304, 98816, 512, 512], "conv/down/1": [1, 110592, 6944, 1536, 512],
        "conv/down/2": [1, 110592, 27744, 512, 384],
        "conv/down/3": [1, 110592, 110720, 384, 128],
        "conv/stem/-1": [2, 248832, 2952, 6144, 4608],
        "dwconv/attn/0": [2, 27648, 480, 3072, 3072], "dwconv/attn/1": [1, 4608, 320, 512, 512],
        "dwconv/attn/2": [1, 3456, 960, 384, 384], "dwconv/conv/3": [1, 1152, 1280, 128, 128],
        "gelu/attn/0": [4, 0, 0, 15360, 15360], "gelu/attn/1": [2, 0, 0, 1536, 1536],
        "gelu/attn/2": [2, 0, 0, 1536, 1536], "gelu/conv/3": [1, 0, 0, 384, 384],
        "linear/attn/0": [8, 294912, 4800, 12288, 12288],
        "linear/attn/1": [4, 65536, 4224, 2048, 2048],
        "linear/attn/2": [4, 147456, 37248, 1536, 1536],
        "linear/head/4": [2, 256000, 258000, 256, 2000], "relu/stem/-1": [2, 0, 0, 4608, 4608]},
}
GOLDEN_ELEMENTWISE = {
    "4d3ea880128b6b72": {  # 32 px: 8x8 tokens in stage 0, 1x1 in stage 3 (no attention there)
        "add/attn/0": [8, 0, 0, 24576, 12288], "add/attn/1": [4, 0, 0, 4096, 2048],
        "add/attn/2": [4, 0, 0, 3072, 1536], "add/conv/3": [1, 0, 0, 256, 128],
        "l2norm/attn/0": [4, 0, 0, 6272, 6272], "l2norm/attn/1": [2, 0, 0, 1040, 1040],
        "l2norm/attn/2": [2, 0, 0, 772, 772], "matmul/attn/0": [2, 3072, 48, 3072, 128],
        "matmul/attn/1": [1, 512, 32, 512, 16], "matmul/attn/2": [1, 384, 96, 384, 4],
        "mul/attn/0": [10, 0, 144, 21504, 15360], "mul/attn/1": [5, 0, 96, 3584, 2560],
        "mul/attn/2": [5, 0, 288, 2688, 1920], "mul/conv/3": [1, 0, 128, 128, 128],
        "reduce/attn/0": [2, 0, 0, 3072, 3072], "reduce/attn/1": [1, 0, 0, 512, 512],
        "reduce/attn/2": [1, 0, 0, 384, 384], "reduce/head/4": [1, 0, 0, 128, 128]},
    "4680faa64264d00a": {  # 96 px, odd widths, no attention in stage 1
        "add/attn/0": [8, 0, 0, 165888, 82944], "add/attn/2": [12, 0, 0, 62208, 31104],
        "add/attn/3": [4, 0, 0, 7488, 3744], "add/conv/1": [1, 0, 0, 11520, 5760],
        "add/conv/3": [1, 0, 0, 1872, 936], "l2norm/attn/0": [4, 0, 0, 42624, 42624],
        "l2norm/attn/2": [6, 0, 0, 15660, 15660], "l2norm/attn/3": [2, 0, 0, 1881, 1881],
        "matmul/attn/0": [2, 20736, 36, 20736, 1152], "matmul/attn/2": [3, 7776, 216, 7776, 108],
        "matmul/attn/3": [1, 936, 104, 936, 9], "mul/attn/0": [10, 0, 108, 145152, 103680],
        "mul/attn/2": [15, 0, 648, 54432, 38880], "mul/attn/3": [5, 0, 312, 6552, 4680],
        "mul/conv/1": [1, 0, 40, 5760, 5760], "mul/conv/3": [1, 0, 104, 936, 936],
        "reduce/attn/0": [2, 0, 0, 20736, 20736], "reduce/attn/2": [3, 0, 0, 7776, 7776],
        "reduce/attn/3": [1, 0, 0, 936, 936], "reduce/head/4": [1, 0, 0, 936, 936]},
}


@pytest.mark.parametrize("arch_hash", list(GOLDEN_ELEMENTWISE))
def test_op_table_parameter_free_ops_golden(arch_hash):
    (spec,) = [s for s in SPECS if s.arch_hash == arch_hash]
    got = collections.defaultdict(lambda: [0, 0, 0, 0, 0])
    for o in op_table(spec):
        if o.kind in ("add", "mul", "l2norm", "reduce", "matmul"):
            g = got[f"{o.kind}/{o.block}/{o.stage}"]
            for i, v in enumerate((1, o.macs, o.params, o.in_elems, o.out_elems)):
                g[i] += v
    assert dict(got) == GOLDEN_ELEMENTWISE[arch_hash]
    assert {o.kind for o in op_table(spec)} <= set(OP_KINDS)


@pytest.mark.parametrize("arch_hash", list(GOLDEN_MODULE_OPS))
def test_op_table_module_ops_golden_labels(arch_hash):
    (spec,) = [s for s in SPECS if s.arch_hash == arch_hash]
    got = collections.defaultdict(lambda: [0, 0, 0, 0, 0])
    for o in op_table(spec):
        if o.kind not in ("add", "mul", "l2norm", "reduce", "matmul"):
            g = got[f"{o.kind}/{o.block}/{o.stage}"]
            for i, v in enumerate((1, o.macs, o.params, o.in_elems, o.out_elems)):
                g[i] += v
    assert dict(got) == GOLDEN_MODULE_OPS[arch_hash]
