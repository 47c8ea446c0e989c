"""Memory of trial workers (issue 19): CPU-only Ray workers never load triton.

timm imports torchvision, whose ops import torch._dynamo, which imports triton (~75 MB RSS per
worker); a CPU trial never compiles, so the search's Ray workers make triton unimportable at
start (``search.cluster.block_triton`` as Ray's ``worker_process_setup_hook``) when the trials
run on the CPU, and leave it alone when they may run on CUDA. Figures: bench/bench_memory.py,
notes/search_proxy.md section 3.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import search.cluster as cluster  # noqa: E402



@pytest.mark.parametrize("device,gpus,cpu_only", [
    ("cpu", 0, True), ("auto", 0, True), ("mps", 0, True),
    ("auto", 1, False), ("auto", 0.5, False), ("cuda", 0, False), ("cuda:1", 0, False),
    ("cpu", 1, False),  # a GPU reserved: keep everything a CUDA trial could need
])
def test_cpu_only_trials(device, gpus, cpu_only):
    assert cluster.cpu_only_trials(device, gpus) is cpu_only


class _FakeRay:
    def __init__(self) -> None:
        self.kwargs: dict = {}

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs) -> None:
        self.kwargs = kwargs

    def cluster_resources(self) -> dict:
        return {"CPU": 2.0}


@pytest.mark.parametrize("address", [None, "10.0.0.1:6379"])
@pytest.mark.parametrize("cpu_only", [True, False])
def test_init_ray_sets_the_setup_hook_only_for_cpu_workers(monkeypatch, address, cpu_only):
    fake = _FakeRay()
    monkeypatch.setattr(cluster, "ray", fake)
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))  # init_ray extends it
    assert cluster.init_ray(address, cpu_only_workers=cpu_only) == 2.0
    env = fake.kwargs.get("runtime_env") or {}
    assert (env.get("worker_process_setup_hook") == cluster.CPU_WORKER_SETUP_HOOK) is cpu_only
    if address:
        assert env["working_dir"] == str(cluster.PROJECT_ROOT)  # the hook does not replace it


def test_the_hook_is_importable_by_name_and_light():
    """Workers import the hook by its dotted path, before anything else: it must exist and its
    module must not import torch (triton has to be blocked before torch is imported)."""
    code = ("import sys, importlib; mod, _, fn = sys.argv[1].rpartition('.'); "
            "m = importlib.import_module(mod); assert callable(getattr(m, fn)); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, cluster.CPU_WORKER_SETUP_HOOK], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


@pytest.mark.slow
def test_without_the_hook_the_worker_imports_load_triton():
    """The probe can see triton (so the worker test below is not vacuous)."""
    probe = "import sys; import search.nas.trainable, timm; print(sys.modules.get('triton') is not None)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.split()[-1:] == ["True"]


def _triton_in_this_process() -> bool:
    """Whether triton is loaded after a trial worker's imports."""
    importlib.import_module("search.nas.trainable")
    importlib.import_module("timm")
    return sys.modules.get("triton") is not None


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_a_cpu_search_worker_has_no_triton():
    """A real Ray worker started by init_ray for CPU trials runs the hook before its first task."""
    ray = pytest.importorskip("ray")
    cloudpickle = pytest.importorskip("ray.cloudpickle")
    if ray.is_initialized():
        ray.shutdown()
    cluster.init_ray(None, cpu_only_workers=True)
    try:
        cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not on its path
        answer = ray.get(ray.remote(num_cpus=1)(_triton_in_this_process).remote(), timeout=150)
    finally:
        ray.shutdown()
    assert answer is False


class _Stop(Exception):
    """Raised by the fake init_ray: the test needs only the arguments it was called with."""


@pytest.mark.parametrize("extra,cpu_only", [
    ([], True),                                           # CPU workers (the default)
    (["--gpus-per-worker", "1"], False),                  # GPU workers may compile
    (["--torch-device", "cpu", "--gpus-per-worker", "1"], False),  # a GPU reserved: keep it
])
@pytest.mark.timeout(120)
def test_retrain_on_ray_blocks_triton_only_for_cpu_workers(tmp_path, monkeypatch, extra,
                                                           cpu_only):
    """``retrain --ray`` starts Ray as the search does: CPU-only workers get the setup hook."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ray_cluster import make_imagefolder

    import run_search
    import search.retrain.ray_train as ray_train

    seen = {}

    def fake_init_ray(address, log_to_driver=False, cpu_only_workers=False):
        seen.update(address=address, cpu_only_workers=cpu_only_workers)
        raise _Stop

    monkeypatch.setattr(ray_train, "init_ray", fake_init_ray)
    data = make_imagefolder(tmp_path / "data")
    with pytest.raises(_Stop):
        run_search.main(["retrain", "--arch", "XS", "--data", str(data), "--ray",
                         "--output", str(tmp_path / "run"), "--db", str(tmp_path / "r.db"),
                         *extra])
    assert seen == {"address": None, "cpu_only_workers": cpu_only}
