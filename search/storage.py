"""``--storage PATH_OR_URI``: a directory or a filesystem URI, opened once for Ray.

Ray Tune (the search's experiment) and Ray Train (retraining checkpoints) take it through their
public ``RunConfig(storage_path=..., storage_filesystem=...)``: a plain directory (local or
NFS) is passed as a path; a URI is opened here with pyarrow (``s3://``, ``gs://``, ``abfs://``,
``hdfs://``, ``file://``) or, for schemes pyarrow does not know, an installed fsspec package
(as Ray itself does), so a filesystem that is not installed is one line naming ``--storage``
before any work.
"""
from __future__ import annotations

import os
from typing import Any

from search_space.errors import UsageError
from search_space.lazy import lazy_import

pafs = lazy_import("pyarrow.fs")
fsspec_core = lazy_import("fsspec.core")

STORAGE_HELP = ("allowed: a directory (local or NFS), file:///DIR, or a URI of a filesystem "
                "pyarrow or an installed fsspec package opens (s3://BUCKET/PREFIX, gs://, "
                "abfs://, hdfs://)")


def scheme(uri: str) -> str | None:
    """The URI's scheme (``s3``), or None for a plain path."""
    head, sep, _ = uri.partition("://")
    return head.lower() if sep and head.replace("+", "").replace("-", "").isalnum() else None


def _fsspec(uri: str) -> tuple[Any, str]:
    """A filesystem an installed fsspec package handles, wrapped for pyarrow (as Ray does)."""
    try:
        fs, path = fsspec_core.url_to_fs(uri)
    except (ImportError, ValueError) as e:  # unknown protocol / its package not installed
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"--storage {uri}: no filesystem for {scheme(uri)}:// is installed "
                         f"here ({why}); {STORAGE_HELP}") from None
    except OSError as e:  # ftp://, sftp://, ... connect on opening: no such host, refused, ...
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"--storage {uri}: cannot open it ({why}); {STORAGE_HELP}") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def open_storage(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, or None for a plain directory; the path on it). UsageError when
    no installed filesystem opens ``uri``."""
    if scheme(uri) is None:
        if os.path.isfile(uri):
            raise UsageError(f"--storage {uri}: is a file; {STORAGE_HELP}")
        return None, os.path.abspath(os.path.expanduser(uri))
    try:
        return pafs.FileSystem.from_uri(uri)
    except NotImplementedError as e:  # pyarrow built without this filesystem
        why = str(e).splitlines()[0]
        raise UsageError(f"--storage {uri}: its filesystem is not installed here ({why}); "
                         f"{STORAGE_HELP}") from None
    except OSError as e:  # hdfs:// without a JVM, s3:// without credentials or network, ...
        why = str(e).splitlines()[0]
        raise UsageError(f"--storage {uri}: cannot open it ({why}); {STORAGE_HELP}") from None
    except ValueError:  # a scheme pyarrow does not know: maybe an fsspec package does
        return _fsspec(uri)


def join(path: str, *parts: str) -> str:
    """``path/part/...`` on a storage filesystem (always '/')."""
    return "/".join([path.rstrip("/"), *parts])


def local_fs(filesystem: Any) -> Any:
    """The filesystem to use for a storage path: the given one, or the local one."""
    return filesystem if filesystem is not None else pafs.LocalFileSystem()
