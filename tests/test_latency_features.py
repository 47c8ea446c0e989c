"""Analytic features == features read from the converted CoreML program (op for op)."""
from collections import Counter

import numpy as np
import pytest

from latency_models.analytic import spec_features, spec_features_many, spec_ops
from latency_models.features import FEATURE_NAMES, aggregate
from search_space.space import DEFAULT_SPACE
from search_space.spec import ArchSpec

# Small specs that still exercise every code path: conv-only and all-attention stages,
# fractional MLP widths, no distillation head, no classifier.
SPECS = [
    ArchSpec(depths=(1, 2, 1, 2), widths=(16, 24, 40, 48), mlp_ratios=(2.0, 3.0, 2.5, 4.0),
             attn_blocks=(0, 2, 0, 1), resolution=96, num_classes=10, distillation=False),
    ArchSpec(depths=(2, 1, 2, 1), widths=(24, 32, 48, 64), mlp_ratios=(4.0, 2.0, 3.0, 2.0),
             attn_blocks=(1, 0, 2, 1), resolution=64, num_classes=0),
]


def _key(o):
    return (o.op_type, o.klass, o.macs, o.in_elems, o.out_elems, o.weight_elems)


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
