"""search_space.fields: the one JSON -> config-dataclass check, and the configs that use it."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from search.proxy.fidelity import Fidelity
from search.proxy.supernet.config import SupernetConfig
from search_space.errors import UsageError
from search_space.fields import is_int, is_number, json_numbers, known_fields
from search_space.io import parse_json
from search_space.spec import PRESETS, ArchSpec, SpecError


@dataclass
class Cfg:
    n: int = 1
    x: float = 0.5
    name: str = "a"


def test_known_fields_refuses_a_non_object_and_unknown_fields_naming_the_allowed():
    with pytest.raises(UsageError) as e:
        known_fields(Cfg, [1], "cfg")
    assert str(e.value) == "cfg: expected a JSON object, got list"
    with pytest.raises(SpecError) as e:
        known_fields(Cfg, {"n": 1, "m": 2, "b": 3}, "cfg", SpecError, hint=" (old file?)")
    assert str(e.value) == "cfg: unknown field(s) ['b', 'm'] (old file?); allowed: ['n', 'name', 'x']"
    d = {"n": 2}
    out = known_fields(Cfg, d, "cfg")
    assert out == d and out is not d


def test_json_numbers_reads_json_numbers_into_the_declared_types():
    out = json_numbers(Cfg, {"n": 3.0, "x": 2, "name": 1.0})
    assert out == {"n": 3, "x": 2.0, "name": 1.0}
    assert type(out["n"]) is int and type(out["x"]) is float and type(out["name"]) is float
    assert json_numbers(Cfg, {"n": 2.5, "x": True}) == {"n": 2.5, "x": True}  # left to the checks
    assert type(json_numbers(Cfg, {"x": True})["x"]) is bool


def test_number_predicates_exclude_bools_and_non_finite():
    assert is_int(3) and not is_int(True) and not is_int(3.0)
    assert is_number(2.5) and is_number(2) and not is_number(False)
    assert not is_number(float("nan")) and not is_number(float("inf"))


@pytest.mark.parametrize("cls,what", [(Fidelity, "fidelity"), (SupernetConfig, "supernet config")])
def test_every_config_uses_it(cls, what):
    assert cls.from_dict({"epochs": 3.0}).epochs == 3
    with pytest.raises(UsageError, match=rf"^{what}: unknown field\(s\) \['epoch'\]; allowed: "):
        cls.from_dict({"epoch": 3})


def test_spec_from_dict_uses_it():
    d = PRESETS["XS"].to_dict()
    assert ArchSpec.from_dict(d) == PRESETS["XS"]
    with pytest.raises(SpecError, match=r"^spec: unknown field\(s\) \['depth'\]; allowed: "):
        ArchSpec.from_dict({**d, "depth": 1})
    with pytest.raises(SpecError, match=r"^spec: expected a JSON object, got str$"):
        ArchSpec.from_dict("XS")


def test_parse_json_names_the_input_and_uses_the_given_error():
    assert parse_json('{"a": [1, 2.5]}', "x") == {"a": [1, 2.5]}
    with pytest.raises(SpecError, match=r"^spec: not valid JSON \(line 1 column 1: Expecting value\)$"):
        ArchSpec.from_json("nope")
    with pytest.raises(UsageError, match=r"^fidelity: not valid JSON \("):
        Fidelity.from_json("{")
    with pytest.raises(UsageError, match=r"^supernet config: not valid JSON \("):
        SupernetConfig.from_json("[1,")


@pytest.mark.parametrize("argv, message", [
    (["search", "--fidelity", '{"epochs": 1, "epochs": 50}', "--trials", "1"],
     "--fidelity: key 'epochs' appears twice in one JSON object; give it once"),
    (["search", "--space", '{"fixed": {"resolution": 224, "resolution": 160}}', "--trials", "1"],
     "--space: key 'resolution' appears twice in one JSON object; give it once"),
    (["arch", "show", '{"depths": [1, 1, 1, 1], "depths": [2, 2, 6, 4]}'],
     "spec: key 'depths' appears twice in one JSON object; give it once"),
    (["latency", "calibrate", "--records", "{t}/r.json", "--device", "p"],
     "{t}/r.json: key 'latency_ms' appears twice in one JSON object; give it once"),
    (["latency", "predict", "{t}/spec.json"],
     "spec file {t}/spec.json: key 'widths' appears twice in one JSON object; give it once"),
])
def test_a_json_object_that_repeats_a_key_is_refused(argv, message, tmp_path, capsys):
    """json.loads keeps the last of two equal keys silently: {"epochs": 1, "epochs": 50} would
    have trained 50 epochs. Inline JSON, spec files and records files all refuse it."""
    import run_search
    (tmp_path / "r.json").write_text('[{"model": "XS", "latency_ms": 1, "latency_ms": 2}]')
    (tmp_path / "spec.json").write_text('{"depths": [1, 1, 1, 1], "widths": [8, 8, 8, 8], '
                                        '"widths": [16, 16, 16, 16]}')
    before = sorted(tmp_path.rglob("*"))
    argv = [a.replace("{t}", str(tmp_path)) for a in argv]
    extra = ["--out", str(tmp_path / "o"), "--db", str(tmp_path / "o.db")] \
        if argv[0] == "search" else []
    assert run_search.main(argv + extra) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: " + message.replace("{t}", str(tmp_path))]
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("argv, what", [
    (["scale", "--base", "XS", "--targets", "1", "--name", "{bad}"], "--name"),
    (["ladder", "--base", "XS", "--targets", "1", "--study", "{bad}"], "--study"),
    (["fidelity", "--name", "{bad}", "--seeds", "0", "--refs", "XS,S", "--no-db"], "--name"),
    (["search", "--study", "{bad}", "--trials", "1"], "--study"),
])
@pytest.mark.parametrize("bad", ["../../escape", "a/b", "/abs", "..", ""])
def test_a_name_that_becomes_a_directory_cannot_leave_its_parent(argv, what, bad, tmp_path,
                                                                 capsys, monkeypatch):
    """`scale --name ../../escape` wrote its family two directories above runs/scale/."""
    import run_search
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{bad}", bad) for a in argv]
    assert run_search.main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {what} {bad!r}: use letters, digits, '_', '-', '.' (<= 64)"]
    assert list(tmp_path.iterdir()) == []
