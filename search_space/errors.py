"""Domain exceptions: the only errors the command line turns into one line and exit status 2.

Everything a user can get wrong (a malformed spec, a missing file, an unknown study or device,
an impossible budget) raises :class:`UsageError` or a subclass, with a message that names the
input and what is allowed. Anything else that escapes to ``run_search.py`` is a bug and shows
its traceback. They live here, at the bottom of the dependency order (search -> results ->
latency_models -> search_space), so every package can raise them.
"""
from __future__ import annotations


class UsageError(ValueError):
    """Bad input from the user. The message is one line: the input, the value, what is allowed.

    A ValueError subclass so library callers that already catch ValueError keep working; the
    CLI catches only this class, never ValueError itself.
    """


class NotFoundError(UsageError, FileNotFoundError):
    """A named thing the user pointed at does not exist (file, study, device, family, trial).

    Also a FileNotFoundError, so ``except FileNotFoundError`` around file access still sees it.
    """
