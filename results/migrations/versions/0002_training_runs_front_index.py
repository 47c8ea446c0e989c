"""full-scale training runs table; index for the Pareto/compare filter

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sfn_training_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("arch_hash", sa.String(64), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=True),
        sa.Column("dataset_id", sa.String(255), nullable=False),
        sa.Column("epochs", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("top1", sa.Float(), nullable=True),
        sa.Column("top5", sa.Float(), nullable=True),
        sa.Column("checkpoint_path", sa.Text(), nullable=True),
        sa.Column("config", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("status IN ('RUNNING', 'COMPLETED', 'FAILED')",
                           name="ck_sfn_training_runs_status"),
        sa.ForeignKeyConstraint(["arch_hash"], ["sfn_architectures.arch_hash"],
                                name="fk_sfn_training_runs_arch_hash_sfn_architectures"),
        sa.ForeignKeyConstraint(["study_id"], ["sfn_studies.id"], ondelete="SET NULL",
                                name="fk_sfn_training_runs_study_id_sfn_studies"),
        sa.PrimaryKeyConstraint("id", name="pk_sfn_training_runs"),
    )
    op.create_index("ix_sfn_training_runs_arch_hash", "sfn_training_runs", ["arch_hash"])
    # Pareto/compare filter: status + full_budget + study.
    op.create_index("ix_sfn_trials_front_filter", "sfn_trials",
                    ["status", "full_budget", "study_id"])


def downgrade() -> None:
    op.drop_index("ix_sfn_trials_front_filter", table_name="sfn_trials")
    op.drop_index("ix_sfn_training_runs_arch_hash", table_name="sfn_training_runs")
    op.drop_table("sfn_training_runs")
