"""trial rungs: which rung of the fidelity ladder a trial's numbers come from, and its score

Revision ID: 0101_trial_rungs
Revises: 0100_families
Create Date: 2026-11-30

Every existing row is a stand-alone proxy training: the column's server default says so.
"""
import sqlalchemy as sa
from alembic import op

revision = "0101_trial_rungs"
down_revision = "0100_families"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN (no table rebuild on SQLite); ResultsStore.start_trial checks the value
    op.add_column("sfn_trials", sa.Column("rung", sa.String(16), nullable=False,
                                          server_default="standalone"))
    op.add_column("sfn_trials", sa.Column("score", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sfn_trials") as batch:
        batch.drop_column("score")
        batch.drop_column("rung")
