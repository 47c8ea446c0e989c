#!/usr/bin/env python
"""Memory of sending the supernet checkpoint from its trial to the driver (stop 24).

    python bench/bench_checkpoint_send.py [--mb 95] [--rounds 3]

Each measurement is a fresh Ray task (a real worker: torch, timm, ray.tune imported as a trial
worker has them) that writes a ``--mb`` MB file (the default run's supernet checkpoint is 95
MB), resets its peak RSS, sends the file to a ``DriverCheckpoint``-like actor, and reports the
peak RSS above the RSS it started from, and the time the send took. Contenders, alternating order every round:

* ``whole`` -- the first design of this stop: the file read into one ``bytes`` and passed to
  the actor in one call (Ray copies an argument that large into the object store);
* ``pieces`` -- the shipped :func:`search.nas.supernet_trial.send_checkpoint`: pieces of
  ``CHUNK_BYTES`` (``--chunk-kb`` to try another size), one call at a time.

Both write the same bytes (checked). ``uptime`` is printed at start and end.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import ray  # noqa: E402

from search.nas.supernet_trial import DriverCheckpoint, send_checkpoint  # noqa: E402


class WholeFile(DriverCheckpoint):
    """The first design: one call with the whole checkpoint."""

    def put(self, blob: bytes) -> int:
        with open(self.path, "wb") as f:
            f.write(blob)
        return len(blob)


@ray.remote(num_cpus=1, max_calls=1)  # each measurement in a fresh worker process
def sender(how: str, actor, mb: int, chunk_kb: int | None = None) -> dict:
    import ray.tune  # noqa: F401  (a trial worker's imports)
    import timm  # noqa: F401
    import torch  # noqa: F401

    import search.nas.supernet_trial as st
    from search.proxy.memory import peak_rss_mib, reset_peak_rss, status_kib
    if chunk_kb:
        st.CHUNK_BYTES = chunk_kb * 2**10
    work = tempfile.mkdtemp(prefix="sfn-send-")
    path = os.path.join(work, "supernet.pt")
    with open(path, "wb") as f:
        f.write(os.urandom(mb * 2**20))
    reset_peak_rss()
    start = status_kib()["VmRSS"] / 1024
    t0 = time.perf_counter()
    if how == "whole":
        with open(path, "rb") as f:
            ray.get(actor.put.remote(f.read()))
    else:
        send_checkpoint(actor, path)
    seconds = time.perf_counter() - t0
    peak = peak_rss_mib()
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    shutil.rmtree(work)
    return {"start_mib": start, "peak_mib": peak, "extra_mib": peak - start, "sha": digest,
            "seconds": seconds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=95)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chunk-kb", type=int, default=None, help="pieces (default: the shipped)")
    a = ap.parse_args()
    print("start:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": ROOT}})
    out_dir = tempfile.mkdtemp(prefix="sfn-send-driver-")
    actors = {"whole": ray.remote(num_cpus=0)(WholeFile).remote(os.path.join(out_dir, "w.pt")),
              "pieces": ray.remote(num_cpus=0)(DriverCheckpoint).remote(
                  os.path.join(out_dir, "p.pt"))}
    rows: dict[str, list[dict]] = {"whole": [], "pieces": []}
    for r in range(a.rounds):
        order = ("whole", "pieces") if r % 2 == 0 else ("pieces", "whole")
        for how in order:
            res = ray.get(sender.remote(how, actors[how], a.mb, a.chunk_kb))
            with open(os.path.join(out_dir, "w.pt" if how == "whole" else "p.pt"), "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == res["sha"]
            rows[how].append(res)
            print(f"round {r}: {how:<6} start {res['start_mib']:7.0f} MiB, peak "
                  f"{res['peak_mib']:7.0f} MiB, extra {res['extra_mib']:6.0f} MiB, "
                  f"{res['seconds']:.2f} s")
    for how, rs in rows.items():
        extra = sorted(x["extra_mib"] for x in rs)
        print(f"{how:<6} extra peak RSS while sending {a.mb} MB: median "
              f"{extra[len(extra) // 2]:.0f} MiB [min {extra[0]:.0f}, max {extra[-1]:.0f}]")
    ray.shutdown()
    shutil.rmtree(out_dir)
    print("end:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
