"""families: compound-scaled architecture families and their members (search/scaling.py)

Revision ID: 0100_families
Revises: 0002
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0100_families"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sfn_families",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("base_arch_hash", sa.String(64), nullable=False),
        sa.Column("base_source", sa.Text(), nullable=False),
        sa.Column("device", sa.String(128), nullable=False),
        sa.Column("predictor_version", sa.String(128), nullable=False),
        sa.Column("coefficients", sa.JSON(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["base_arch_hash"], ["sfn_architectures.arch_hash"],
                                name="fk_sfn_families_base_arch_hash_sfn_architectures"),
        sa.PrimaryKeyConstraint("id", name="pk_sfn_families"),
        sa.UniqueConstraint("name", name="uq_sfn_families_name"),
    )
    op.create_index("ix_sfn_families_device", "sfn_families", ["device"])
    op.create_table(
        "sfn_family_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("family_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("arch_hash", sa.String(64), nullable=False),
        sa.Column("target_latency_ms", sa.Float(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("latency_std_ms", sa.Float(), nullable=True),
        sa.Column("phi", sa.Float(), nullable=True),
        sa.Column("params", sa.Integer(), nullable=False),
        sa.Column("gmacs", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["family_id"], ["sfn_families.id"], ondelete="CASCADE",
                                name="fk_sfn_family_members_family_id_sfn_families"),
        sa.ForeignKeyConstraint(["arch_hash"], ["sfn_architectures.arch_hash"],
                                name="fk_sfn_family_members_arch_hash_sfn_architectures"),
        sa.PrimaryKeyConstraint("id", name="pk_sfn_family_members"),
        sa.UniqueConstraint("family_id", "position",
                            name="uq_sfn_family_members_family_position"),
    )
    op.create_index("ix_sfn_family_members_arch_hash", "sfn_family_members", ["arch_hash"])


def downgrade() -> None:
    op.drop_index("ix_sfn_family_members_arch_hash", table_name="sfn_family_members")
    op.drop_table("sfn_family_members")
    op.drop_index("ix_sfn_families_device", table_name="sfn_families")
    op.drop_table("sfn_families")
