"""Request and response bodies of the experiments domain."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from mabapi.experiments.models import ExperimentStatus
from mabapi.schemas import Count, Description, Identifier, IsoDate, Name

MAX_BATCH_ROWS = 10_000
MAX_VARIANTS = 100


class StrictModel(BaseModel):
    """Unknown fields are a mistake worth reporting, not something to drop silently."""

    model_config = ConfigDict(extra="forbid")


class MetricIn(StrictModel):
    """One variant's totals for one day: the original README's payload."""

    experiment_id: Identifier
    variant_id: Identifier
    date: IsoDate
    impressions: Count
    successes: Count

    @model_validator(mode="after")
    def _successes_within_impressions(self) -> MetricIn:
        if self.successes > self.impressions:
            raise PydanticCustomError(
                "successes_exceed_impressions",
                "successes ({successes}) cannot exceed impressions ({impressions})",
                {"successes": self.successes, "impressions": self.impressions},
            )
        return self

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "experiment_id": "homepage_test",
                    "variant_id": "control",
                    "date": "2023-07-15",
                    "impressions": 1000,
                    "successes": 120,
                }
            ]
        },
    )


class MetricsBatchIn(StrictModel):
    metrics: Annotated[list[MetricIn], Field(min_length=1, max_length=MAX_BATCH_ROWS)]

    @model_validator(mode="after")
    def _one_row_per_key(self) -> MetricsBatchIn:
        first_seen: dict[tuple[str, str, date], int] = {}
        for index, row in enumerate(self.metrics):
            key = (row.experiment_id, row.variant_id, row.date)
            if key in first_seen:
                raise PydanticCustomError(
                    "duplicate_rows",
                    "metrics[{first}] and metrics[{second}] both set {variant} of {experiment} "
                    "on {day}; send one row per experiment, variant and date",
                    {
                        "first": first_seen[key],
                        "second": index,
                        "variant": row.variant_id,
                        "experiment": row.experiment_id,
                        "day": row.date.isoformat(),
                    },
                )
            first_seen[key] = index
        return self


class StatusOut(BaseModel):
    status: Literal["success"] = "success"


class BatchResultOut(BaseModel):
    status: Literal["success"] = "success"
    rows: int


class AllocationOut(BaseModel):
    experiment_id: str
    date: date
    allocations: dict[str, float] = Field(
        description="Percent of traffic per variant, one decimal, summing to exactly 100.0."
    )
    probability_best: dict[str, float] = Field(
        description="Unrounded posterior probability that each variant has the highest rate."
    )
    algorithm: str
    algorithm_version: str
    inputs: dict[str, dict[str, int]] = Field(
        description="Impressions and successes per variant dated strictly before `date`."
    )


class VariantIn(StrictModel):
    id: Identifier
    name: Name | None = None
    is_control: bool = False


class VariantOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    is_control: bool
    active: bool


class ExperimentIn(StrictModel):
    id: Identifier
    name: Name | None = None
    description: Description = ""
    status: ExperimentStatus = ExperimentStatus.RUNNING
    variants: Annotated[list[VariantIn], Field(max_length=MAX_VARIANTS)] = []

    @model_validator(mode="after")
    def _variants_consistent(self) -> ExperimentIn:
        ids = [variant.id for variant in self.variants]
        duplicates = sorted({v for v in ids if ids.count(v) > 1})
        if duplicates:
            raise PydanticCustomError(
                "duplicate_variants", "variant ids must be unique; repeated: {ids}",
                {"ids": ", ".join(duplicates)},
            )  # fmt: skip
        if sum(variant.is_control for variant in self.variants) > 1:
            raise PydanticCustomError(
                "several_controls", "at most one variant can have is_control: true"
            )
        return self


class ExperimentPatch(StrictModel):
    name: Name | None = None
    description: Description | None = None
    status: ExperimentStatus | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> ExperimentPatch:
        if not self.model_fields_set:
            raise PydanticCustomError(
                "empty_patch", "send at least one of: name, description, status"
            )
        for field in self.model_fields_set:
            if getattr(self, field) is None:
                raise PydanticCustomError("null_field", "{field} cannot be null", {"field": field})
        return self


class ExperimentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    description: str
    status: ExperimentStatus
    algorithm: str
    archived: bool
    archived_at: datetime | None
    created_at: datetime
    updated_at: datetime
    variants: list[VariantOut]


class ExperimentPage(BaseModel):
    items: list[ExperimentOut]
    total: int
    limit: int
    offset: int


class MetricRowOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    variant_id: str
    date: date
    impressions: int
    successes: int


class MetricRowsOut(BaseModel):
    experiment_id: str
    metrics: list[MetricRowOut]


class CredibleInterval(BaseModel):
    lower: float
    upper: float
    mass: float


class VariantSummary(BaseModel):
    variant_id: str
    is_control: bool
    active: bool
    impressions: int
    successes: int
    conversion_rate: float | None = Field(description="Observed rate; null with no impressions.")
    posterior_mean: float
    credible_interval: CredibleInterval
    probability_best: float


class SummaryOut(BaseModel):
    experiment_id: str
    prior: dict[str, float]
    algorithm: str
    variants: list[VariantSummary]
