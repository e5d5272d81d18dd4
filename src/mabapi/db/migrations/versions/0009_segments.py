"""segments: reported rows and assignments name the audience they are of

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # experiment_metrics: one row per (experiment, variant, date, segment). On SQLite the
    # batch rebuilds the table (nothing references it, so no cascade can reach data).
    with op.batch_alter_table("experiment_metrics") as batch:
        batch.add_column(sa.Column("segment", sa.String(128), server_default="", nullable=False))
        batch.drop_constraint("uq_experiment_metrics_experiment_id_variant_id_date", "unique")
        batch.create_unique_constraint(
            "uq_experiment_metrics_experiment_id_variant_id_date_segment",
            ["experiment_id", "variant_id", "date", "segment"],
        )
    op.add_column(
        "metric_revisions",
        sa.Column("segment", sa.String(128), server_default="", nullable=False),
    )
    # A plain ADD COLUMN (no rebuild): assignments is large.
    op.add_column("assignments", sa.Column("segment", sa.String(128), nullable=True))


def downgrade() -> None:
    op.drop_column("assignments", "segment")
    op.drop_column("metric_revisions", "segment")
    segmented = (
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM experiment_metrics WHERE segment <> ''"))
        .scalar()
    )
    if segmented:
        raise RuntimeError(
            f"{segmented} reported rows name a segment; the previous schema has no place for "
            "them (delete them, or keep this version)"
        )
    with op.batch_alter_table("experiment_metrics") as batch:
        batch.drop_constraint(
            "uq_experiment_metrics_experiment_id_variant_id_date_segment", "unique"
        )
        batch.create_unique_constraint(
            "uq_experiment_metrics_experiment_id_variant_id_date",
            ["experiment_id", "variant_id", "date"],
        )
        batch.drop_column("segment")
