"""metric kinds, value sums, experiment settings

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 02:24:59.292743
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("experiment_metrics", schema=None) as batch_op:
        batch_op.add_column(sa.Column("value_sum", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("value_sum_squares", sa.Float(), nullable=True))

    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "metric_kind", sa.String(length=16), nullable=False, server_default="conversion"
            )
        )
        batch_op.add_column(
            sa.Column("higher_is_better", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        # Existing experiments keep every default: an empty settings object.
        batch_op.add_column(sa.Column("settings", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("experiments", schema=None) as batch_op:
        batch_op.drop_column("settings")
        batch_op.drop_column("higher_is_better")
        batch_op.drop_column("metric_kind")

    with op.batch_alter_table("experiment_metrics", schema=None) as batch_op:
        batch_op.drop_column("value_sum_squares")
        batch_op.drop_column("value_sum")
