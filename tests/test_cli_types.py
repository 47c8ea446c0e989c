"""search_space.cli_types.number_type: the one parse step of a number option (text -> int or
float, range check, argparse.ArgumentTypeError naming the input and what is allowed). The
commands' own messages are checked in tests/test_bad_inputs.py."""
from __future__ import annotations

import argparse

import pytest

from search_space.cli_types import number_type


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


def _number_options():
    """(sub-command words, option) for every option of run_search.py whose value is a number:
    generated from the real parser, so an option added later with a bare type=int is caught."""
    import run_search
    parser, _ = run_search.build_parser()
    found = []

    def walk(words, p):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    walk(words + [name], sub)
            elif a.option_strings and a.type is not None:
                try:
                    one = a.type("1")
                except (argparse.ArgumentTypeError, TypeError, ValueError):
                    continue  # a number type refuses no "1" (port 1, seed 1, ...); others skip
                if isinstance(one, (int, float)):  # bare int / float included
                    found.append((tuple(words), a.option_strings[-1]))
    walk([], parser)
    return found


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
