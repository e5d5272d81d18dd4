"""The counts both domains read and write: live counters (exposures and conversions the
service counts itself, sharded) and the running all-time totals per variant. Below both
`experiments/` (reported daily totals, allocations) and `assignments/` (live traffic):
neither imports the other for them."""

from __future__ import annotations

from datetime import date

from sqlalchemy import (
    BigInteger,
    Date,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    SmallInteger,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from mabapi.db.base import ID_LENGTH, Base

# Live counters are spread over this many rows per (experiment, variant, day), so
# concurrent writers rarely wait on the same row lock; reads add the shards up.
LIVE_SHARDS = 16


class LiveMetric(Base):
    """Exposures and conversions counted by the service itself, sharded."""

    __tablename__ = "live_metrics"
    __table_args__ = (
        UniqueConstraint("experiment_id", "variant_id", "date", "shard"),
        ForeignKeyConstraint(
            ["experiment_id", "variant_id"],
            ["variants.experiment_id", "variants.id"],
            ondelete="CASCADE",
        ),
        Index("ix_live_metrics_experiment_date", "experiment_id", "date"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    experiment_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    variant_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    date: Mapped[date] = mapped_column(Date)
    shard: Mapped[int] = mapped_column(SmallInteger)
    impressions: Mapped[int] = mapped_column(BigInteger, default=0)
    successes: Mapped[int] = mapped_column(BigInteger, default=0)
    value_sum: Mapped[float] = mapped_column(Float, default=0.0)
    value_sum_squares: Mapped[float] = mapped_column(Float, default=0.0)


class VariantTotal(Base):
    """Running all-time totals per variant, so an allocation does not have to add up
    years of daily rows: totals before day D = these - rows dated on or after D.

    source 0 holds reported totals (kept exact by adding new - old on every re-post),
    source 1 live counts (incremented with them, on the same random shard)."""

    __tablename__ = "variant_totals"
    __table_args__ = (
        UniqueConstraint("experiment_id", "variant_id", "source", "shard"),
        ForeignKeyConstraint(
            ["experiment_id", "variant_id"],
            ["variants.experiment_id", "variants.id"],
            ondelete="CASCADE",
        ),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    experiment_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    variant_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    source: Mapped[int] = mapped_column(SmallInteger)
    shard: Mapped[int] = mapped_column(SmallInteger)
    impressions: Mapped[int] = mapped_column(BigInteger, default=0)
    successes: Mapped[int] = mapped_column(BigInteger, default=0)
    value_sum: Mapped[float] = mapped_column(Float, default=0.0)
    value_sum_squares: Mapped[float] = mapped_column(Float, default=0.0)


REPORTED_SOURCE = 0
LIVE_SOURCE = 1
