"""Full-scale retraining (issue 8): DDP, resume, distillation, evaluation, export, bad input.

Everything runs on CPU on a generated 4-class ImageFolder of 32 px JPEGs and a tiny spec.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import py_compile
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import run_search
from search.distributed import param_digest
from search.retrain import cli as retrain_cli
from search.retrain.cli import retrain_parser
from search.retrain.data import eval_transform
from search.retrain.losses import DistillationLoss
from search.retrain.loop import retrain_worker
from search_space.errors import UsageError
from search_space.spec import ArchSpec
from search_space.swiftformer import build_model
from test_checkpoint import official_state_dict  # one synthesizer of official-layout weights

TINY = ArchSpec(depths=(1, 1, 1, 1), widths=(16, 16, 16, 16), mlp_ratios=(1.0,) * 4,
                attn_blocks=(0, 0, 0, 1), resolution=32, num_classes=4)
COMMON = ["--torch-device", "cpu", "--workers", "0", "--batch-size", "4", "--no-record",
          "--no-export", "--warmup-epochs", "0", "--no-lr-scale", "--lr", "1e-3"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny convolutions on a shared 2-core machine: a second intra-op thread only adds
    # contention (measured 25x slower under load). Forked --nproc workers set their own.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """4 classes; 6 train / 3 val images each; class = brightness band (learnable)."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 3)):
        for c in range(4):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                a = (rng.random((32, 32, 3)) * 60 + c * 50).astype(np.uint8)
                Image.fromarray(a).save(d / f"{i}.jpg")
    return root


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("spec") / "tiny.json"
    p.write_text(TINY.to_json())
    return p


def _args(*argv: str):
    """The typed job of a ``retrain`` command line (as run_search.py would build it)."""
    return retrain_cli.retrain_job(run_search.build_parser()[0].parse_args(list(argv)))


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# -- DDP ----------------------------------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_two_process_gloo_ddp_one_epoch(data, spec_file, tmp_path):
    out = tmp_path / "run"
    rc = run_search.main(["retrain", "--arch", str(spec_file), "--data", str(data),
                          "--output", str(out), "--epochs", "1", "--nproc", "2", *COMMON])
    assert rc == 0
    logs = [json.loads((out / "rank_logs" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(g["rank"], g["world_size"]) for g in logs] == [(0, 2), (1, 2)]
    # RepeatAugSampler: each rank sees half of the (24-image) epoch: 3 steps of 4.
    assert [g["samples"] for g in logs] == [12, 12] and [g["steps"] for g in logs] == [3, 3]
    # Different data on each rank, yet identical weights: gradients were all-reduced.
    assert logs[0]["param_sha256"] == logs[1]["param_sha256"]
    # One checkpoint, written by rank 0 only, atomically (no temp files left behind).
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pth", "final.pth", "metrics.jsonl", "rank_logs", "result.json"]
    ck = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert ck["epoch"] == 0 and ck["global_step"] == 3
    model = build_model(TINY)
    model.load_state_dict(ck["model"])
    assert param_digest(model) == logs[0]["param_sha256"]
    init = build_model(TINY)
    assert param_digest(init) != logs[0]["param_sha256"]  # it did train
    (m,) = _metrics(out)
    assert m["train_images"] == 24 and m["val_images"] == 12  # both ranks counted
    assert math.isfinite(m["train_loss"]) and 0 < m["train_loss"] < 10
    assert 0 <= m["top1"] <= m["top5"] <= 100
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2 and result["top1"] == m["top1"]


# -- resume -------------------------------------------------------------------------------------
def _state_equal(a, b, path="") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _state_equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _state_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_resume_continues_with_identical_state(data, spec_file, tmp_path):
    # Mixup, cutmix and RandAugment on: the random streams must also line up after a resume.
    base = ["retrain", "--arch", str(spec_file), "--data", str(data), "--epochs", "2",
            "--aa", "rand-m9-mstd0.5-inc1", "--mixup", "0.8", "--cutmix", "1.0", *COMMON]
    straight, split = tmp_path / "straight", tmp_path / "split"
    retrain_worker(_args(*base, "--output", str(straight)))
    retrain_worker(_args(*base, "--output", str(split), "--stop-after-epochs", "1"))
    half = torch.load(split / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert half["epoch"] == 0 and not (split / "final.pth").exists()

    # The optimizer rebuilt from the checkpoint holds exactly the saved state.
    from timm.optim import create_optimizer_v2
    model = build_model(TINY)
    model.load_state_dict(half["model"])
    opt = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.025)
    opt.load_state_dict(half["optimizer"])
    _state_equal(opt.state_dict(), half["optimizer"])

    retrain_worker(_args(*base, "--output", str(split), "--resume"))
    assert [m["epoch"] for m in _metrics(split)] == [0, 1]  # epoch 0 not trained again
    a = torch.load(straight / "checkpoint.pth", map_location="cpu", weights_only=True)
    b = torch.load(split / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert a["epoch"] == b["epoch"] == 1 and a["global_step"] == b["global_step"] == 12
    for key in ("model", "optimizer", "model_ema", "lr_scheduler"):
        _state_equal(a[key], b[key], key)
    assert a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"]


# -- distillation -------------------------------------------------------------------------------
class _FixedTeacher(torch.nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[: x.shape[0]]


def test_hard_distillation_loss_is_deit_formula():
    torch.manual_seed(0)
    head, head_dist = torch.randn(6, 4), torch.randn(6, 4)
    labels = torch.randint(0, 4, (6,))
    teacher = torch.randn(6, 4)
    x = torch.zeros(6, 3, 8, 8)
    a = 0.3
    loss = DistillationLoss(torch.nn.CrossEntropyLoss(), _FixedTeacher(teacher), "hard", a)
    want = (1 - a) * torch.nn.functional.cross_entropy(head, labels) + \
        a * torch.nn.functional.cross_entropy(head_dist, teacher.argmax(1))
    assert torch.allclose(loss(x, (head, head_dist), labels), want)
    off = DistillationLoss(torch.nn.CrossEntropyLoss(), None, "none")
    avg = (head + head_dist) / 2
    assert torch.allclose(off(x, avg, labels), torch.nn.functional.cross_entropy(avg, labels))
    with pytest.raises(ValueError, match=r"distillation needs \(head, head_dist\) outputs"):
        loss(x, avg, labels)  # a single output cannot be distilled


def test_retrain_with_tiny_teacher_records_result(data, spec_file, tmp_path, capsys):
    import timm

    teacher = timm.create_model("test_resnet", num_classes=4)
    tfile = tmp_path / "teacher.pth"
    torch.save({"model": teacher.state_dict()}, tfile)
    out, db = tmp_path / "run", tmp_path / "results.db"
    argv = ["retrain", "--arch", str(spec_file), "--data", str(data), "--output", str(out),
            "--epochs", "1", "--teacher-model", "test_resnet", "--teacher-checkpoint", str(tfile),
            "--distillation-alpha", "1.0", *COMMON]
    argv[argv.index("--no-record")] = "--record"
    argv[argv.index("--no-export")] = "--export"
    rc = run_search.main(argv + ["--db", str(db)])
    assert rc == 0
    assert "distillation hard from test_resnet" in capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())
    assert result["distillation"] == "hard"
    # Final model exported through latency_models.export (skipped only if that is absent).
    pytest.importorskip("latency_models.export")
    assert (out / "model.onnx").is_file() and (out / "model.mlpackage").is_dir()
    assert "error" not in result["exports"]["onnx"] and "error" not in result["exports"]["coreml"]
    # The ONNX file is the trained model: same logits as final.pth under onnxruntime.
    import onnxruntime as ort
    model = build_model(TINY.replace(distillation=True)).eval()
    model.load_state_dict(torch.load(out / "final.pth", weights_only=True)["model"])
    x = torch.randn(1, 3, 32, 32)
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(want).max() > 0 and np.abs(got - want).max() <= 1e-3 * np.abs(want).max()
    from results.store import ResultsStore
    with ResultsStore(str(db), readonly=True) as store:
        runs = store.training_runs(TINY.arch_hash)
    assert len(runs) == 1 and runs[0]["status"] == "COMPLETED"
    assert runs[0]["top1"] == pytest.approx(result["top1"])
    assert runs[0]["checkpoint_path"] == result["checkpoint"]
    assert runs[0]["config"]["distillation"] == "hard"


def test_resumed_run_completes_the_same_db_row(data, spec_file, tmp_path):
    from results.store import ResultsStore

    out, db = tmp_path / "run", tmp_path / "results.db"
    with ResultsStore(str(db)) as store:
        sid = store.get_or_create_study("s", config={}, seed=0, dataset_id="d",
                                        fidelity={"epochs": 1}, device="cpu", code_version="t")
    base = ["retrain", "--arch", str(spec_file), "--data", str(data), "--output", str(out),
            "--epochs", "2", *COMMON, "--record", "--db", str(db), "--study-id", str(sid)]
    base.remove("--no-record")
    retrain_worker(_args(*base, "--stop-after-epochs", "1"))
    with ResultsStore(str(db), readonly=True) as store:
        (run,) = store.training_runs()
    assert run["status"] == "RUNNING" and run["arch_hash"] == TINY.arch_hash
    retrain_worker(_args(*base, "--resume"))
    with ResultsStore(str(db), readonly=True) as store:
        (done,) = store.training_runs(TINY.arch_hash)
    result = json.loads((out / "result.json").read_text())
    assert done["id"] == run["id"] == result["run_id"] and done["status"] == "COMPLETED"
    assert done["top1"] == pytest.approx(result["top1"]) and done["epochs"] == 2
    assert done["study_id"] == sid  # linked to the search it came from


def test_no_teacher_means_no_distillation(data, spec_file, tmp_path, capsys):
    out = tmp_path / "run"
    retrain_worker(_args("retrain", "--arch", str(spec_file), "--data", str(data), "--output",
                           str(out), "--epochs", "1", *COMMON))
    assert "distillation is off" in capsys.readouterr().out
    assert json.loads((out / "result.json").read_text())["distillation"] == "none"


# -- evaluate -----------------------------------------------------------------------------------
def test_evaluate_matches_direct_computation(data, tmp_path):
    from torchvision.datasets import ImageFolder

    # An 8-way head on the 4-class data (labels 0..3), so top-5 is not everything. The biases
    # make predictions depend on the class band yet keep top-1 and top-5 apart (checked below).
    spec = TINY.replace(num_classes=8)
    spec_file = tmp_path / "tiny8.json"
    spec_file.write_text(spec.to_json())
    torch.manual_seed(1)
    model = build_model(spec).eval()
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([3.0, 1.0, -1.0, -3.0, 2.0, 2.0, 2.0, -5.0]))
    ck = tmp_path / "w.pth"
    torch.save({"model": model.state_dict()}, ck)
    ds = ImageFolder(str(data / "val"), transform=eval_transform(32))
    with torch.no_grad():
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        y = torch.tensor(ds.targets)
        logits = model(x)
    want1 = 100.0 * (logits.argmax(1) == y).float().mean().item()
    want5 = 100.0 * (logits.topk(5, 1).indices == y[:, None]).any(1).float().mean().item()
    assert want1 < want5 < 100.0  # the data discriminate top-1, top-5 and "everything"
    js = tmp_path / "m.json"
    rc = run_search.main(["evaluate", "--arch", str(spec_file), "--checkpoint", str(ck),
                          "--data", str(data), "--torch-device", "cpu", "--workers", "0",
                          "--batch-size", "5", "--json", str(js)])
    assert rc == 0
    got = json.loads(js.read_text())
    assert got["val_images"] == 12
    assert got["top1"] == pytest.approx(want1)
    assert got["top5"] == pytest.approx(want5)
    assert got["val_loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-5)


def test_evaluate_official_checkpoint_layout(data, tmp_path):
    from search_space.spec import PRESETS
    from search_space.checkpoint import load_checkpoint
    from torchvision.datasets import ImageFolder

    ck = tmp_path / "SwiftFormer_XS.pth"
    torch.save({"model": official_state_dict("XS")}, ck)
    js = tmp_path / "m.json"
    assert run_search.main(["evaluate", "--arch", "XS", "--checkpoint", str(ck), "--data",
                            str(data), "--torch-device", "cpu", "--workers", "0", "--json",
                            str(js)]) == 0
    model = build_model(PRESETS["XS"]).eval()
    load_checkpoint(model, str(ck))
    ds = ImageFolder(str(data / "val"), transform=eval_transform(224))
    with torch.no_grad():
        logits = model(torch.stack([ds[i][0] for i in range(len(ds))]))
    y = torch.tensor(ds.targets)
    got = json.loads(js.read_text())
    assert got["top1"] == pytest.approx(100.0 * (logits.argmax(1) == y).float().mean().item())
    assert got["top5"] == pytest.approx(
        100.0 * (logits.topk(5, 1).indices == y[:, None]).any(1).float().mean().item())


# -- export -------------------------------------------------------------------------------------
def _script_args(script: Path, data: str) -> list[str]:
    env = dict(os.environ, SFN_PRINT_ARGS="1", TEACHER="/t/regnety_160.pth")
    r = subprocess.run(["bash", str(script), data], env=env, capture_output=True, text=True,
                       check=True)
    return r.stdout.splitlines()


def test_export_writes_valid_launch_scripts(spec_file, tmp_path):
    out = tmp_path / "exp"
    rc = run_search.main(["export", "--arch", str(spec_file), "--out", str(out), "--nodes", "2",
                          "--gpus-per-node", "2", "--extra", "--drop-path 0.1 --mixup 0"])
    assert rc == 0
    assert ArchSpec.from_json((out / "arch.json").read_text()) == TINY
    cfg = json.loads((out / "train_config.json").read_text())
    assert cfg["launch"]["global_batch"] == 2048 and cfg["launch"]["batch_per_gpu"] == 512
    parser = run_search.build_parser()[0]
    for name in ("train_torchrun.sh", "train_slurm.sbatch"):
        script = out / name
        subprocess.run(["bash", "-n", str(script)], check=True)
        argv = _script_args(script, "/data/imagenet")
        ns = parser.parse_args(["retrain", *argv])  # exits (SystemExit) on any unknown option
        assert ns.arch == str(out / "arch.json") and ns.data == "/data/imagenet"
        assert ns.batch_size == 512 and ns.epochs == 300 and ns.resume == "auto"
        assert ns.drop_path == 0.1 and ns.mixup == "0" and ns.clip_mode == "agc"
        assert ns.teacher_checkpoint == "/t/regnety_160.pth"
    sbatch = (out / "train_slurm.sbatch").read_text()
    assert "#SBATCH --nodes=2" in sbatch and "#SBATCH --gpus-per-node=2" in sbatch
    assert "srun" in sbatch and "torch.distributed.run" in sbatch and "MASTER_ADDR" in sbatch

    ray_py = out / "train_ray.py"
    py_compile.compile(str(ray_py), doraise=True)
    spec = importlib.util.spec_from_file_location("sfn_train_ray", ray_py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # ray itself is imported only inside main()
    ns = retrain_parser().parse_args(mod.retrain_argv("/data/imagenet", "/shared/run", None))
    assert ns.arch == str(out / "arch.json") and ns.batch_size == 512 and ns.drop_path == 0.1
    text = ray_py.read_text()
    assert "TorchTrainer(" in text and "ScalingConfig(" in text
    # --cpu workers start without triton (the search's hook); GPU workers keep it
    from search.cluster import CPU_WORKER_SETUP_HOOK
    for argv, hook in ((["--cpu"], CPU_WORKER_SETUP_HOOK), ([], None)):
        env = _ray_init_runtime_env(mod, ["train_ray.py", "/data/imagenet", *argv])
        assert env.get("worker_process_setup_hook") == hook
        assert env["env_vars"]["PYTHONPATH"] == mod.PROJECT_DIR
    # its own options: one line naming the option and what is allowed, exit 2, before ray
    for argv, needle in (
            (["--num-workers", "0"], "argument --num-workers: 0: allowed integers >= 1"),
            (["--max-failures", "-2"],
             "argument --max-failures: -2: allowed integers >= 0, or -1 (unlimited)"),
            (["--cpus-per-worker", "two"],
             "argument --cpus-per-worker: 'two' is not an integer; allowed integers >= 1")):
        r = subprocess.run([sys.executable, str(ray_py), "/data/imagenet", *argv],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and r.stderr == f"error: {needle} (see: train_ray.py --help)\n", \
            r.stderr


def test_export_into_a_path_with_shell_characters_stays_that_path(spec_file, tmp_path):
    # the export directory is written into the bash scripts: $(...), quotes and braces in it
    # must reach `retrain` as the path, never run (or cut the ${VAR:-default} short)
    out = tmp_path / 'x$(touch PWNED)`touch PWNED2` "q\' }b'
    assert run_search.main(["export", "--arch", str(spec_file), "--out", str(out)]) == 0
    for name in ("train_torchrun.sh", "train_slurm.sbatch"):
        subprocess.run(["bash", "-n", str(out / name)], check=True)
        argv = _script_args(out / name, "/data/imagenet")
        assert argv[argv.index("--arch") + 1] == str(out / "arch.json")
        assert argv[argv.index("--output") + 1] == str(out / "run")
    assert not list(tmp_path.rglob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))


@pytest.mark.parametrize("flag, value, needle", [
    ("--time", "abc", "--time 'abc': allowed a Slurm time limit"),
    ("--time", "48:00:00\n#SBATCH --x", "--time '48:00:00\\n#SBATCH --x': allowed a Slurm"),
    ("--partition", "gpu\nrm -rf ~", "--partition 'gpu\\nrm -rf ~': allowed partition names"),
    ("--partition", "a;b", "--partition 'a;b': allowed partition names"),
])
def test_export_refuses_slurm_values_sbatch_would_refuse(tmp_path, capsys, flag, value, needle):
    out = tmp_path / "exp"
    assert run_search.main(["export", "--arch", "XS", "--out", str(out), flag, value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {needle}"), err
    assert not out.exists()


@pytest.mark.parametrize("shape, needle", [
    (("--nodes", "100000"), "--nodes 100000 x --gpus-per-node 4 = 400000 GPUs: allowed at most "
                            "2048 (the recipe's global batch, one image per GPU) unless "
                            "--batch-size is given"),
    (("--nodes", "513"), "--nodes 513 x --gpus-per-node 4 = 2052 GPUs: allowed at most 2048"),
])
def test_export_refuses_more_gpus_than_the_global_batch_has_images(tmp_path, capsys, shape,
                                                                    needle):
    out = tmp_path / "exp"
    assert run_search.main(["export", "--arch", "XS", "--out", str(out), *shape]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {needle}"), err
    assert not out.exists()


def test_export_shapes_at_the_global_batch_limit_or_with_a_batch(tmp_path):
    from search.retrain.config import ExportConfig

    assert ExportConfig(out=str(tmp_path), arch="XS", nodes=512).batch_per_gpu == 1
    assert ExportConfig(out=str(tmp_path), arch="XS", nodes=3).batch_per_gpu == 2048 // 12
    assert ExportConfig(out=str(tmp_path), arch="XS", nodes=1000, batch_size=2).batch_per_gpu == 2


@pytest.mark.parametrize("kind", ["dir", "file", "empty"])
def test_export_project_dir_that_exists_here_must_be_a_checkout(tmp_path, capsys, kind,
                                                                monkeypatch):
    target = {"dir": tmp_path / "other", "file": tmp_path / "f.txt", "empty": ""}[kind]
    if kind == "dir":
        target.mkdir()
    elif kind == "file":
        target.write_text("x")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "exp"
    assert run_search.main(["export", "--arch", "XS", "--out", str(out),
                            "--project-dir", str(target)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: --project-dir {target}: allowed a checkout of this project (a "
                   "directory holding run_search.py), or a path that exists only on the "
                   "cluster\n")
    assert not out.exists()


def test_export_project_dir_only_on_the_cluster_is_written_with_a_warning(tmp_path, capsys):
    out = tmp_path / "exp"
    remote = tmp_path / "cluster" / "checkout"  # does not exist here
    assert run_search.main(["export", "--arch", "XS", "--out", str(out),
                            "--project-dir", str(remote)]) == 0
    err = capsys.readouterr().err
    assert err == (f"warning: --project-dir {remote}: not on this machine; the scripts run "
                   f"{remote / 'run_search.py'} on the cluster\n")
    assert f"CHECKOUT={remote}\n" in (out / "train_torchrun.sh").read_text()
    # this checkout itself: no warning
    assert run_search.main(["export", "--arch", "XS", "--out", str(tmp_path / "e2"),
                            "--project-dir", str(Path(run_search.__file__).parent)]) == 0
    assert capsys.readouterr().err == ""


def test_export_accepts_every_slurm_time_format(tmp_path):
    from search.retrain.config import ExportConfig

    for t in ("90", "90:30", "48:00:00", "2-0", "2-12:30", "2-12:30:00", "UNLIMITED"):
        cfg = ExportConfig(out=str(tmp_path), arch="XS", time=t, partition="gpu,gpu-long")
        assert cfg.time == t


class _Stop(Exception):
    pass


def _ray_init_runtime_env(mod, argv: list[str]) -> dict:
    """The runtime_env the exported train_ray.py passes to ray.init (a fake ray stops there)."""
    import types

    seen = {}

    def init(**kwargs):
        seen.update(kwargs.get("runtime_env") or {})
        raise _Stop

    fake = {"ray": types.ModuleType("ray"), "ray.train": types.ModuleType("ray.train"),
            "ray.train.torch": types.ModuleType("ray.train.torch")}
    fake["ray"].init = init
    for name in ("FailureConfig", "RunConfig", "ScalingConfig"):
        setattr(fake["ray.train"], name, object)
    fake["ray.train.torch"].TorchTrainer = object
    with pytest.MonkeyPatch.context() as mp:
        for name, m in fake.items():
            mp.setitem(sys.modules, name, m)
        mp.setattr(sys, "argv", argv)
        with pytest.raises(_Stop):
            mod.main()
    return seen


def test_export_from_trial_links_db(tmp_path):
    from results.store import ResultsStore

    db = tmp_path / "r.db"
    with ResultsStore(str(db)) as store:
        sid = store.get_or_create_study("s", config={}, seed=0, dataset_id="d",
                                        fidelity={"epochs": 1}, device="cpu", code_version="t")
        h = store.upsert_architecture(TINY)
        tid = store.start_trial(sid, "k0", h, config={}, seed=0)
    out = tmp_path / "exp"
    assert run_search.main(["export", "--trial", str(tid), "--db", str(db), "--out", str(out)]) == 0
    assert ArchSpec.from_json((out / "arch.json").read_text()).arch_hash == h
    ns = run_search.build_parser()[0].parse_args(
        ["retrain", *_script_args(out / "train_torchrun.sh", "/d")])
    assert ns.study_id == sid and ns.db == str(db.resolve())


# -- bad input: one line, exit 2, nothing started ------------------------------------------------
@pytest.mark.parametrize("case", ["no_val", "bad_spec", "no_teacher", "bad_teacher", "bad_extra",
                                  "no_db", "unknown_trial", "bad_number", "bad_mixup",
                                  "bad_extra_value"])
def test_bad_input_exits_2_with_one_line(case, data, spec_file, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["retrain", "--arch", str(spec_file), "--data", str(data), "--output", str(out),
            "--nproc", "2", *COMMON]
    if case == "no_val":
        only_train = tmp_path / "d"
        (only_train / "train" / "a").mkdir(parents=True)
        argv[argv.index(str(data))] = str(only_train)
        expect = "missing val/"
    elif case == "bad_spec":
        bad = tmp_path / "bad.json"
        bad.write_text('{"depths": [1, 1]}')
        argv[argv.index(str(spec_file))] = str(bad)
        expect = "bad.json"
    elif case == "no_teacher":
        argv += ["--teacher-checkpoint", str(tmp_path / "missing.pth")]
        expect = "--teacher-checkpoint"
    elif case == "bad_teacher":  # a file, but not weights of this teacher
        wrong = tmp_path / "wrong.pth"
        torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
        argv += ["--teacher-model", "test_resnet", "--teacher-checkpoint", str(wrong)]
        expect = "does not fit test_resnet"
    elif case == "bad_extra":
        argv = ["export", "--arch", str(spec_file), "--out", str(out), "--extra", "--no-such 1"]
        expect = "--extra"
    elif case == "no_db":
        argv = ["export", "--trial", "1", "--db", str(tmp_path / "none.db"), "--out", str(out)]
        expect = "--db"
    elif case == "unknown_trial":
        from results.store import ResultsStore
        with ResultsStore(str(tmp_path / "empty.db")):
            pass
        argv = ["export", "--trial", "7", "--db", str(tmp_path / "empty.db"), "--out", str(out)]
        expect = "--trial 7"
    elif case == "bad_number":  # checked by RetrainConfig itself, before anything starts
        argv += ["--epochs", "0"]
        expect = "--epochs 0: allowed integers >= 1"
    elif case == "bad_mixup":
        argv += ["--mixup", "lots"]
        expect = "--mixup 'lots': allowed a number >= 0 or 'auto'"
    else:  # a value the parser accepts but the recipe does not, inside --extra
        argv = ["export", "--arch", str(spec_file), "--out", str(out), "--extra",
                "--drop-path 1.5"]
        expect = "--drop-path 1.5: allowed [0, 1)"
    assert run_search.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expect in err and "\n" not in err
    assert not out.exists()  # nothing spawned, nothing written


# Each number of the recipe with a value outside its range and one at its edge: written out here,
# not read from the config's table, so a range dropped from RetrainConfig fails this test.
RECIPE_RANGE_CASES = [
    ("lr", -1e-3, 1e-9, "--lr -0.001: allowed numbers > 0"),
    ("lr", 0.0, 1e-9, "--lr 0: allowed numbers > 0"),
    ("opt_eps", 0.0, 1e-12, "--opt-eps 0: allowed numbers > 0"),
    ("weight_decay", -0.1, 0.0, "--weight-decay -0.1: allowed numbers >= 0"),
    ("warmup_epochs", -1, 0, "--warmup-epochs -1: allowed integers >= 0"),
    ("warmup_lr", -1e-6, 0.0, "--warmup-lr -1e-06: allowed numbers >= 0"),
    ("min_lr", -1e-5, 0.0, "--min-lr -1e-05: allowed numbers >= 0"),
    ("clip_grad", -0.01, 0.0, "--clip-grad -0.01: allowed numbers >= 0 (0: off)"),
    ("mixup", -0.8, 0.0, "--mixup -0.8: allowed a number >= 0 or 'auto'"),
    ("cutmix", float("nan"), 0.0, "--cutmix nan: allowed a number >= 0 or 'auto'"),
    ("mixup_prob", 1.5, 1.0, "--mixup-prob 1.5: allowed 0..1"),
    ("mixup_switch_prob", -0.5, 0.0, "--mixup-switch-prob -0.5: allowed 0..1"),
    ("smoothing", 1.0, 0.99, "--smoothing 1: allowed [0, 1)"),
    ("color_jitter", -0.4, 0.0, "--color-jitter -0.4: allowed numbers >= 0"),
    ("reprob", 2.0, 1.0, "--reprob 2: allowed 0..1"),
    ("drop_path", 1.0, 0.0, "--drop-path 1: allowed [0, 1)"),
    ("distillation_alpha", 1.5, 1.0, "--distillation-alpha 1.5: allowed 0..1"),
    ("distillation_tau", 0.0, 1e-3, "--distillation-tau 0: allowed numbers > 0"),
    ("model_ema_decay", 1.01, 1.0, "--model-ema-decay 1.01: allowed 0..1"),
    ("model_ema_decay", float("nan"), 0.0, "--model-ema-decay nan: allowed 0..1"),
]


@pytest.mark.parametrize("name, bad, edge, message", RECIPE_RANGE_CASES,
                         ids=[f"{c[0]}={c[1]}" for c in RECIPE_RANGE_CASES])
def test_recipe_numbers_outside_their_range_are_refused_naming_it(name, bad, edge, message):
    from search.retrain.config import RetrainConfig

    with pytest.raises(UsageError) as e:
        RetrainConfig(**{name: bad})
    assert str(e.value) == message
    assert getattr(RetrainConfig(**{name: edge}), name) == edge  # the edge itself is allowed


def test_a_recipe_number_out_of_range_stops_retrain_before_anything_starts(capsys, tmp_path):
    out = tmp_path / "run"
    argv = ["retrain", "--arch", "XS", "--data", str(tmp_path / "no-data"), "--output", str(out),
            "--mixup-prob", "7"]
    assert run_search.main(argv) == 2
    assert capsys.readouterr().err.strip() == "error: --mixup-prob 7: allowed 0..1"
    assert not out.exists()


# -- the recipe is declared once: RetrainConfig; the command line is derived from it -------------
def test_cli_defaults_are_the_config_defaults(data, spec_file):
    from dataclasses import fields

    from search.retrain.config import Processes, RetrainConfig, RetrainJob

    job = _args("retrain", "--arch", str(spec_file), "--data", str(data))
    assert job == RetrainJob(arch=str(spec_file), data=str(data))
    assert job.recipe == RetrainConfig() and job.recipe.lr == 2e-3 and job.recipe.epochs == 300
    dests = {a.dest for a in retrain_parser()._actions}
    for cls in (RetrainConfig, Processes, RetrainJob):
        missing = {f.name for f in fields(cls)} - dests - {"recipe", "processes"}
        assert not missing, f"{cls.__name__} fields without an option: {missing}"
    # Every option reaches the config: a non-default value of each kind comes through typed.
    job = _args("retrain", "--arch", "XS", "--data", "d", "--lr", "1e-3", "--no-model-ema",
                "--mixup", "0.2", "--torch-device", "cpu", "--nproc", "3", "--study-id", "5")
    assert (job.recipe.lr, job.recipe.model_ema, job.recipe.mixup) == (1e-3, False, 0.2)
    assert (job.processes.torch_device, job.processes.nproc, job.study_id) == ("cpu", 3, 5)


def test_torch_device_option_replaces_device(capsys):
    parser = run_search.build_parser()[0]
    with pytest.raises(SystemExit):
        parser.parse_args(["retrain", "--arch", "XS", "--data", "d", "--device", "cpu"])
    assert "unrecognized arguments: --device cpu" in capsys.readouterr().err
    assert "--device" not in retrain_parser().format_help().replace("--torch-device", "")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_cuda_is_a_usage_error(data, spec_file, capsys):
    argv = ["retrain", "--arch", str(spec_file), "--data", str(data), "--torch-device", "cuda"]
    assert run_search.main(argv) == 2
    assert "--torch-device cuda: CUDA is not available" in capsys.readouterr().err


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "two", "RANK": "0"}, "$WORLD_SIZE='two': allowed integers >= 1 (set by the "
     "launcher: torchrun or srun; unset it to run one process)"),
    ({"WORLD_SIZE": "2", "RANK": "5"}, "$RANK=5: allowed 0..1 (one per process the launcher "
     "started)"),
    ({"SLURM_NTASKS": "x", "SLURM_PROCID": "0"}, "$SLURM_NTASKS='x': allowed integers >= 1"),
    ({"SLURM_NTASKS": "2", "SLURM_PROCID": "0"}, "$SLURM_NTASKS > 1 without "
     "$SLURM_JOB_NODELIST: cannot find the master node"),
    ({"LOCAL_RANK": "-1"}, "$LOCAL_RANK='-1': allowed integers >= 0"),
])
def test_a_malformed_launcher_environment_is_one_line(env, message, data, spec_file, tmp_path,
                                                      capsys, monkeypatch):
    """int(os.environ[...]) tracebacks: a launcher's variable that is not an integer (or a rank
    outside the world) is named, before anything is written."""
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_PROCID",
              "SLURM_JOB_NODELIST", "SLURM_NODELIST"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "run"
    assert run_search.main(["retrain", "--arch", str(spec_file), "--data", str(data), "--output",
                            str(out), "--torch-device", "cpu", *COMMON]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: " + message), line
    assert not out.exists()


def test_parser_build_imports_no_torch():
    code = ("import argparse, sys\n"
            "from search.retrain import cli\n"
            "cli.register(argparse.ArgumentParser().add_subparsers())\n"
            "heavy = sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                   check=True, timeout=120)
