import dataclasses
import json

import pytest

from search_space import PRESETS, ArchSpec, SpecError, UsageError, load_spec

XS = PRESETS["XS"]


def test_json_round_trip_and_hash_stable():
    for spec in PRESETS.values():
        again = ArchSpec.from_json(spec.to_json())
        assert again == spec
        assert again.arch_hash == spec.arch_hash
    # lists vs tuples and ints vs floats for ratios do not change identity
    d = XS.to_dict()
    d["mlp_ratios"] = [4, 4, 4, 4]
    assert ArchSpec.from_dict(d).arch_hash == XS.arch_hash


def test_hash_distinguishes_architectures():
    hashes = {s.arch_hash for s in PRESETS.values()}
    assert len(hashes) == 4
    assert XS.replace(attn_blocks=(0, 1, 1, 1)).arch_hash != XS.arch_hash
    assert XS.replace(resolution=192).arch_hash != XS.arch_hash


def test_frozen_and_tuples():
    assert isinstance(ArchSpec.from_dict(XS.to_dict()).depths, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        XS.depths = (1, 1, 1, 1)


@pytest.mark.parametrize("change,field", [
    (dict(depths=(3, 3, 6)), "depths"),
    (dict(depths=(0, 3, 6, 4)), "depths[0]"),
    (dict(widths=(47, 56, 112, 220)), "widths[0]"),
    (dict(widths=(48, 4, 112, 220)), "widths[1]"),
    (dict(mlp_ratios=(4, 4, 40, 4)), "mlp_ratios[2]"),
    (dict(attn_blocks=(1, 1, 7, 1)), "attn_blocks[2]"),
    (dict(attn_blocks=(1, 1, 1, -1)), "attn_blocks[3]"),
    (dict(resolution=100), "resolution"),
    (dict(num_classes=-3), "num_classes"),
    (dict(drop_path_rate=1.5), "drop_path_rate"),
    (dict(layer_scale_init=0.0), "layer_scale_init"),
    (dict(depths=(3.0, 3, 6, 4)), "depths[0]"),
])
def test_validation_names_field_value_and_allowed(change, field):
    with pytest.raises(SpecError) as e:
        XS.replace(**change)
    msg = str(e.value)
    assert msg.startswith(field)
    assert "allowed" in msg or "need" in msg or "must" in msg


def test_from_dict_rejects_unknown_and_missing():
    with pytest.raises(SpecError, match="unknown field"):
        ArchSpec.from_dict({**XS.to_dict(), "heads": 4})
    with pytest.raises(SpecError, match="missing"):
        ArchSpec.from_dict({"depths": [1, 1, 1, 1]})
    with pytest.raises(SpecError, match="not valid JSON"):
        ArchSpec.from_json("{nope")


def test_load_spec_preset_file_inline(tmp_path):
    assert load_spec("xs") is PRESETS["XS"]
    p = tmp_path / "a.json"
    p.write_text(PRESETS["L1"].to_json())
    assert load_spec(str(p)) == PRESETS["L1"]
    assert load_spec(json.dumps(PRESETS["S"].to_dict())) == PRESETS["S"]
    with pytest.raises(SpecError, match="not a preset"):
        load_spec("nonexistent.json")


def test_block_kinds():
    s = XS.replace(attn_blocks=(0, 2, 6, 4))
    assert s.block_kinds(0) == ("conv",) * 3
    assert s.block_kinds(1) == ("conv", "attn", "attn")
    assert s.block_kinds(2) == ("attn",) * 6


@pytest.mark.parametrize("field, value, message", [
    ("depths", None, "depths=None: need a list of 4 values"),
    ("depths", 3, "depths=3: need a list of 4 values"),
    ("widths", "48,56", "widths='48,56': need a list of 4 values"),
    ("mlp_ratios", ["a", 4, 4, 4], "mlp_ratios[0]='a': allowed numbers"),
    ("mlp_ratios", [4, 4, None, 4], "mlp_ratios[2]=None: allowed numbers"),
    ("attn_blocks", [1, 1, 1, True], "attn_blocks[3]=True: allowed integers"),
])
def test_wrong_json_types_name_the_field(field, value, message):
    d = json.loads(PRESETS["XS"].to_json())
    d[field] = value
    with pytest.raises(SpecError) as e:
        ArchSpec.from_dict(d)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_spec_file_that_is_not_utf8_names_the_file(tmp_path):
    p = tmp_path / "spec.json"
    p.write_bytes(b"\xff\xfe{")
    with pytest.raises(UsageError, match=rf"spec file {p}: not UTF-8 text"):
        load_spec(str(p))


# Golden ids: every stored result is keyed by these. A change in canonical JSON (key order,
# separators, float formatting) or in the hash would orphan every existing database row.
GOLDEN_ARCH_HASH = {"XS": "cbb5515ad42403a6", "S": "e83365b10dc1ee5a", "L1": "d6bca2e5dcfdf3ee",
                    "L3": "a83a11e0e6eaf774"}


@pytest.mark.parametrize("name", list(GOLDEN_ARCH_HASH))
def test_arch_hash_golden_per_preset(name):
    assert PRESETS[name].arch_hash == GOLDEN_ARCH_HASH[name]


def test_canonical_json_golden():
    assert PRESETS["XS"].canonical_json() == (
        '{"attn_blocks":[1,1,1,1],"depths":[3,3,6,4],"distillation":true,"drop_path_rate":0.0,'
        '"layer_scale_init":1e-05,"mlp_ratios":[4.0,4.0,4.0,4.0],"num_classes":1000,'
        '"resolution":224,"widths":[48,56,112,220]}')


@pytest.mark.parametrize("field, value, ok", [
    ("drop_path_rate", 1.0, False), ("drop_path_rate", 0.999, True), ("drop_path_rate", 0.0, True),
    ("drop_path_rate", -0.001, False), ("drop_path_rate", True, False),
    ("layer_scale_init", 0.0, False), ("layer_scale_init", 10.0, True),
    ("layer_scale_init", 10.001, False),
    ("num_classes", 0, True), ("num_classes", -1, False), ("num_classes", True, False),
    ("resolution", 32, True), ("resolution", 2048, True), ("resolution", 2080, False),
    ("resolution", 48, False), ("resolution", 224.0, False),
    ("distillation", 1, False), ("distillation", False, True),
    ("depths", (1, 1, 1, 32), True), ("depths", (1, 1, 1, 33), False), ("depths", (0, 1, 1, 1), False),
    ("depths", (True, 1, 1, 1), False),
    ("widths", (8, 8, 8, 4096), True), ("widths", (6, 8, 8, 8), False),
    ("widths", (8, 8, 8, 4097), False), ("widths", (50, 8, 8, 8), True), ("widths", (49, 8, 8, 8), False),
    ("mlp_ratios", (0.5, 1, 1, 16), True), ("mlp_ratios", (0.49, 1, 1, 1), False),
    ("mlp_ratios", (1, 1, 1, 16.01), False), ("mlp_ratios", (1, 1, 1, float("nan")), False),
    ("attn_blocks", (0, 0, 0, 4), True), ("attn_blocks", (0, 0, 0, 5), False),
    ("attn_blocks", (-1, 0, 0, 0), False),
])
def test_validation_boundaries(field, value, ok):
    d = dict(XS.to_dict(), **{field: value})
    if field == "widths" and value[0] in (50, 49, 6):
        d["mlp_ratios"] = (4.0,) * 4
    if ok:
        assert getattr(ArchSpec.from_dict(d), field) == (tuple(value) if isinstance(value, tuple)
                                                       else value)
    else:
        with pytest.raises(SpecError, match=field):
            ArchSpec.from_dict(d)


# -- messages, serialisation and helpers, exactly ---------------------------------------------
@pytest.mark.parametrize("change, message", [
    (dict(depths=None), "depths=None: need a list of 4 values (one per stage)"),
    (dict(depths=(3, 3, 6)), "depths=[3, 3, 6]: need exactly 4 values (one per stage)"),
    (dict(widths=(47, 56, 112, 220)), "widths[0]=47: must be even (the stem uses widths[0]/2)"),
    (dict(attn_blocks=(1, 1, 7, 1)), "attn_blocks[2]=7: allowed integers 0..depths[2]=6 "
     "(number of trailing attention blocks; 0 = none, depth = all)"),
    (dict(depths=(0, 3, 6, 4)), "depths[0]=0: allowed integers 1..32"),
    (dict(widths=(48, 4, 112, 220)), "widths[1]=4: allowed integers 8..4096"),
    (dict(mlp_ratios=(4, 4, 40, 4)), "mlp_ratios[2]=40.0: allowed numbers 0.5..16.0"),
    (dict(resolution=100), "resolution=100: allowed integers, multiples of 32 in 32..2048"),
    (dict(resolution=224.0), "resolution=224.0: allowed integers, multiples of 32 in 32..2048"),
    (dict(num_classes=-3), "num_classes=-3: allowed integers >= 0 (0 = no head)"),
    (dict(distillation=1), "distillation=1: allowed true or false"),
    (dict(drop_path_rate=1.0), "drop_path_rate=1.0: allowed numbers in [0, 1)"),
    (dict(layer_scale_init=0.0), "layer_scale_init=0.0: allowed numbers in (0, 10]"),
])
def test_validation_messages_exactly(change, message):
    with pytest.raises(SpecError) as e:
        XS.replace(**change)
    assert str(e.value) == message


def test_extreme_but_valid_specs():
    # the narrowest stage with the largest ratio, and the widest with the smallest
    s = ArchSpec(depths=(1, 1, 1, 32), widths=(8, 8, 4096, 8), mlp_ratios=(16, 0.5, 0.5, 16),
                 attn_blocks=(0, 1, 0, 32), resolution=2048, num_classes=0)
    assert [s.hidden_dim(i) for i in range(4)] == [128, 4, 2048, 128]
    assert s.num_blocks == 35 and s.block_kinds(3) == ("attn",) * 32


def test_hidden_dim_truncates_like_timm():
    assert [XS.hidden_dim(i) for i in range(4)] == [192, 224, 448, 880]
    s = XS.replace(widths=(18, 40, 72, 104), mlp_ratios=(2.5, 3.0, 4.0, 3.3))
    assert [s.hidden_dim(i) for i in range(4)] == [45, 120, 288, 343]  # int(104 * 3.3) = 343


def test_to_json_sorted_and_indented():
    assert XS.to_json() == json.dumps(XS.to_dict(), sort_keys=True)
    assert XS.to_json().startswith('{"attn_blocks": [1, 1, 1, 1], "depths": [3, 3, 6, 4]')
    pretty = XS.to_json(indent=2)
    assert pretty.startswith('{\n  "attn_blocks": [\n    1,') and ArchSpec.from_json(pretty) == XS


def test_from_dict_and_from_json_refuse_non_objects():
    with pytest.raises(SpecError) as e:
        ArchSpec.from_dict([1, 2])
    assert str(e.value) == "spec: expected a JSON object, got list"
    with pytest.raises(SpecError, match="spec: expected a JSON object, got int"):
        ArchSpec.from_json("3")


def test_preset_by_any_case_and_unknown():
    from search_space.spec import preset

    assert preset("xs") is PRESETS["XS"] and preset("L3") is PRESETS["L3"]
    with pytest.raises(SpecError) as e:
        preset("XL")
    assert str(e.value) == "preset 'XL': allowed ['L1', 'L3', 'S', 'XS']"


def test_load_spec_messages_and_inline_with_spaces(tmp_path):
    assert load_spec("  " + PRESETS["S"].to_json()) == PRESETS["S"]
    with pytest.raises(SpecError) as e:
        load_spec("nonexistent.json")
    assert str(e.value) == ("architecture 'nonexistent.json': not a preset (XS/S/L1/L3), an "
                            "existing spec JSON file, or inline JSON")
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"depths": [1, 1, 1]}))
    with pytest.raises(SpecError) as e:
        load_spec(str(p))
    assert str(e.value) == f"spec file {p}: spec: missing required field(s) ['widths', " \
        "'mlp_ratios', 'attn_blocks']"
