#!/usr/bin/env python
"""The bad-input sweep of issue 18: every hostile-but-realistic input as a real command line.

    python tests/bad_inputs_sweep.py            # the whole table, one PASS/FAIL line per case
    python tests/bad_inputs_sweep.py -k db      # only cases whose name contains "db"
    python tests/bad_inputs_sweep.py --list     # the table

Each case runs ``python run_search.py ARGS`` in a fresh temporary directory (its cwd, so the
default ``runs/`` lands there, and its HOME, so user calibrations do too), after a setup that
writes the bad files. An ``error`` case passes when the exit status is 2, stderr is exactly one
line ``error: ...`` that contains the case's needle (the input it names), no traceback was
printed, and nothing in the temporary directory was created, changed or removed (a listing of
it -- names, types, sizes, mtimes -- before and after). An ``ok`` case (a reader of a read-only
database, a definition that must hold) passes on exit 0 with its own check.

Run as root, every case runs as an unprivileged user (``unshare --user``: root without its
capabilities), because a user is not root: permission bits (a read-only database, an
unwritable --out) mean nothing to root. Cases marked with an ``owner`` wait for that helper's
pending work; they are reported XFAIL/XPASS and do not fail the sweep.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tiny import make_imagefolder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY_FID = json.dumps({"classes": 2, "images_per_class": 4, "val_per_class": 2, "epochs": 1,
                       "batch_size": 4, "eval_batch_size": 4, "warmup_epochs": 0.0})
SEARCH = ("search", "--fidelity", TINY_FID, "--trials", "1", "--baselines", "",
          "--db", "{t}/runs/results.db", "--out", "{t}/runs")
DATA = "{t}/data"
SHARED: dict[str, Path] = {}  # files made once per sweep (checkpoints), outside the cases' dirs
# Setups run one at a time: they run in this process's threads, and Alembic's migration
# context (creating a results database) is process-global.
SETUP_LOCK = threading.Lock()


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]  # run_search.py arguments; "{t}" = the case's directory, "{s}" shared
    needle: str  # the one error line must contain this (it names the input)
    setup: Callable[[Path], None] | None = None
    expect: str = "error"  # "error" | "ok"
    check: Callable[[Path, subprocess.CompletedProcess], str | None] | None = None
    writes: bool = False  # an "ok" case that may write (else nothing may change)
    owner: str = ""  # helper whose pending work this case waits for (XFAIL until merged)
    timeout: float = 180.0


# -- files the setups write ------------------------------------------------------------------

def data_ok(t: Path) -> None:
    make_imagefolder(t / "data", train=6, val=3, shift=0)


def bad_image(kind: str, where: str = "train/class0/000.jpg") -> Callable[[Path], None]:
    """Good data with one image broken: text bytes, 0 bytes, cut to half, or unreadable."""
    def setup(t: Path) -> None:
        make_imagefolder(t / "data", train=6, val=3, shift=0)
        p = t / "data" / where
        if kind == "text":
            p.write_text("this is not a JPEG, it is a text file\n" * 20)
        elif kind == "empty":
            p.write_bytes(b"")
        elif kind == "half":
            b = p.read_bytes()
            p.write_bytes(b[:len(b) // 2])
        elif kind == "noperm":
            p.chmod(0)
    return setup


def too_few_images(t: Path) -> None:
    make_imagefolder(t / "data", train=2, val=3, shift=0)


def write(rel: str, content: str | bytes, mode: int | None = None) -> Callable[[Path], None]:
    def setup(t: Path) -> None:
        p = t / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content.replace("{t}", str(t)))
        if mode is not None:
            p.chmod(mode)
    return setup


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(t: Path) -> None:
        for s in setups:
            s(t)
    return setup


def symlink_loop(rel: str) -> Callable[[Path], None]:
    def setup(t: Path) -> None:
        (t / rel).symlink_to(t / rel)
    return setup


def readonly_dir(rel: str) -> Callable[[Path], None]:
    def setup(t: Path) -> None:
        (t / rel).mkdir(parents=True, exist_ok=True)
        (t / rel).chmod(0o555)
    return setup


def results_db(rel: str = "r.db", readonly: bool = False) -> Callable[[Path], None]:
    """An empty, migrated results database; read-only: file 0444 in a 0555 directory."""
    def setup(t: Path) -> None:
        from results.store import ResultsStore
        p = t / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        ResultsStore(str(p)).close()
        for extra in (p.with_name(p.name + "-wal"), p.with_name(p.name + "-shm")):
            extra.unlink(missing_ok=True)
        if readonly:
            p.chmod(0o444)
            p.parent.chmod(0o555)
    return setup


def front_db(t: Path) -> None:
    """A study whose baseline XS would lead the front if baselines were members of it."""
    from results.store import PUBLISHED_DEVICE, ResultsStore
    from search_space.space import DEFAULT_SPACE
    from search_space.spec import PRESETS
    fid = {"epochs": 2, "resolution": 32}
    store = ResultsStore(str(t / "r.db"))
    store.ensure_baselines()
    sid = store.get_or_create_study("s", config={}, seed=0, dataset_id="c10", fidelity=fid,
                                    device=PUBLISHED_DEVICE, code_version="t")
    rows = [(f"c{i}", s, 40.0 + i, 1.0 + 0.1 * i)
            for i, s in enumerate(DEFAULT_SPACE.sample_many(6, seed=3))]
    for key, spec, top1, lat in rows + [("baseline-XS", PRESETS["XS"], 90.0, 0.1)]:
        h = store.upsert_architecture(spec)
        tid = store.start_trial(sid, key, h, config={}, seed=0)
        store.finish_trial(tid, "COMPLETED", metrics={"top1": top1, "latency_ms": lat},
                           fidelity_reached=fid)
    store.close()


def front_has_no_baseline(t: Path, r: subprocess.CompletedProcess) -> str | None:
    front = json.loads(r.stdout)["front"]
    keys = [f["trial_key"] for f in front]
    if not keys:
        return "empty front"
    bad = [k for k in keys if k.startswith("baseline-")]
    return f"baselines on the front: {bad}" if bad else None


def stale_temporary(t: Path) -> None:
    data_ok(t)
    d = t / "cache" / f".0123456789abcdef.tmp-{socket.gethostname()}-999999999-dead"
    d.mkdir(parents=True)
    (d / "train_x.npy").write_bytes(b"\0" * 1024)


def stale_temporary_removed(t: Path, r: subprocess.CompletedProcess) -> str | None:
    left = [p.name for p in (t / "cache").iterdir() if ".tmp-" in p.name]
    return f"stale temporaries left: {left}" if left else None


def checkpoint(kind: str) -> Callable[[Path], None]:
    """A weight file in the case's dir: truncated / empty / text, or a shared real one."""
    def setup(t: Path) -> None:
        data_ok(t)
        p = t / "ck.pth"
        if kind == "half":
            b = shared_checkpoint("XS").read_bytes()
            p.write_bytes(b[:len(b) // 2])
        elif kind == "empty":
            p.write_bytes(b"")
        elif kind == "text":
            p.write_text("not a checkpoint\n")
    return setup


def shared_checkpoint(name: str) -> Path:
    """XS / S / XS-3class weights, made once per sweep (torch is imported only here)."""
    import torch
    from search_space.spec import PRESETS
    from search_space.swiftformer import build_model
    p = SHARED["dir"] / f"{name}.pth"
    if not p.exists():
        spec = PRESETS["XS"].replace(num_classes=3) if name == "XS-3class" else PRESETS[name]
        torch.save({"model": build_model(spec).state_dict()}, p)
    return p


LATENCY_CSV = ("model,device,latency_ms\nXS,phone,0.9\nS,phone,1.0\nL1,phone,1.3\n")


# -- the table --------------------------------------------------------------------------------
def _spec(**override) -> str:
    d = {"depths": [3, 3, 6, 4], "widths": [48, 56, 112, 220], "mlp_ratios": [4, 4, 4, 4],
         "attn_blocks": [1, 1, 1, 1]}
    d.update(override)
    return json.dumps(d)


def spec_cases() -> list[Case]:
    return [
        Case("spec-depths-null", ("arch", "show", "{t}/a.json"), "depths=None",
             write("a.json", _spec(depths=None))),
        Case("spec-depths-number", ("arch", "show", "{t}/a.json"), "depths=3",
             write("a.json", _spec(depths=3))),
        Case("spec-mlp-ratio-string", ("arch", "show", "{t}/a.json"), "mlp_ratios[0]='a'",
             write("a.json", _spec(mlp_ratios=["a", 4, 4, 4]))),
        Case("spec-not-utf8", ("arch", "show", "{t}/a.json"), "not UTF-8",
             write("a.json", b"\xff\xfe" + _spec().encode("utf-16-le"))),
        Case("spec-not-json", ("arch", "show", "{t}/a.json"), "a.json",
             write("a.json", "{depths: 3")),
        Case("search-extra-arch-null-depths", (*SEARCH, "--extra-arch", "{t}/a.json"),
             "depths=None", write("a.json", _spec(depths=None))),
    ]


def space_cases() -> list[Case]:
    bad = [("depths-number", {"depths": 5}, "depths"),
           ("depths-3-stages", {"depths": [[1], [1], [1]]}, "depths"),
           ("depth-zero", {"depths": [[0], [1], [1], [1]]}, "depths[0]"),
           ("widths-string", {"widths": "wide"}, "widths"),
           ("odd-stem-width", {"widths": [[7], [16], [32], [32]]}, "widths[0]"),
           ("mlp-ratios-empty", {"mlp_ratios": []}, "mlp_ratios"),
           ("mlp-ratio-string", {"mlp_ratios": ["x"]}, "mlp_ratios"),
           ("attn-mode-unknown", {"attn_modes": ["first"]}, "attn_modes"),
           ("resolution-not-x32", {"resolutions": [100]}, "resolutions"),
           ("num-classes-negative", {"num_classes": -3}, "num_classes"),
           ("fixed-bad-field", {"fixed": {"depths": [1, 1, 1, 1]}}, "fixed"),
           ("fixed-bad-value", {"fixed": {"drop_path_rate": 5}}, "drop_path_rate"),
           ("not-an-object", [1, 2], "--space")]
    out = [Case(f"space-{n}", (*SEARCH, "--space", json.dumps(v)), needle)
           for n, v, needle in bad]
    out.append(Case("space-missing-file", (*SEARCH, "--space", "{t}/nope.json"), "nope.json"))
    return out


def data_cases() -> list[Case]:
    out = [
        Case("search-data-is-a-file", (*SEARCH, "--data", "{t}/f"), "--data",
             write("f", "x")),
        Case("search-data-symlink-loop", (*SEARCH, "--data", "{t}/loop"), "--data",
             symlink_loop("loop")),
        Case("search-data-missing", (*SEARCH, "--data", "{t}/nowhere"), "nowhere"),
        Case("search-data-no-val", (*SEARCH, "--data", DATA), "val",
             both(data_ok, lambda t: shutil.rmtree(t / "data" / "val"))),
        Case("search-data-too-few-images", (*SEARCH, "--data", DATA), "class0",
             too_few_images),
        Case("search-data-unreadable-image", (*SEARCH, "--data", DATA), "000.jpg",
             bad_image("noperm")),
    ]
    commands = {
        "search": (*SEARCH, "--data", DATA),
        "fidelity": ("fidelity", "--data", DATA, "--fidelity", TINY_FID, "--seeds", "0",
                     "--refs", "XS,S", "--out", "{t}/fid", "--cache-dir", "{t}/cache",
                     "--db", "{t}/r.db"),
        "ladder": ("ladder", "--base", "XS", "--targets", "1.0", "--data", DATA, "--fidelity",
                   TINY_FID, "--db", "{t}/r.db", "--out", "{t}/family"),
        "retrain": ("retrain", "--arch", "XS", "--data", DATA, "--output", "{t}/out",
                    "--epochs", "1", "--batch-size", "2", "--torch-device", "cpu",
                    "--workers", "0", "--no-record", "--no-export", "--no-repeated-aug"),
        "evaluate": ("evaluate", "--arch", "XS", "--checkpoint", "{s}/XS.pth", "--data", DATA,
                     "--torch-device", "cpu", "--workers", "0", "--batch-size", "4"),
    }
    for cmd, argv in commands.items():
        for kind in ("text", "empty", "half"):
            where = "val/class1/000.jpg" if cmd == "evaluate" else "train/class0/000.jpg"
            out.append(Case(f"{cmd}-image-{kind}", argv, where, bad_image(kind, where)))
    # retrain draws only some images per epoch: a bad one late in val/ must still be found
    out.append(Case("retrain-image-never-drawn", commands["retrain"], "val/class1/002.jpg",
                    bad_image("half", "val/class1/002.jpg")))
    return out


def db_cases() -> list[Case]:
    ro = results_db("ro/r.db", readonly=True)
    return [
        Case("search-db-readonly", (*SEARCH[:-4], "--db", "{t}/ro/r.db", "--out", "{t}/runs"),
             "ro/r.db", ro),
        Case("search-db-readonly-with-data", (*SEARCH[:-4], "--data", DATA, "--db",
                                              "{t}/ro/r.db", "--out", "{t}/runs"),
             "ro/r.db", both(data_ok, ro)),
        Case("search-db-dir-readonly", (*SEARCH[:-4], "--db", "{t}/ro/new.db", "--out",
                                        "{t}/runs"), "ro/new.db", readonly_dir("ro")),
        Case("search-db-postgres-no-driver", (*SEARCH[:-4], "--db",
                                              "postgresql+psycopg://u@localhost:1/x",
                                              "--out", "{t}/runs"), "pip install psycopg"),
        Case("search-db-mysql-no-driver", (*SEARCH[:-4], "--db", "mysql://u@localhost:1/x",
                                           "--out", "{t}/runs"), "pip install"),
        Case("search-db-unknown-dialect", (*SEARCH[:-4], "--db", "nosuchdb://x/y", "--out",
                                           "{t}/runs"), "nosuchdb"),
        Case("search-db-is-a-directory", (*SEARCH[:-4], "--db", "{t}/d", "--out", "{t}/runs"),
             "directory", readonly_dir("d")),
        Case("search-db-text-file", (*SEARCH[:-4], "--db", "{t}/r.db", "--out", "{t}/runs"),
             "not a SQLite", write("r.db", "hello\n")),
        Case("search-db-parent-is-a-file", (*SEARCH[:-4], "--db", "{t}/f/r.db", "--out",
                                            "{t}/runs"), "f/r.db", write("f", "x")),
        Case("search-db-symlink-loop", (*SEARCH[:-4], "--db", "{t}/loop", "--out", "{t}/runs"),
             "loop", symlink_loop("loop")),
        Case("studies-db-readonly-reads", ("studies", "--db", "{t}/ro/r.db"), "", ro,
             expect="ok"),
        Case("pareto-db-missing", ("pareto", "--db", "{t}/none.db"), "none.db"),
        Case("pareto-baselines-never-on-front", ("pareto", "--db", "{t}/r.db", "--study", "s",
                                                 "--format", "json"), "", front_db,
             expect="ok", check=front_has_no_baseline, writes=True),  # a reader: SQLite -wal/-shm
        Case("fidelity-db-readonly", ("fidelity", "--fidelity", TINY_FID, "--seeds", "0",
                                      "--refs", "XS,S", "--out", "{t}/fid", "--cache-dir",
                                      "{t}/cache", "--db", "{t}/ro/r.db"), "ro/r.db", ro),
        Case("ladder-db-readonly", ("ladder", "--base", "XS", "--targets", "1.0", "--fidelity",
                                    TINY_FID, "--db", "{t}/ro/r.db"), "ro/r.db", ro),
        Case("retrain-db-readonly", ("retrain", "--arch", "XS", "--data", DATA, "--output",
                                     "{t}/out", "--torch-device", "cpu", "--db", "{t}/ro/r.db"),
             "ro/r.db", both(data_ok, ro)),
        Case("export-trial-db-missing", ("export", "--trial", "3", "--db", "{t}/none.db",
                                         "--out", "{t}/exp"), "none.db"),
    ]


def option_cases() -> list[Case]:
    s = SEARCH
    return [
        Case("search-study-empty", (*s, "--study", ""), "--study"),
        Case("search-study-dotdot", (*s, "--study", ".."), "--study"),
        Case("search-trials-negative", (*s[:4], "-5", *s[5:]), "--trials"),
        Case("search-trials-huge", (*s[:4], "10000000000", *s[5:]), "--trials"),
        Case("search-trials-not-a-number", (*s[:4], "many", *s[5:]), "--trials"),
        Case("search-trials-exponent", (*s[:4], "1e3", *s[5:]), "allowed integers 1..100000"),
        # the recipe's numbers: a negative lr or a probability of 7 trained happily
        Case("retrain-lr-negative", ("retrain", "--arch", "XS", "--data", DATA, "--output",
                                     "{t}/rt", "--lr", "-0.002"), "--lr -0.002: allowed"),
        Case("retrain-mixup-prob-7", ("retrain", "--arch", "XS", "--data", DATA, "--output",
                                      "{t}/rt", "--mixup-prob", "7"), "--mixup-prob 7: allowed"),
        Case("retrain-smoothing-nan", ("retrain", "--arch", "XS", "--data", DATA, "--output",
                                       "{t}/rt", "--smoothing", "nan"), "--smoothing"),
        Case("export-extra-reprob", ("export", "--arch", "XS", "--out", "{t}/ex", "--extra",
                                     "--reprob 2"), "--reprob 2: allowed 0..1"),
        Case("export-time-not-slurm", ("export", "--arch", "XS", "--out", "{t}/ex", "--time",
                                       "two days"), "--time 'two days'"),
        Case("export-partition-line-break", ("export", "--arch", "XS", "--out", "{t}/ex",
                                             "--partition", "gpu\nrm -rf ~"), "--partition"),
        Case("export-nodes-100000", ("export", "--arch", "XS", "--out", "{t}/ex", "--nodes",
                                     "100000"), "--nodes 100000 x --gpus-per-node 4"),
        Case("export-project-dir-not-checkout", ("export", "--arch", "XS", "--out", "{t}/ex",
                                                 "--project-dir", "/etc"), "--project-dir /etc"),
        Case("evaluate-crop-pct-zero", ("evaluate", "--arch", "XS", "--checkpoint", "{t}/c.pth",
                                        "--data", DATA, "--crop-pct", "0"), "--crop-pct 0"),
        Case("latency-export-opset-13", ("latency", "export", "XS", "--format", "onnx", "--out",
                                         "{t}/x.onnx", "--opset", "13"), "allowed 11 or 17"),
        Case("search-budget-negative", (*s, "--latency-budget-ms", "-1"), "--latency-budget-ms"),
        Case("search-budget-nan", (*s, "--latency-budget-ms", "nan"), "--latency-budget-ms"),
        Case("search-seed-negative", (*s, "--seed", "-1"), "--seed"),
        # every other --seed too: numpy refused a negative seed with a traceback mid-run
        Case("fit-seed-negative", ("fit", "--seed", "-1"), "--seed"),
        Case("ladder-seed-negative", ("ladder", "--seed", "-1"), "--seed"),
        # the family's directory is runs/scale/<name>: '../../escape' wrote outside runs/
        Case("scale-name-leaves-runs", ("scale", "--base", "XS", "--targets", "1.0", "--name",
                                        "../../escape"), "--name '../../escape'"),
        Case("space-sample-seed-negative", ("space", "sample", "--seed", "-1"), "--seed"),
        Case("latency-suggest-seed-huge", ("latency", "suggest", "--n", "2", "--out", "{t}/sg",
                                           "--seed", "4294967296"), "--seed"),
        Case("fidelity-seeds-negative", ("fidelity", "--seeds", "0,-1"), "--seeds"),
        Case("retrain-seed-negative", ("retrain", "--arch", "XS", "--data", DATA, "--seed",
                                       "-1"), "--seed"),
        Case("search-max-concurrent-zero", (*s, "--max-concurrent", "0"), "--max-concurrent"),
        Case("search-gpus-negative", (*s, "--gpus-per-trial", "-1"), "--gpus-per-trial"),
        Case("search-strategy-unknown", (*s, "--strategy", "annealing"), "--strategy"),
        Case("search-unknown-option", (*s, "--trails", "3"), "--trails"),
        Case("search-fidelity-bad", (*s[:2], '{"epochs": 0}', *s[3:]), "epochs"),
        Case("search-fidelity-not-json", (*s[:2], "{epochs", *s[3:]), "--fidelity"),
        Case("search-out-readonly", (*s[:-2], "--out", "{t}/ro"), "--out", readonly_dir("ro")),
        Case("search-out-is-a-file", (*s[:-2], "--out", "{t}/f"), "--out", write("f", "x")),
        Case("search-resume-corrupt-config", (*s, "--study", "x", "--resume"),
             "search_config.json", write("runs/x/search_config.json", "{not json")),
        Case("search-latency-device-unknown", (*s, "--latency-device", "nokia-3310"),
             "nokia-3310"),
        Case("fidelity-seeds-empty", ("fidelity", "--seeds", ""), "--seeds"),
        Case("fidelity-out-is-a-file", ("fidelity", "--fidelity", TINY_FID, "--seeds", "0",
                                        "--refs", "XS,S", "--out", "{t}/f", "--no-db"),
             "--out", write("f", "x")),
        Case("fidelity-boot-negative", ("fidelity", "--report-only", "--boot", "-1", "--out",
                                        "{t}/fid"), "--boot"),
        Case("retrain-epochs-zero", ("retrain", "--arch", "XS", "--data", DATA, "--epochs", "0"),
             "--epochs", data_ok),
        Case("retrain-output-is-a-file", ("retrain", "--arch", "XS", "--data", DATA,
                                          "--output", "{t}/f", "--no-record"),
             "--output", both(data_ok, write("f", "x"))),
        Case("retrain-resume-truncated", ("retrain", "--arch", "XS", "--data", DATA, "--output",
                                          "{t}/out", "--resume", "{t}/ck.pth", "--no-record",
                                          "--torch-device", "cpu", "--workers", "0",
                                          "--batch-size", "2", "--epochs", "1", "--no-export"),
             "ck.pth", checkpoint("half")),
        Case("dashboard-port-out-of-range", ("dashboard", "--port", "70000"), "--port"),
        Case("dashboard-host-not-an-address", ("dashboard", "--host", "not a host"), "--host"),
        Case("report-out-readonly-dir", ("report", "--db", "{t}/r.db", "--out",
                                         "{t}/ro/report.html"), "--out",
             both(results_db("r.db"), readonly_dir("ro"))),
        Case("space-sample-negative", ("space", "sample", "-n", "-1"), "-n"),
        # where even root cannot create a file (os.access says yes to root): a traceback before
        *([] if not os.path.isdir("/proc") else [
            Case("report-out-in-proc", ("report", "--db", "{t}/r.db", "--out", "/proc/sfn.html"),
                 "--out /proc/sfn.html", results_db("r.db")),
            Case("export-out-in-proc", ("export", "--arch", "XS", "--out", "/proc/sfn"),
                 "--out /proc/sfn"),
            Case("latency-export-out-in-proc", ("latency", "export", "XS", "--format", "onnx",
                                                "--out", "/proc/sfn.onnx"), "--out /proc/sfn.onnx"),
            Case("latency-measure-out-in-proc", ("latency", "measure", "XS", "--out",
                                                 "/proc/sfn.csv"), "--out /proc/sfn.csv")]),
    ]


def checkpoint_cases() -> list[Case]:
    ev = ("evaluate", "--arch", "XS", "--data", DATA, "--torch-device", "cpu", "--workers", "0",
          "--checkpoint")
    return [
        Case("evaluate-checkpoint-S-into-XS", (*ev, "{s}/S.pth"), "S.pth", data_ok),
        Case("evaluate-checkpoint-3-class-head", (*ev, "{s}/XS-3class.pth"), "num_classes=3",
             data_ok),
        Case("evaluate-checkpoint-truncated", (*ev, "{t}/ck.pth"), "ck.pth", checkpoint("half")),
        Case("evaluate-checkpoint-empty", (*ev, "{t}/ck.pth"), "ck.pth", checkpoint("empty")),
        Case("evaluate-checkpoint-text", (*ev, "{t}/ck.pth"), "ck.pth", checkpoint("text")),
        Case("evaluate-checkpoint-missing", (*ev, "{t}/none.pth"), "none.pth", data_ok),
    ]


def latency_cases() -> list[Case]:
    cal = ("latency", "calibrate", "--latency-device", "myphone", "--records")
    dup = LATENCY_CSV + "XS,phone,5.0\n"
    return [
        Case("latency-calibrate-missing-file", (*cal, "{t}/none.csv"), "none.csv"),
        Case("latency-calibrate-binary-file", (*cal, "{t}/r.csv"), "r.csv",
             write("r.csv", bytes(range(256)) * 4)),
        Case("latency-calibrate-empty-file", (*cal, "{t}/r.csv"), "r.csv", write("r.csv", "")),
        Case("latency-calibrate-no-header", (*cal, "{t}/r.csv"), "r.csv",
             write("r.csv", "1,2,3\n4,5,6\n")),
        Case("latency-calibrate-json-not-records", (*cal, "{t}/r.json"), "r.json",
             write("r.json", '{"a": 1}')),
        Case("latency-calibrate-out-is-dir", (*cal, "{t}/r.csv", "--out", "{t}/d.json"),
             "d.json", both(write("r.csv", LATENCY_CSV), readonly_dir("d.json"))),
        Case("latency-calibrate-shadows-shipped", ("latency", "calibrate", "--latency-device",
                                                   "iphone14-ane", "--records", "{t}/r.csv"),
             "iphone14-ane", write("r.csv", LATENCY_CSV)),
        Case("latency-calibrate-conflicting-duplicates", (*cal, "{t}/r.csv"), "XS",
             write("r.csv", dup)),
        Case("latency-calibrate-implausible", (*cal, "{t}/r.csv"), "latency_ms",
             write("r.csv", LATENCY_CSV.replace("1.3", "1e12"))),
        Case("latency-calibrate-unknown-model", (*cal, "{t}/r.csv"), "NoSuchNet",
             write("r.csv", LATENCY_CSV + "NoSuchNet,phone,2.0\n")),
        # a broken .mlpackage was skipped with a warning and the calibration saved without it
        Case("latency-calibrate-broken-mlpackage", (*cal, "{t}/r.csv"),
             "row 5, column 'model': 'b.mlpackage' cannot be featurised",
             both(write("r.csv", LATENCY_CSV + "b.mlpackage,phone,2.0\n"),
                  write("b.mlpackage/Manifest.json", "not json"))),
        # an unclosed quote swallowed the rest of the file into one field
        Case("latency-calibrate-unclosed-quote", (*cal, "{t}/r.csv"), "row 3: not valid CSV",
             write("r.csv", LATENCY_CSV.replace("\nS,", '\n"S,', 1))),
        # --n above the candidates exported every one of them (minutes of conversions)
        Case("latency-suggest-n-above-pool", ("latency", "suggest", "--n", "60", "--pool", "0",
                                              "--out", "{t}/sg"), "--n 60: allowed 1..51"),
        Case("latency-predict-unknown-arch", ("latency", "predict", "NoSuchNet"), "NoSuchNet"),
        Case("latency-predict-unknown-device", ("latency", "predict", "XS", "--latency-device",
                                                "nokia-3310"), "nokia-3310"),
    ]


def leftover_cases() -> list[Case]:
    return [Case("data-cache-stale-temporary-removed",
                 ("fidelity", "--data", DATA, "--fidelity", TINY_FID, "--seeds", "0", "--refs",
                  "XS,S", "--no-zero-cost", "--no-db", "--out", "{t}/fid", "--cache-dir",
                  "{t}/cache", "--boot", "10"), "", stale_temporary, expect="ok",
                 check=stale_temporary_removed, writes=True, timeout=300)]


# One case of each kind: what the test suite runs by default (the whole table takes minutes).
QUICK = ("spec-mlp-ratio-string", "space-depths-number", "search-data-symlink-loop",
         "search-image-half", "retrain-image-never-drawn", "search-db-readonly-with-data",
         "search-db-postgres-no-driver", "studies-db-readonly-reads", "search-trials-not-a-number",
         "search-out-readonly", "evaluate-checkpoint-truncated", "latency-calibrate-binary-file")


def all_cases() -> list[Case]:
    return (spec_cases() + space_cases() + data_cases() + db_cases() + option_cases()
            + checkpoint_cases() + latency_cases() + leftover_cases())


# -- running ----------------------------------------------------------------------------------
@dataclass
class Result:
    case: Case
    ok: bool
    line: str  # the error line (or the reason it failed)
    why: list[str] = field(default_factory=list)


def listing(root: Path) -> dict[str, tuple]:
    """Every entry under root: (type, size, mtime) by relative path; symlinks not followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            kind = "l" if stat.S_ISLNK(st.st_mode) else "d" if stat.S_ISDIR(st.st_mode) else "f"
            out[str(p.relative_to(root))] = (kind, st.st_size if kind == "f" else 0,
                                             st.st_mtime_ns if kind != "d" else 0)
    return out


def unprivileged_prefix() -> list[str]:
    """``unshare --user`` as root (permission bits apply again), else nothing."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return []
    prefix = ["unshare", "--user", "--map-user=1000", "--map-group=1000"]
    probe = subprocess.run(prefix + ["true"], capture_output=True)
    return prefix if probe.returncode == 0 else []


def _env(t: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(ROOT), HOME=str(t / ".home"), PYTHONDONTWRITEBYTECODE="1",
               MPLCONFIGDIR=str(SHARED["dir"] / "mpl"), OMP_NUM_THREADS="1")
    env.pop("SWIFTFORMER_NAS_LATENCY_DIR", None)
    return env


def _unlock(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                p.chmod(0o700)
    root.chmod(0o700)


def _verdict(case: Case, r: subprocess.CompletedProcess, changed: list[str], t: Path) -> Result:
    err = r.stderr.strip().splitlines()
    line = err[0] if len(err) == 1 else (err[-1] if err else "")
    why = []
    if "Traceback" in r.stderr + r.stdout:
        why.append("traceback")
    if case.expect == "ok":
        if r.returncode != 0:
            why.append(f"exit {r.returncode}")
        elif case.check is not None and (msg := case.check(t, r)):
            why.append(msg)
        line = line or (r.stdout.strip().splitlines() or [""])[-1]
    else:
        if r.returncode != 2:
            why.append(f"exit {r.returncode}")
        if len(err) != 1 or not err[0].startswith("error: "):
            why.append(f"stderr has {len(err)} lines")
        if case.needle not in line:
            why.append(f"does not name {case.needle!r}")
    if changed and not (case.expect == "ok" and case.writes):
        why.append(f"wrote {changed[:4]}")
    return Result(case, not why, line[:300], why)


def run_case(case: Case, prefix: list[str]) -> Result:
    with tempfile.TemporaryDirectory(prefix="bad-input-") as d:
        t = Path(d)
        (t / ".home").mkdir()
        if case.setup is not None:
            with SETUP_LOCK:
                case.setup(t)
        argv = [a.replace("{t}", str(t)).replace("{s}", str(SHARED["dir"])) for a in case.argv]
        before = listing(t)
        try:
            r = subprocess.run(prefix + [sys.executable, str(ROOT / "run_search.py"), *argv],
                               cwd=t, env=_env(t), capture_output=True, text=True,
                               timeout=case.timeout)
        except subprocess.TimeoutExpired:
            _unlock(t)
            return Result(case, False, "", [f"timed out after {case.timeout:g}s"])
        after = listing(t)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        result = _verdict(case, r, changed, t)
        _unlock(t)
        return result


def _prepare_shared(cases: list[Case]) -> None:
    """Weight files the cases read, made before the cases run in parallel."""
    if any("evaluate" in c.argv or "--resume" in c.argv for c in cases):
        for name in ("XS", "S", "XS-3class"):
            shared_checkpoint(name)
    (SHARED["dir"] / "mpl").mkdir(exist_ok=True)


def _report(results: list[Result]) -> int:
    failed = 0
    for r in results:
        if r.case.owner:
            tag = f"XPASS({r.case.owner})" if r.ok else f"XFAIL({r.case.owner})"
        else:
            tag = "PASS" if r.ok else "FAIL"
            failed += not r.ok
        reason = "" if r.ok else f"  [{'; '.join(r.why)}]"
        print(f"{tag:<16} {r.case.name}: {r.line}{reason}", flush=True)
    n = len([r for r in results if not r.case.owner])
    print(f"\n{n - failed}/{n} passed" + (f", {len(results) - n} waiting for other helpers"
                                         if len(results) > n else ""))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", default="", help="only cases whose name contains this")
    ap.add_argument("--quick", action="store_true", help="one case of each kind (tests)")
    ap.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1)))
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    cases = [c for c in all_cases() if args.k in c.name and (not args.quick or c.name in QUICK)]
    if args.list:
        for c in cases:
            print(f"{c.name}: run_search.py {' '.join(c.argv)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="bad-input-shared-") as d:
        SHARED["dir"] = Path(d)
        os.chmod(d, 0o755)
        _prepare_shared(cases)
        prefix = unprivileged_prefix()
        with ThreadPoolExecutor(args.jobs) as ex:
            results = list(ex.map(lambda c: run_case(c, prefix), cases))
    return _report(results)


if __name__ == "__main__":
    sys.exit(main())
