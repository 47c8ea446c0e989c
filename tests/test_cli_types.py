"""search_space.cli_types: number_type, the one parse step of a number option (text -> int or
float, range check, argparse.ArgumentTypeError naming the input and what is allowed), and
comma_items, the one reading of a comma-separated option. The commands' own messages are
checked in tests/test_bad_inputs.py."""
from __future__ import annotations

import argparse
import re

import pytest

from search_space.cli_types import comma_items, number_type
from search_space.errors import UsageError


def test_accepts_the_range_and_the_extra_values():
    port = number_type(int, 1, 65535)
    assert port("1") == 1 and port("65535") == 65535 and isinstance(port("8050"), int)
    poll = number_type(float, 1, 3600, also=(0,))
    assert poll("0") == 0.0 and poll("2.5") == 2.5 and poll("3600") == 3600.0
    assert number_type(int, 1)("1000000") == 1000000  # no upper bound


@pytest.mark.parametrize("kind, low, high, text, message", [
    (int, 1, 65535, "0", "0: allowed integers 1..65535"),
    (int, 1, 65535, "65536", "65536: allowed integers 1..65535"),
    (int, 1, 65535, "8050.0", "'8050.0' is not an integer; allowed integers 1..65535"),
    (int, 1, None, "-3", "-3: allowed integers >= 1"),
    (float, 0.5, 2, "abc", "'abc' is not a number; allowed numbers 0.5..2"),
    (float, 0.5, None, "inf", "inf: allowed numbers >= 0.5"),
    (float, 0.5, None, "nan", "nan: allowed numbers >= 0.5"),
    (int, 0, 2**32 - 1, "-1", "-1: allowed integers 0..4294967295"),   # not 4.29497e+09
    (float, 0, 1e7, "-1", "-1: allowed numbers 0..1e+07"),
])
def test_refusals_name_the_input_and_what_is_allowed(kind, low, high, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as e:
        number_type(kind, low, high)(text)
    assert str(e.value) == message


def test_the_allowed_text_can_be_given_and_argparse_names_the_flag(capsys):
    p = argparse.ArgumentParser(prog="x")
    p.add_argument("--poll", type=number_type(float, 1, 3600, also=(0,),
                                              allowed="0 (off) or 1..3600 seconds"))
    assert p.parse_args(["--poll", "0"]).poll == 0.0
    with pytest.raises(SystemExit):
        p.parse_args(["--poll", "0.5"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        "x: error: argument --poll: 0.5: allowed 0 (off) or 1..3600 seconds")


@pytest.mark.parametrize("kind, text, message", [
    (int, "abc", "'abc' is not an integer; allowed integers"),
    (int, "1.5", "'1.5' is not an integer; allowed integers"),
    (float, "abc", "'abc' is not a number; allowed finite numbers"),
    (float, "nan", "nan: allowed finite numbers"),
    (float, "-1e400", "-1e400: allowed finite numbers"),
])
def test_unbounded_types_refuse_what_is_not_a_finite_number(kind, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as e:
        number_type(kind)(text)
    assert str(e.value) == message
    assert number_type(kind)("-7") == -7


def _options(keep) -> list[tuple[tuple[str, ...], str]]:
    """(sub-command words, option) of every option of run_search.py that ``keep(action)``
    accepts: generated from the real parser, so an option added later is caught."""
    import run_search
    parser, _ = run_search.build_parser()
    found = []

    def walk(words, p):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    walk(words + [name], sub)
            elif a.option_strings and keep(a):
                found.append((tuple(words), a.option_strings[-1]))
    walk([], parser)
    return found


def _is_number(a: argparse.Action) -> bool:
    """Its value is a number (a bare type=int / float included)."""
    if a.type is None:
        return False
    try:
        return isinstance(a.type("1"), (int, float))
    except (argparse.ArgumentTypeError, TypeError, ValueError):
        return False  # a number type refuses no "1" (port 1, seed 1, ...); others skip


def _number_options():
    return _options(_is_number)


NUMBER_OPTIONS = _number_options()


def test_the_registry_walk_finds_the_number_options():
    assert len(NUMBER_OPTIONS) >= 60  # every command's counts, seeds, rates ...
    assert (("search",), "--trials") in NUMBER_OPTIONS
    assert (("retrain",), "--lr") in NUMBER_OPTIONS


@pytest.mark.parametrize("words, flag", NUMBER_OPTIONS, ids=lambda v: " ".join(v) if
                         isinstance(v, tuple) else v)
def test_every_number_option_refuses_a_word_with_what_is_allowed(words, flag, capsys):
    import run_search
    parser, _ = run_search.build_parser()
    with pytest.raises(SystemExit) as e:
        parser.parse_args([*words, flag, "abc"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: argument {flag}: 'abc' is not a"), err
    assert "; allowed " in err[0], err


# --- comma-separated options ------------------------------------------------------------------
def test_comma_items_keeps_order_strips_and_refuses_empty_items():
    assert comma_items(" XS, S ,L1", "--baselines", "presets") == ("XS", "S", "L1")
    assert comma_items("", "--baselines", "presets", empty_ok=True) == ()
    with pytest.raises(UsageError, match=r"^--baselines 'XS,,S': item 2 is empty; allowed "
                                         r"presets$"):
        comma_items("XS,,S", "--baselines", "presets")
    with pytest.raises(UsageError, match=r"^--seeds '0,1,': item 3 is empty; allowed seeds$"):
        comma_items("0,1,", "--seeds", "seeds")
    with pytest.raises(UsageError, match=r"^--seeds ' ': empty; allowed seeds$"):
        comma_items(" ", "--seeds", "seeds")


def _comma_options():
    """Every option whose help says it is comma-separated (a new one must join COMMA_ARGV)."""
    return _options(lambda a: re.search(r"\bcomma[- ]", a.help or "", re.I) is not None)


# What else each command needs to reach the comma option's parse ("{t}": a temporary dir).
COMMA_ARGV = {
    ("search",): ["--trials", "1", "--out", "{t}/runs", "--db", "{t}/r.db"],
    ("fidelity",): ["--out", "{t}/fid", "--no-db"],
    ("pareto",): ["--db", "{t}/r.db"],
    ("scale",): ["--base", "XS", "--targets", "1.0", "--no-save"],
    ("ladder",): ["--base", "XS", "--targets", "1.0"],
    ("fit",): ["--db", "{t}/r.db"],
}
COMMA_OPTIONS = _comma_options()


def test_the_registry_walk_finds_the_comma_options():
    assert {(("search",), "--baselines"), (("fidelity",), "--seeds"), (("fidelity",), "--refs"),
            (("pareto",), "--objectives"), (("pareto",), "--ref"), (("fit",), "--x"),
            (("scale",), "--targets")} <= set(COMMA_OPTIONS)


@pytest.mark.parametrize("words, flag", COMMA_OPTIONS, ids=lambda v: " ".join(v) if
                         isinstance(v, tuple) else v)
def test_every_comma_option_refuses_an_empty_item_naming_it(words, flag, tmp_path, capsys):
    """'XS,,S' was read as 'XS,S' (the empty item dropped): a typo silently changed what ran."""
    import run_search
    assert words in COMMA_ARGV, f"{' '.join(words)}: add what it needs to COMMA_ARGV"
    rest = [a.replace("{t}", str(tmp_path)) for a in COMMA_ARGV[words]]
    if flag in rest:  # the option is also one the command needs: replace its value
        i = rest.index(flag)
        del rest[i:i + 2]
    before = sorted(tmp_path.rglob("*"))
    assert run_search.main([*words, *rest, flag, "1,,2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {flag} '1,,2': item 2 is empty; allowed " + err[0].split(
        "; allowed ", 1)[1]], err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_pareto_ref_must_be_finite(tmp_path, capsys):
    import run_search
    assert run_search.main(["pareto", "--db", str(tmp_path / "r.db"), "--ref", "0,nan"]) == 2
    assert capsys.readouterr().err.strip() == "error: --ref '0,nan': allowed finite numbers, e.g. 0,5"
