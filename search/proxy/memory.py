"""A trial worker's memory: give freed heap back between trials, and measure a trial's peak.

A Ray worker is reused for many trials of different architectures, so two things matter:

* :func:`release_memory` -- without it the freed activations, gradients and optimizer states of
  the previous trial stay mapped in glibc's arenas and the worker's resident memory only grows
  (notes/search_proxy.md).
* :func:`reset_peak_rss` / :func:`peak_rss_mib` -- the peak resident set (Linux ``VmHWM``) of
  this process since the last reset, so every trial records its own peak (``peak_rss_mib`` in
  its metrics) and a user can size ``--cpus-per-trial`` to a machine's memory from real runs.
  The peak counts the shared libraries' file-backed pages too (torch's CUDA libraries are
  ~140 MiB of them even on a CPU-only run): it is what ``ps`` and the issue's target call RSS.

No torch here: the helpers read /proc and call glibc, and do nothing where there is neither.
"""
from __future__ import annotations

import ctypes
import gc

STATUS = "/proc/self/status"

try:  # glibc: give freed heap pages back to the OS between trials (see release_memory)
    _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
    _MALLOC_TRIM = None


def release_memory() -> None:
    """Collect garbage and return the freed heap to the OS (glibc ``malloc_trim``)."""
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def status_kib(keys: tuple[str, ...] = ("VmHWM", "VmRSS", "RssAnon", "RssFile")) -> dict[str, int]:
    """Fields of /proc/self/status in KiB (``Threads``: a count); {} where there is none."""
    out: dict[str, int] = {}
    try:
        with open(STATUS, encoding="ascii") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in keys:
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def reset_peak_rss() -> bool:
    """Start a new peak: ``VmHWM`` becomes the current RSS (writes 5 to /proc/self/clear_refs,
    Linux >= 4.0). False where that is not possible (then the peak is the process's)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float | None:
    """Peak resident set size of this process since the last :func:`reset_peak_rss`, in MiB
    (None where /proc is not there)."""
    hwm = status_kib(("VmHWM",)).get("VmHWM")
    return None if hwm is None else round(hwm / 1024, 1)
