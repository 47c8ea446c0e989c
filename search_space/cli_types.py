"""The one parse step of a number option (an argparse ``type=`` that reads the text as an int
or a float and checks its range) and of a comma-separated option (:func:`comma_items`).

Every command-line number with a range (``--port``, ``--poll-seconds``, ``--max-details``,
``--threads``) uses :func:`number_type`, so its errors read the same everywhere: argparse
prefixes ``argument --flag:`` and exits 2, and the rest is one line naming the input and what
is allowed (``argument --port: 70000: allowed integers 1..65535``). It lives in the bottom
layer so that results (the dashboard) and search (the shared search options) can both use it.
"""
from __future__ import annotations

import argparse
import math
from typing import Callable

from .errors import UsageError

__all__ = ["OneLineParser", "number_type", "comma_items", "INTEGER", "NUMBER", "SEED",
           "MAX_SEED"]

MAX_SEED = 2**32 - 1  # numpy's and Optuna's samplers take seeds 0..2**32-1


class OneLineParser(argparse.ArgumentParser):
    """argparse's own errors (unknown option, invalid number, bad choice) in the tool's form: one
    ``error:`` line naming the option, exit status 2, no usage dump. Sub-commands inherit it.
    ``run_search.py`` and the exported ``train_ray.py`` both parse with it."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def _allowed(kind: type, low: float | None, high: float | None) -> str:
    what = "integers" if kind is int else "numbers"
    num = (lambda v: str(int(v))) if kind is int else (lambda v: f"{v:g}")  # no 4.29497e+09
    if low is None:
        return ("finite " + what if kind is float else what) if high is None else \
            f"{what} <= {num(high)}"
    return f"{what} >= {num(low)}" if high is None else f"{what} {num(low)}..{num(high)}"


def number_type(kind: type[int] | type[float], low: float | None = None,
                high: float | None = None, *, also: tuple[float, ...] = (),
                allowed: str = "") -> Callable[[str], float]:
    """An argparse ``type=``: the text as ``kind`` (int or float), accepted when
    ``low <= value <= high`` (None: no bound on that side) or ``value in also`` (e.g. 0 meaning
    "off"), else ``argparse.ArgumentTypeError``. ``allowed`` says what is allowed in the message
    (default: "integers LOW..HIGH", "numbers >= LOW", ...). NaN and infinities are refused."""
    allowed = allowed or _allowed(kind, low, high)
    noun = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}; allowed {allowed}") from None
        ok = math.isfinite(v) and (v in also or ((low is None or low <= v)
                                                  and (high is None or v <= high)))
        if not ok:
            raise argparse.ArgumentTypeError(f"{text}: allowed {allowed}")
        return v

    parse.__name__ = f"{kind.__name__} ({allowed})"
    return parse


def comma_items(text: str, option: str, allowed: str, *,
                empty_ok: bool = False) -> tuple[str, ...]:
    """The one reading of a comma-separated option (``--baselines XS,S``, ``--seeds 0,1,2``,
    ``--objectives top1,latency_ms``): the stripped items, in order. An empty item (``XS,,S``,
    ``0,1,``) is a UsageError naming the option, the text and what is allowed, never dropped
    silently (a typo there would quietly change what runs); so is an empty text, unless
    ``empty_ok`` (``--baselines ''`` means "none")."""
    text = str(text)
    if not text.strip():
        if empty_ok:
            return ()
        raise UsageError(f"{option} {text!r}: empty; allowed {allowed}")
    items = tuple(t.strip() for t in text.split(","))
    for i, item in enumerate(items, 1):
        if not item:
            raise UsageError(f"{option} {text!r}: item {i} is empty; allowed {allowed}")
    return items


# Options whose range is checked by the config they fill (its __post_init__ names the range):
# at parse time only "a finite integer / number", so 'abc', '1.5' for an int and 'nan', '1e400'
# fail with one line saying what is allowed instead of argparse's "invalid int value".
INTEGER = number_type(int)
NUMBER = number_type(float)

# ``--seed`` of every command: numpy refuses negative seeds with a traceback deep in the run.
SEED = number_type(int, 0, MAX_SEED)
