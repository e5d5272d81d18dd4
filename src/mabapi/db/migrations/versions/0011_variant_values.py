"""variant values: the payload a flag evaluation returns for a variant (OpenFeature)

Expand only: one nullable column. Processes of the previous release (0010) keep working
against it during a rolling upgrade (they neither read nor write it); a variant without
a value evaluates to its id.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 19:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("variants", sa.Column("value", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("variants") as batch:
        batch.drop_column("value")
