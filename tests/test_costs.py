"""Analytic costs (no torch) equal the measured ones exactly: fvcore's MAC count and the
parameter count of the built model. Exact equality on a few specs catches a MAC-count bug that
a tolerance over many specs would hide; the specs cover every block kind (conv / attention
encoders, every attention placement), odd widths and MLP ratios, and several resolutions."""
import pytest

from search_space import PRESETS
from search_space.costs import analytic_gmacs, analytic_params, op_table
from search_space.fvcore_count import count_params, fvcore_gmacs
from search_space.space import SearchSpace
from search_space.spec import ArchSpec
from search_space.swiftformer import build_model

pytestmark = pytest.mark.timeout(300)

# Same structure as the default space, small enough that fvcore traces in about a second.
SMALL = SearchSpace(widths=((16, 24, 32), (32, 48), (48, 64, 96), (64, 96, 128)),
                    resolutions=(32, 64, 96), depths=((1, 2, 3), (1, 2), (1, 2, 3, 4), (1, 2, 3)))
SPECS = SMALL.sample_many(5, seed=0) + [
    PRESETS["XS"].replace(resolution=64),
    PRESETS["L3"].replace(resolution=64, distillation=False, num_classes=10),
    ArchSpec(depths=(2, 1, 3, 2), widths=(18, 40, 72, 104), mlp_ratios=(2.5, 3.0, 4.0, 3.5),
             attn_blocks=(2, 0, 3, 1), resolution=96, num_classes=7),
]


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
