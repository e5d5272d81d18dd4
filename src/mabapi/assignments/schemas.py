"""Request and response bodies of real-time mode."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field, Strict

from mabapi.assignments.models import UNIT_ID_LENGTH
from mabapi.schemas import (
    NO_CONTROL_PATTERN,
    Identifier,
    StrictModel,
    reject_any_control_character,
)

MAX_BATCH = 1_000

UnitId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=UNIT_ID_LENGTH,
        description="A user, session or device id (no control characters).",
        json_schema_extra={"pattern": NO_CONTROL_PATTERN},
    ),
    AfterValidator(reject_any_control_character),
]


class AssignIn(StrictModel):
    unit_id: UnitId
    segment: Identifier | None = Field(
        default=None,
        description="The unit's audience (e.g. mobile): a new unit is drawn from that "
        "segment's allocation, and its conversions count in the segment. Stored with the "
        "assignment on its first call; later calls answer the stored variant.",
    )


class AssignOut(BaseModel):
    experiment_id: str
    unit_id: str
    variant_id: str
    probability: float = Field(description="The variant's share when it was first served.")
    new: bool = Field(description="True only on the call that created the assignment.")
    concluded: bool = Field(
        default=False, description="The test is over: every unit gets the winner."
    )
    segment_capped: bool = Field(
        default=False,
        description="The segment asked for is new and the experiment already has "
        "MABAPI_SEGMENTS_MAX_PER_EXPERIMENT segments: the unit got the split over all "
        "traffic and is stored without a segment.",
    )


class BatchAssignItem(StrictModel):
    experiment_id: Identifier
    unit_id: UnitId
    segment: Identifier | None = Field(
        default=None, description="As for one assignment: the segment's allocation."
    )


class BatchAssignIn(StrictModel):
    assignments: Annotated[list[BatchAssignItem], Field(min_length=1, max_length=MAX_BATCH)]


class BatchAssignOut(BaseModel):
    assignments: list[AssignOut]


class ConversionIn(StrictModel):
    unit_id: UnitId
    value: Annotated[float, Strict(), Field(ge=-1e12, le=1e12, allow_inf_nan=False)] | None = Field(
        default=None, description="Value metrics: this event's value (e.g. 19.99)."
    )
    event_id: Identifier | None = Field(
        default=None, description="Value metrics: counts once per event_id, however retried."
    )
    metric_id: Identifier | None = Field(
        default=None,
        description="A guardrail's metric_id: the conversion is that guardrail's (once per "
        "unit and metric). Absent: the primary metric.",
    )


class ConversionOut(BaseModel):
    experiment_id: str
    unit_id: str
    variant_id: str
    counted: bool = Field(description="False when this conversion had been counted before.")


class BatchConversionItem(ConversionIn):
    experiment_id: Identifier


class BatchConversionIn(StrictModel):
    conversions: Annotated[list[BatchConversionItem], Field(min_length=1, max_length=MAX_BATCH)]


class BatchConversionOut(BaseModel):
    conversions: list[ConversionOut]


class ConcludeIn(StrictModel):
    winner: Identifier
