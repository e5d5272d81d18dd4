"""segment registry: every segment an experiment has data for (the segment cap, and
constant-time lookups of a segment never seen)

Expand only: a new table, filled from the data already there. Processes of the previous
release (0009) keep working against it during a rolling upgrade; the segments they add
meanwhile are found in the data and registered by the first request of this release that
asks for them (experiments/segment_repository.py, `known`).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "experiment_segments",
        sa.Column("experiment_id", sa.String(128), nullable=False),
        sa.Column("segment", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name="fk_experiment_segments_experiment_id_experiments",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("experiment_id", "segment", name="pk_experiment_segments"),
    )
    op.execute(
        """
        INSERT INTO experiment_segments (experiment_id, segment, created_at)
        SELECT experiment_id, segment, CURRENT_TIMESTAMP FROM (
            SELECT DISTINCT experiment_id, segment FROM experiment_metrics WHERE segment <> ''
            UNION
            SELECT DISTINCT experiment_id, segment FROM assignments WHERE segment IS NOT NULL
        ) AS seen
        WHERE experiment_id IN (SELECT id FROM experiments)
        """
    )


def downgrade() -> None:
    op.drop_table("experiment_segments")
