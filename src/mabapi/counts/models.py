"""The counts every domain reads and writes: live counters (exposures and conversions the
service counts itself, sharded), the running all-time totals per variant, and the
assignments (one row per unit: its variant, propensity, exposure day and conversion). Below both
`experiments/` (reported daily totals, allocations) and `assignments/` (live traffic):
neither imports the other for them."""

from __future__ import annotations

from datetime import date, datetime

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

from mabapi.db.base import ID_LENGTH, Base, CountedSums, UTCDateTime, utcnow

# Live counters are spread over this many rows per (experiment, variant, day), so
# concurrent writers rarely wait on the same row lock; reads add the shards up.
LIVE_SHARDS = 16


class LiveMetric(CountedSums, Base):
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


class VariantTotal(CountedSums, Base):
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


REPORTED_SOURCE = 0
LIVE_SOURCE = 1


UNIT_ID_LENGTH = 256


class Assignment(Base):
    """One unit's variant in one experiment. The unique key is what makes stickiness
    race-free across processes: the first insert wins, everyone else reads it."""

    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("experiment_id", "unit_id"),
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
    unit_id: Mapped[str] = mapped_column(String(UNIT_ID_LENGTH))
    variant_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    # The probability the variant had when served: the propensity for unbiased analysis.
    probability: Mapped[float] = mapped_column(Float)
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Exposure day; conversions are credited to it, so a day's rate is self-consistent.
    assigned_date: Mapped[date] = mapped_column(Date)
    # The audience the unit was assigned in (its conversions count there); None: none.
    segment: Mapped[str | None] = mapped_column(String(128), nullable=True)
    converted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    conversion_value: Mapped[float | None] = mapped_column(Float, nullable=True)
