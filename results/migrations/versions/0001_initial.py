"""initial results schema: studies, architectures, trials, epoch metrics, latency, baselines

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_STATUS = "status IN ('RUNNING', 'COMPLETED', 'FAILED', 'REJECTED', 'PRUNED')"


def upgrade() -> None:
    op.create_table(
        "sfn_studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("code_version", sa.String(128), nullable=False),
        sa.Column("dataset_id", sa.String(255), nullable=False),
        sa.Column("fidelity", sa.JSON(), nullable=False),
        sa.Column("fidelity_key", sa.String(512), nullable=False),
        sa.Column("device", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sfn_studies"),
        sa.UniqueConstraint("name", name="uq_sfn_studies_name"),
    )
    op.create_index("ix_sfn_studies_dataset_id", "sfn_studies", ["dataset_id"])
    op.create_index("ix_sfn_studies_fidelity_key", "sfn_studies", ["fidelity_key"])
    op.create_index("ix_sfn_studies_device", "sfn_studies", ["device"])

    op.create_table(
        "sfn_architectures",
        sa.Column("arch_hash", sa.String(64), nullable=False),
        sa.Column("spec_json", sa.Text(), nullable=False),
        sa.Column("params", sa.Integer(), nullable=False),
        sa.Column("gmacs", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("arch_hash", name="pk_sfn_architectures"),
    )

    op.create_table(
        "sfn_trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("trial_key", sa.String(255), nullable=False),
        sa.Column("arch_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("fidelity_reached", sa.JSON(), nullable=True),
        sa.Column("full_budget", sa.Boolean(), nullable=False),
        sa.Column("epochs_reached", sa.Integer(), nullable=True),
        *[sa.Column(c, sa.Float(), nullable=True) for c in (
            "top1", "top5", "val_loss", "latency_ms", "latency_std_ms")],
        sa.Column("params", sa.Integer(), nullable=True),
        *[sa.Column(c, sa.Float(), nullable=True) for c in (
            "gmacs", "synflow", "naswot", "grad_norm", "train_seconds")],
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("timings", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(_STATUS, name="ck_sfn_trials_status"),
        sa.ForeignKeyConstraint(["study_id"], ["sfn_studies.id"], ondelete="CASCADE",
                                name="fk_sfn_trials_study_id_sfn_studies"),
        sa.ForeignKeyConstraint(["arch_hash"], ["sfn_architectures.arch_hash"],
                                name="fk_sfn_trials_arch_hash_sfn_architectures"),
        sa.PrimaryKeyConstraint("id", name="pk_sfn_trials"),
        sa.UniqueConstraint("study_id", "trial_key", name="uq_sfn_trials_study_key"),
    )
    op.create_index("ix_sfn_trials_arch_hash", "sfn_trials", ["arch_hash"])

    op.create_table(
        "sfn_epoch_metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("top1", sa.Float(), nullable=True),
        sa.Column("val_loss", sa.Float(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["trial_id"], ["sfn_trials.id"], ondelete="CASCADE",
                                name="fk_sfn_epoch_metrics_trial_id_sfn_trials"),
        sa.PrimaryKeyConstraint("id", name="pk_sfn_epoch_metrics"),
        sa.UniqueConstraint("trial_id", "epoch", name="uq_sfn_epoch_metrics_trial_epoch"),
    )

    op.create_table(
        "sfn_latency_predictions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("arch_hash", sa.String(64), nullable=False),
        sa.Column("device", sa.String(128), nullable=False),
        sa.Column("predictor_version", sa.String(128), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("std_ms", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["arch_hash"], ["sfn_architectures.arch_hash"],
                                name="fk_sfn_latency_predictions_arch_hash_sfn_architectures"),
        sa.PrimaryKeyConstraint("id", name="pk_sfn_latency_predictions"),
        sa.UniqueConstraint("arch_hash", "device", "predictor_version",
                            name="uq_sfn_latency_predictions_key"),
    )

    op.create_table(
        "sfn_latency_measurements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("arch_hash", sa.String(64), nullable=True),
        sa.Column("model_name", sa.String(255), nullable=True),
        sa.Column("device", sa.String(128), nullable=False),
        sa.Column("backend", sa.String(128), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("spread_ms", sa.Float(), nullable=True),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("resolution", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("arch_hash IS NOT NULL OR model_name IS NOT NULL",
                           name="ck_sfn_latency_measurements_subject"),
        sa.ForeignKeyConstraint(["arch_hash"], ["sfn_architectures.arch_hash"],
                                name="fk_sfn_latency_measurements_arch_hash_sfn_architectures"),
        sa.PrimaryKeyConstraint("id", name="pk_sfn_latency_measurements"),
    )
    op.create_index("ix_sfn_latency_measurements_subject", "sfn_latency_measurements",
                    ["arch_hash", "device"])

    op.create_table(
        "sfn_baselines",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("arch_hash", sa.String(64), nullable=False),
        sa.Column("published_top1", sa.Float(), nullable=False),
        sa.Column("published_latency_ms", sa.Float(), nullable=False),
        sa.Column("latency_device", sa.String(128), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.ForeignKeyConstraint(["arch_hash"], ["sfn_architectures.arch_hash"],
                                name="fk_sfn_baselines_arch_hash_sfn_architectures"),
        sa.PrimaryKeyConstraint("name", name="pk_sfn_baselines"),
    )


def downgrade() -> None:
    for t in ("sfn_baselines", "sfn_latency_measurements", "sfn_latency_predictions",
              "sfn_epoch_metrics", "sfn_trials", "sfn_architectures", "sfn_studies"):
        op.drop_table(t)
