"""Tables of real-time mode. Live counts are kept apart from reported daily totals:
reported totals are replaced by a re-post, live counts only grow. The assignments table
itself is declared in `counts.models` (segment counts and late conversions read it from
below this package); it is re-exported here."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from mabapi.counts.models import UNIT_ID_LENGTH, Assignment
from mabapi.db.base import ID_LENGTH, Base, UTCDateTime, utcnow

__all__ = ["UNIT_ID_LENGTH", "Assignment", "ConversionEvent"]


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
