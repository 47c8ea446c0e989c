"""Issue 17's proof on a real 2-node Ray cluster on this machine; prints figures, exit 1 on a
failed check.

    /work/venv/bin/python bench/bench_cluster.py [--root DIR] [--seed 0] [--trials 4]
        [--resume-trials 6] [--epochs 12]

1. Starts the cluster (tests/ray_cluster.py): ``ray start --head --block`` and ``ray start
   --address=... --block``, each with its own --temp-dir, its own --resources tag and one CPU;
   node 2 runs in its own mount namespace where the driver's output directories are empty
   tmpfs mounts (no shared --out) and has its own data cache root ($SWIFTFORMER_NAS_CACHE).
   A dataset or a Ray Train storage node 2 cannot see is refused (exit 2, one line naming the
   input and the node, nothing in the results database).
2. The same tiny search twice with the same seed: locally (no --address) and on the cluster
   (--address): every candidate's (architecture, top-1, val loss) and the fronts must be equal;
   the cluster's trials ran on both nodes (node ids in the store) and node 2's read its own
   copy of the data cache.
3. A cluster search with --storage file://... (hidden from node 2 too: only the driver uses
   it) whose driver is killed (SIGKILL of its process group) once a candidate completed, then
   ``--resume --storage``: no completed trial lost, re-run or duplicated.
4. ``retrain --ray --address ... --num-workers 2`` of a tiny spec (one worker per node, its
   checkpoints in a storage directory both nodes see), killed after its first checkpoint and
   resumed with --resume: every epoch trained once, both ranks on different nodes, the final
   weights equal to an uninterrupted ``retrain --nproc 2`` run, its database row completed by
   the driver.
5. Tears the cluster down and checks that no process it started is left.

Figures (wall times, node ids, counts) go to stdout and <root>/bench_cluster.json.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from ray_cluster import (RETRAIN_COMMON, TINY_RETRAIN_SPEC, LocalCluster, alive, cli,  # noqa: E402
                         hiding_supported, kill_group, make_imagefolder, search_argv, trial_rows)
from search.proxy.node_cache import CACHE_ENV  # noqa: E402

CHECKS: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, detail: str = "") -> bool:
    CHECKS.append((name, bool(ok), detail))
    print(f"  [{'ok' if ok else 'FAIL'}] {name}{': ' + detail if detail else ''}", flush=True)
    return bool(ok)


def uptime() -> str:
    return os.popen("uptime").read().strip()


def timed(fn, *args, **kw):
    t0 = time.monotonic()
    out = fn(*args, **kw)
    return out, time.monotonic() - t0


def candidates(rows: list[dict]) -> dict[int, tuple]:
    return {r["config"]["index"]: (r["arch_hash"], r["status"], r["top1"], r["val_loss"])
            for r in rows if r["config"].get("kind") == "candidate"
            and r["config"].get("index") is not None}


def front(out: Path, study: str) -> list[tuple]:
    rep = json.loads((out / study / "pareto.json").read_text())
    return sorted((f["arch_hash"], f["top1"], round(f["latency_ms"], 9)) for f in rep["front"])


def require(proc, what: str) -> None:
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        raise SystemExit(f"{what} failed with exit status {proc.returncode}")


# -- 1b. bad input that only a node can tell -------------------------------------------------
def refused_on_node2(c: LocalCluster, d: dict[str, Path], a, fig: dict) -> None:
    """A dataset / storage node 2 cannot see: one line naming the input and node 2, exit 2,
    nothing in the results database."""
    env, n2 = c.client_env(), c.node_ids["sfn_node2"][:12]
    hidden, db = d["driver"] / "hidden-data", d["driver"] / "refused.db"
    cases = {
        "search --data": (search_argv(hidden, d["driver"], "refused", 2, "--address",
                                      c.address, "--db", str(db)),
                          f"--data {hidden}: not readable on node {n2}"),
        "retrain --ray --data": (["retrain", "--ray", "--address", c.address, "--arch",
                                  str(d["spec"]), "--data", str(hidden), "--db", str(db),
                                  "--output", str(d["retrain"] / "refused"), "--storage",
                                  str(d["ray_storage"]), *RETRAIN_COMMON],
                                 f"--data {hidden}: not readable on node {n2}"),
        "retrain --ray --storage": (["retrain", "--ray", "--address", c.address, "--arch",
                                     str(d["spec"]), "--data", str(d["rdata"]), "--db", str(db),
                                     "--output", str(d["retrain"] / "refused"), "--storage",
                                     str(d["driver"] / "st"), *RETRAIN_COMMON],
                                    f"not reachable from node {n2}"),
    }
    for name, (argv, needle) in cases.items():
        r, wall = timed(cli, argv, env, d["root"])
        err = r.stderr.strip()
        check(f"{name} unreadable on node 2: exit 2, one line, nothing recorded",
              r.returncode == 2 and err.startswith("error: ") and needle in err
              and len(err.splitlines()) == 1 and not db.exists(), f"{wall:.1f}s: {err[:160]}")


# -- 2. the same search locally and on the cluster ----------------------------------------------
def same_search(c: LocalCluster, d: dict[str, Path], a, fig: dict) -> None:
    env = c.client_env()
    local, wall_local = timed(cli, search_argv(d["data"], d["local"], "same", a.trials,
                                               "--seed", str(a.seed)), env, d["root"])
    require(local, "local search")
    # The first trials wait until each node has one (tests/cluster_barrier.py): a one-second
    # trial would otherwise end before node 2's worker started and Tune would reuse the warm one.
    clus, wall_cluster = timed(cli, search_argv(d["data"], d["driver"], "same", a.trials,
                                                "--seed", str(a.seed), "--address", c.address),
                               env, d["root"], barrier=(d["root"] / "barrier", 2))
    require(clus, "cluster search")
    fig.update(search_local_s=round(wall_local, 1), search_cluster_s=round(wall_cluster, 1))
    lrows, crows = trial_rows(d["local"] / "results.db", "same"), \
        trial_rows(d["driver"] / "results.db", "same")
    lc, cc = candidates(lrows), candidates(crows)
    check("cluster search: every candidate equal to the local search (arch, status, top-1, "
          "val loss)", lc == cc and len(cc) == a.trials, f"{len(cc)} candidates")
    archs = [v[0] for v in cc.values()]
    check("no architecture suggested twice (timing-independent suggestions)",
          len(set(archs)) == len(archs))
    check("front identical to the local search's", front(d["local"], "same")
          == front(d["driver"], "same"), json.dumps(front(d["driver"], "same")))
    trained = [r for r in crows if r["metrics"].get("node_id")]
    by_node: dict[str, list[str]] = {}
    for r in trained:
        by_node.setdefault(r["metrics"]["node_id"], []).append(r["metrics"]["data_cache"])
    fig["trials_per_node"] = {n[:12]: len(v) for n, v in by_node.items()}
    check("trials ran on both nodes (node id per trial in the store)",
          set(by_node) == set(c.node_ids.values()), json.dumps(fig["trials_per_node"]))
    n2 = c.node_ids["sfn_node2"]
    caches = {Path(p).parent for p in by_node.get(n2, [])}
    check("node 2 read its own data cache (it cannot see --out)",
          caches == {d["node2_cache"]}, str(caches))
    check("head read the driver's cache", {Path(p).parent for p in by_node.get(
        c.node_ids["sfn_head"], [])} == {d["driver"] / "cache"})


# -- 3. kill the driver, --resume with --storage --------------------------------------------------
def _wait_completed(db: Path, study: str, proc, timeout: float) -> list[dict] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        try:
            rows = trial_rows(db, study) if db.exists() else []
        except sqlite3.Error:
            continue
        if any(r["status"] == "COMPLETED" and r["config"].get("kind") == "candidate"
               for r in rows):
            return rows
    return None


def kill_and_resume_search(c: LocalCluster, d: dict[str, Path], a, fig: dict) -> None:
    env, study, db = c.client_env(), "resume", d["driver"] / "results.db"
    storage = f"file://{d['driver'] / 'tune-storage'}"
    argv = search_argv(d["data"], d["driver"], study, a.resume_trials, "--seed",
                       str(a.seed + 1), "--address", c.address, "--storage", storage)
    with open(d["root"] / "search-killed.log", "w") as log:
        proc = cli(argv, env, d["root"], stdout=log, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        try:
            seen = _wait_completed(db, study, proc, 600)
        finally:
            kill_group(proc)
    fig["search_killed_after_s"] = round(time.monotonic() - t0, 1)
    before = trial_rows(db, study)
    done = {r["trial_key"]: r for r in before if r["status"] == "COMPLETED"}
    check("search driver killed mid-search", seen is not None and proc.returncode ==
          -signal.SIGKILL and len([k for k in done if k.startswith("cand-")]) < a.resume_trials,
          f"{len(done)} completed before the kill")
    res, wall = timed(cli, ["search", "--study", study, "--resume", "--db", str(db), "--out",
                            str(d["driver"]), "--address", c.address, "--storage", storage,
                            "--cpus-per-trial", "1"], env, d["root"])
    require(res, "resumed search")
    fig["search_resume_s"] = round(wall, 1)
    after = trial_rows(db, study)
    keys = [r["trial_key"] for r in after]
    fig["resume_line"] = next((x for x in res.stdout.splitlines() if "resuming" in x), "")
    check("resume read the searcher state from --storage", "resuming from " + storage
          in res.stdout, fig["resume_line"])
    check("no duplicated row", len(keys) == len(set(keys)))
    check("no row left RUNNING", not [r for r in after if r["status"] == "RUNNING"])
    idx = sorted(r["config"]["index"] for r in after if r["status"] == "COMPLETED"
                 and r["config"].get("kind") == "candidate" and r["config"].get("index")
                 is not None)
    check("exactly the budget of candidates, each once", idx == list(range(a.resume_trials)),
          str(idx))
    same = all((r["status"], r["finished_at"], r["top1"]) == (done[r["trial_key"]]["status"],
               done[r["trial_key"]]["finished_at"], done[r["trial_key"]]["top1"])
               for r in after if r["trial_key"] in done)
    check("trials completed before the kill neither lost nor re-run",
          same and set(done) <= set(keys))


# -- 4. Ray Train retraining on both nodes, killed and resumed ------------------------------------
def _retrain_argv(d: dict[str, Path], out: Path, epochs: int, *extra: str) -> list[str]:
    return ["retrain", "--arch", str(d["spec"]), "--data", str(d["rdata"]), "--output",
            str(out), "--epochs", str(epochs), *RETRAIN_COMMON, *extra]


def _digests(out: Path) -> set[str]:
    return {json.loads(p.read_text())["param_sha256"] for p in (out / "rank_logs").glob("*.json")}


def _wait_checkpoint(storage: Path, proc, timeout: float) -> bool:
    """Until Ray Train's controller has registered a checkpoint (its snapshot file): an
    uploaded checkpoint not yet registered is not one a resumed run starts from."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if glob.glob(str(storage / "retrain-*" / "checkpoint_manager_snapshot.json")):
            return True
        time.sleep(0.2)
    return False


def ray_train_kill_and_resume(c: LocalCluster, d: dict[str, Path], a, fig: dict) -> None:
    env, out, storage = c.client_env(), d["retrain"] / "run", d["ray_storage"]
    ref, wall = timed(cli, _retrain_argv(d, d["root"] / "retrain-ref", a.epochs, "--nproc", "2",
                                         "--no-record"), env, d["root"])
    require(ref, "uninterrupted retrain --nproc 2")
    fig["retrain_nproc2_s"] = round(wall, 1)
    argv = _retrain_argv(d, out, a.epochs, "--ray", "--address", c.address, "--num-workers",
                         "2", "--storage", str(storage), "--db", str(d["retrain"] / "r.db"))
    t0 = time.monotonic()
    with open(d["root"] / "retrain-killed.log", "w") as log:
        proc = cli(argv, env, d["root"], stdout=log, stderr=subprocess.STDOUT)
        try:
            saw = _wait_checkpoint(storage, proc, 600)
        finally:
            kill_group(proc)
    fig["retrain_killed_after_s"] = round(time.monotonic() - t0, 1)
    check("Ray Train driver killed after its first checkpoint",
          saw and proc.returncode == -signal.SIGKILL)
    res, wall = timed(cli, argv + ["--resume"], env, d["root"])
    require(res, "resumed Ray Train retrain")
    fig["retrain_resume_s"] = round(wall, 1)
    ranks = [json.loads(p.read_text()) for p in sorted((out / "nodes").glob("rank*.json"))]
    starts = {r["start_epoch"] for r in ranks}
    fig["retrain_resumed_at_epoch"] = sorted(starts)
    check("the resumed launch started from Ray's last checkpoint, not from epoch 0",
          len(starts) == 1 and 0 < min(starts) < a.epochs, f"start epoch {sorted(starts)}")
    result = json.loads((out / "result.json").read_text())
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    check("every epoch trained once", epochs == list(range(a.epochs)), str(epochs))
    nodes = {r["node_id"] for r in ranks}
    fig["retrain_nodes"] = sorted(n[:12] for n in nodes)
    check("2 workers, one per node", result["world_size"] == 2
          and nodes == set(c.node_ids.values()), json.dumps(fig["retrain_nodes"]))
    check("final weights equal to the uninterrupted --nproc 2 run",
          _digests(out) == _digests(d["root"] / "retrain-ref") and len(_digests(out)) == 1)
    con = sqlite3.connect(str(d["retrain"] / "r.db"))
    runs = con.execute("SELECT id, status FROM sfn_training_runs").fetchall()
    con.close()
    check("one database row, completed by the driver", runs == [(result["run_id"],
                                                                 "COMPLETED")], str(runs))


# -- main -----------------------------------------------------------------------------------------
def layout(root: Path) -> dict[str, Path]:
    """The bench's directories; ``driver`` and ``retrain`` are hidden from node 2."""
    d = {k: root / k for k in ("local", "driver", "retrain", "node2_cache", "ray_storage")}
    for p in d.values():
        p.mkdir(parents=True, exist_ok=True)
    d["root"] = root
    d["data"] = make_imagefolder(root / "data", shift=12)  # candidates differ in top-1
    d["rdata"] = make_imagefolder(root / "rdata", classes=4, train=6, val=3)
    make_imagefolder(d["driver"] / "hidden-data")  # node 2 cannot see it
    d["spec"] = root / "tiny.json"
    d["spec"].write_text(json.dumps(TINY_RETRAIN_SPEC))
    return d


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", help="work directory (default: a fresh temporary one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trials", type=int, default=4, help="candidates of the front comparison")
    ap.add_argument("--resume-trials", type=int, default=6, help="candidates of the kill test")
    ap.add_argument("--epochs", type=int, default=12, help="epochs of the Ray Train run")
    a = ap.parse_args()
    root = Path(a.root or tempfile.mkdtemp(prefix="sfn-bench-cluster-")).resolve()
    if root.exists() and any(root.iterdir()):
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    d = layout(root)
    fig: dict = {"uptime_before": uptime(), "root": str(root)}
    print(f"bench_cluster in {root}; {fig['uptime_before']}", flush=True)
    hide = (d["driver"], d["retrain"]) if hiding_supported() else ()
    check("node 2 cannot see --out (own mount namespace)", bool(hide),
          "" if hide else "unshare/mount not permitted here: node 2 sees every path")
    c = LocalCluster(root, node2_env={CACHE_ENV: str(d["node2_cache"])}, hide_from_node2=hide)
    try:
        _, fig["cluster_up_s"] = timed(c.start)
        fig["node_ids"] = c.node_ids
        print(f"cluster up in {fig['cluster_up_s']:.1f}s at {c.address}: {c.node_ids}",
              flush=True)
        for step in (refused_on_node2, same_search, kill_and_resume_search,
                     ray_train_kill_and_resume):
            print(f"{step.__name__}:", flush=True)
            try:
                _, fig[f"{step.__name__}_s"] = timed(step, c, d, a, fig)
            except SystemExit as e:  # a command failed: record it, go on with the next step
                check(f"{step.__name__} ran to the end", False, str(e))
    finally:
        pids = c.pids()
        left, fig["teardown_s"] = timed(c.stop)
    check("teardown: every process the cluster started is gone",
          not left and not [p for p in pids if alive(p)], f"{len(pids)} processes")
    fig.update(uptime_after=uptime(), checks=[{"check": n, "ok": ok, "detail": x}
                                              for n, ok, x in CHECKS])
    (root / "bench_cluster.json").write_text(json.dumps(fig, indent=2))
    print(json.dumps({k: v for k, v in fig.items() if k != "checks"}, indent=2))
    failed = [n for n, ok, _ in CHECKS if not ok]
    print(f"{len(CHECKS) - len(failed)}/{len(CHECKS)} checks passed" +
          (f"; FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
