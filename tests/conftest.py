import os

import pytest

# One intra-op thread per process (set before torch is imported; subprocesses inherit it).
# The tests' models are small, and on a shared 2-core machine a second OpenMP thread spins at
# barriers while descheduled: a 64-px SwiftFormer forward took 8 s with 2 threads at load 10
# and 0.2 s with 1. Export OMP_NUM_THREADS to choose otherwise.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _torch_seed():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True, scope="session")
def _own_latency_user_dir(tmp_path_factory):
    """The suite never reads or writes the developer's ~/.config/swiftformer-nas (calibrations,
    the conversion cache): a calibration there could shadow what a test expects, and parallel
    test workers (pytest -n) must not share one cache file. Subprocesses inherit it."""
    os.environ["SWIFTFORMER_NAS_LATENCY_DIR"] = str(tmp_path_factory.mktemp("latency-user-dir"))
    yield
