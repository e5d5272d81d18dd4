"""Request and response bodies of metrics: reported rows, batches, revisions."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator
from pydantic_core import PydanticCustomError

from mabapi.experiments.schemas import Finite
from mabapi.schemas import (
    Count,
    Identifier,
    IsoDate,
    StrictModel,
)

MAX_BATCH_ROWS = 10_000


class MetricIn(StrictModel):
    """One variant's totals for one day: the original README's payload."""

    experiment_id: Identifier
    variant_id: Identifier
    date: IsoDate
    impressions: Count
    successes: Count
    metric_id: Identifier | None = Field(
        default=None,
        description="A guardrail's metric_id: these totals are that guardrail's. Absent: the "
        "experiment's primary metric.",
    )
    segment: Identifier | None = Field(
        default=None,
        description="The audience these totals are of (e.g. mobile). Absent: unsegmented "
        "traffic. A variant's totals over all traffic add every segment's.",
    )
    value_sum: Finite | None = Field(
        default=None, description="Value metrics: sum of the per-unit values of the day."
    )
    value_sum_squares: (
        Annotated[float, Strict(), Field(ge=0.0, le=1e30, allow_inf_nan=False)] | None
    ) = Field(default=None, description="Value metrics: sum of the squared per-unit values.")

    @model_validator(mode="after")
    def _consistent(self) -> MetricIn:
        if self.successes > self.impressions:
            raise PydanticCustomError(
                "successes_exceed_impressions",
                "successes ({successes}) cannot exceed impressions ({impressions})",
                {"successes": self.successes, "impressions": self.impressions},
            )
        if self.segment is not None and self.metric_id is not None:
            raise PydanticCustomError(
                "segmented_guardrail",
                "guardrail rows (metric_id) are not segmented: leave segment out",
            )
        if (self.value_sum is None) != (self.value_sum_squares is None):
            raise PydanticCustomError(
                "value_pair", "send value_sum and value_sum_squares together, or neither"
            )
        if self.value_sum is not None and self.value_sum_squares is not None:
            if self.impressions == 0 and (self.value_sum or self.value_sum_squares):
                raise PydanticCustomError("values_without_units", "value sums need impressions > 0")
            bound = self.value_sum**2 / self.impressions if self.impressions else 0.0
            if self.value_sum_squares < bound * (1 - 1e-9) - 1e-9:
                raise PydanticCustomError(
                    "impossible_squares",
                    "value_sum_squares ({squares}) cannot be below value_sum^2 / impressions "
                    "({bound}): check that it sums the squared per-unit values",
                    {"squares": self.value_sum_squares, "bound": bound},
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
        first_seen: dict[tuple[str, str, date, str | None, str | None], int] = {}
        for index, row in enumerate(self.metrics):
            key = (row.experiment_id, row.variant_id, row.date, row.metric_id, row.segment)
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


class BatchResultOut(BaseModel):
    status: Literal["success"] = "success"
    rows: int


class MetricRowOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    variant_id: str
    date: date
    segment: str = Field(default="", description="The row's segment; empty: unsegmented.")
    impressions: int
    successes: int
    value_sum: float | None = Field(default=None, description="Value metrics: the sum.")
    value_sum_squares: float | None = Field(
        default=None, description="Value metrics: the sum of squares."
    )


class MetricRowsOut(BaseModel):
    experiment_id: str
    metrics: list[MetricRowOut]
    next_cursor: str | None = Field(
        default=None,
        description="More rows follow: pass it as `cursor` for the next page. Null: the last.",
    )


class RevisionOut(BaseModel):
    """One post that set a day's totals to new values, as it arrived."""

    model_config = ConfigDict(from_attributes=True)

    variant_id: str
    date: date
    impressions: int
    successes: int
    value_sum: float | None
    value_sum_squares: float | None
    recorded_at: datetime


class RevisionsOut(BaseModel):
    experiment_id: str
    revisions: list[RevisionOut]
    next_cursor: str | None = Field(
        default=None,
        description="More revisions follow: pass it as `cursor` for the next page. Null: the last.",
    )
