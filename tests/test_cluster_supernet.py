"""The supernet proxy on a real 2-node Ray cluster (tests/ray_cluster.py): the supernet trial
runs on a node that cannot see the driver's --out, and its checkpoint still reaches the driver.

Its own file so that pytest-xdist (``--dist loadfile``) can run it beside tests/test_cluster.py's
cluster test rather than after it (each starts a cluster: ~40 s).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ray_cluster import (RAY, LocalCluster, cli, hiding_supported,  # noqa: E402
                         make_imagefolder, search_argv, trial_rows)
from search.proxy.node_cache import CACHE_ENV  # noqa: E402


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("imgs"))


@pytest.mark.cluster
@pytest.mark.timeout(600)
def test_supernet_search_when_no_trial_runs_on_the_driver_node(tmp_path, images):
    """The head holds no CPUs (Ray's advice for a large cluster's head node), so every trial,
    the supernet's too, runs on node 2, which cannot see --out: the supernet checkpoint still
    reaches the driver's --out after every epoch, and the driver scores the candidates on it."""
    if not Path(RAY).exists():
        pytest.skip("no ray executable beside this python")
    if not hiding_supported():
        pytest.skip("needs a mount namespace (root + unshare) to hide --out from node 2")
    import torch

    from search.proxy.supernet.training import CHECKPOINT_NAME
    recipe = {"width_divisor": 1, "epochs": 2, "batch_size": 8, "recal_images": 8,
              "warmup_epochs": 0.0, "num_random": 1}
    data = shutil.copytree(images, tmp_path / "shared" / "data")
    out, node2_cache, node2_tmp = tmp_path / "out", tmp_path / "node2-cache", tmp_path / "n2tmp"
    out.mkdir()
    node2_tmp.mkdir()
    cluster = LocalCluster(tmp_path, node2_env={CACHE_ENV: str(node2_cache),
                                                "TMPDIR": str(node2_tmp)},
                           hide_from_node2=(out,), head_cpus=0)
    cluster.start()
    try:
        node2_id = cluster.node_ids["sfn_node2"]
        r = cli(search_argv(data, out, "sn-nodes", 2, "--address", cluster.address, "--proxy",
                            "supernet", "--scored", "4", "--top-k", "1",
                            "--supernet", json.dumps(recipe)), cluster.client_env(), tmp_path)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        rows = trial_rows(out / "results.db", "sn-nodes")
        (model,) = [x for x in rows if x["config"].get("kind") == "supernet"]
        assert model["status"] == "COMPLETED" and model["metrics"]["node_id"] == node2_id
        ck = torch.load(out / "sn-nodes" / "supernet" / CHECKPOINT_NAME, weights_only=True)
        assert ck["epoch"] == recipe["epochs"]
        scored = [x for x in rows if x["config"].get("kind") == "scored"]
        assert len(scored) == 4 and all(x["status"] == "COMPLETED" for x in scored)
        trained = [x for x in rows if x["config"].get("kind") == "candidate"]
        assert trained and {x["metrics"]["node_id"] for x in trained} == {node2_id}
        assert not list(node2_tmp.glob("sfn-supernet-*"))  # its work directory is removed
    finally:
        cluster.stop()
