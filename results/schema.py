"""ORM models of the results database (SQLAlchemy 2.0 typed declarative).

Models only: no logic here (that is ``results.store`` and ``results.families``), in the spirit
of optuna's ``storages/_rdb/models.py``. The schema is changed only through Alembic revisions in
``results/migrations/versions``; a test checks that these models and the migrated schema agree.

Every table name carries the ``sfn_`` prefix and Alembic's version table is
``sfn_alembic_version``, so an Optuna ``RDBStorage`` (tables ``studies``, ``trials``, ...,
``alembic_version``) can live in the same SQLite file without any collision.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (JSON, Boolean, CheckConstraint, DateTime, Float, ForeignKey, Index,
                        Integer, MetaData, String, Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

TABLE_PREFIX = "sfn_"
VERSION_TABLE = "sfn_alembic_version"

# Trial states. REJECTED = over the latency budget, never trained; PRUNED = early-stopped.
RUNNING, COMPLETED, FAILED, REJECTED, PRUNED = "RUNNING", "COMPLETED", "FAILED", "REJECTED", "PRUNED"
TRIAL_STATUSES = (RUNNING, COMPLETED, FAILED, REJECTED, PRUNED)
FINAL_STATUSES = (COMPLETED, FAILED, REJECTED, PRUNED)
TRAINING_RUN_STATUSES = (RUNNING, COMPLETED, FAILED)
# Rungs of the fidelity ladder a trial's numbers come from (``search --proxy supernet``):
# "standalone" = trained from scratch at the study's proxy fidelity (every trial before rungs
# existed); "supernet" = scored on a weight-sharing supernet (search/proxy/supernet). Fronts,
# hypervolumes and reuse of results never mix rungs.
STANDALONE, SUPERNET = "standalone", "supernet"
RUNGS = (STANDALONE, SUPERNET)

# Metrics that get their own (indexable, cheaply fetchable) column on sfn_trials; everything
# else in a trial's metrics dict is kept in ``metrics`` (JSON) only.
TRIAL_METRIC_COLUMNS = ("top1", "top5", "val_loss", "latency_ms", "latency_std_ms", "params",
                        "gmacs", "synflow", "naswot", "grad_norm", "train_seconds")
# Per-rung metric columns beside those (filled from a trial's metrics the same way; not
# objectives of cross-study queries, which are stand-alone only): the supernet rung's score.
RUNG_METRIC_COLUMNS = ("score",)

# Deterministic constraint/index names so Alembic revisions can refer to them on any backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON}


class Study(Base):
    """One search: its config, seed, code version, dataset identity and proxy fidelity."""

    __tablename__ = "sfn_studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    config_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the identity fields
    seed: Mapped[int] = mapped_column(Integer)
    code_version: Mapped[str] = mapped_column(String(128))
    dataset_id: Mapped[str] = mapped_column(String(255), index=True)
    fidelity: Mapped[dict[str, Any]] = mapped_column(JSON)  # the full proxy budget
    fidelity_key: Mapped[str] = mapped_column(String(512), index=True)  # canonical JSON of it
    device: Mapped[str] = mapped_column(String(128), index=True)  # latency target device
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    trials: Mapped[list["Trial"]] = relationship(back_populates="study")


class Architecture(Base):
    """One architecture, keyed by its canonical hash (``ArchSpec.arch_hash``)."""

    __tablename__ = "sfn_architectures"

    arch_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    spec_json: Mapped[str] = mapped_column(Text)  # ArchSpec.canonical_json()
    params: Mapped[int] = mapped_column(Integer)
    gmacs: Mapped[float] = mapped_column(Float)  # analytic, fvcore counting rules
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Trial(Base):
    """One evaluated (or rejected) architecture inside a study."""

    __tablename__ = "sfn_trials"
    __table_args__ = (
        UniqueConstraint("study_id", "trial_key", name="uq_sfn_trials_study_key"),
        CheckConstraint(f"status IN {TRIAL_STATUSES!r}", name="status"),
        # The Pareto/compare queries filter on exactly these three columns.
        Index("ix_sfn_trials_front_filter", "status", "full_budget", "study_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("sfn_studies.id", ondelete="CASCADE"))
    trial_key: Mapped[str] = mapped_column(String(255))  # driver's id; idempotency key
    arch_hash: Mapped[str] = mapped_column(ForeignKey("sfn_architectures.arch_hash"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=RUNNING)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(Integer)
    fidelity_reached: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    full_budget: Mapped[bool] = mapped_column(Boolean, default=False)  # reached study.fidelity
    epochs_reached: Mapped[int | None] = mapped_column(Integer)
    # Final metrics (see TRIAL_METRIC_COLUMNS); the complete dict is in ``metrics``.
    top1: Mapped[float | None] = mapped_column(Float)
    top5: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float | None] = mapped_column(Float)  # predicted, on study.device
    latency_std_ms: Mapped[float | None] = mapped_column(Float)
    params: Mapped[int | None] = mapped_column(Integer)
    gmacs: Mapped[float | None] = mapped_column(Float)
    synflow: Mapped[float | None] = mapped_column(Float)
    naswot: Mapped[float | None] = mapped_column(Float)
    grad_norm: Mapped[float | None] = mapped_column(Float)
    train_seconds: Mapped[float | None] = mapped_column(Float)
    # Which rung of the ladder these numbers come from (RUNGS); rows written before rungs
    # existed are stand-alone trainings (the migration's server default). Checked by
    # ResultsStore.start_trial (no CHECK constraint: adding one rebuilds the table on SQLite).
    rung: Mapped[str] = mapped_column(String(16), default=STANDALONE, server_default=STANDALONE)
    # The rung's own objective (higher is better) where it is not top-1: on the supernet rung
    # minus the subnet's val loss (SupernetConfig.score); None on the stand-alone rung.
    score: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    timings: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)

    study: Mapped[Study] = relationship(back_populates="trials")
    epochs: Mapped[list["EpochMetric"]] = relationship(
        back_populates="trial", order_by="EpochMetric.epoch", cascade="all, delete-orphan")


class EpochMetric(Base):
    """Metrics of one trial after one epoch (idempotent on (trial_id, epoch))."""

    __tablename__ = "sfn_epoch_metrics"
    __table_args__ = (UniqueConstraint("trial_id", "epoch", name="uq_sfn_epoch_metrics_trial_epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("sfn_trials.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    top1: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    recorded_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    trial: Mapped[Trial] = relationship(back_populates="epochs")


class LatencyPrediction(Base):
    """A latency predictor's estimate for one architecture on one device."""

    __tablename__ = "sfn_latency_predictions"
    __table_args__ = (UniqueConstraint("arch_hash", "device", "predictor_version",
                                       name="uq_sfn_latency_predictions_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    arch_hash: Mapped[str] = mapped_column(ForeignKey("sfn_architectures.arch_hash"))
    device: Mapped[str] = mapped_column(String(128))
    predictor_version: Mapped[str] = mapped_column(String(128))
    latency_ms: Mapped[float] = mapped_column(Float)
    std_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class LatencyMeasurement(Base):
    """A measured (or published) latency of an architecture or a named model."""

    __tablename__ = "sfn_latency_measurements"
    __table_args__ = (
        CheckConstraint("arch_hash IS NOT NULL OR model_name IS NOT NULL", name="subject"),
        Index("ix_sfn_latency_measurements_subject", "arch_hash", "device"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    arch_hash: Mapped[str | None] = mapped_column(ForeignKey("sfn_architectures.arch_hash"))
    model_name: Mapped[str | None] = mapped_column(String(255))
    device: Mapped[str] = mapped_column(String(128))
    backend: Mapped[str] = mapped_column(String(128))  # e.g. coreml-ane, onnxruntime-cpu
    latency_ms: Mapped[float] = mapped_column(Float)
    spread_ms: Mapped[float | None] = mapped_column(Float)  # e.g. IQR or std of the repeats
    source: Mapped[str] = mapped_column(String(255))  # who/what measured it, or the paper
    resolution: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Baseline(Base):
    """A published SwiftFormer variant (XS/S/L1/L3) with its published figures."""

    __tablename__ = "sfn_baselines"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    arch_hash: Mapped[str] = mapped_column(ForeignKey("sfn_architectures.arch_hash"))
    published_top1: Mapped[float] = mapped_column(Float)  # ImageNet-1k top-1 (%)
    published_latency_ms: Mapped[float] = mapped_column(Float)
    latency_device: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(255))


class TrainingRun(Base):
    """A full-scale (re)training of one architecture; written by the retrain feature."""

    __tablename__ = "sfn_training_runs"
    __table_args__ = (CheckConstraint(f"status IN {TRAINING_RUN_STATUSES!r}", name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    arch_hash: Mapped[str] = mapped_column(ForeignKey("sfn_architectures.arch_hash"), index=True)
    study_id: Mapped[int | None] = mapped_column(ForeignKey("sfn_studies.id", ondelete="SET NULL"))
    dataset_id: Mapped[str] = mapped_column(String(255))
    epochs: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=RUNNING)
    top1: Mapped[float | None] = mapped_column(Float)
    top5: Mapped[float | None] = mapped_column(Float)
    checkpoint_path: Mapped[str | None] = mapped_column(Text)
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)


class Family(Base):
    """A family of architectures scaled from one base for one device's latency predictor
    (written by ``run_search.py scale`` through ``results.families``)."""

    __tablename__ = "sfn_families"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    base_arch_hash: Mapped[str] = mapped_column(ForeignKey("sfn_architectures.arch_hash"))
    base_source: Mapped[str] = mapped_column(Text)  # what --base was: preset / file / trial id
    device: Mapped[str] = mapped_column(String(128), index=True)
    predictor_version: Mapped[str] = mapped_column(String(128))
    coefficients: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"depth", "width", "resolution"}
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # tolerance, rounding, search report
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    members: Mapped[list["FamilyMember"]] = relationship(
        back_populates="family", order_by="FamilyMember.position", cascade="all, delete-orphan")


class FamilyMember(Base):
    """One member of a family: the architecture chosen for one target latency."""

    __tablename__ = "sfn_family_members"
    __table_args__ = (UniqueConstraint("family_id", "position",
                                       name="uq_sfn_family_members_family_position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    family_id: Mapped[int] = mapped_column(ForeignKey("sfn_families.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)  # 0 = smallest target
    arch_hash: Mapped[str] = mapped_column(ForeignKey("sfn_architectures.arch_hash"), index=True)
    target_latency_ms: Mapped[float] = mapped_column(Float)
    latency_ms: Mapped[float] = mapped_column(Float)  # predicted on family.device
    latency_std_ms: Mapped[float | None] = mapped_column(Float)
    phi: Mapped[float | None] = mapped_column(Float)  # compound coefficient before fine-tuning
    params: Mapped[int] = mapped_column(Integer)
    gmacs: Mapped[float] = mapped_column(Float)

    family: Mapped[Family] = relationship(back_populates="members")
