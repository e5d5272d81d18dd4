"""Request and answer of POST /experiments/{id}/evaluate."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from mabapi.experiments.schemas import MAX_VARIANTS
from mabapi.schemas import Identifier, IsoDate

MAX_POLICY_SEGMENTS = 1000
Split = Annotated[
    dict[Identifier, Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]],
    Field(min_length=1, max_length=MAX_VARIANTS),
]
Estimator = Literal["dm", "ipw", "snipw", "dr", "switch-dr"]


class SegmentedPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    segments: Annotated[dict[Identifier, Split], Field(max_length=MAX_POLICY_SEGMENTS)] = Field(
        description="A split per segment (at most 1,000 segments)."
    )
    default: Split = Field(description="The split of every unit whose segment is not listed.")


class EvaluateIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    policy: Split | SegmentedPolicy = Field(
        description="Target probabilities per variant, summing to 1 (every key a variant of "
        'the experiment); or {"segments": {"mobile": {...}}, "default": {...}}.'
    )
    estimator: Estimator = Field("dr", description="Whose value and interval lead the answer.")
    from_: IsoDate | None = Field(None, alias="from", description="First day (inclusive).")
    to: IsoDate | None = Field(None, description="Last day (inclusive).")
    segment: Identifier | None = Field(None, description="Only this segment's units.")


class EstimateOut(BaseModel):
    value: float
    interval: tuple[float, float] = Field(description="95% interval [low, high].")
    standard_error: float


class LoggedOut(BaseModel):
    value: float = Field(description="What the served allocation earned per unit.")
    units: int
    real_time_units: int
    reported_units: int


class DiagnosticsOut(BaseModel):
    effective_sample_size: float = Field(description="(sum w)^2 / sum w^2 over the units.")
    max_weight: float
    mean_weight: float = Field(description="About 1 when the policy's traffic is supported.")
    clipped_weight_share: float = Field(description="Share of weight Switch-DR left to DM.")
    switch_threshold: float | None = Field(description="Switch-DR's tau (null: none).")
    unsupported: list[str] = Field(
        description="Variants the policy uses where they were logged with probability 0."
    )
    unsupported_share: float = Field(description="Share of the policy's traffic that is.")
    least_conversions: float = Field(
        description="The fewest conversions (units with a value) of a variant the policy uses."
    )
    days_without_served_allocation: int = Field(
        description="Reported days no served allocation is stored for: their observed "
        "shares stood in as the logging probabilities."
    )


class EvaluationOut(BaseModel):
    experiment_id: str
    metric: str = Field(description="conversion: per unit; value: value per unit.")
    estimator: Estimator
    value: float | None = Field(description="The chosen estimator's value (null: refused).")
    interval: tuple[float, float] | None
    trustworthy: bool = Field(description="Whether the interval can be taken at its word.")
    reasons: list[str] = Field(description="Why not, when it is not.")
    estimates: dict[str, EstimateOut | None]
    refused: dict[str, str] = Field(description="Estimators the support refuses, and why.")
    logged: LoggedOut
    diagnostics: DiagnosticsOut
    assumptions: list[str]
