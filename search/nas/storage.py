"""Where a search's Tune experiment lives, and reading it back on ``--resume``.

Without ``--storage`` the experiment is ``<out>/<study>/tune/search/``; with it,
``<storage>/<study>/search/`` on a directory or any filesystem ``search.storage.open_storage``
opens (``s3://bucket/prefix``, ``file:///dir``, ...). Only the driver writes and reads it
(trials save no checkpoints), so worker nodes need not reach it. ``--resume`` copies the
newest searcher checkpoint from there into a local directory and restores the fresh searcher
from it with Tune's public ``Searcher.restore_from_dir``.
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from typing import Any

from search_space.lazy import lazy_import

from ..storage import join, local_fs, open_storage

pafs = lazy_import("pyarrow.fs")

EXPERIMENT = "search"  # the Tune experiment's name: <storage path>/search/
SEARCHER_STATE = "searcher-state-*.pkl"  # Tune's Searcher.CKPT_FILE_TMPL


@dataclass(frozen=True)
class ExperimentStorage:
    """``RunConfig(storage_path=path, storage_filesystem=filesystem)`` of one study."""

    path: str  # the directory holding the experiment (Tune adds /search)
    filesystem: Any = None  # pyarrow FileSystem for a URI; None for a local directory
    shown: str = ""  # where it is, for messages

    @property
    def experiment(self) -> str:
        return join(self.path, EXPERIMENT)


def experiment_storage(storage: str | None, out_dir: str, study: str) -> ExperimentStorage:
    """Where the study's Tune experiment is: ``<storage>/<study>`` or ``<out>/<study>/tune``
    (UsageError when no installed filesystem opens ``storage``)."""
    if storage is None:
        path = os.path.abspath(os.path.join(out_dir, "tune"))
        return ExperimentStorage(path=path, shown=path)
    fs, base = open_storage(storage)
    return ExperimentStorage(path=join(base, study), filesystem=fs,
                             shown=join(storage, study))


def fetch_searcher_state(where: ExperimentStorage, local_dir: str) -> str | None:
    """Copy the newest searcher checkpoint of the experiment into ``local_dir``; returns
    ``local_dir`` (what ``Searcher.restore_from_dir`` reads) or None when there is none."""
    fs = local_fs(where.filesystem)
    infos = fs.get_file_info(pafs.FileSelector(where.experiment, allow_not_found=True))
    names = sorted(i.base_name for i in infos
                   if i.type == pafs.FileType.File and fnmatch.fnmatch(i.base_name, SEARCHER_STATE))
    if not names:
        return None
    os.makedirs(local_dir, exist_ok=True)
    pafs.copy_files(join(where.experiment, names[-1]), os.path.join(local_dir, names[-1]),
                    source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return local_dir
