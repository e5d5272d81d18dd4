"""Tables of the experiments domain. SQL lives here and in repository.py only."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Enum,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mabapi.db.base import ID_LENGTH, Base, CountedSums, ReportedSums, UTCDateTime, utcnow


class ExperimentStatus(enum.StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class MetricKind(enum.StrEnum):
    CONVERSION = "conversion"
    VALUE = "value"


class Experiment(Base):
    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    # Keys see only their project's experiments (docs/SECURITY.md); ids stay globally unique.
    # No foreign key on purpose: adding one makes SQLite rebuild `experiments`, and the
    # rebuild's DROP TABLE cascades into every table that references it (data loss).
    # Projects are only ever created, never deleted, so nothing can dangle.
    project_id: Mapped[str] = mapped_column(
        String(ID_LENGTH),
        default="default",
        server_default="default",
        index=True,
    )
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[ExperimentStatus] = mapped_column(
        Enum(
            ExperimentStatus,
            name="experiment_status",
            native_enum=False,
            length=16,
            values_callable=lambda members: [m.value for m in members],
            validate_strings=True,
        ),
        default=ExperimentStatus.RUNNING,
    )
    algorithm: Mapped[str] = mapped_column(String(32), default="thompson")
    metric_kind: Mapped[str] = mapped_column(String(16), default="conversion")
    higher_is_better: Mapped[bool] = mapped_column(Boolean, default=True)
    # Policy controls, prior and stop rule, validated by schemas.ExperimentSettings.
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Second metrics a variant must not harm, validated by schemas.GuardrailIn.
    guardrails: Mapped[list[dict[str, Any]]] = mapped_column(
        JSON, default=list, server_default="[]"
    )
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Set when the experiment is concluded: every unit then gets this variant.
    winner_variant_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    # Bumped by a reset, so caches of assignments from before it stop matching.
    live_generation: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    variants: Mapped[list[Variant]] = relationship(
        back_populates="experiment",
        lazy="raise",
        order_by="(Variant.position, Variant.created_at, Variant.id)",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    @property
    def archived(self) -> bool:
        return self.archived_at is not None


class Variant(Base):
    __tablename__ = "variants"

    experiment_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    is_control: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Order of creation, so answers list variants in a stable order on both databases.
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # What a flag evaluation (OpenFeature) returns for this variant: a string, number,
    # boolean or JSON object, one type per experiment; None: the variant's id.
    value: Mapped[Any] = mapped_column(JSON, nullable=True, default=None)

    experiment: Mapped[Experiment] = relationship(back_populates="variants", lazy="raise")


class ExperimentMetric(ReportedSums, Base):
    """One variant's reported totals for one day (set, not added: a re-post replaces)."""

    __tablename__ = "experiment_metrics"
    __table_args__ = (
        ForeignKeyConstraint(
            ["experiment_id", "variant_id"],
            ["variants.experiment_id", "variants.id"],
            ondelete="CASCADE",
        ),
        UniqueConstraint("experiment_id", "variant_id", "date", "segment"),
        CheckConstraint("impressions >= 0", name="impressions_non_negative"),
        CheckConstraint("successes >= 0", name="successes_non_negative"),
        CheckConstraint("successes <= impressions", name="successes_within_impressions"),
        # Allocations read "everything before day D" per experiment.
        Index("ix_experiment_metrics_experiment_date", "experiment_id", "date"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    experiment_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    variant_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    date: Mapped[date] = mapped_column(Date)
    # The audience these totals are of; "" for unsegmented traffic. A variant's totals
    # over all traffic are the sum over segments.
    segment: Mapped[str] = mapped_column(String(ID_LENGTH), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class MetricRevision(ReportedSums, Base):
    """Each change of a reported day's totals, as it arrived: the day's history of
    revisions (an audit trail, and what the conversion delay curve is learnt from: how a
    re-posted day grows with its age)."""

    __tablename__ = "metric_revisions"
    __table_args__ = (
        ForeignKeyConstraint(
            ["experiment_id", "variant_id"],
            ["variants.experiment_id", "variants.id"],
            ondelete="CASCADE",
        ),
        Index("ix_metric_revisions_experiment_date", "experiment_id", "date"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    experiment_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    variant_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    date: Mapped[date] = mapped_column(Date)
    segment: Mapped[str] = mapped_column(String(ID_LENGTH), default="", server_default="")
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AllocationSnapshot(Base):
    """An allocation as served: its inputs, the algorithm that made it, and the answer."""

    __tablename__ = "allocation_snapshots"
    __table_args__ = (UniqueConstraint("experiment_id", "for_date", "inputs_hash"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    experiment_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("experiments.id", ondelete="CASCADE")
    )
    for_date: Mapped[date] = mapped_column(Date)
    algorithm: Mapped[str] = mapped_column(String(32))
    algorithm_version: Mapped[str] = mapped_column(String(64))
    inputs_hash: Mapped[str] = mapped_column(String(64))
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON)
    allocations: Mapped[dict[str, Any]] = mapped_column(JSON)
    probabilities: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# Guardrail rows: reported (set by a re-post) or live (added to by conversions).
GUARDRAIL_REPORTED = 0
GUARDRAIL_LIVE = 1


class GuardrailMetric(CountedSums, Base):
    """One variant's totals of one guardrail metric for one day. Reported rows carry
    their own units; live rows count only successes and values (the units are the
    variant's live exposures of that day)."""

    __tablename__ = "guardrail_metrics"
    __table_args__ = (
        ForeignKeyConstraint(
            ["experiment_id", "variant_id"],
            ["variants.experiment_id", "variants.id"],
            ondelete="CASCADE",
        ),
        UniqueConstraint("experiment_id", "metric_id", "variant_id", "date", "source"),
        Index("ix_guardrail_metrics_experiment_metric", "experiment_id", "metric_id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    experiment_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    metric_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    variant_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    date: Mapped[date] = mapped_column(Date)
    source: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class GuardrailUnit(Base):
    """A unit that converted on a guardrail metric (real time): counted once per unit and
    metric; for value guardrails, the unit's running value total."""

    __tablename__ = "guardrail_units"
    __table_args__ = (UniqueConstraint("experiment_id", "metric_id", "unit_id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    experiment_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("experiments.id", ondelete="CASCADE")
    )
    metric_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    unit_id: Mapped[str] = mapped_column(String(256))
    variant_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    value_total: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GuardrailEvent(Base):
    """Value events of a guardrail metric, once per event_id."""

    __tablename__ = "guardrail_events"
    __table_args__ = (UniqueConstraint("experiment_id", "metric_id", "event_id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    experiment_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("experiments.id", ondelete="CASCADE")
    )
    metric_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    event_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GuardrailBreach(Base):
    """A variant found to harm a guardrail: sticky until an admin clears it (cleared_at
    set; the row stays as the record). At most one open breach per variant and metric."""

    __tablename__ = "guardrail_breaches"
    __table_args__ = (
        ForeignKeyConstraint(
            ["experiment_id", "variant_id"],
            ["variants.experiment_id", "variants.id"],
            ondelete="CASCADE",
        ),
        Index(
            "uq_guardrail_breaches_open",
            "experiment_id",
            "metric_id",
            "variant_id",
            unique=True,
            postgresql_where=text("cleared_at IS NULL"),
            sqlite_where=text("cleared_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    experiment_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    metric_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    variant_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    action: Mapped[str] = mapped_column(String(16))
    since: Mapped[date] = mapped_column(Date)  # the day of the check that found it
    probability_harm: Mapped[float] = mapped_column(Float)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    breached_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class EventState(Base):
    """The last value of something events announce the changes of (an experiment's
    recommendation, its sample-ratio check): changed by compare-and-set, so one change
    is announced once, whichever process sees it first."""

    __tablename__ = "event_states"

    experiment_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ExperimentSegment(Base):
    """Every segment an experiment has data for, registered by the write that first names
    it (reported rows, assignments): what the segment cap counts, and how a request knows
    in one lookup whether a segment was ever seen."""

    __tablename__ = "experiment_segments"

    experiment_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    segment: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
