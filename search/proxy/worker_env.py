"""Environment for processes that run proxy trials (Ray trial workers, process pools).

Light (no torch): the search driver imports it to build the workers' ``runtime_env``; the
variables must be set before the worker process starts (glibc reads them at startup).
"""
from __future__ import annotations

WORKER_ENV: dict[str, str] = {
    "MALLOC_ARENA_MAX": "2",
}
