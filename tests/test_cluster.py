"""Search and retraining on a Ray cluster (issue 17).

Fast checks without a cluster: the node-local data cache (built per node, same arrays and id,
safe with concurrent builders, a source a node cannot read is an error naming --data), the
Tune storage (directory, file:// URI through pyarrow, the searcher state read back for
--resume), and the bad inputs that must fail in one line with exit 2 before anything is
written (an address nothing answers at, a storage filesystem that is not installed, Ray options
without --ray).

One test marked ``cluster`` starts a real 2-node cluster on this machine (tests/ray_cluster.py:
two ``ray start --block`` processes, one CPU each, the second in its own mount namespace that
hides the driver's --out and one dataset) and runs a search with ``--address`` on it: trials
ran on both nodes (node ids in the store), the second node built its own copy of the data
cache, a dataset that node cannot read is refused before anything is written, and every
process the cluster started is gone afterwards. Its two trials wait for each other before
training (tests/cluster_barrier.py): a one-second trial would otherwise finish before the
second node's worker has even started, and Tune would reuse the warm worker for both. The full proof (front identical to the local
search, kill + --resume with --storage, Ray Train retraining on both nodes killed and resumed)
is bench/bench_cluster.py (figures in notes/cluster.md): too slow for the suite's budget.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_search  # noqa: E402
from ray_cluster import (RAY, LocalCluster, alive, cli, hiding_supported,  # noqa: E402
                         make_imagefolder, search_argv, trial_rows)
from search.cluster import slots  # noqa: E402
from search.nas.config import SearchConfig  # noqa: E402
from search.nas.driver import plan_resources  # noqa: E402
from search.nas.storage import experiment_storage, fetch_searcher_state  # noqa: E402
from search.nas.trainable import allocated_threads  # noqa: E402
from search.proxy.data import prepare_data  # noqa: E402
from search.proxy.fidelity import Fidelity  # noqa: E402
from search.proxy.node_cache import (CACHE_ENV, cache_root_problem, localize,  # noqa: E402
                                     node_data_problem)
from search_space.errors import UsageError  # noqa: E402

FID = Fidelity.from_dict({**Fidelity().to_dict(), "classes": 2, "images_per_class": 8,
                          "val_per_class": 4, "epochs": 1})


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("imgs"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens


# -- the node-local data cache ------------------------------------------------------------------
def test_node_without_the_cache_builds_its_own_copy(tmp_path, images, monkeypatch):
    driver = prepare_data(str(images), FID, cache_dir=str(tmp_path / "driver-cache"))
    node_root = tmp_path / "node-cache"
    monkeypatch.setenv(CACHE_ENV, str(node_root))
    local = localize(driver, FID)
    assert local.path == str(node_root / driver.dataset_id) != driver.path
    assert local.dataset_id == driver.dataset_id
    for name in ("train_x", "train_y", "val_x", "val_y"):
        assert np.array_equal(getattr(local, name), getattr(driver, name)), name
    assert localize(driver, FID).path == local.path  # found, not rebuilt
    monkeypatch.delenv(CACHE_ENV)
    assert localize(driver, FID).path == driver.path  # no node root: the driver's, if visible


def test_concurrent_builders_on_one_node_agree(tmp_path, images, monkeypatch):
    driver = prepare_data(str(images), FID, cache_dir=str(tmp_path / "driver-cache"))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "node-cache"))
    paths, errors = [], []

    def build():
        try:
            paths.append(localize(driver, FID).path)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(paths)) == 1
    # only the finished cache is left: every losing builder removed its temporary
    assert sorted(p.name for p in (tmp_path / "node-cache").iterdir()) == [driver.dataset_id]


def test_a_node_that_cannot_read_the_source_says_so(tmp_path, images, monkeypatch):
    copy = shutil.copytree(images, tmp_path / "copy")
    driver = prepare_data(str(copy), FID, cache_dir=str(tmp_path / "driver-cache"))
    shutil.rmtree(copy)  # this "node" has neither the dataset nor a cache
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "node-cache"))
    assert "FileNotFoundError" in node_data_problem(driver)
    with pytest.raises(UsageError, match=rf"--data {copy}: not readable on this node"):
        localize(driver, FID)


@pytest.mark.parametrize("under", ["", "/sub"])
def test_a_cache_variable_naming_a_file_is_refused_before_any_work(tmp_path, capsys, images,
                                                                   monkeypatch, under):
    """$SWIFTFORMER_NAS_CACHE set to a file (or below one): the search ran and every trial
    failed with FileExistsError / NotADirectoryError. Now one line naming the variable; and a
    node whose own variable is bad says so where the trial starts (localize)."""
    f = tmp_path / "afile"
    f.write_text("x")
    monkeypatch.setenv(CACHE_ENV, str(f) + under)
    out, db = tmp_path / "runs", tmp_path / "r.db"
    assert run_search.main(["search", "--data", str(images), "--fidelity", FID.to_json(),
                            "--trials", "1", "--baselines", "", "--out", str(out), "--db",
                            str(db)]) == 2
    where = "" if not under else f" ({f} is not a directory)"
    want = (f"error: ${CACHE_ENV} {f}{under}: not a directory{where}; it names a node's data "
            "cache directory (unset it to use the default)")
    assert capsys.readouterr().err.strip().splitlines() == [want]
    assert not out.exists() and not db.exists()
    driver = prepare_data(str(images), FID, cache_dir=str(tmp_path / "driver-cache"))
    with pytest.raises(UsageError) as e:
        localize(dataclasses.replace(driver, path=str(tmp_path / "elsewhere")), FID)
    assert str(e.value) == want[len("error: "):]


def test_a_cache_variable_naming_a_new_directory_is_fine(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "new" / "cache"))
    assert cache_root_problem() is None and not (tmp_path / "new").exists()


# -- Tune storage -------------------------------------------------------------------------------
def test_storage_directory_uri_and_searcher_state(tmp_path):
    default = experiment_storage(None, str(tmp_path / "out" / "st"), "st")
    assert default.path == str(tmp_path / "out" / "st" / "tune") and default.filesystem is None
    plain = experiment_storage(str(tmp_path / "store"), "ignored", "st")
    assert plain.path == str(tmp_path / "store" / "st") and plain.filesystem is None
    uri = experiment_storage(f"file://{tmp_path}/store", "ignored", "st")
    assert uri.path == f"{tmp_path}/store/st" and type(uri.filesystem).__name__ == \
        "LocalFileSystem"
    assert fetch_searcher_state(uri, str(tmp_path / "local")) is None  # nothing saved yet
    exp = tmp_path / "store" / "st" / "search"
    exp.mkdir(parents=True)
    for stamp, body in (("2026-01-01_00-00-00", b"old"), ("2026-01-02_00-00-00", b"new")):
        (exp / f"searcher-state-{stamp}.pkl").write_bytes(body)
    local = fetch_searcher_state(uri, str(tmp_path / "local"))
    assert [p.read_bytes() for p in Path(local).iterdir()] == [b"new"]  # the newest only


def test_resume_keeps_the_study_storage_unless_given():
    saved = SearchConfig(study="s", storage="s3://bucket/runs")
    assert saved.with_execution(SearchConfig(study="s")).storage == "s3://bucket/runs"
    assert saved.with_execution(SearchConfig(study="s", storage="/nfs/x")).storage == "/nfs/x"


# -- resources ----------------------------------------------------------------------------------
def test_trial_resources_threads_and_packing():
    local = plan_resources(SearchConfig(study="r", gpus_per_trial=0.25), 16, 2)
    assert (local.cpus_per_trial, local.threads, local.max_concurrent) == (1.0, 1, 8)  # 2/0.25
    remote = plan_resources(SearchConfig(study="r", address="auto", cpus_per_trial=3.5), 64)
    assert (remote.cpus_per_trial, remote.threads, remote.max_concurrent) == (3.5, 3, 0)
    nodes = [{"cpus": 8, "gpus": 1}, {"cpus": 8, "gpus": 0}, {"cpus": 3, "gpus": 4}]
    assert slots(nodes, 2, 0) == 4 + 4 + 1
    assert slots(nodes, 2, 0.5) == 2 + 0 + 1  # fractional GPUs: two trials share one
    assert allocated_threads(3) == 3  # outside a Tune trial: the planned threads


# -- bad input: one line, exit 2, nothing written -------------------------------------------------
@pytest.mark.parametrize("argv, needle", [
    (["search", "--address", "127.0.0.1:{port}"], "--address 127.0.0.1:{port}: no Ray cluster "
     "answers there"),
    (["search", "--address", "head:node:1"], "not an address; allowed: auto"),
    (["search", "--storage", "nosuchfs://bucket/x"], "--storage nosuchfs://bucket/x: no "
     "filesystem for nosuchfs:// is installed here"),
    (["search", "--storage", "hdfs://namenode:8020/x"], "--storage hdfs://namenode:8020/x: "
     "cannot open it"),
    # an fsspec filesystem that connects on opening (ftp://): the refusal, not a traceback
    (["search", "--storage", "ftp://127.0.0.1:{port}/x"], "--storage ftp://127.0.0.1:{port}/x: "
     "cannot open it ("),
    (["search", "--gpus-per-trial", "1.5"], "--gpus-per-trial 1.5: allowed 0, a fraction"),
    (["retrain", "--arch", "XS", "--data", "{tmp}/data", "--num-workers", "2"],
     "--num-workers: only with --ray"),
    (["retrain", "--arch", "XS", "--data", "{tmp}/data", "--ray", "--address",
      "127.0.0.1:{port}"], "--address 127.0.0.1:{port}: no Ray cluster answers there"),
    (["retrain", "--arch", "XS", "--data", "{tmp}/data", "--ray", "--storage", "nosuchfs://b"],
     "--storage nosuchfs://b: no filesystem for nosuchfs://"),
    (["retrain", "--arch", "XS", "--data", "{tmp}/data", "--ray", "--nproc", "2"],
     "--nproc 2: not with --ray"),
])
def test_cluster_bad_input_one_line_exit_2(tmp_path, capsys, images, argv, needle):
    shutil.copytree(images, tmp_path / "data")
    port = str(_closed_port())
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{port}", port) for a in argv]
    needle = needle.replace("{port}", port)
    argv += ["--db", str(tmp_path / "r.db")] + (
        ["--out", str(tmp_path / "runs")] if argv[0] == "search" else
        ["--output", str(tmp_path / "run")])
    t0 = time.monotonic()
    assert run_search.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and err.startswith("error: "), err
    import ray
    assert not ray.is_initialized()
    assert not (tmp_path / "r.db").exists() and not (tmp_path / "runs").exists() \
        and not (tmp_path / "run").exists()
    assert time.monotonic() - t0 < 60


# -- a real 2-node cluster ------------------------------------------------------------------------
@pytest.mark.cluster
@pytest.mark.timeout(600)
def test_search_on_a_two_node_cluster(tmp_path, images):
    """Trials on both nodes, node ids recorded, node 2 (which cannot see --out) built its own
    data cache; a dataset node 2 cannot read is refused before anything is written; teardown
    leaves no process."""
    if not Path(RAY).exists():
        pytest.skip("no ray executable beside this python")
    hide = hiding_supported()
    data = shutil.copytree(images, tmp_path / "shared" / "data")
    hidden = make_imagefolder(tmp_path / "hidden" / "data", classes=2, train=9, val=5)
    out, node2_cache = tmp_path / "out", tmp_path / "node2-cache"
    out.mkdir()
    cluster = LocalCluster(tmp_path, node2_env={CACHE_ENV: str(node2_cache)},
                           hide_from_node2=(out, tmp_path / "hidden") if hide else ())
    cluster.start()
    try:
        env = cluster.client_env()
        head_id, node2_id = cluster.node_ids["sfn_head"], cluster.node_ids["sfn_node2"]
        if hide:
            r = cli(search_argv(hidden, out, "refused", 2, "--address", cluster.address),
                    env, tmp_path)
            assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-3000:]
            err = r.stderr.strip()
            assert err.startswith(f"error: --data {hidden}: not readable on node "
                                  f"{node2_id[:12]}") and len(err.splitlines()) == 1, err
            assert not (out / "results.db").exists()
        t0 = time.monotonic()
        r = cli(search_argv(data, out, "two-nodes", 2, "--address", cluster.address,
                            baseline=False), env, tmp_path,
                barrier=(tmp_path / "shared" / "barrier", 2))
        wall = time.monotonic() - t0
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "on 2 node(s)" in r.stdout
        rows = trial_rows(out / "results.db", "two-nodes")
        trained = [x for x in rows if x["config"].get("kind") == "candidate"]
        assert [x["status"] for x in trained] == ["COMPLETED", "COMPLETED"], rows
        where = {x["metrics"]["node_id"]: x["metrics"]["data_cache"] for x in trained}
        assert set(where) == {head_id, node2_id}, (where, cluster.node_ids)
        dataset_id = Path(where[head_id]).name
        assert where[head_id] == str(out / "cache" / dataset_id)
        assert where[node2_id] == str(node2_cache / dataset_id)
        for name in ("train_x", "val_x", "train_y"):  # the same subset, built twice
            assert np.array_equal(np.load(Path(where[head_id]) / f"{name}.npy"),
                                  np.load(Path(where[node2_id]) / f"{name}.npy"))
        pids = cluster.pids()
        assert len(pids) >= 6  # two raylets, GCS, ... and the workers
    finally:
        left = cluster.stop()
    assert not left and not [p for p in pids if alive(p)]
    print(f"two-node search: {wall:.1f}s wall, nodes {json.dumps(cluster.node_ids)}")

