"""A real multi-node Ray cluster on one machine, for the cluster test and bench/bench_cluster.py.

``LocalCluster`` runs ``ray start --head --block`` and ``ray start --address=... --block`` as two
processes, each in its own session (so each node's Ray daemons share one process group), with
its own ``--temp-dir``, its own ``--resources`` tag and one CPU. Ports are picked free, so two
nodes (and other Ray instances of other users) coexist on one machine; the head's temp dir
keeps its address out of ``/tmp/ray``, so a plain ``ray.init()`` elsewhere never joins it.

The second node can be given its own environment (``SWIFTFORMER_NAS_CACHE``: its data cache
root) and paths it must not see: it then runs in its own mount namespace with an empty tmpfs
over each of them (``unshare --mount``), which is how a node without a shared filesystem looks.
``hiding_supported()`` says whether this machine allows it.

Teardown (``stop``, also from ``__exit__`` and on a failed start) kills every process the
cluster started, by PID: the processes of each node's process group and their descendants,
SIGTERM first, SIGKILL after a grace period. Never ``ray stop`` (it kills every Ray process of
the user, other people's clusters included).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tiny import (TINY_BASELINE, TINY_FIDELITY, TINY_SPACE,  # noqa: F401  (re-exported)
                  make_imagefolder)

RAY = str(Path(sys.executable).with_name("ray"))
ROOT = Path(__file__).resolve().parents[1]
NODE_TAGS = ("sfn_head", "sfn_node2")  # the --resources tag of each node


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hiding_supported() -> bool:
    """Whether a node can be started in a mount namespace with a path hidden (root + unshare)."""
    if shutil.which("unshare") is None:
        return False
    d = tempfile.mkdtemp(prefix="sfnc-probe-")
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            f"mount -t tmpfs sfn-probe {d}"], capture_output=True, timeout=30)
        return r.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        os.rmdir(d)


def _proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/<pid>/stat after "pid (comm) ") of every live process:
    fields[0] state, [1] parent pid, [2] process group."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                stat = f.read()
        except OSError:
            continue
        yield int(entry), stat[stat.rfind(")") + 2:].split()


def _pids_in_group(pgid: int) -> set[int]:
    """PIDs whose process group is ``pgid`` (from /proc)."""
    return {pid for pid, fields in _proc_stats() if int(fields[2]) == pgid and fields[0] != "Z"}


def _children() -> dict[int, set[int]]:
    kids: dict[int, set[int]] = {}
    for pid, fields in _proc_stats():
        kids.setdefault(int(fields[1]), set()).add(pid)
    return kids


def _descendants(roots: set[int]) -> set[int]:
    kids, out, todo = _children(), set(), list(roots)
    while todo:
        pid = todo.pop()
        for c in kids.get(pid, ()):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[0] != "Z"


def _signal_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


@dataclass
class Node:
    name: str
    tag: str
    proc: subprocess.Popen
    temp_dir: Path
    log: Path
    seen: set[int] = field(default_factory=set)  # every PID of this node seen so far

    def pids(self) -> set[int]:
        """This node's live processes: its process group and their descendants."""
        group = _pids_in_group(self.proc.pid) | {self.proc.pid}
        self.seen |= group | _descendants(group)
        return {p for p in self.seen if alive(p)}


class LocalCluster:
    """Head + one worker node on this machine (see module doc)."""

    def __init__(self, root: Path, node2_env: dict[str, str] | None = None,
                 hide_from_node2: tuple[Path, ...] = (), head_cpus: int = 1) -> None:
        self.root = Path(root)
        self.head_cpus = head_cpus  # 0: the head runs no trial (Ray's advice for a big cluster)
        # Unix socket paths are limited to 107 bytes: keep Ray's temp dirs short.
        self.tmp = Path(tempfile.mkdtemp(prefix="sfnc-"))
        self.node2_env = dict(node2_env or {})
        self.hide = tuple(Path(p).resolve() for p in hide_from_node2)
        self.nodes: list[Node] = []
        self.address: str | None = None
        self.node_ids: dict[str, str] = {}  # tag -> Ray node id
        self.token = self.tmp / "auth_token"  # token authentication, this cluster's own token
        self.token.write_text(secrets.token_hex(32))
        self.token.chmod(0o600)

    # -- start --------------------------------------------------------------------------------
    def _ports(self) -> list[str]:
        return ["--dashboard-agent-listen-port", str(free_port()),
                "--dashboard-agent-grpc-port", str(free_port()),
                "--metrics-export-port", str(free_port()),
                "--runtime-env-agent-port", str(free_port())]

    def _launch(self, name: str, tag: str, args: list[str], env: dict[str, str],
                hide: tuple[Path, ...] = (), cpus: int = 1) -> Node:
        temp_dir = self.tmp / name
        log = self.root / f"ray-{name}.log"
        cmd = [RAY, "start", "--block", "--num-cpus", str(cpus), "--num-gpus", "0",
               "--temp-dir", str(temp_dir), "--resources", json.dumps({tag: 1}),
               "--disable-usage-stats", *self._ports(), *args]
        if hide:  # its own mount namespace, an empty tmpfs over each hidden path
            mounts = " && ".join(f"mount -t tmpfs sfn-hidden {_quote(str(p))}" for p in hide)
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   f"{mounts} && exec {' '.join(_quote(c) for c in cmd)}"]
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    cwd=str(self.root), start_new_session=True)
        node = Node(name, tag, proc, temp_dir, log)
        self.nodes.append(node)
        return node

    def client_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a process that joins this cluster (a node or a driver): token
        authentication with this cluster's own token, no inherited RAY_ADDRESS."""
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token))
        env.update(extra or {})
        return env

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return self.client_env(extra)

    def _wait_address(self, head: Node, timeout: float) -> str:
        path = head.temp_dir / "ray_current_cluster"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if head.proc.poll() is not None:
                raise RuntimeError(f"ray head exited: {head.log.read_text()[-2000:]}")
            if path.is_file() and path.read_text().strip():
                return path.read_text().strip()
            time.sleep(0.5)
        raise TimeoutError(f"ray head did not start in {timeout:.0f}s: "
                           f"{head.log.read_text()[-2000:]}")

    def start(self, timeout: float = 180.0) -> "LocalCluster":
        try:
            head = self._launch("head", NODE_TAGS[0],
                                ["--head", "--port", str(free_port()),
                                 "--include-dashboard", "false"], self._env(),
                                cpus=self.head_cpus)
            self.address = self._wait_address(head, timeout)
            self._launch("node2", NODE_TAGS[1], ["--address", self.address],
                         self._env(self.node2_env), hide=self.hide)
            self.node_ids = self._wait_nodes(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_nodes(self, timeout: float) -> dict[str, str]:
        """Both nodes registered and alive: {tag: node id} (asked from a throwaway driver)."""
        code = ("import json, sys, time, ray\n"
                "ray.init(address=sys.argv[1], log_to_driver=False, logging_level='ERROR')\n"
                "deadline = time.monotonic() + float(sys.argv[2])\n"
                "while True:\n"
                "    nodes = [n for n in ray.nodes() if n['Alive']]\n"
                "    tags = {t: n['NodeID'] for n in nodes for t in n['Resources'] "
                "if t.startswith('sfn_')}\n"
                "    if len(tags) >= 2 or time.monotonic() > deadline:\n"
                "        break\n"
                "    time.sleep(0.5)\n"
                "print(json.dumps(tags))\n")
        r = subprocess.run([sys.executable, "-c", code, self.address, str(timeout)],
                           capture_output=True, text=True, timeout=timeout + 60,
                           env=self._env(), cwd=str(self.root))
        tags = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {}
        if set(tags) != set(NODE_TAGS):
            logs = "\n".join(n.log.read_text()[-1500:] for n in self.nodes)
            raise RuntimeError(f"cluster nodes up: {tags}; {r.stderr[-1500:]}\n{logs}")
        return tags

    # -- stop ---------------------------------------------------------------------------------
    def pids(self) -> set[int]:
        out: set[int] = set()
        for n in self.nodes:
            out |= n.pids()
        return out

    def stop(self, grace: float = 5.0) -> set[int]:
        """Kill every process the cluster started (by PID); returns those still alive (none)."""
        pids = self.pids()
        _signal_all(pids, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.3)
            pids |= self.pids()
        _signal_all({p for p in pids | self.pids() if alive(p)}, signal.SIGKILL)
        for n in self.nodes:
            try:
                n.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        time.sleep(0.5)
        left = {p for p in pids | self.pids() if alive(p)}
        shutil.rmtree(self.tmp, ignore_errors=True)
        return left

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


# -- what the cluster test and bench/bench_cluster.py run on it -----------------------------------
TINY_RETRAIN_SPEC = {"depths": [1, 1, 1, 1], "widths": [16, 16, 16, 16],
                     "mlp_ratios": [1.0, 1.0, 1.0, 1.0], "attn_blocks": [0, 0, 0, 1],
                     "resolution": 32, "num_classes": 4}
RETRAIN_COMMON = ["--torch-device", "cpu", "--workers", "0", "--batch-size", "4", "--no-export",
                  "--warmup-epochs", "0", "--no-lr-scale", "--lr", "1e-3"]



def search_argv(data: Path, out: Path, study: str, trials: int, *extra: str,
                baseline: bool = True) -> list[str]:
    """A tiny ``run_search.py search`` command line (its own --out and --db)."""
    return ["search", "--study", study, "--data", str(data), "--trials", str(trials),
            "--fidelity", json.dumps(TINY_FIDELITY), "--space", json.dumps(TINY_SPACE),
            "--baselines", "", *(["--extra-arch", json.dumps(TINY_BASELINE)] if baseline else []),
            "--db", str(out / "results.db"), "--out", str(out), "--cpus-per-trial", "1", *extra]


def cli(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 600,
        barrier: tuple[Path, int] | None = None,
        **popen: object) -> subprocess.CompletedProcess | subprocess.Popen:
    """``run_search.py ARGV`` in a subprocess (``popen`` given: started, not waited for; in
    its own session so killing its group reaches everything it started). ``barrier`` (dir,
    nodes): through tests/cluster_barrier.py, the first trials wait until every node has one."""
    cmd = [sys.executable, str(ROOT / "run_search.py"), *argv]
    if barrier is not None:
        cmd = [sys.executable, str(ROOT / "tests" / "cluster_barrier.py"), str(barrier[0]),
               str(barrier[1]), *argv]
    env = {**env, "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])}
    if popen:
        return subprocess.Popen(cmd, cwd=str(cwd), env=env, start_new_session=True, **popen)
    return subprocess.run(cmd, cwd=str(cwd), env=env, capture_output=True, text=True,
                          timeout=timeout)


def trial_rows(db: Path, study: str) -> list[dict]:
    """The study's trial rows with config and metrics decoded (read-only; WAL allows it)."""
    con = sqlite3.connect(str(db), timeout=30)
    con.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in con.execute(
            "SELECT t.* FROM sfn_trials t JOIN sfn_studies s ON s.id = t.study_id "
            "WHERE s.name = ? ORDER BY t.id", (study,))]
    finally:
        con.close()
    for r in rows:
        for k in ("config", "metrics"):
            r[k] = json.loads(r[k]) if r.get(k) else {}
    return rows


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of a process this module started (its own session)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
