from search_space import PRESETS
from search_space.costs import analytic_gmacs, analytic_params, op_table
from search_space.fvcore_count import count_params, fvcore_gmacs
from search_space.space import DEFAULT_SPACE, SearchSpace
from search_space.swiftformer import build_model

# Cheaper space for fvcore tracing of 200 models: same structure, smaller widths/resolutions.
SMALL = SearchSpace(widths=((16, 24, 32), (32, 48), (48, 64, 96), (64, 96, 128)),
                    resolutions=(32, 64, 96), depths=((1, 2, 3), (1, 2), (1, 2, 3, 4), (1, 2, 3)))


def test_analytic_gmacs_agree_with_fvcore_on_200_random_specs():
    specs = SMALL.sample_many(190, seed=0) + DEFAULT_SPACE.sample_many(10, seed=0)
    worst = 0.0
    for s in specs:
        m = build_model(s)
        assert analytic_params(s) == count_params(m)
        g = fvcore_gmacs(m, s.resolution)
        worst = max(worst, abs(analytic_gmacs(s) - g) / g)
    assert worst < 0.01


def test_op_table_sums_and_positive():
    ops = op_table(PRESETS["L1"])
    assert all(o.macs >= 0 and o.in_elems > 0 and o.out_elems > 0 for o in ops)
    assert sum(o.params for o in ops) == 12_057_920
    # resolution override scales MACs roughly quadratically
    assert 3.5 < analytic_gmacs(PRESETS["L1"], 448) / analytic_gmacs(PRESETS["L1"]) < 4.1
