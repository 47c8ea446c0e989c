"""SearchConfig: everything that defines one search, and its validation before any heavy work.

:class:`SearchConfig` is what the user asked for (the ``search`` command line is derived from
its fields: flags, help and defaults are stated here once). :func:`resolve` checks every input
that can be checked cheaply -- study name, data layout, latency device, budget against the
fastest member of the space, baseline specs, resources -- and returns a :class:`ResolvedSearch`
(the config plus the loaded predictor and the baseline specs). It runs before the data cache is
built and before Ray starts, so bad input costs nothing and writes nothing.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

from latency_models import list_devices, load_predictor
from latency_models.options import DEFAULT_DEVICE
from latency_models.predictor import LatencyPredictor
from results.options import DEFAULT_DB, check_db
from search_space.cli_types import MAX_SEED  # numpy / Optuna samplers: seeds 0..2**32-1
from search_space.cli_types import NUMBER, SEED, number_type
from search_space.errors import NotFoundError, UsageError
from search_space.fields import known_fields
from search_space.io import check_name, check_writable_dir, json_safe, read_json
from search_space.space import DEFAULT_SPACE, SearchSpace
from search_space.spec import PRESETS, ArchSpec, SpecError, load_spec

from ..cluster import check_address
from ..options import TORCH_DEVICE_PATTERN, check_data_option
from ..proxy.fidelity import DEFAULT_FIDELITY, Fidelity
from ..proxy.node_cache import check_cache_root
from ..proxy.supernet.config import DEFAULT_SUPERNET, SupernetConfig, proxy_space
from .storage import experiment_storage

STRATEGIES = ("nsga2", "tpe", "gp", "random")
# How candidates are evaluated: "standalone" = each trained from scratch at --fidelity (a Tune
# trial each); "supernet" = two rungs: a weight-sharing supernet trained once (one Tune trial),
# --scored candidates scored on it, then the --top-k of its front trained stand-alone.
PROXIES = ("standalone", "supernet")
# The supernet-only fields: left out of a stand-alone study's identity, so studies written
# before they existed keep their identity (and --resume works on them).
SUPERNET_FIELDS = ("proxy", "top_k", "scored", "supernet")
MAX_TOP_K = 1_000  # rung 2 trains each: more is a typo
MAX_SUPERNET_NPROC = 64  # local processes of one node: more is a typo
DEFAULT_BASELINES = ("XS", "S", "L1", "L3")
CONFIG_FILE = "search_config.json"  # runs/<study>/search_config.json: what --resume reloads
# Far beyond any search this tool runs (a cluster search trains thousands): a larger --trials is
# a typo, and Optuna's population and the progress counter are sized by it.
MAX_TRIALS = 100_000


def default_study_name() -> str:
    return time.strftime("search-%Y%m%d-%H%M%S", time.gmtime())


def _cli(flag: str, help: str, group: str = "what", **argparse_kw: Any) -> dict:
    """Field metadata from which ``search.nas.cli`` builds the option (no default: the
    dataclass default is the only one)."""
    return {"cli": {"flag": flag, "help": help, "group": group, **argparse_kw}}


def _shared(option: str, group: str = "what") -> dict:
    """Field metadata for an option declared once in a shared options module."""
    return {"cli": {"shared": option, "group": group}}


@dataclass(frozen=True)
class SearchConfig:
    """One search. The fields down to ``asha`` are the study's identity (stored with the study;
    a resumed study keeps them); the rest say where results go and how the search runs, and may
    change on ``--resume``."""

    # --- what is searched (the study's identity) --------------------------------------------
    # The study's name: its directory <out_root>/<study>/ and its row in the database. The
    # default (search-<UTC time>) never collides, so a plain rerun never mixes two searches.
    study: str = field(default_factory=default_study_name, metadata=_cli(
        "--study", "study name (default search-<UTC time>); output in <out>/<study>/; needed "
        "with --resume", metavar="NAME"))
    # ImageFolder root; None = the embedded CIFAR-10 subset, so the default run needs no download.
    data: str | None = field(default=None, metadata=_shared("data"))
    # The phone whose predicted latency is the second objective. The iPhone 14 Neural Engine is
    # where the SwiftFormer paper measured its latencies, so the baselines' figures apply.
    latency_device: str = field(default=DEFAULT_DEVICE, metadata=_shared("latency_device"))
    # Optuna sampler inside Ray Tune. NSGA-II is built for two objectives; random is the
    # baseline a sampler must beat (bench/bench_search_hv.py); TPE and GP for comparison.
    strategy: str = field(default="nsga2", metadata=_cli(
        "--strategy", "Optuna sampler inside Ray Tune (default %(default)s; random = baseline)",
        choices=STRATEGIES))
    # Candidates trained (baselines not counted). 12 + the four baselines fit the ~15-minute
    # default run on 2 cores (BENCHMARKS.md). Suggestions rejected over the budget or reused
    # from an earlier training do not count: they cost no training.
    n_trials: int = field(default=12, metadata=_cli(
        "--trials", "candidates to train, baselines not counted; suggestions over the budget or "
        "already trained at this fidelity do not count (default %(default)s)",
        type=number_type(int, 1, MAX_TRIALS),
        metavar="N"))
    # Hard constraint in ms on latency_device: candidates predicted slower are recorded REJECTED
    # and never trained (predicting costs microseconds, training minutes). None = no budget.
    latency_budget_ms: float | None = field(default=None, metadata=_cli(
        "--latency-budget-ms", "hard budget: candidates predicted slower are REJECTED untrained",
        type=NUMBER, metavar="MS"))
    # Seeds Optuna's sampler and, with the candidate index, every candidate's training: the same
    # seed gives the same suggestions and the same trials.
    seed: int = field(default=0, metadata=_cli("--seed", "search seed (default %(default)s)",
                                                type=SEED, metavar="N"))
    # How candidates are proxy-trained; see search/proxy/fidelity.py for the reasoning.
    fidelity: Fidelity = field(default=DEFAULT_FIDELITY, metadata=_shared("fidelity"))
    # What is searched: depths, widths, MLP ratios, attention placement, resolution per stage.
    space: SearchSpace = field(default=DEFAULT_SPACE, metadata=_cli(
        "--space", "search-space overrides, JSON object or file (fields of "
        "search_space.space.SearchSpace)", metavar="JSON_OR_FILE"))
    # Presets trained first with the same proxy, so the front is compared with the published
    # family on the same axes (reused across studies with the same data and fidelity).
    baselines: tuple[str, ...] = field(default=DEFAULT_BASELINES, metadata=_cli(
        "--baselines", "comma-separated presets trained as baselines (default XS,S,L1,L3; '' "
        "for none)", metavar="LIST"))
    # Further reference architectures (a preset, a spec JSON file or inline JSON).
    extra_archs: tuple[str, ...] = field(default=(), metadata=_cli(
        "--extra-arch", "also train this architecture as a baseline (preset, spec JSON file or "
        "inline JSON); repeatable", action="append", metavar="SPEC"))
    # >1: ask this many suggestions, train only the best by zero-cost rank (synflow + NASWOT),
    # record the others PRUNED. 0 = off: zero-cost ranks agree poorly with trained ranks here.
    prerank: int = field(default=0, metadata=_cli(
        "--prerank", "ask K candidates, train the best by zero-cost rank (default off)",
        type=number_type(int, 0, allowed="integers >= 0 (0: off)"), metavar="K"))
    # --- the supernet proxy (search/nas/supernet_search.py; docs/search.md) -----------------
    # `search` stays stand-alone by default (scripts, cluster runs and resumed studies keep
    # their meaning); the no-argument `python run_search.py` runs the supernet proxy
    # (search.nas.cli.DEFAULT_RUN; notes/supernet_search.md has the measured cost).
    proxy: str = field(default="standalone", metadata=_cli(
        "--proxy", "how candidates are evaluated: standalone (each trained) or supernet (score "
        "--scored on a weight-sharing supernet, train the --top-k of its front) (default "
        "%(default)s)", choices=PROXIES))
    # Rung 2 of --proxy supernet: front members trained stand-alone (evenly spread over the
    # supernet front's latency range), besides the baselines. 4 = a third of the stand-alone
    # default's 12 trainings: the two rungs together cost about what the stand-alone run does.
    top_k: int = field(default=4, metadata=_cli(
        "--top-k", "--proxy supernet: members of the supernet front trained stand-alone "
        "(default %(default)s)", type=number_type(int, 1, MAX_TOP_K), metavar="K"))
    # Rung 1 of --proxy supernet: candidates Optuna proposes and the supernet scores (0.32
    # CPU-s each at the default supernet, measured). 160 = 20x the 8 stand-alone trainings of
    # rung 2 (top 4 + 4 baselines); per wall-second scoring does 79x the candidates training
    # does. The default run (160) projected to 14-15 min on a 68 GFLOP/s 2-core machine,
    # 240 to ~15.1 (notes/supernet_search.md).
    scored: int = field(default=160, metadata=_cli(
        "--scored", "--proxy supernet: candidates scored on the supernet; suggestions over the "
        "budget or already scored do not count (default %(default)s)",
        type=number_type(int, 1, MAX_TRIALS), metavar="N"))
    # The supernet's training and scoring recipe (search/proxy/supernet/config.py has the
    # reasoning and the measured defaults).
    supernet: SupernetConfig = field(default=DEFAULT_SUPERNET, metadata=_cli(
        "--supernet", "--proxy supernet: supernet recipe overrides, JSON object or file "
        "(fields of search.proxy.supernet.config.SupernetConfig)", metavar="JSON_OR_FILE"))
    # ASHA on top-1 per epoch: stops weak trials early. Off by default: with 2 proxy epochs
    # there is little to stop, and a stopped trial is never on the front.
    asha: bool = field(default=False, metadata=_cli(
        "--asha", "stop unpromising trials early (ASHA on top-1); only full-budget trials are on "
        "the front", action="store_true"))

    # --- where results go -----------------------------------------------------------------
    # Shared by studies, so proxy results (baselines above all) are reused across them.
    db: str = field(default=DEFAULT_DB, metadata=_shared("db", "run"))
    out_root: str = field(default="runs", metadata=_cli(
        "--out", "output root (default %(default)s/)", "run", metavar="DIR"))

    # --- how it runs (execution settings) -------------------------------------------------
    # An existing Ray cluster (auto, ray://head:10001); None = start a local one.
    address: str | None = field(default=None, metadata=_cli(
        "--address", "connect to an existing Ray cluster (e.g. auto or ray://head:10001) "
        "instead of starting a local one", "run", metavar="ADDR"))
    # CPUs (= torch threads) per trial. None: 1 locally (one single-threaded trial per core:
    # 32-px proxy models scale poorly over threads, notes/search_driver.md), 2 on a cluster.
    cpus_per_trial: float | None = field(default=None, metadata=_cli(
        "--cpus-per-trial", "CPUs (= torch threads) per trial (default: 1 locally, one trial "
        "per core; 2 on a cluster)", "run", type=NUMBER, metavar="N"))
    gpus_per_trial: float = field(default=0.0, metadata=_cli(
        "--gpus-per-trial", "GPUs per trial (default %(default)s)", "run", type=NUMBER,
        metavar="N"))
    # Where Ray keeps the Tune experiment (trial states, the searcher's checkpoints every 2 s)
    # that --resume reads back: None = <out>/<study>/tune; a directory (local, NFS) or a URI of
    # any pyarrow / fsspec filesystem (s3://bucket/prefix, gs://, file:///dir). Only the driver
    # touches it, so worker nodes need not reach it; the results database stays the driver's.
    storage: str | None = field(default=None, metadata=_cli(
        "--storage", "where the Tune experiment is kept for --resume: a directory or a "
        "filesystem URI such as s3://bucket/prefix (default <out>/<study>/tune; a resumed "
        "study keeps its own unless given)", "run", metavar="PATH_OR_URI"))
    # None: cores / cpus_per_trial locally, whatever fits on a cluster.
    max_concurrent: int | None = field(default=None, metadata=_cli(
        "--max-concurrent", "max trials at once (default: cores / cpus-per-trial locally)",
        "run", type=number_type(int, 1), metavar="N"))
    # auto = CUDA when the trial was given a GPU (bf16 AMP, channels_last), else CPU.
    torch_device: str = field(default="auto", metadata=_shared("torch_device", "run"))
    # --proxy supernet: rung 1's supernet trains data-parallel on this many local processes
    # inside its one Tune trial (search.proxy.supernet.training.train_supernet_ranks: NCCL with
    # one GPU per rank when --gpus-per-trial is 1, gloo on the CPU), the trial holding N times
    # one trial's CPUs and GPUs. The global batch stays the recipe's, so the supernet means the
    # same at any N (docs/supernet.md); an execution setting, like --gpus-per-trial. 1 (one
    # process) by default: at the CPU preset's size a second process does not pay for its
    # communication; for the imagenet-gpu preset on a multi-GPU node, N = its GPUs.
    supernet_nproc: int = field(default=1, metadata=_cli(
        "--supernet-nproc", "--proxy supernet: train the supernet data-parallel on N local "
        "processes in its trial, each with one trial's CPUs / GPUs (default %(default)s)",
        "run", type=number_type(int, 1, MAX_SUPERNET_NPROC), metavar="N"))

    EXECUTION: ClassVar[tuple[str, ...]] = (
        "db", "out_root", "address", "cpus_per_trial", "gpus_per_trial", "storage",
        "max_concurrent", "torch_device", "supernet_nproc")

    def identity(self) -> dict[str, Any]:
        """The study-defining fields as JSON values (stored with the study)."""
        d = self.to_dict()
        for k in self.EXECUTION + (SUPERNET_FIELDS if self.proxy == "standalone" else ()):
            d.pop(k)
        return d

    def to_dict(self) -> dict[str, Any]:
        return json_safe(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], what: str = "search config") -> "SearchConfig":
        """Inverse of :meth:`to_dict`; unknown fields are an error naming ``what``."""
        kw = known_fields(cls, d, what, hint=" (written by another version?)")
        if "fidelity" in kw:
            kw["fidelity"] = parse_fidelity_fields(kw["fidelity"])
        if "space" in kw:
            kw["space"] = parse_space(kw["space"], what)
        if "supernet" in kw:
            kw["supernet"] = SupernetConfig.from_dict(kw["supernet"])
        for k in ("baselines", "extra_archs"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    def with_execution(self, other: "SearchConfig") -> "SearchConfig":
        """This study with ``other``'s execution settings (what ``--resume`` may change); a
        ``storage`` not given keeps the study's own (that is where its experiment is)."""
        changes = {k: getattr(other, k) for k in self.EXECUTION}
        if other.storage is None:
            changes["storage"] = self.storage
        return dataclasses.replace(self, **changes)

    @property
    def out_dir(self) -> Path:
        return Path(self.out_root) / self.study

    @property
    def baseline_refs(self) -> tuple[str, ...]:
        return tuple(self.baselines) + tuple(self.extra_archs)


@dataclass(frozen=True)
class ResolvedSearch:
    """A validated :class:`SearchConfig` with what validation loaded."""

    config: SearchConfig
    baselines: tuple[tuple[str, ArchSpec], ...]  # (name, spec): presets by name, others user-<hash>
    latency_device: str
    predictor: LatencyPredictor


# ---------------------------------------------------------------------------------------------
def parse_space(overrides: Mapping[str, Any] | None, what: str = "--space") -> SearchSpace:
    """DEFAULT_SPACE with field overrides (JSON lists become tuples); SpecError on bad input."""
    if not overrides:
        return DEFAULT_SPACE
    known_fields(SearchSpace, overrides, what, SpecError)
    kw = {k: dict(v) if k == "fixed" and isinstance(v, Mapping) else _tuples(v)
          for k, v in overrides.items()}
    try:
        return dataclasses.replace(DEFAULT_SPACE, **kw)
    except (TypeError, ValueError) as e:
        raise SpecError(f"{what}: {e}") from None


def _tuples(v: Any) -> Any:
    return tuple(_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v


def parse_fidelity_fields(overrides: Mapping[str, Any] | None) -> Fidelity:
    """DEFAULT_FIDELITY with field overrides (Fidelity's own checks are one-line UsageErrors
    naming the field)."""
    if not overrides:
        return DEFAULT_FIDELITY
    return Fidelity.from_dict({**DEFAULT_FIDELITY.to_dict(), **overrides})


def resolve_baselines(refs: tuple[str, ...]) -> tuple[tuple[str, ArchSpec], ...]:
    out = []
    for ref in refs:
        spec = load_spec(ref)  # SpecError names the bad reference
        name = ref.upper() if ref.upper() in PRESETS else f"user-{spec.arch_hash[:8]}"
        out.append((name, spec))
    return tuple(out)


def smallest_members(space: SearchSpace) -> list[ArchSpec]:
    """Candidates for the space's fastest member: minimum depth/width/ratio/resolution with each
    uniform attention placement (which placement is fastest depends on the device)."""
    p = space.param_choices()
    out = []
    for mode in space.attn_modes:
        params: dict[str, Any] = {"res": min(p["res"])}
        for i in range(4):
            params.update({f"d{i}": min(p[f"d{i}"]), f"w{i}": min(p[f"w{i}"]),
                           f"m{i}": min(p[f"m{i}"]), f"a{i}": mode})
        out.append(space.from_params(params))
    return out


def load_saved_config(study: str, out_root: str) -> SearchConfig:
    """The config a study was started with (``--resume``)."""
    path = Path(out_root) / study / CONFIG_FILE
    if not path.is_file():
        raise NotFoundError(f"--resume {study}: no {path} (nothing to resume)")
    return SearchConfig.from_dict(read_json(path, "--resume"), str(path))


# ---------------------------------------------------------------------------------------------
def prepare(cfg: SearchConfig, resume: bool = False) -> ResolvedSearch:
    """The validated search to run: ``cfg`` for a new study (refused when the study exists);
    for ``resume`` the saved config with ``cfg``'s execution settings."""
    if resume:
        cfg = load_saved_config(cfg.study, cfg.out_root).with_execution(cfg)
    elif (cfg.out_dir / CONFIG_FILE).exists():
        raise UsageError(f"--study {cfg.study}: already exists in {cfg.out_dir}; use --resume to "
                         "continue it or another --study name")
    return resolve(cfg)


def resolve(cfg: SearchConfig) -> ResolvedSearch:
    """Fail fast, before data and Ray: every check that is cheap, with one-line errors."""
    _check_settings(cfg)
    check_data_option(cfg.data)
    check_writable_dir(cfg.out_root, "--out")  # the study's directory and the data cache
    check_db(cfg.db, readonly=False)  # nothing opened or created yet
    check_address(cfg.address)
    check_cache_root()  # this node's $SWIFTFORMER_NAS_CACHE: trials here build the cache in it
    if cfg.storage is not None:
        experiment_storage(cfg.storage, str(cfg.out_dir), cfg.study)  # UsageError: no such fs
    baselines = resolve_baselines(cfg.baseline_refs)
    device, predictor = _load_latency_device(cfg.latency_device)
    if cfg.latency_budget_ms is not None:
        fastest = min(float(predictor.predict(s)[0]) for s in smallest_members(cfg.space))
        if fastest > cfg.latency_budget_ms:
            raise UsageError(
                f"--latency-budget-ms {cfg.latency_budget_ms:g}: no architecture of the space "
                f"meets it on {device} (the smallest member is predicted at {fastest:.3f} ms)")
    return ResolvedSearch(config=cfg, baselines=baselines, latency_device=device,
                          predictor=predictor)


def _check_settings(cfg: SearchConfig) -> None:
    check_name(cfg.study, "--study")
    if cfg.strategy not in STRATEGIES:
        raise UsageError(f"--strategy {cfg.strategy!r}: allowed {', '.join(STRATEGIES)}")
    if not 1 <= cfg.n_trials <= MAX_TRIALS:
        raise UsageError(f"--trials {cfg.n_trials}: allowed integers 1..{MAX_TRIALS}")
    if not 0 <= cfg.seed <= MAX_SEED:
        raise UsageError(f"--seed {cfg.seed}: allowed integers 0..{MAX_SEED}")
    if cfg.prerank < 0:
        raise UsageError(f"--prerank {cfg.prerank}: allowed integers >= 0 (0: off)")
    if cfg.proxy not in PROXIES:
        raise UsageError(f"--proxy {cfg.proxy!r}: allowed {', '.join(PROXIES)}")
    if not 1 <= cfg.top_k <= MAX_TOP_K:
        raise UsageError(f"--top-k {cfg.top_k}: allowed integers 1..{MAX_TOP_K}")
    if not 1 <= cfg.scored <= MAX_TRIALS:
        raise UsageError(f"--scored {cfg.scored}: allowed integers 1..{MAX_TRIALS}")
    if cfg.proxy == "supernet":  # the widths must divide (UsageError naming the field)
        proxy_space(cfg.space, 2, cfg.fidelity.resolution, cfg.supernet.width_divisor)
    b = cfg.latency_budget_ms
    if b is not None and not (b > 0 and math.isfinite(b)):
        raise UsageError(f"--latency-budget-ms {b}: allowed numbers > 0")
    if cfg.cpus_per_trial is not None and not cfg.cpus_per_trial > 0:
        raise UsageError(f"--cpus-per-trial {cfg.cpus_per_trial}: allowed numbers > 0")
    g = cfg.gpus_per_trial
    if not (g >= 0 and (g <= 1 or g == int(g))):
        raise UsageError(f"--gpus-per-trial {g:g}: allowed 0, a fraction of one GPU (0.25: four "
                         "trials share a GPU) or a whole number of GPUs")
    _check_supernet_nproc(cfg)
    if cfg.max_concurrent is not None and cfg.max_concurrent < 1:
        raise UsageError(f"--max-concurrent {cfg.max_concurrent}: allowed integers >= 1")
    if not TORCH_DEVICE_PATTERN.fullmatch(cfg.torch_device):
        raise UsageError(f"--torch-device {cfg.torch_device!r}: allowed auto, cpu, cuda, "
                         "cuda:N, mps")


def _check_supernet_nproc(cfg: SearchConfig) -> None:
    n = cfg.supernet_nproc
    if not 1 <= n <= MAX_SUPERNET_NPROC:
        raise UsageError(f"--supernet-nproc {n}: allowed integers 1..{MAX_SUPERNET_NPROC}")
    if n == 1:
        return
    if cfg.proxy != "supernet":
        raise UsageError(f"--supernet-nproc {n}: only with --proxy supernet")
    if cfg.gpus_per_trial not in (0, 1):
        raise UsageError(f"--supernet-nproc {n} with --gpus-per-trial {cfg.gpus_per_trial:g}: "
                         "each rank takes one whole GPU (1) or none (0)")
    if ":" in cfg.torch_device:
        raise UsageError(f"--supernet-nproc {n} with --torch-device {cfg.torch_device}: use "
                         "cuda or auto (rank r takes cuda:r of the trial's GPUs)")
    bs = cfg.supernet.batch_size
    if bs % n:
        raise UsageError(f"--supernet-nproc {n}: the supernet's batch_size {bs} does not split "
                         f"evenly over {n} processes (the global batch is split over the ranks)")


def _load_latency_device(device: str) -> tuple[str, LatencyPredictor]:
    devices = list(list_devices())
    if device not in devices:
        if not device.endswith(".json"):
            raise UsageError(f"--latency-device {device!r}: allowed {', '.join(devices)} or a "
                             "path to a calibration .json")
        if not os.path.isfile(device):
            raise NotFoundError(f"--latency-device {device}: no such calibration file")
    return device, load_predictor(device)
