"""ResultsStore: the one place searches, architectures, trials, metrics and latencies are kept.

One writer (the search driver), many readers (CLI, dashboard). On SQLite the file is put in WAL
mode, writers take the write lock up front (``BEGIN IMMEDIATE``) and every connection waits for
locks (busy timeout) instead of failing with "database is locked". Transactions are short: each
public method is one transaction via :meth:`ResultsStore.transaction`.

Opening runs Alembic (programmatically, scripts shipped in ``results/migrations``) to create or
upgrade the schema. A file that is not a results database is refused before anything is
written to it.

Errors a user can cause (a missing or foreign file, a schema that needs an upgrade, an unknown
study or trial, a study name reused with other settings) are ``search_space.errors``
UsageError / NotFoundError; a write through a read-only store is a PermissionError (a bug in
the caller); other ValueErrors are broken invariants of the writer (bugs).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from sqlalchemy import Select, create_engine, event, func, inspect, select
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from search_space.costs import analytic_gmacs, analytic_params
from search_space.errors import NotFoundError, UsageError
from search_space.io import canonical_json, check_writable_dir, json_safe
from search_space.lazy import lazy_import
from search_space.spec import PRESETS, PUBLISHED, ArchSpec

from .schema import (COMPLETED, FINAL_STATUSES, RUNG_METRIC_COLUMNS, RUNGS, RUNNING, STANDALONE,
                     TABLE_PREFIX, TRAINING_RUN_STATUSES,
                     TRIAL_METRIC_COLUMNS, VERSION_TABLE, Architecture, Baseline, EpochMetric,
                     LatencyMeasurement, LatencyPrediction, Study, Trial, TrainingRun, utcnow)

# Alembic is needed only when a database is opened (schema check / upgrade), not to build the
# command line that imports this module.
alembic_command = lazy_import("alembic.command")
alembic_config = lazy_import("alembic.config")
alembic_script = lazy_import("alembic.script")
alembic_migration = lazy_import("alembic.runtime.migration")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
DEFAULT_DB = "runs/results.db"
SQLITE_MAGIC = b"SQLite format 3\x00"
MMAP_BYTES = 512 * 2**20  # SQLite memory-map limit per connection (file-backed DBs)
BUSY_TIMEOUT_S = 60.0  # how long any connection waits for a lock before giving up
MAX_ID = 2**63 - 1  # the largest row id SQL databases store (SQLite INTEGER, BIGINT)
PUBLISHED_SOURCE = "SwiftFormer (Shaker et al., ICCV'23) Table 2 / official README"
PUBLISHED_DEVICE = "iphone14-ane"  # = latency_models DEFAULT_DEVICE: iPhone 14 Neural Engine

# Tables an Optuna RDBStorage creates; they may share the file with ours (see notes/results.md).
OPTUNA_TABLES = frozenset({
    "studies", "study_directions", "study_user_attributes", "study_system_attributes",
    "trials", "trial_user_attributes", "trial_system_attributes", "trial_params",
    "trial_values", "trial_intermediate_values", "trial_heartbeats", "version_info",
    "alembic_version"})


def fidelity_key(fidelity: Mapping[str, Any]) -> str:
    """The key under which proxy results with an identical budget can be reused: the canonical
    JSON of the budget (``search_space.io.canonical_json``; stored in every study row, so its
    text must never change for the same budget)."""
    return canonical_json(dict(fidelity))


def head_revision() -> str:
    return alembic_script.ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def _alembic_config(connection):
    cfg = alembic_config.Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _sqlite_path(url) -> str | None:
    """File path of a file-backed SQLite URL, else None (memory DB or another backend)."""
    if url.get_backend_name() != "sqlite":
        return None
    db = url.database or ""
    if db in ("", ":memory:") or url.query.get("mode") == "memory":
        return None
    if db.startswith("file:"):
        db = db[5:].split("?", 1)[0]
    return db


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def reached_full_budget(budget: Mapping[str, Any], reached: Mapping[str, Any] | None) -> bool:
    """True when every item of the study's proxy budget was reached (numbers: >=, else ==)."""
    if reached is None:
        return False
    for k, want in budget.items():
        got = reached.get(k)
        if got is None:
            return False
        if isinstance(want, (int, float)) and not isinstance(want, bool):
            g = _num(got)
            if g is None or g < float(want) - 1e-9:
                return False
        elif got != want:
            return False
    return True


# pip packages of DB-API modules whose import name differs (the rest: pip install <module>).
DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient", "pymysql": "PyMySQL",
                   "cx_Oracle": "cx_Oracle", "pymssql": "pymssql"}


def _shown(url, path: str | None) -> str:
    return path or url.render_as_string(hide_password=True)


def database_url(db: str | os.PathLike):
    """``--db`` as a SQLAlchemy URL (a plain path is a SQLite file), with its driver importable:
    a URL whose dialect is unknown or whose DB-API module is not installed is one line naming
    the URL and what to install."""
    text = os.fspath(db)
    if "://" not in text:
        return make_url("sqlite:///" + os.path.abspath(text))
    try:
        url = make_url(text)
    except ArgumentError as e:
        raise UsageError(f"--db {text!r}: not a valid SQLAlchemy URL ({e})") from None
    shown = url.render_as_string(hide_password=True)
    try:
        dialect = url.get_dialect()
    except NoSuchModuleError:
        raise UsageError(f"--db {shown}: unknown database kind {url.drivername!r} (a SQLite "
                         "path, or a URL such as postgresql+psycopg://user@host/db)") from None
    try:
        dialect.import_dbapi()
    except ImportError as e:
        module = (e.name or str(e)).split(".")[0]
        raise UsageError(f"--db {shown}: the {url.drivername} driver is not installed (pip "
                         f"install {DRIVER_PACKAGES.get(module, module)})") from None
    return url


def _probe(url, path: str | None, *, readonly: bool, create: bool, make_dirs: bool) -> None:
    """Everything about a SQLite ``--db`` that can be checked without writing: the file (or
    the place it would be created) is usable for this mode and is ours. ``make_dirs``: create
    the missing directory of a new file (opening does; a check does not)."""
    if path is None:
        return
    p = Path(path)
    if os.path.lexists(p) and not p.exists():
        raise UsageError(f"--db {path}: a broken symbolic link or a symlink loop")
    if not p.exists():
        if not create:
            raise NotFoundError(f"--db {path}: no such results database (a search creates it; "
                                "run a search first, or pass --db PATH)")
        check_writable_dir(p.parent, f"--db {path}: its directory")
        if make_dirs:
            p.parent.mkdir(parents=True, exist_ok=True)
        return
    if p.is_dir():
        raise UsageError(f"results database {path} is a directory, not a file")
    if not readonly:
        _check_writable(p)
    if p.stat().st_size == 0:
        if readonly:
            raise UsageError(f"results database {path} is empty (no search wrote it)")
        return
    _check_tables(url, path, _sqlite_tables(p))


def _check_writable(p: Path) -> None:
    """A writer needs the file and its directory (SQLite keeps <db>-wal and <db>-shm there)."""
    if not os.access(p, os.R_OK | os.W_OK):
        raise UsageError(f"--db {p}: read-only for this user, and a writer records results in "
                         "it; make it writable or pass another --db")
    if not os.access(p.parent, os.W_OK | os.X_OK):
        raise UsageError(f"--db {p}: its directory is not writable, and SQLite keeps "
                         f"{p.name}-wal and {p.name}-shm beside it; pass another --db")


def _sqlite_tables(p: Path) -> set[str]:
    """The table names, read without creating anything: no -wal file means no writer is
    active, so the file is read as immutable (a WAL database opened read-only would otherwise
    leave empty -wal/-shm files beside it)."""
    with open(p, "rb") as f:
        head = f.read(len(SQLITE_MAGIC))
    if head != SQLITE_MAGIC:
        raise UsageError(f"{p} is not a SQLite database, so not a swiftformer-nas results "
                         "database; refusing to touch it")
    try:
        con = sqlite3.connect(_readonly_uri(p, quiet=not os.path.exists(f"{p}-wal")), uri=True,
                              timeout=BUSY_TIMEOUT_S)
        try:
            return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise UsageError(f"{p} is not a readable SQLite database ({e}); refusing to touch "
                         "it") from None


def _readonly_uri(p: Path | str, quiet: bool | None = None) -> str:
    """``file:...?mode=ro`` (readers see a writer's WAL), or with ``immutable=1`` (``quiet``:
    nothing is created beside the file). Default: quiet when no writer is active (no -wal
    file) and SQLite could not create its -shm here anyway (a read-only directory)."""
    p = Path(p)
    if quiet is None:
        quiet = not os.path.exists(f"{p}-wal") and not os.access(p.parent, os.W_OK | os.X_OK)
    return f"file:{p}?mode=ro" + ("&immutable=1" if quiet else "")


def _check_tables(url, path: str | None, tables: set[str]) -> None:
    tables = {t for t in tables if not t.startswith("sqlite_")}
    if VERSION_TABLE in tables or not tables:
        return
    foreign = sorted(t for t in tables if not t.startswith(TABLE_PREFIX) and t not in OPTUNA_TABLES)
    if foreign or not (tables & OPTUNA_TABLES):
        raise UsageError(
            f"{_shown(url, path)} is not a swiftformer-nas results database (tables "
            f"{sorted(tables)[:5]}...; no {VERSION_TABLE}); refusing to touch it")
    # Only an Optuna storage so far: our tables are added beside it.


def check_database(db: str | os.PathLike, *, readonly: bool, create: bool | None = None) -> None:
    """What opening ``db`` would refuse, checked without opening or creating anything (the
    URL, its driver, the SQLite file or the place it would be created): a command validates
    ``--db`` with its other inputs, before any heavy work."""
    url = database_url(db)
    _probe(url, _sqlite_path(url), readonly=readonly,
           create=(not readonly) if create is None else bool(create), make_dirs=False)


class ResultsStore:
    """The results database. ``ResultsStore("runs/results.db")`` or any SQLAlchemy URL."""

    def __init__(self, db: str | os.PathLike = DEFAULT_DB, *, readonly: bool = False,
                 create: bool | None = None, echo: bool = False) -> None:
        """``readonly``: SQLite ``mode=ro``, no write can happen. ``create`` (default: not
        ``readonly``): a missing SQLite file (and its directory) is created; else a missing
        file is a NotFoundError."""
        self.readonly = readonly
        self.create = (not readonly) if create is None else bool(create)
        if self.create and readonly:
            raise ValueError("ResultsStore: create=True needs a writable store")
        self.url = database_url(db)
        self.path = _sqlite_path(self.url)
        # refuse foreign files (and places this user cannot write) before anything can write
        _probe(self.url, self.path, readonly=readonly, create=self.create, make_dirs=True)
        self.engine = self._make_engine(echo)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        try:
            self._migrate()
        except OperationalError as e:  # the server or file refused us (host, credentials, ...)
            self.engine.dispose()
            why = str(e.orig).strip().splitlines()[0] if e.orig is not None else str(e)
            raise UsageError(f"--db {_shown(self.url, self.path)}: cannot be opened ({why})") \
                from None

    def _make_engine(self, echo: bool) -> Engine:
        if self.url.get_backend_name() != "sqlite":
            return create_engine(self.url, echo=echo, pool_pre_ping=True)
        if self.path is not None and self.readonly:
            url = make_url(f"sqlite:///{_readonly_uri(self.path)}&uri=true")
        else:
            url = self.url
        engine = create_engine(url, echo=echo, connect_args={"timeout": BUSY_TIMEOUT_S})
        readonly, file_backed = self.readonly, self.path is not None

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised via every test
            # Take transaction control from the sqlite3 module so BEGIN is emitted by us.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            cur.execute("PRAGMA foreign_keys = ON")
            if file_backed:
                # Memory-mapped reads: full scans (Pareto queries over ~1M trials) skip the
                # read() copy of every page; measured ~0.2 s less system time per 1M-row scan.
                cur.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
            if file_backed and not readonly:
                cur.execute("PRAGMA journal_mode = WAL")   # readers never block the writer
                cur.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; WAL-safe
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # pragma: no cover
            # Writer: take the write lock at BEGIN, so a transaction never fails half-way when
            # upgrading a read lock. Readers: a deferred BEGIN gives a consistent snapshot.
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine

    def _migrate(self) -> None:
        head = head_revision()
        with self.engine.connect() as conn:
            if self.path is None:
                _check_tables(self.url, None, set(inspect(conn).get_table_names()))
            current = alembic_migration.MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
            conn.rollback()
        if current == head:
            return
        known = {s.revision for s in
                 alembic_script.ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()}
        where = self.path or self.url.render_as_string(hide_password=True)
        if current is not None and current not in known:
            raise UsageError(f"{where} has results schema revision {current}, newer than this "
                                 f"code knows (head {head}); upgrade swiftformer-nas")
        if self.readonly:
            if current is None:
                raise UsageError(f"{where} has no results tables yet (no search wrote it)")
            raise UsageError(f"{where} has results schema revision {current}, this code needs "
                                 f"{head}; run: python run_search.py results-upgrade --db {where}")
        with self.engine.begin() as conn:
            alembic_command.upgrade(_alembic_config(conn), "head")

    def revision(self) -> str | None:
        with self.engine.connect() as conn:
            return alembic_migration.MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE}).get_current_revision()

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the one session / transaction context manager ----------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on error."""
        with self._session() as session, session.begin():
            yield session

    def _writable(self) -> None:
        if self.readonly:
            raise PermissionError("results database opened read-only; writes are not allowed")

    # -- studies -----------------------------------------------------------------------------
    def get_or_create_study(self, name: str, *, config: dict, seed: int, dataset_id: str,
                            fidelity: dict, device: str, code_version: str) -> int:
        """Id of study ``name``; created if new. Same name with another setup -> UsageError."""
        self._writable()
        config, fidelity = json_safe(config), json_safe(fidelity)
        identity = {"config": config, "seed": int(seed), "dataset_id": dataset_id,
                    "fidelity": fidelity, "device": device}
        chash = hashlib.sha256(canonical_json(identity).encode()).hexdigest()
        with self.transaction() as s:
            study = s.scalar(select(Study).where(Study.name == name))
            if study is not None:
                if study.config_hash != chash:
                    old = {"config": study.config, "seed": study.seed,
                           "dataset_id": study.dataset_id, "fidelity": study.fidelity,
                           "device": study.device}
                    diff = [k for k in identity
                            if canonical_json(identity[k]) != canonical_json(old[k])]
                    raise UsageError(f"study {name!r} exists with a different {'/'.join(diff)}; "
                                     "use a new study name or the original settings")
                return study.id
            study = Study(name=name, config=config, config_hash=chash, seed=int(seed),
                          code_version=code_version, dataset_id=dataset_id, fidelity=fidelity,
                          fidelity_key=fidelity_key(fidelity), device=device)
            s.add(study)
            s.flush()
            return study.id

    def study_id(self, name: str) -> int:
        with self.transaction() as s:
            sid = s.scalar(select(Study.id).where(Study.name == name))
        if sid is None:
            raise NotFoundError(f"study {name!r}: not in this database "
                                "(see: run_search.py studies)")
        return sid

    def studies(self) -> list[dict]:
        """Every study with trial counts per status and the number that reached full budget."""
        with self.transaction() as s:
            studies = s.scalars(select(Study).order_by(Study.id)).all()
            counts = s.execute(select(Trial.study_id, Trial.status, func.count())
                               .group_by(Trial.study_id, Trial.status)).all()
            full = dict(s.execute(select(Trial.study_id, func.count())
                                  .where(Trial.full_budget.is_(True), Trial.status == COMPLETED)
                                  .group_by(Trial.study_id)).all())
        by = {}
        for sid, st, n in counts:
            by.setdefault(sid, {})[st] = n
        out = []
        for st in studies:
            c = by.get(st.id, {})
            out.append({"id": st.id, "name": st.name, "device": st.device,
                        "dataset_id": st.dataset_id, "fidelity": st.fidelity, "seed": st.seed,
                        "code_version": st.code_version, "created_at": st.created_at.isoformat(),
                        "trials": sum(c.values()), **{k.lower(): c.get(k, 0) for k in
                                                      ("RUNNING",) + FINAL_STATUSES},
                        "full_budget": full.get(st.id, 0)})
        return out

    # -- architectures -----------------------------------------------------------------------
    def upsert_architecture(self, spec) -> str:
        """Store an ArchSpec (JSON, analytic params and GMACs); returns its arch_hash."""
        self._writable()
        h = spec.arch_hash
        with self.transaction() as s:
            if s.get(Architecture, h) is None:
                s.add(Architecture(arch_hash=h, spec_json=spec.canonical_json(),
                                   params=int(analytic_params(spec)),
                                   gmacs=float(analytic_gmacs(spec))))
        return h

    def architecture(self, arch_hash: str) -> dict | None:
        with self.transaction() as s:
            a = s.get(Architecture, arch_hash)
            return None if a is None else {"arch_hash": a.arch_hash, "spec": json.loads(a.spec_json),
                                           "params": a.params, "gmacs": a.gmacs}

    def spec(self, arch_hash: str) -> ArchSpec:
        a = self.architecture(arch_hash)
        if a is None:
            raise NotFoundError(f"architecture {arch_hash!r}: not in this database")
        return ArchSpec.from_dict(a["spec"])

    # -- trials ------------------------------------------------------------------------------
    def start_trial(self, study_id: int, trial_key: str, arch_hash: str, *, config: dict,
                    seed: int, rung: str = STANDALONE) -> int:
        """Trial id for (study_id, trial_key); created RUNNING if new (idempotent on resume).
        ``rung``: which rung of the ladder its numbers come from (schema.RUNGS)."""
        self._writable()
        if rung not in RUNGS:
            raise ValueError(f"rung {rung!r}: allowed {', '.join(RUNGS)}")
        with self.transaction() as s:
            t = s.scalar(select(Trial).where(Trial.study_id == study_id,
                                             Trial.trial_key == trial_key))
            if t is not None:
                if t.arch_hash != arch_hash:
                    raise ValueError(f"trial {trial_key!r} of study {study_id} already exists "
                                     f"with architecture {t.arch_hash}, not {arch_hash}")
                return t.id
            if s.get(Architecture, arch_hash) is None:
                raise ValueError(f"architecture {arch_hash!r}: unknown; call "
                                 "upsert_architecture(spec) first")
            if s.get(Study, study_id) is None:
                raise ValueError(f"study id {study_id}: not in this database")
            t = Trial(study_id=study_id, trial_key=trial_key, arch_hash=arch_hash,
                      status=RUNNING, config=json_safe(config), seed=int(seed), full_budget=False,
                      rung=rung)
            s.add(t)
            s.flush()
            return t.id

    def log_epoch(self, trial_id: int, epoch: int, metrics: dict) -> None:
        """Record metrics after ``epoch``; logging the same epoch again replaces it."""
        self._writable()
        clean = json_safe(dict(metrics))
        with self.transaction() as s:
            row = s.scalar(select(EpochMetric).where(EpochMetric.trial_id == trial_id,
                                                     EpochMetric.epoch == int(epoch)))
            if row is None:
                if s.get(Trial, trial_id) is None:
                    raise ValueError(f"trial id {trial_id}: not in this database")
                row = EpochMetric(trial_id=trial_id, epoch=int(epoch))
                s.add(row)
            row.metrics = clean
            row.top1 = _num(metrics.get("top1"))
            row.val_loss = _num(metrics.get("val_loss"))
            row.recorded_at = utcnow()

    def finish_trial(self, trial_id: int, status: str, *, metrics: dict,
                     fidelity_reached: dict, error: str | None = None,
                     timings: dict | None = None) -> None:
        """Final state of a trial: COMPLETED / FAILED / REJECTED / PRUNED with its metrics."""
        self._writable()
        if status not in FINAL_STATUSES:
            raise ValueError(f"status {status!r}: allowed {', '.join(FINAL_STATUSES)}")
        with self.transaction() as s:
            t = s.get(Trial, trial_id)
            if t is None:
                raise ValueError(f"trial id {trial_id}: not in this database")
            arch = s.get(Architecture, t.arch_hash)
            t.status = status
            metrics = json_safe(dict(metrics))
            t.metrics = metrics
            for col in TRIAL_METRIC_COLUMNS + RUNG_METRIC_COLUMNS:
                v = _num(metrics.get(col))
                setattr(t, col, int(v) if (col == "params" and v is not None) else v)
            # Cost columns always filled, so fronts over params/GMACs need no join.
            if t.params is None:
                t.params = arch.params
            if t.gmacs is None:
                t.gmacs = arch.gmacs
            t.fidelity_reached = json_safe(dict(fidelity_reached or {}))
            ep = _num(t.fidelity_reached.get("epochs"))
            t.epochs_reached = None if ep is None else int(ep)
            t.full_budget = (status == COMPLETED
                             and reached_full_budget(t.study.fidelity, t.fidelity_reached))
            t.error = error
            t.timings = json_safe(timings)
            t.finished_at = utcnow()

    def trials(self, study_id: int, status: str | None = None,
               rung: str | None = None) -> list[dict]:
        """The study's trials in id order, optionally of one status and one rung."""
        with self.transaction() as s:
            q = select(Trial).where(Trial.study_id == study_id).order_by(Trial.id)
            if status is not None:
                q = q.where(Trial.status == status)
            if rung is not None:
                q = q.where(Trial.rung == rung)
            return [_trial_dict(t) for t in s.scalars(q)]

    def trial(self, trial_id: int) -> dict:
        """One trial with its study name, architecture, per-epoch metrics and latencies."""
        if not 0 <= trial_id <= MAX_ID:     # SQLite refuses a larger integer with a traceback
            raise NotFoundError(f"trial {trial_id}: not in this database")
        with self.transaction() as s:
            t = s.get(Trial, trial_id)
            if t is None:
                raise NotFoundError(f"trial {trial_id}: not in this database")
            d = _trial_dict(t)
            d["study"] = t.study.name
            d["device"] = t.study.device
            d["epochs"] = [{"epoch": e.epoch, **e.metrics} for e in t.epochs]
            a = s.get(Architecture, t.arch_hash)
            d["spec"] = json.loads(a.spec_json)
            d["latency_predictions"] = [
                {"device": p.device, "predictor_version": p.predictor_version,
                 "latency_ms": p.latency_ms, "std_ms": p.std_ms}
                for p in s.scalars(select(LatencyPrediction)
                                   .where(LatencyPrediction.arch_hash == t.arch_hash))]
            d["latency_measurements"] = [
                {"device": m.device, "backend": m.backend, "latency_ms": m.latency_ms,
                 "spread_ms": m.spread_ms, "source": m.source, "resolution": m.resolution}
                for m in s.scalars(select(LatencyMeasurement)
                                   .where(LatencyMeasurement.arch_hash == t.arch_hash))]
            return d

    def trial_id(self, study: str, trial_key: str) -> int:
        """Id of the trial ``trial_key`` of study ``study`` (by name)."""
        sid = self.study_id(study)
        with self.transaction() as s:
            tid = s.scalar(select(Trial.id).where(Trial.study_id == sid,
                                                  Trial.trial_key == trial_key))
        if tid is None:
            raise NotFoundError(f"trial {study}:{trial_key}: study {study!r} has no trial key "
                             f"{trial_key!r}")
        return tid

    def bulk_add_trials(self, study_id: int, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert many finished trials in one transaction (imports, benchmarks).

        Each row: trial_key, arch_hash, status, and optionally seed, config, metric columns,
        fidelity_reached, full_budget. Architectures must exist. Returns the number inserted.
        """
        self._writable()
        now = utcnow()
        payload = []
        for r in rows:
            d = {"study_id": study_id, "trial_key": r["trial_key"], "arch_hash": r["arch_hash"],
                 "status": r.get("status", COMPLETED), "config": json_safe(r.get("config", {})),
                 "seed": int(r.get("seed", 0)),
                 "fidelity_reached": json_safe(r.get("fidelity_reached")),
                 "full_budget": bool(r.get("full_budget", False)), "started_at": now,
                 "finished_at": now, "metrics": json_safe(r.get("metrics")),
                 "rung": r.get("rung", STANDALONE)}
            for col in TRIAL_METRIC_COLUMNS + RUNG_METRIC_COLUMNS:
                d[col] = _num(r.get(col))
            payload.append(d)
        with self.transaction() as s:
            s.execute(Trial.__table__.insert(), payload)
        return len(payload)

    # -- latency -----------------------------------------------------------------------------
    def add_latency_prediction(self, arch_hash: str, device: str, predictor_version: str,
                               latency_ms: float, std_ms: float | None) -> None:
        """Upsert on (arch_hash, device, predictor_version)."""
        self._writable()
        with self.transaction() as s:
            p = s.scalar(select(LatencyPrediction).where(
                LatencyPrediction.arch_hash == arch_hash, LatencyPrediction.device == device,
                LatencyPrediction.predictor_version == predictor_version))
            if p is None:
                p = LatencyPrediction(arch_hash=arch_hash, device=device,
                                      predictor_version=predictor_version)
                s.add(p)
            p.latency_ms = float(latency_ms)
            p.std_ms = _num(std_ms)
            p.created_at = utcnow()

    def latency_prediction(self, arch_hash: str, device: str,
                           predictor_version: str | None = None) -> dict | None:
        """Newest prediction for (arch, device), optionally of one predictor version."""
        with self.transaction() as s:
            q = (select(LatencyPrediction).where(LatencyPrediction.arch_hash == arch_hash,
                                                 LatencyPrediction.device == device)
                 .order_by(LatencyPrediction.created_at.desc(), LatencyPrediction.id.desc()))
            if predictor_version is not None:
                q = q.where(LatencyPrediction.predictor_version == predictor_version)
            p = s.scalars(q).first()
            return None if p is None else {"latency_ms": p.latency_ms, "std_ms": p.std_ms,
                                           "predictor_version": p.predictor_version}

    def add_latency_measurement(self, *, arch_hash: str | None = None,
                                model_name: str | None = None, device: str, backend: str,
                                latency_ms: float, spread_ms: float | None, source: str,
                                resolution: int | None) -> int:
        self._writable()
        if arch_hash is None and model_name is None:
            raise ValueError("latency measurement: give arch_hash or model_name")
        with self.transaction() as s:
            m = LatencyMeasurement(arch_hash=arch_hash, model_name=model_name, device=device,
                                   backend=backend, latency_ms=float(latency_ms),
                                   spread_ms=_num(spread_ms), source=source,
                                   resolution=resolution)
            s.add(m)
            s.flush()
            return m.id

    # -- baselines ---------------------------------------------------------------------------
    def ensure_baselines(self) -> None:
        """XS/S/L1/L3 rows (architecture + published ImageNet top-1 and iPhone 14 latency)."""
        self._writable()
        for name, spec in PRESETS.items():
            h = self.upsert_architecture(spec)
            with self.transaction() as s:
                b = s.get(Baseline, name)
                if b is None:
                    b = Baseline(name=name)
                    s.add(b)
                b.arch_hash = h
                b.published_top1 = float(PUBLISHED[name]["top1"])
                b.published_latency_ms = float(PUBLISHED[name]["latency_ms"])
                b.latency_device = PUBLISHED_DEVICE
                b.source = PUBLISHED_SOURCE

    def baselines(self) -> list[dict]:
        with self.transaction() as s:
            return [{"name": b.name, "arch_hash": b.arch_hash, "published_top1": b.published_top1,
                     "published_latency_ms": b.published_latency_ms,
                     "latency_device": b.latency_device, "source": b.source}
                    for b in s.scalars(select(Baseline).order_by(Baseline.published_latency_ms))]

    def find_proxy_result(self, arch_hash: str, dataset_id: str, fidelity_key: str) -> dict | None:
        """Newest COMPLETED full-budget stand-alone trial of ``arch_hash`` in any study with the
        same dataset and proxy budget (so baselines are trained once and reused), else None.
        Supernet-rung rows are never reused as proxy trainings."""
        with self.transaction() as s:
            t = s.scalars(
                select(Trial).join(Study)
                .where(Trial.arch_hash == arch_hash, Trial.status == COMPLETED,
                       Trial.rung == STANDALONE,
                       Trial.full_budget.is_(True), Study.dataset_id == dataset_id,
                       Study.fidelity_key == fidelity_key)
                .order_by(Trial.finished_at.desc(), Trial.id.desc())).first()
            if t is None:
                return None
            d = _trial_dict(t)
            d["study"] = t.study.name
            d["device"] = t.study.device
            return d

    # -- full-scale training runs (written by the retrain feature) ---------------------------
    def start_training_run(self, arch_hash: str, *, dataset_id: str, epochs: int,
                           config: dict | None = None, study_id: int | None = None) -> int:
        self._writable()
        with self.transaction() as s:
            r = TrainingRun(arch_hash=arch_hash, dataset_id=dataset_id, epochs=int(epochs),
                            config=json_safe(config), study_id=study_id, status=RUNNING)
            s.add(r)
            s.flush()
            return r.id

    def finish_training_run(self, run_id: int, status: str, *, top1: float | None = None,
                            top5: float | None = None, checkpoint_path: str | None = None,
                            error: str | None = None) -> None:
        self._writable()
        if status not in TRAINING_RUN_STATUSES[1:]:
            raise ValueError(f"status {status!r}: allowed COMPLETED, FAILED")
        with self.transaction() as s:
            r = s.get(TrainingRun, run_id)
            if r is None:
                raise ValueError(f"training run {run_id}: not in this database")
            r.status, r.top1, r.top5 = status, _num(top1), _num(top5)
            r.checkpoint_path, r.error, r.finished_at = checkpoint_path, error, utcnow()

    def training_runs(self, arch_hash: str | None = None) -> list[dict]:
        with self.transaction() as s:
            q = select(TrainingRun).order_by(TrainingRun.id)
            if arch_hash is not None:
                q = q.where(TrainingRun.arch_hash == arch_hash)
            return [{c: getattr(r, c) for c in ("id", "arch_hash", "study_id", "dataset_id",
                                                "epochs", "status", "top1", "top5",
                                                "checkpoint_path", "config", "error")}
                    for r in s.scalars(q)]


def raw_rows(conn: Connection, q: Select) -> list[tuple]:
    """Rows of a Core select as plain tuples, inside the caller's transaction. On SQLite through
    the DB-API cursor (several times faster than SQLAlchemy rows at 1M rows); values still
    travel as bound parameters."""
    if conn.dialect.name != "sqlite":
        return [tuple(r) for r in conn.execute(q)]
    compiled = q.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    args = [params[name] for name in compiled.positiontup]  # "?" placeholders, in order
    cur = conn.connection.driver_connection.cursor()
    try:
        cur.execute(str(compiled), args)
        return cur.fetchall()
    finally:
        cur.close()


def _trial_dict(t: Trial) -> dict:
    d = {"id": t.id, "study_id": t.study_id, "trial_key": t.trial_key, "arch_hash": t.arch_hash,
         "status": t.status, "seed": t.seed, "config": t.config,
         "fidelity_reached": t.fidelity_reached, "full_budget": bool(t.full_budget),
         "epochs_reached": t.epochs_reached, "rung": t.rung}
    for c in TRIAL_METRIC_COLUMNS + RUNG_METRIC_COLUMNS:
        d[c] = getattr(t, c)
    d.update(metrics=t.metrics, timings=t.timings, error=t.error,
             started_at=t.started_at.isoformat() if t.started_at else None,
             finished_at=t.finished_at.isoformat() if t.finished_at else None)
    return d
