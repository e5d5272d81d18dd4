"""metric revisions: each change of a reported day's totals

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 17:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "metric_revisions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("experiment_id", sa.String(length=128), nullable=False),
        sa.Column("variant_id", sa.String(length=128), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("impressions", sa.BigInteger(), nullable=False),
        sa.Column("successes", sa.BigInteger(), nullable=False),
        sa.Column("value_sum", sa.Float(), nullable=True),
        sa.Column("value_sum_squares", sa.Float(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id", "variant_id"],
            ["variants.experiment_id", "variants.id"],
            name=op.f("fk_metric_revisions_experiment_id_variant_id_variants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_revisions")),
    )
    op.create_index(
        "ix_metric_revisions_experiment_date",
        "metric_revisions",
        ["experiment_id", "date"],
        unique=False,
    )
    # The rows already stored are their own first revision, as of their last update.
    op.execute(
        "INSERT INTO metric_revisions (experiment_id, variant_id, date, impressions, "
        "successes, value_sum, value_sum_squares, recorded_at) "
        "SELECT experiment_id, variant_id, date, impressions, successes, value_sum, "
        "value_sum_squares, updated_at FROM experiment_metrics"
    )


def downgrade() -> None:
    op.drop_index("ix_metric_revisions_experiment_date", table_name="metric_revisions")
    op.drop_table("metric_revisions")
