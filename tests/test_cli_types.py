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
