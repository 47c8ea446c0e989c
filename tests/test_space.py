import random

import optuna
import pytest

from search_space import PRESETS, SpecError
from search_space.space import DEFAULT_SPACE, SearchSpace, attn_count


def test_presets_are_members_and_round_trip_params():
    for name, spec in PRESETS.items():
        assert spec in DEFAULT_SPACE, name
        assert DEFAULT_SPACE.from_params(DEFAULT_SPACE.to_params(spec)) == spec


def test_non_member_is_reported():
    spec = PRESETS["XS"].replace(widths=(48, 56, 112, 200))
    assert not DEFAULT_SPACE.contains(spec)
    assert "widths[3]" in DEFAULT_SPACE.why_not(spec)
    with pytest.raises(SpecError, match="not a member"):
        DEFAULT_SPACE.to_params(spec)


def test_seeded_sampling_is_reproducible_and_in_space():
    a = DEFAULT_SPACE.sample_many(50, seed=3)
    b = DEFAULT_SPACE.sample_many(50, seed=3)
    c = DEFAULT_SPACE.sample_many(50, seed=4)
    assert a == b and a != c
    assert all(s in DEFAULT_SPACE for s in a)
    assert len({s.arch_hash for s in a}) > 45


def test_size_matches_enumeration_on_small_space():
    small = SearchSpace(depths=((1, 2), (2,), (1, 3), (2,)), widths=((16,), (16, 32), (32,), (64,)),
                        mlp_ratios=(2.0, 4.0), resolutions=(64,))
    import itertools
    choices = small.param_choices()
    seen = {small.from_params(dict(zip(choices, combo))).arch_hash
            for combo in itertools.product(*choices.values())}
    assert len(seen) == small.size()
    # none/last1/last2/all coincide at small depths: depth 1 -> {0,1}, depth 2 -> {0,1,2},
    # depth 3 -> {0,1,2,3}. Stages: (2+3)*1*2, 3*2*2, (2+4)*1*2, 3*1*2; one resolution.
    assert small.size() == (5 * 2) * (3 * 2 * 2) * (6 * 2) * (3 * 2)


def test_mutation_changes_little_and_stays_in_space():
    rng = random.Random(0)
    for spec in DEFAULT_SPACE.sample_many(30, seed=1):
        child = DEFAULT_SPACE.mutate(spec, rng)
        assert child != spec and child in DEFAULT_SPACE
        pa, pc = DEFAULT_SPACE.to_params(spec), DEFAULT_SPACE.to_params(child)
        assert sum(pa[k] != pc[k] for k in pa) <= 2  # depth change may also move placement


def test_crossover_takes_whole_stages_from_parents():
    rng = random.Random(0)
    a, b = PRESETS["XS"], PRESETS["L3"]
    kids = [DEFAULT_SPACE.crossover(a, b, rng) for _ in range(40)]
    for k in kids:
        assert k in DEFAULT_SPACE
        for i in range(4):
            assert (k.depths[i], k.widths[i]) in {(a.depths[i], a.widths[i]), (b.depths[i], b.widths[i])}
    assert len({k.arch_hash for k in kids}) > 5


def test_encoding_is_flat_bounded_and_distinguishes():
    names = DEFAULT_SPACE.feature_names()
    encs = [DEFAULT_SPACE.encode(s) for s in DEFAULT_SPACE.sample_many(100, seed=0)]
    assert all(len(e) == len(names) for e in encs)
    assert all(0.0 <= v <= 1.0 for e in encs for v in e)
    assert DEFAULT_SPACE.encode(PRESETS["XS"]) != DEFAULT_SPACE.encode(PRESETS["S"])


def test_optuna_define_by_run():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    spec = DEFAULT_SPACE.suggest(trial)
    assert spec in DEFAULT_SPACE
    assert DEFAULT_SPACE.from_params(trial.params) == spec


def test_attn_count_modes():
    assert [attn_count(m, 5) for m in ("none", "last1", "last2", "all")] == [0, 1, 2, 5]
    assert attn_count("last2", 1) == 1
    with pytest.raises(SpecError, match="attention mode 'first': allowed"):
        attn_count("first", 3)
