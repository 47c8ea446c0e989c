"""The proxy data cache on the node a trial runs on: no shared filesystem needed.

The driver prepares the cache (``search.proxy.data.prepare_data``) and hands the trials a
:class:`~search.proxy.data.ProxyData`, which pickles only its path and metadata. On a Ray
cluster a trial may run on a node that cannot see that path (no shared ``--out``).
:func:`localize` runs in the trial: it finds this node's copy of the cache, keyed by the
dataset id, or builds it from the same source and fidelity (the subset is deterministic, so
every node builds the same arrays and gets the same id; the build is the same atomic,
concurrent-builder-safe ``prepare_data``), then memory-maps it by path.

Where a node keeps its cache: ``$SWIFTFORMER_NAS_CACHE`` when the node was started with it (a
node-local disk: ``SWIFTFORMER_NAS_CACHE=/local/ssd/sfn ray start --address=...``); else the
driver's cache path when this node sees it (one machine, or a shared ``--out``); else
``<system temp>/swiftformer-nas-cache``. An ImageFolder source must then be readable on the
node at the path the driver was given; :func:`node_data_problem` says when it is not (the
driver asks every node before the search starts).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

from search_space.errors import UsageError
from search_space.io import nearest_existing

from .data import ProxyData, prepare_data
from .fidelity import Fidelity

CACHE_ENV = "SWIFTFORMER_NAS_CACHE"  # a node's own cache root (set when the node is started)
EMBEDDED_SOURCE = "embedded:cifar10"  # ProxyData.source of the embedded subset


def cache_root() -> str | None:
    """This node's configured cache root (``$SWIFTFORMER_NAS_CACHE``), or None."""
    root = os.environ.get(CACHE_ENV, "").strip()
    return os.path.abspath(os.path.expanduser(root)) if root else None


def cache_root_problem() -> str | None:
    """Why ``$SWIFTFORMER_NAS_CACHE`` cannot hold this node's cache (None: unset, or a
    directory that exists or can be created): the one-line error, naming the variable. Nothing
    is created here."""
    root = cache_root()
    if root is None:
        return None
    p = str(nearest_existing(Path(root)))   # the cache is made under it
    if not os.path.isdir(p):
        where = "" if p == root else f" ({p} is not a directory)"
        return f"${CACHE_ENV} {root}: not a directory{where}; it names a node's data cache " \
               "directory (unset it to use the default)"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"${CACHE_ENV} {root}: not writable ({p}); it names a node's data cache directory"
    return None


def check_cache_root() -> None:
    """UsageError when ``$SWIFTFORMER_NAS_CACHE`` is set to something no cache can go in."""
    problem = cache_root_problem()
    if problem is not None:
        raise UsageError(problem)


def default_cache_root() -> str:
    return os.path.join(tempfile.gettempdir(), "swiftformer-nas-cache")


def _has_cache(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "meta.json"))


def local_cache_dir(data: ProxyData) -> str | None:
    """The directory holding ``data``'s cache on this node, or None when it must be built."""
    root = cache_root()
    if root is not None:
        path = os.path.join(root, data.dataset_id)
        return path if _has_cache(path) else None
    if _has_cache(data.path):
        return data.path
    path = os.path.join(default_cache_root(), data.dataset_id)
    return path if _has_cache(path) else None


def listing_problem(root: str, subdirs: tuple[str, ...]) -> str | None:
    """Why ``root/<sub>`` cannot be listed here for some sub (None: all can). Listing, not
    permission bits: a process running as root passes every access() check."""
    try:
        for sub in subdirs:
            with os.scandir(os.path.join(root, sub)) as it:
                next(it, None)
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"
    return None


def node_data_problem(data: ProxyData) -> str | None:
    """Why this node could not get ``data``'s cache (None: it has it or can build it): an
    ImageFolder source must be listable here at the driver's absolute path."""
    if local_cache_dir(data) is not None or data.source == EMBEDDED_SOURCE:
        return None
    return listing_problem(data.source, ("train", "val"))


def localize(data: ProxyData, fidelity: Fidelity, workers: int = 1) -> ProxyData:
    """``data`` memory-mapped from this node's cache, built here first when missing.

    Raises UsageError when the source is not readable here or yields another dataset id (a
    different copy of the data on this node)."""
    path = local_cache_dir(data)
    if path is not None:
        return data if path == data.path else dataclasses.replace(data, path=path, _arrays={})
    check_cache_root()
    problem = node_data_problem(data)
    if problem is not None:
        raise UsageError(f"--data {data.source}: not readable on this node ({problem}); every "
                         f"node that runs trials needs the dataset at this path, or its cache "
                         f"in ${CACHE_ENV}")
    source = None if data.source == EMBEDDED_SOURCE else data.source
    root = cache_root() or default_cache_root()
    built = prepare_data(source, fidelity, cache_dir=root, workers=workers)
    if built.dataset_id != data.dataset_id:
        raise UsageError(f"--data {data.source}: this node's copy gives dataset id "
                         f"{built.dataset_id}, the driver's {data.dataset_id}; every node "
                         "needs the same files")
    return dataclasses.replace(data, path=built.path, _arrays={})
