"""Analytic features == features read from the converted CoreML program (op for op)."""
from collections import Counter

import numpy as np
import pytest

from latency_models.analytic import spec_features, spec_features_many, spec_ops
from latency_models.features import FEATURE_NAMES, aggregate
from search_space.space import DEFAULT_SPACE
from search_space.spec import PRESETS, ArchSpec

# Small specs that still exercise every code path: conv-only and all-attention stages,
# fractional MLP widths, no distillation head, no classifier.
SPECS = [
    ArchSpec(depths=(1, 2, 1, 2), widths=(16, 24, 40, 48), mlp_ratios=(2.0, 3.0, 2.5, 4.0),
             attn_blocks=(0, 2, 0, 1), resolution=96, num_classes=10, distillation=False),
    ArchSpec(depths=(2, 1, 2, 1), widths=(24, 32, 48, 64), mlp_ratios=(4.0, 2.0, 3.0, 2.0),
             attn_blocks=(1, 0, 2, 1), resolution=64, num_classes=0),
]


def _key(o):
    return (o.op_type, o.klass, o.macs, o.in_elems, o.out_elems, o.weight_elems, o.rank,
            o.axis_len, o.nonlast)


@pytest.mark.parametrize("spec", SPECS, ids=["dist-off", "headless"])
def test_analytic_matches_saved_coreml_program(spec, tmp_path):
    from latency_models.coreml import coreml_ops
    from latency_models.export import export_coreml

    path = str(tmp_path / "m.mlpackage")
    info = export_coreml(spec, path)            # ML program, iOS16, fp16, saved to disk
    assert info["method"] in ("export", "trace") and info["precision"] == "fp16"
    ops = coreml_ops(mlpackage=path)            # read back from the saved package
    assert len(ops) > 20
    missing = Counter(map(_key, ops)) - Counter(map(_key, spec_ops(spec)))
    extra = Counter(map(_key, spec_ops(spec))) - Counter(map(_key, ops))
    assert not missing and not extra, (sorted(missing.items())[:5], sorted(extra.items())[:5])
    np.testing.assert_allclose(aggregate(ops), spec_features(spec), rtol=1e-9)


def test_vectorised_equals_single_and_op_list():
    specs = DEFAULT_SPACE.sample_many(40, seed=11)
    F = spec_features_many(specs)
    for s, f in zip(specs[:10], F[:10]):
        np.testing.assert_allclose(f, spec_features(s))
        np.testing.assert_allclose(f, aggregate(spec_ops(s)))
    gm = F[:, [FEATURE_NAMES.index(f"{c}_gmacs") for c in ("conv", "pwconv", "dwconv", "linear")]].sum(1)
    from search_space.costs import analytic_gmacs

    fv = np.array([analytic_gmacs(s) for s in specs])
    # CoreML folds BatchNorm (fvcore counts 2 MACs/element for it): a little below fvcore's count.
    assert np.all(gm <= fv) and np.all(gm > 0.9 * fv)


def test_timm_baseline_converts_and_featurises():
    from latency_models.coreml import coreml_ops

    ops = coreml_ops("mobilenetv2_100", resolution=96)
    f = aggregate(ops)
    by = dict(zip(FEATURE_NAMES, f))
    assert by["pwconv_count"] >= 30 and by["dwconv_count"] == 17 and by["conv_count"] == 1
    assert by["actmm_count"] == 0 and by["act_count"] == 0     # ReLU6 is a cheap clip
    # MobileNetV2 at 96 px: 300 MMACs at 224 px scale with (96/224)^2 -> ~0.055 GMACs.
    total = by["conv_gmacs"] + by["pwconv_gmacs"] + by["dwconv_gmacs"] + by["linear_gmacs"]
    assert 0.045 < total < 0.065


def test_a_conversion_says_nothing_the_user_cannot_act_on(capsys):
    """EfficientFormer's attention-bias cache made torch.export warn on every conversion, and
    coremltools drew three progress bars: a records file of such models printed pages."""
    import warnings

    import torch

    from latency_models.coreml import convert_coreml

    class CachesInForward(torch.nn.Module):   # timm's EfficientFormer attention-bias cache
        def __init__(self):
            super().__init__()
            self.conv, self.cache = torch.nn.Conv2d(3, 8, 3), {}

        def forward(self, x):
            self.cache["cpu"] = torch.ones(2)
            return self.conv(x)

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        convert_coreml(CachesInForward(), 32, quiet=True)
    assert [str(w.message)[:60] for w in seen] == []
    assert capsys.readouterr().err == ""


def test_fast_plan_equals_the_emitters():
    """The symbolic plan (monomials + memory-bound masks) reproduces every feature exactly,
    headless and undistilled specs included."""
    from latency_models.analytic import (SpecArrays, compile_plan, evaluate_plan,
                                         features_of_arrays)
    from latency_models.features import N_FEATURES

    specs = DEFAULT_SPACE.sample_many(60, seed=4) + SPECS
    A = SpecArrays.from_specs(specs)
    exact = features_of_arrays(A)
    fast = evaluate_plan(compile_plan(), A, np.eye(N_FEATURES), chunk=7)   # several chunks
    np.testing.assert_allclose(fast, exact, rtol=1e-12, atol=1e-12)
    low = FEATURE_NAMES.index("lowai_mbytes")
    assert np.ptp(exact[:, low] / exact[:, FEATURE_NAMES.index("pwconv_act_mbytes")]) > 0.05


def test_ane_features_read_ranks_axes_and_intensity():
    from latency_models.features import make_op

    ops = [make_op("reshape", 0, 100, 100, 0, rank=5),                    # unfold kind
           make_op("softmax", 0, 256, 256, 0, rank=4, axis_len=256),      # large softmax
           make_op("softmax", 0, 49, 49, 0, rank=4, axis_len=49),         # small softmax
           make_op("reduce_mean", 0, 1000, 10, 0, rank=4, axis_len=100, nonlast=True),
           make_op("reduce_mean", 0, 1000, 10, 0, rank=4, axis_len=100, nonlast=False),
           make_op("conv", 64 * 10 * 2 - 1, 5, 5, 0, kernel=1),           # just memory-bound
           make_op("conv", 64 * 10 * 2, 5, 5, 0, kernel=1),               # just compute-bound
           make_op("gather", 0, 10, 10, 0)]
    f = dict(zip(FEATURE_NAMES, aggregate(ops)))
    assert f["hirank_mbytes"] == pytest.approx(400e-6)
    assert f["bigsoftmax_mbytes"] == pytest.approx(1024e-6)
    assert f["chreduce_mbytes"] == pytest.approx(2020e-6)
    assert f["lowai_mbytes"] == pytest.approx(20e-6)
    assert f["gather_count"] == 1 and f["layout_count"] == 1


def test_shipped_op_lists_carry_the_ane_features():
    """MobileViT-v2 (5-D unfold/fold, GroupNorm over channels) and DeiT (softmax over 197
    tokens, a 5-D qkv permute) show what SwiftFormer does not; the shipped cache keeps ranks
    and axes."""
    from latency_models.feature_cache import cached_features

    mv, deit = cached_features("mobilevitv2_100", 256), cached_features("deit_tiny_patch16_224")
    by = lambda f: dict(zip(FEATURE_NAMES, f))  # noqa: E731
    assert by(mv)["hirank_mbytes"] > 1 and by(mv)["chreduce_mbytes"] > 0.5
    assert by(deit)["bigsoftmax_mbytes"] > 0.5 and by(deit)["hirank_mbytes"] > 1
    sf = by(spec_features(PRESETS["L1"]))
    assert sf["hirank_mbytes"] == 0 and sf["bigsoftmax_mbytes"] == 0 and sf["gather_count"] == 0


@pytest.mark.timeout(300)
def test_timm_models_build_at_any_resolution():
    """The image size reaches timm: EfficientFormer's fixed 7x7 attention biases are rebuilt
    for 16x16 tokens at 512 px; fully convolutional models need nothing."""
    import torch

    from latency_models.timm_models import timm_model

    m, res = timm_model("efficientformer_l1", 512)
    assert res == 512
    with torch.no_grad():
        assert m(torch.zeros(1, 3, 512, 512)).shape == (1, 1000)
    biases = [mod.attention_biases for mod in m.modules() if hasattr(mod, "attention_biases")]
    assert biases and all(b.shape[-1] == 256 for b in biases)
