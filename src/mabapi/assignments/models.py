"""Tables of real-time mode. Live counts are kept apart from reported daily totals:
reported totals are replaced by a re-post, live counts only grow."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Date,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from mabapi.db.base import ID_LENGTH, Base, UTCDateTime, utcnow

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


class ConversionEvent(Base):
    """Value events, once per event_id: retries of the same event count once."""

    __tablename__ = "conversion_events"
    __table_args__ = (UniqueConstraint("experiment_id", "event_id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    experiment_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("experiments.id", ondelete="CASCADE")
    )
    event_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    unit_id: Mapped[str] = mapped_column(String(UNIT_ID_LENGTH))
    value: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
