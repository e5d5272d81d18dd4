"""variant totals

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 03:44:28.006181
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "variant_totals",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("experiment_id", sa.String(length=128), nullable=False),
        sa.Column("variant_id", sa.String(length=128), nullable=False),
        sa.Column("source", sa.SmallInteger(), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("impressions", sa.BigInteger(), nullable=False),
        sa.Column("successes", sa.BigInteger(), nullable=False),
        sa.Column("value_sum", sa.Float(), nullable=False),
        sa.Column("value_sum_squares", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id", "variant_id"],
            ["variants.experiment_id", "variants.id"],
            name=op.f("fk_variant_totals_experiment_id_variant_id_variants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_variant_totals")),
        sa.UniqueConstraint(
            "experiment_id",
            "variant_id",
            "source",
            "shard",
            name=op.f("uq_variant_totals_experiment_id_variant_id_source_shard"),
        ),
    )
    # Backfill from the rows already stored: reported totals on shard 0, live per shard.
    op.execute(
        "INSERT INTO variant_totals (experiment_id, variant_id, source, shard, impressions, "
        "successes, value_sum, value_sum_squares) "
        "SELECT experiment_id, variant_id, 0, 0, SUM(impressions), SUM(successes), "
        "COALESCE(SUM(value_sum), 0), COALESCE(SUM(value_sum_squares), 0) "
        "FROM experiment_metrics GROUP BY experiment_id, variant_id"
    )
    op.execute(
        "INSERT INTO variant_totals (experiment_id, variant_id, source, shard, impressions, "
        "successes, value_sum, value_sum_squares) "
        "SELECT experiment_id, variant_id, 1, shard, SUM(impressions), SUM(successes), "
        "SUM(value_sum), SUM(value_sum_squares) "
        "FROM live_metrics GROUP BY experiment_id, variant_id, shard"
    )


def downgrade() -> None:
    op.drop_table("variant_totals")
