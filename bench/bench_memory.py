"""Peak memory of one proxy trial, phase by phase, in a fresh process -- as a Ray trial worker runs it.

  python bench/bench_memory.py                         # XS and L3 at cpu-cifar, one fresh worker each
  python bench/bench_memory.py --reuse --models XS,L1,L3,random:3   # one worker, six trials in turn
  python bench/bench_memory.py --ray --reuse ...       # the same body inside a Ray task (a real worker)
  python bench/bench_memory.py --models L3 --env MALLOC_ARENA_MAX=2 --no-triton --no-release
  python bench/bench_memory.py --models XS,L3 --adamw foreach  # fused (default) / foreach / loop

Every configuration runs in a fresh child process (``python bench/bench_memory.py --child``, or a
``ray.remote`` task with ``runtime_env={"env_vars": ...}`` under ``--ray``), which goes through
the phases of a trial worker: ``import`` (torch, timm, the proxy modules; ray and ray.tune too
under --ray, as a worker has them), ``prepare`` (open the ProxyData memmaps, build the model),
``zero-cost`` (synflow / NASWOT / grad-norm), ``train`` (the training steps of every epoch) and
``eval`` (BN recalibration + evaluation of every epoch; wrapped around train.py's own functions).
Before each phase the peak-RSS counter is reset (``/proc/self/clear_refs`` = 5), so VmHWM after the
phase is the peak *during* that phase. Printed per phase: peak RSS, and RSS / anonymous /
file-backed RSS at its end, plus the process's thread count. The data cache is built once in the
parent (as the search driver does).

RSS counts the file-backed pages of shared libraries (libtorch_cpu, cuBLASLt, ...) which the page
cache shares between all workers; anonymous RSS is what each worker holds privately. Both are
printed; the issue's target (1 GB per trial worker) is on the peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from search.cluster import CPU_WORKER_SETUP_HOOK, block_triton  # noqa: E402  (light: no torch)
from search.options import parse_fidelity  # noqa: E402  (light: no torch)
from search.proxy.data import ProxyData, prepare_data  # noqa: E402
from search.proxy.memory import reset_peak_rss, status_kib  # noqa: E402  (light: no torch)

STATUS_KEYS = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "Threads")
# torch.optim.AdamW implementations (extra arguments to timm's create_optimizer_v2).
ADAMW_VARIANTS = {"fused": {"fused": True}, "foreach": {"fused": False, "foreach": True},
                  "loop": {"fused": False, "foreach": False}}


def status() -> dict[str, int]:
    return status_kib(STATUS_KEYS)


class Meter:
    """Per-phase peak (max over repeated visits) and end-of-phase RSS / anon / file."""

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}
        self.order: list[str] = []

    def start(self) -> None:
        reset_peak_rss()

    def end(self, phase: str) -> None:
        s = status()
        row = self.rows.get(phase)
        if row is None:
            self.order.append(phase)
            row = self.rows[phase] = {"phase": phase, "peak_mb": 0.0, "visits": 0}
        row.update(peak_mb=max(row["peak_mb"], s["VmHWM"] / 1024), rss_mb=s["VmRSS"] / 1024,
                   anon_mb=s["RssAnon"] / 1024, file_mb=s["RssFile"] / 1024, threads=s["Threads"],
                   visits=row["visits"] + 1)
        reset_peak_rss()

    def result(self) -> list[dict]:
        return [self.rows[p] for p in self.order]


def trial_body(job: dict) -> list[dict]:
    """The phases of a trial worker, for each spec of ``job["specs"]`` in turn (several = one
    worker reused for several trials, as Tune's reuse_actors=True does); returns the rows."""
    m = Meter()
    m.start()
    m.end("python")
    if job.get("no_triton") and not job.get("ray_imports"):
        block_triton()  # under --ray the worker's setup hook has done it (run_ray)
    if job.get("ray_imports"):
        import ray  # noqa: F401
        import ray.tune  # noqa: F401
    import torch

    import search.proxy.train as train_mod
    import search.proxy.trial  # noqa: F401  (run_candidate: the worker's import path)
    import search.proxy.zero_cost as zc_mod
    from search.proxy.fidelity import Fidelity
    from search_space.spec import ArchSpec
    from search_space.swiftformer import build_model
    m.end("import")

    if job.get("no_release"):  # measure what release_memory() saves
        train_mod.release_memory = zc_mod.release_memory = lambda: None
    if job.get("adamw"):  # another AdamW implementation (memory / CPU time of each)
        flags = ADAMW_VARIANTS[job["adamw"]]
        create = train_mod.create_optimizer_v2
        train_mod.create_optimizer_v2 = lambda *a, **k: create(*a, **{**k, **flags})
    fid = Fidelity.from_dict(job["fidelity"])
    data = ProxyData(**job["data"])
    rows: list[dict] = []
    real_recal, real_eval = train_mod.recalibrate_bn, train_mod.evaluate
    for i, spec_json in enumerate(job["specs"]):
        tag = f"{i + 1}:" if len(job["specs"]) > 1 else ""
        spec = ArchSpec.from_json(spec_json)
        for name in ("train_x", "train_y", "val_x", "val_y"):
            getattr(data, name).sum()  # touch every page, as training will
        build_model(train_mod.proxy_spec(spec, data, fid))
        m.end(tag + "prepare")
        zc_mod.zero_cost_scores(spec, data, seed=0)
        m.end(tag + "zero-cost")

        def recal(*a, **k):
            m.end(tag + "train")  # the epoch's training steps end here
            return real_recal(*a, **k)

        def evaluate(*a, **k):
            try:
                return real_eval(*a, **k)
            finally:
                m.end(tag + "eval")  # recalibration + evaluation

        train_mod.recalibrate_bn, train_mod.evaluate = recal, evaluate
        try:
            r = train_mod.train_proxy(spec, fid, data, seed=0, device="cpu", threads=1)
        finally:
            train_mod.recalibrate_bn, train_mod.evaluate = real_recal, real_eval
        m.end(tag + "after")
        rows.append({"phase": "result", "trial": i + 1, "arch": spec.arch_hash, "top1": r["top1"],
                     "val_loss": r["val_loss"], "cpu_seconds": r["cpu_seconds"],
                     "params_m": r["params"] / 1e6, "torch_threads": torch.get_num_threads(),
                     "triton": "triton" in sys.modules and sys.modules["triton"] is not None})
    return m.result() + rows


def in_thread(fn, *args):
    """Run ``fn`` in a fresh thread, as Ray Tune runs a function trainable (its own malloc arena)."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn(*args)))
    t.start()
    t.join()
    if not out:
        raise RuntimeError("trial body failed (see the traceback above)")
    return out[0]


def thread_body(job: dict) -> list[dict]:
    return in_thread(trial_body, job)


def run_child(job: dict, env: dict[str, str]) -> list[dict]:
    full_env = {**os.environ, **env, "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child"], input=json.dumps(job),
                         capture_output=True, text=True, env=full_env, cwd=ROOT, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_ray(jobs: list[tuple[dict, dict]], no_triton: bool) -> list[list[dict]]:
    import ray

    # --no-triton: the search driver's job-level hook (search.cluster.init_ray); Ray ignores a
    # worker_process_setup_hook in a task's runtime_env (measured: triton still loaded).
    hook = {"worker_process_setup_hook": CPU_WORKER_SETUP_HOOK} if no_triton else {}
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             object_store_memory=128 * 2 ** 20,
             runtime_env={"env_vars": {"PYTHONPATH": ROOT}, **hook})
    try:
        body = ray.remote(num_cpus=1, max_calls=1)(thread_body)  # max_calls=1: a fresh worker each
        return [ray.get(body.options(runtime_env={"env_vars": {**env, "PYTHONPATH": ROOT}})
                        .remote({**job, "ray_imports": True})) for job, env in jobs]
    finally:
        ray.shutdown()


def print_rows(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(f"  {'phase':10} {'peak RSS':>9} {'RSS end':>8} {'anon':>7} {'file':>7} {'threads':>7}")
    for r in rows:
        if r["phase"] == "result":
            print(f"  trial {r['trial']}: {r['arch']} {r['params_m']:.1f} M params, top-1 "
                  f"{r['top1']:.1f}% (val loss {r['val_loss']!r}), {r['cpu_seconds']:.1f} "
                  f"CPU-s, torch threads {r['torch_threads']}, triton loaded: {r['triton']}")
            continue
        print(f"  {r['phase']:10} {r['peak_mb']:8.0f}M {r['rss_mb']:7.0f}M {r['anon_mb']:6.0f}M "
              f"{r['file_mb']:6.0f}M {r['threads']:7d}")
    peak = max(r["peak_mb"] for r in rows if "peak_mb" in r)
    anon = max(r["anon_mb"] for r in rows if "anon_mb" in r)
    print(f"  => peak RSS {peak:.0f} MB (anonymous at phase ends up to {anon:.0f} MB)")


def parse_env(items: list[str]) -> dict[str, str]:
    env = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k:
            raise SystemExit(f"--env {it!r}: expected KEY=VALUE")
        env[k] = v
    return env


def main() -> int:
    if "--child" in sys.argv:
        print(json.dumps(in_thread(trial_body, json.loads(sys.stdin.read()))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="XS,L3", help="presets, spec JSON files, or random:N (N specs "
                    "sampled from DEFAULT_SPACE, seed 0), comma-separated")
    ap.add_argument("--reuse", action="store_true", help="all models in ONE worker in turn, as Tune "
                    "with reuse_actors=True (the search driver's setting); default one fresh worker each")
    ap.add_argument("--no-release", action="store_true", help="disable release_memory() (to measure it)")
    ap.add_argument("--no-triton", action="store_true", help="make triton unimportable before torch is "
                    "imported (search.cluster.block_triton; under --ray as the search does it, "
                    "through Ray's worker_process_setup_hook)")
    ap.add_argument("--adamw", choices=sorted(ADAMW_VARIANTS), default=None,
                    help="AdamW implementation instead of the engine's choice (fused on CPU)")
    ap.add_argument("--fidelity", default=None, help="preset name or JSON (as --fidelity)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment of the measured process (repeatable), e.g. "
                         "MALLOC_ARENA_MAX=2")
    ap.add_argument("--ray", action="store_true", help="run the body in Ray tasks (real workers)")
    ap.add_argument("--cache", default="runs/cache")
    a = ap.parse_args()
    from search_space.space import DEFAULT_SPACE
    from search_space.spec import PRESETS, load_spec

    print(f"bench_memory {time.strftime('%Y-%m-%d %H:%M:%S')}; uptime: "
          f"{os.popen('uptime').read().strip()}")
    fid = parse_fidelity(a.fidelity)
    data = prepare_data(None, fid, cache_dir=a.cache)
    envs = [parse_env(a.env)]
    specs = []
    for name in a.models.split(","):
        if name.startswith("random:"):
            specs += [(s.arch_hash, s) for s in DEFAULT_SPACE.sample_many(int(name[7:]), seed=0)]
        else:
            specs.append((name, PRESETS[name] if name in PRESETS else load_spec(name)))
    groups = [specs] if a.reuse else [[s] for s in specs]
    jobs = []
    for group in groups:
        for env in envs:
            job = {"specs": [s.canonical_json() for _, s in group], "fidelity": fid.to_dict(),
                   "data": {k: v for k, v in data.__getstate__().items() if k != "_arrays"},
                   "no_release": a.no_release, "no_triton": a.no_triton, "adamw": a.adamw}
            jobs.append(("+".join(n for n, _ in group), job, env))
    if a.ray:
        results = run_ray([(job, env) for _, job, env in jobs], a.no_triton)
    else:
        results = [run_child(job, env) for _, job, env in jobs]
    for (name, _, env), rows in zip(jobs, results):
        where = "Ray task" if a.ray else "fresh process"
        print_rows(f"{name} at {fid.key} ({where}), env {env or '(inherited)'}", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
