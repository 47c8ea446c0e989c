"""Ctrl-C during a search (issue 18): the resume hint counts the trials that were running, and
the resumed search's progress counter continues from the trials already final (it does not
restart at 1). Real ``run_search.py search`` subprocesses on a tiny generated ImageFolder, as
in test_search_driver.py; Ctrl-C is SIGINT to the whole process group, as a terminal sends it.
"""
from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from test_search_driver import ROOT, _args, _env, _rows, make_imagefolder

HINT = re.compile(r"search interrupted \((\d+) trial\(s\) unfinished\); continue with: "
                  r"run_search\.py search --study (\S+) --resume")
COUNTER = re.compile(r"\] (\d+)/(\d+) done")


def _interrupt_when_running(cmd: list[str], tmp_path, db, study: str) -> tuple[str, list[dict]]:
    """Start the search; SIGINT its process group once a candidate completed while another
    runs; return its output and the rows it left."""
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.3)
                try:
                    rows = _rows(db, study) if db.exists() else []
                except sqlite3.Error:
                    continue
                done = [r for r in rows if r["status"] == "COMPLETED"
                        and r["config"].get("kind") == "candidate"]
                if done and any(r["status"] == "RUNNING" for r in rows):
                    os.killpg(proc.pid, signal.SIGINT)
                    break
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
    return log_path.read_text(), _rows(db, study)


@pytest.mark.timeout(600)
def test_interrupt_hint_counts_running_trials_and_resume_counter_continues(tmp_path):
    data = make_imagefolder(tmp_path / "imgs")
    study, db = "ctrl-c", tmp_path / "runs" / "results.db"
    argv = _args(tmp_path, data, study, trials=6, extra=["--seed", "3", "--max-concurrent", "2"])
    out, rows = _interrupt_when_running([sys.executable, str(ROOT / "run_search.py"), *argv],
                                        tmp_path, db, study)
    hint = HINT.search(out)
    assert hint, out[-3000:]
    running = [r for r in rows if r["status"] == "RUNNING"]
    assert int(hint.group(1)) == len(running) >= 1, (hint.group(0), running)
    final = [r for r in rows if r["status"] != "RUNNING"]

    res = subprocess.run([sys.executable, str(ROOT / "run_search.py"), "search", "--study",
                          study, "--resume", "--db", str(db), "--out", str(tmp_path / "runs")],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    counts = [int(m.group(1)) for m in COUNTER.finditer(res.stdout)]
    # the first trial the resumed run finishes is number len(final) + 1, not 1
    assert counts and counts[0] == len(final) + 1, (len(final), res.stdout[-3000:])
    assert counts == sorted(counts)
