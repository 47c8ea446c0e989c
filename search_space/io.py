"""Files that are never torn, and JSON that means the same thing everywhere.

Every file the tool writes (configs, reports, plots, checkpoints, calibrations, data caches)
goes through this module: the content is written to a temporary name in the same directory and
renamed into place, so a reader or a crash never sees half a file, and a killed writer leaves
only a temporary that a later run recognises as stale (:func:`remove_stale_temporaries`).

JSON: :func:`json_safe` is the one sanitiser (numpy/torch scalars to numbers, NaN/inf to null,
tuples to lists, unknown objects to their ``str``) and :func:`canonical_json` the one canonical
text (sorted keys, compact separators) used for hashes and identity keys.
"""
from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .errors import NotFoundError, UsageError
from .lazy import lazy_import

torch = lazy_import("torch")

# Every temporary this module creates has this marker in its name: ".<final name>.tmp-<host>-
# <pid>-<random>". Host and pid say who owns it, so a later run can tell a dead writer's
# leftover from a live concurrent writer's work in progress.
TEMP_MARK = ".tmp-"
# A temporary older than this is stale whoever wrote it (a writer on another host of a shared
# filesystem that died): no write the tool does takes a day.
STALE_AFTER_S = 24 * 3600.0


# ---------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------
def json_safe(obj: Any) -> Any:
    """A strict-JSON copy of ``obj``.

    numpy / torch scalars and 0-d arrays become Python numbers, arrays become lists, NaN and
    infinities become None (a diverged trial logs NaN losses; strict JSON has no NaN), tuples
    and sets become lists, mapping keys become strings, anything else becomes its ``str``.
    """
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    item = getattr(obj, "item", None)  # numpy scalar, 0-d array, torch scalar tensor
    if callable(item):
        try:
            return json_safe(item())
        except (TypeError, ValueError, RuntimeError):
            pass
    tolist = getattr(obj, "tolist", None)  # numpy arrays, tensors
    if callable(tolist):
        return json_safe(tolist())
    return str(obj)


def canonical_json(obj: Any) -> str:
    """Sorted keys, compact separators, floats in repr form: equal values give equal text.

    The identity of architectures (``ArchSpec.arch_hash``), fidelities and studies is a hash of
    this text, so it must never change for the same value.
    """
    return json.dumps(json_safe(obj), sort_keys=True, separators=(",", ":"))


def dumps_json(obj: Any, indent: int | None = 2) -> str:
    """Human-readable strict JSON (sorted keys, trailing newline) for files people open."""
    return json.dumps(json_safe(obj), indent=indent, sort_keys=True) + "\n"


# A name that becomes a directory (a study's runs/<study>/, a family's runs/scale/<name>/):
# one path component on any OS, never "..", "a/b" or an absolute path.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_name(name: str, what: str) -> str:
    """``name`` if it is a safe directory name (``NAME``), else a one-line UsageError."""
    if not NAME.fullmatch(name):
        raise UsageError(f"{what} {name!r}: use letters, digits, '_', '-', '.' (<= 64)")
    return name


def check_input_file(path: str | os.PathLike, what: str,
                     error: type[UsageError] = UsageError) -> Path:
    """``path`` is a regular file to read: NotFoundError when nothing is there, ``error``
    saying what is there instead (a directory, a device) -- "no such file" would mislead."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        raise NotFoundError(f"{what} {p}: no such file")
    kind = "is a directory" if p.is_dir() else "is not a regular file (a device, a socket ...)"
    raise error(f"{what} {p}: {kind}; expected a file")


def read_text(path: str | os.PathLike, what: str, error: type[UsageError] = UsageError) -> str:
    """The text of a user's input file (UTF-8; a byte-order mark, as editors on Windows write
    it, is dropped); ``error`` naming ``what`` and the file when it is not a readable UTF-8
    file (check_input_file's errors when it is not a file)."""
    p = check_input_file(path, what, error)
    try:
        return p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{what} {p}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise error(f"{what} {p}: cannot be read ({e.strerror})") from None


def _unique_keys(what: str, error: type[UsageError]) -> Callable[[list], dict]:
    """A json ``object_pairs_hook`` refusing an object that repeats a key: json.loads keeps the
    last one silently, so ``{"epochs": 1, "epochs": 50}`` would train 50 epochs unsaid."""
    def hook(pairs: list) -> dict:
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise error(f"{what}: key {k!r} appears twice in one JSON object; give it once")
            seen.add(k)
        return dict(pairs)
    return hook


def parse_json(text: str, what: str, error: type[UsageError] = UsageError) -> Any:
    """``text`` (user input: an option's inline JSON, a file's contents) parsed as JSON;
    ``error`` naming ``what`` when it is not valid JSON or an object repeats a key."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys(what, error))
    except json.JSONDecodeError as e:
        raise error(f"{what}: not valid JSON (line {e.lineno} column {e.colno}: "
                    f"{e.msg})") from None


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file is a one-line UsageError."""
    return parse_json(read_text(path, what), f"{what} {Path(path)}")


# ---------------------------------------------------------------------------------------------
# output locations, checked before any work (nothing is created by a check)
# ---------------------------------------------------------------------------------------------
def nearest_existing(p: Path) -> Path:
    """``p`` or its nearest existing ancestor (where a path to be created would be made)."""
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def check_writable_dir(path: str | os.PathLike, what: str, *, shown: str | None = None) -> Path:
    """``path`` is a directory this user can write in, or one that can be created (its nearest
    existing ancestor is a writable directory). One-line UsageError naming ``what`` and
    ``shown`` (default ``path``) otherwise; nothing is left behind."""
    p = Path(os.path.abspath(path))
    path = path if shown is None else shown
    near = nearest_existing(p)
    if os.path.islink(near) and not near.exists():
        raise UsageError(f"{what} {path}: {near} is a broken symbolic link or a symlink loop")
    if not near.is_dir():
        where = "" if near == p else f" ({near} is a file)"
        raise UsageError(f"{what} {path}: not a directory{where}")
    if not os.access(near, os.W_OK | os.X_OK):
        where = "" if near == p else f" ({near} is not writable, so it cannot be created)"
        raise UsageError(f"{what} {path}: not writable by this user{where}")
    # os.access answers "yes" to root everywhere, also where nothing can be created (/proc, a
    # read-only mount): a file created and removed at once is the real answer.
    try:
        fd, probe = tempfile.mkstemp(dir=near, prefix=".sfn-write-probe-")
    except OSError as e:
        where = "" if near == p else f" ({near}: nothing can be created there)"
        raise UsageError(f"{what} {path}: not writable{where}: {e.strerror}") from None
    os.close(fd)
    os.unlink(probe)
    return p


def check_writable_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` can be written (atomically: a temporary beside it, renamed over it): it is not
    a directory and its directory is writable or can be created. Nothing is created."""
    p = Path(os.path.abspath(path))
    if p.is_dir():
        raise UsageError(f"{what} {path}: is a directory; give a file name")
    check_writable_dir(p.parent, what, shown=str(path))
    return p


# ---------------------------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------------------------
def temp_path_for(final: str | os.PathLike) -> Path:
    """A fresh temporary name beside ``final`` (same directory, so the rename is atomic)."""
    final = Path(final)
    owner = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    return final.with_name(f".{final.name}{TEMP_MARK}{owner}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to create a temporary file, then rename it over ``path``.

    Parent directories are created. On any exception the temporary is removed and the old
    ``path`` (if any) is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Strict JSON (see :func:`json_safe`), sorted keys, written atomically."""
    return write_text_atomic(path, dumps_json(obj, indent))


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary, then rename: a checkpoint is never torn."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_figure_atomic(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """``fig.savefig`` to a temporary (format from ``path``'s suffix), then rename."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, **savefig_kwargs))


@contextmanager
def atomic_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name beside ``final``; rename it into place.

    A directory rename is atomic on POSIX, so concurrent builders are safe: the first rename
    wins and a later builder whose rename fails because ``final`` now exists discards its own
    copy. On an exception inside the block the temporary is removed, and so are the parent
    directories this call created (a refused build leaves nothing behind, not even an empty
    ``runs/cache``).
    """
    final = Path(final)
    created = [p for p in (final.parent, *final.parent.parents) if not p.exists()]
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(final)
    tmp.mkdir()
    ok = False
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
        ok = True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not ok:
            for p in created:  # deepest first; one another process filled is kept
                try:
                    p.rmdir()
                except OSError:
                    break


def _owner_alive(name: str) -> bool:
    """Whether the writer named in a temporary's name may still be running."""
    owner = name.rsplit(TEMP_MARK, 1)[-1]
    parts = owner.rsplit("-", 2)
    if len(parts) != 3 or not parts[1].isdecimal():
        return False  # not our naming: nobody we know of owns it
    host, pid = parts[0], int(parts[1])
    if host != socket.gethostname():
        return True  # another host's writer: only the age rule may remove it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a process of another user has that pid: assume it is alive
    return True


def remove_stale_temporaries(directory: str | os.PathLike,
                             older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove temporaries in ``directory`` left by writers that died; return what was removed.

    A temporary is stale when its writer (host and pid in its name) is this host's and no
    longer runs, or when it is older than ``older_than_s`` whoever wrote it.
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    removed = []
    now = time.time()
    for entry in d.iterdir():
        if not (entry.name.startswith(".") and TEMP_MARK in entry.name):
            continue
        try:
            age = now - entry.lstat().st_mtime
        except FileNotFoundError:
            continue  # its writer renamed or removed it meanwhile
        if _owner_alive(entry.name) and age < older_than_s:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
