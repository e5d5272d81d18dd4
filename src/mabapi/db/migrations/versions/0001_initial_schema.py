"""experiments, variants, daily metrics, allocation snapshots

Revision ID: 0001
Revises:
Create Date: 2026-11-28 02:08:16.188018
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "draft",
                "running",
                "paused",
                "stopped",
                name="experiment_status",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("algorithm", sa.String(length=32), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiments")),
    )
    op.create_table(
        "allocation_snapshots",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("experiment_id", sa.String(length=128), nullable=False),
        sa.Column("for_date", sa.Date(), nullable=False),
        sa.Column("algorithm", sa.String(length=32), nullable=False),
        sa.Column("algorithm_version", sa.String(length=64), nullable=False),
        sa.Column("inputs_hash", sa.String(length=64), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("allocations", sa.JSON(), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_allocation_snapshots_experiment_id_experiments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_allocation_snapshots")),
        sa.UniqueConstraint(
            "experiment_id",
            "for_date",
            "inputs_hash",
            name=op.f("uq_allocation_snapshots_experiment_id_for_date_inputs_hash"),
        ),
    )
    op.create_table(
        "variants",
        sa.Column("experiment_id", sa.String(length=128), nullable=False),
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("is_control", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_variants_experiment_id_experiments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("experiment_id", "id", name=op.f("pk_variants")),
    )
    op.create_table(
        "experiment_metrics",
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
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "impressions >= 0", name=op.f("ck_experiment_metrics_impressions_non_negative")
        ),
        sa.CheckConstraint(
            "successes <= impressions",
            name=op.f("ck_experiment_metrics_successes_within_impressions"),
        ),
        sa.CheckConstraint(
            "successes >= 0", name=op.f("ck_experiment_metrics_successes_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["experiment_id", "variant_id"],
            ["variants.experiment_id", "variants.id"],
            name=op.f("fk_experiment_metrics_experiment_id_variant_id_variants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiment_metrics")),
        sa.UniqueConstraint(
            "experiment_id",
            "variant_id",
            "date",
            name=op.f("uq_experiment_metrics_experiment_id_variant_id_date"),
        ),
    )
    op.create_index(
        "ix_experiment_metrics_experiment_date", "experiment_metrics", ["experiment_id", "date"]
    )


def downgrade() -> None:
    op.drop_index("ix_experiment_metrics_experiment_date", table_name="experiment_metrics")

    op.drop_table("experiment_metrics")
    op.drop_table("variants")
    op.drop_table("allocation_snapshots")
    op.drop_table("experiments")
