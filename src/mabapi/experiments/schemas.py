"""Request and response bodies of the experiments domain."""

from __future__ import annotations

from datetime import date, datetime
from itertools import pairwise
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, model_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from mabapi.experiments.models import ExperimentStatus, MetricKind
from mabapi.schemas import (
    IDENTIFIER_SCHEMA,
    Count,
    Description,
    Identifier,
    IsoDate,
    Name,
    StrictModel,
    require_changes,
)
from mabapi.stats.policies import PolicyName

MAX_BATCH_ROWS = 10_000
MAX_VARIANTS = 100


Share = Annotated[float, Strict(), Field(gt=0.0, lt=1.0, allow_inf_nan=False)]
Positive = Annotated[float, Strict(), Field(gt=0.0, le=1e12, allow_inf_nan=False)]
Finite = Annotated[float, Strict(), Field(ge=-1e15, le=1e15, allow_inf_nan=False)]
Omitted = SkipJsonSchema[None]
PriorWeight = Annotated[float, Strict(), Field(ge=1e-3, le=1e9, allow_inf_nan=False)]
SumOfSquares = Annotated[float, Strict(), Field(ge=0.0, le=1e30, allow_inf_nan=False)]


class BurnInSettings(StrictModel):
    """Even split until every variant has this many units and successes, and the
    experiment this many days of data."""

    units: Annotated[int, Strict(), Field(ge=0, le=10**9)] = 0
    successes: Annotated[int, Strict(), Field(ge=0, le=10**9)] = 0
    days: Annotated[int, Strict(), Field(ge=0, le=3650)] = 0


# Conversions reported more than two months after exposure: a different product question.
MAX_DELAY_DAYS = 60


class PolicySettings(StrictModel):
    """How traffic is split. Every field has a default; send only what you change."""

    algorithm: PolicyName = PolicyName.THOMPSON
    floor: Annotated[float, Strict(), Field(ge=0.0, lt=1.0, allow_inf_nan=False)] = Field(
        default=0.0,
        description="Each variant's least share, additive: p_i = f + (1 - K f) w_i (K f >= 1: "
        "even). 0 by default: `exploration` keeps every variant measured at a fraction of "
        "the cost.",
    )
    exploration: Annotated[float, Strict(), Field(ge=0.0, lt=1.0, allow_inf_nan=False)] = Field(
        default=0.001,
        description="A total share kept for measuring, split evenly over the K variants (a "
        "floor of exploration / K each; the larger of the two floors applies).",
    )
    reserved: dict[Identifier, Share] = Field(
        default_factory=dict,
        description="Fixed shares for chosen variants, e.g. control 0.2.",
        json_schema_extra={"propertyNames": IDENTIFIER_SCHEMA},
    )
    burn_in: BurnInSettings = Field(default_factory=BurnInSettings)
    max_change: Annotated[float, Strict(), Field(gt=0.0, le=1.0)] | None = Field(
        default=None, description="Largest change of any variant's share per update."
    )
    window_days: Annotated[int, Strict(), Field(ge=1, le=3650)] | None = Field(
        default=None, description="Use only the last N days of data."
    )
    half_life_days: Annotated[float, Strict(), Field(gt=0.0, le=3650.0)] | None = Field(
        default=None, description="Exponential decay of old data (discounted Thompson)."
    )
    forgetting: Literal["none", "auto"] = Field(
        default="none",
        description="auto: forget the data before the last change a change-point test finds "
        "in any variant's rate (within the last year), and nothing otherwise. Not the "
        "default: a change common to all variants (weekly seasonality) also triggers it.",
    )
    epsilon: Annotated[float, Strict(), Field(ge=0.0, le=1.0)] = 0.1
    top_two_beta: Share = 0.5
    conversion_delay_days: Annotated[int, Strict(), Field(ge=0, le=MAX_DELAY_DAYS)] = Field(
        default=0,
        description="Conversions may be reported up to this many days after the exposure "
        "day. Recent days then count as effective exposures in proportion to the share of "
        "their conversions expected so far (learnt from the data unless "
        "conversion_delay_cdf is given). 0: every day's data is taken as complete.",
    )
    conversion_delay_cdf: (
        list[Annotated[float, Strict(), Field(gt=0.0, le=1.0, allow_inf_nan=False)]] | None
    ) = Field(
        default=None,
        description="The share of a day's conversions reported by the end of day 0, 1, ... "
        "L after exposure (conversion_delay_days + 1 values, non-decreasing, the last 1.0), "
        "e.g. [0.5, 0.8, 1.0]. Absent: learnt from how re-posted days grow and from "
        "exposure-to-conversion times.",
        max_length=MAX_DELAY_DAYS + 1,
    )

    @model_validator(mode="after")
    def _reserved_leaves_room(self) -> PolicySettings:
        if sum(self.reserved.values()) >= 1.0:
            raise PydanticCustomError(
                "reserved_total", "reserved shares must add up to less than 1"
            )
        return self

    @model_validator(mode="after")
    def _delay_curve_fits(self) -> PolicySettings:
        cdf = self.conversion_delay_cdf
        if cdf is None:
            return self
        if len(cdf) != self.conversion_delay_days + 1:
            raise PydanticCustomError(
                "delay_curve_length",
                "conversion_delay_cdf needs conversion_delay_days + 1 values ({days} + 1), "
                "one per day from the exposure day on; it has {length}",
                {"days": self.conversion_delay_days, "length": len(cdf)},
            )
        if any(later < earlier for earlier, later in pairwise(cdf)):
            raise PydanticCustomError("delay_curve_order", "conversion_delay_cdf must not decrease")
        if cdf[-1] != 1.0:
            raise PydanticCustomError(
                "delay_curve_end",
                "conversion_delay_cdf must end at 1.0: every conversion is reported by day "
                "conversion_delay_days",
            )
        return self


class PriorSettings(StrictModel):
    """Beta(alpha, beta) for conversions; for values also mu and kappa of the
    Normal-Inverse-Gamma prior (alpha and beta then shape its variance)."""

    # Bounded so the posterior stays something quadrature can integrate: below 1e-3 a
    # Beta prior piles its mass onto 0 and 1 (found by schemathesis: alpha = beta = 5e-324
    # made the integration fail); above 1e9 it would outweigh any data.
    alpha: PriorWeight = 1.0
    beta: PriorWeight = 1.0
    mu: Finite = 0.0
    kappa: PriorWeight = 1.0


class StopRuleSettings(StrictModel):
    probability_threshold: Annotated[float, Strict(), Field(ge=0.5, lt=1.0)] = Field(
        default=0.975,
        description="P(best) a leader needs at the first look (after min_days); each later "
        "week needs more (alpha spending), and more rivals more (Bonferroni).",
    )
    value_remaining_threshold: Annotated[float, Strict(), Field(gt=0.0, lt=1.0)] = 0.01
    min_days: Annotated[int, Strict(), Field(ge=0, le=3650)] = 7
    equivalence_margin: Annotated[float, Strict(), Field(gt=0.0, lt=1.0)] = Field(
        default=0.01,
        description="stop_no_difference only when every variant's relative difference to "
        "the leader is inside +- this (95% credible interval).",
    )
    ship_loss_threshold: Annotated[float, Strict(), Field(ge=0.0, lt=1.0)] = Field(
        default=0.005,
        description="stop_ship when shipping the safest variant is expected to cost at most "
        "this share of its metric against the best variant (expected loss / its mean; "
        "0 turns ship advice off).",
    )


class SegmentSettings(StrictModel):
    pooling: Literal["partial", "none", "full"] = Field(
        default="partial",
        description="How a segment's allocation uses the other segments' data: partial "
        "(its own data shrunk toward each variant's overall rate as much as segments are "
        "seen to agree), none (independent bandits), full (ignore segments).",
    )


class ExperimentSettings(StrictModel):
    policy: PolicySettings = Field(default_factory=PolicySettings)
    segments: SegmentSettings = Field(default_factory=SegmentSettings)
    prior: PriorSettings = Field(default_factory=PriorSettings)
    stop_rule: StopRuleSettings = Field(default_factory=StopRuleSettings)


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


class StatusOut(BaseModel):
    status: Literal["success"] = "success"


class BatchResultOut(BaseModel):
    status: Literal["success"] = "success"
    rows: int


class BreachOut(BaseModel):
    """A variant's open guardrail breach: what its allocation obeys until it is cleared."""

    metric_id: str
    probability_harm: float = Field(description="P(harm beyond the margin) at the breach.")
    action: Literal["stop", "floor"]
    since: date = Field(description="The day of the check that found it.")


class SegmentOut(BaseModel):
    segment: str
    units: float = Field(description="Units seen in the segment (all variants).")
    leader: str | None = Field(description="The variant most likely best in the segment.")
    leader_probability_best: float | None
    probability_best: dict[str, float] = Field(
        description="Exact P(best) of each active variant in the segment, under the pooling."
    )
    differs_from_overall: bool = Field(
        description="True when the segment's leader is not the leader over all traffic."
    )


class SegmentsOut(BaseModel):
    experiment_id: str
    pooling: Literal["partial", "none", "full"]
    overall_leader: str | None
    segments: list[SegmentOut]
    total: int = Field(description="Segments with data, over every page.")
    next_cursor: str | None = Field(
        default=None,
        description="More segments follow: pass it as `cursor` for the next page. Null: the last.",
    )


class ClearedOut(BaseModel):
    experiment_id: str
    metric_id: str
    cleared: int = Field(description="How many open breaches were cleared (0: none was open).")


class DelayCurveOut(BaseModel):
    """The late-conversion curve an answer used (docs/STATISTICS.md, "Late conversions")."""

    source: Literal["off", "given", "learnt", "none"] = Field(
        description="off: conversion_delay_days is 0; given: conversion_delay_cdf; learnt: "
        "from the revision history (`days` exposure days); none: a delay is set but there "
        "is not enough revision history yet, so nothing is corrected."
    )
    days: int = Field(description="Exposure days the learnt curve rests on (0 otherwise).")
    cdf: list[float] | None = Field(
        description="Share of a day's conversions reported by each age 0..L (null: none)."
    )
    note: str


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
    inputs: dict[str, dict[str, int | float]] = Field(
        description="Totals per variant dated strictly before `date` (fractional when old "
        "days are down-weighted by a half-life)."
    )
    burned_in: StrictBool = Field(description="False while the burn-in keeps an even split.")
    live: dict[str, float] = Field(
        description="Percent of traffic real-time assignment (`POST /experiments/{id}/assign`) "
        "serves now: every observation so far counts, today's and live ones included, so it "
        "can differ from `allocations`, which plans `date` from the days before it. Up to "
        "MABAPI_ALLOCATION_CACHE_SECONDS old."
    )
    guardrails: dict[str, BreachOut] = Field(
        default_factory=dict,
        description="Variants with an open guardrail breach (stop: no new traffic; floor: "
        "only their floor), by variant id.",
    )
    segment: str | None = Field(
        default=None,
        description="The segment this split is for; null: all traffic (no segment asked, "
        "one never seen, or pooling full).",
    )
    delay_curve: DelayCurveOut | None = Field(
        default=None, description="The late-conversion curve this split used, and why."
    )


class VariantIn(StrictModel):
    id: Identifier
    name: Name | None = None
    is_control: StrictBool = False


# PATCH fields may be left out but not sent as null: `| Omitted` keeps null out of the
# OpenAPI document (the validators below refuse it with a clear message).
class VariantPatch(StrictModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    name: Name | Omitted = None
    active: StrictBool | Omitted = Field(default=None, description="false pauses the variant.")
    is_control: StrictBool | Omitted = None

    @model_validator(mode="after")
    def _something_to_change(self) -> VariantPatch:
        require_changes(self, "name, active, is_control")
        return self


class VariantOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    is_control: bool
    active: bool


MAX_GUARDRAILS = 20


class GuardrailIn(StrictModel):
    """A second metric no variant may harm: a variant whose posterior probability of being
    worse than the control by more than `max_relative_harm` reaches `probability` (and
    passes the sequential guard over daily checks) breaches it, and `action` is taken."""

    metric_id: Identifier = Field(description="Names this metric in posted rows and conversions.")
    kind: MetricKind = MetricKind.CONVERSION
    higher_is_better: StrictBool = Field(
        default=False,
        description="false (the default): more is worse (refunds, errors, unsubscribes).",
    )
    max_relative_harm: Annotated[float, Strict(), Field(ge=0.0, lt=1.0)] = Field(
        default=0.0,
        description="Harm smaller than this share of the control's value is tolerated "
        "(0.05: up to 5% worse).",
    )
    probability: Annotated[float, Strict(), Field(ge=0.5, le=0.999)] = Field(
        default=0.95,
        description="Posterior probability of harm beyond the margin that breaches; 1 - "
        "probability is also the chance, over the whole experiment, that a variant doing "
        "no harm ever breaches (the sequential guard).",
    )
    action: Literal["stop", "floor"] = Field(
        default="stop",
        description="stop: the variant gets no new traffic; floor: only its floor.",
    )
    min_units: Annotated[int, Strict(), Field(ge=0, le=10**9)] = Field(
        default=100, description="Units the variant and the control need before any check."
    )


Guardrails = Annotated[list[GuardrailIn], Field(max_length=MAX_GUARDRAILS)]


def _unique_guardrails(guardrails: list[GuardrailIn] | None) -> None:
    ids = [g.metric_id for g in guardrails or []]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise PydanticCustomError(
            "duplicate_guardrails",
            "guardrail metric_ids must be unique; repeated: {ids}",
            {"ids": ", ".join(repeated)},
        )


class ExperimentIn(StrictModel):
    id: Identifier
    name: Name | None = None
    description: Description = ""
    status: ExperimentStatus = ExperimentStatus.RUNNING
    variants: list[VariantIn] = Field(default_factory=list, max_length=MAX_VARIANTS)
    metric_kind: MetricKind = MetricKind.CONVERSION
    higher_is_better: StrictBool = True
    settings: ExperimentSettings = Field(default_factory=ExperimentSettings)
    guardrails: Guardrails = Field(default_factory=list)

    @model_validator(mode="after")
    def _variants_consistent(self) -> ExperimentIn:
        _unique_guardrails(self.guardrails)
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
        unknown = sorted(set(self.settings.policy.reserved) - set(ids))
        if unknown:
            raise PydanticCustomError(
                "unknown_reserved",
                "settings.policy.reserved names unknown variant(s): {ids}",
                {"ids": ", ".join(unknown)},
            )
        return self


class ExperimentPatch(StrictModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    name: Name | Omitted = None
    description: Description | Omitted = None
    status: ExperimentStatus | Omitted = None
    higher_is_better: StrictBool | Omitted = None
    metric_kind: MetricKind | Omitted = None
    settings: ExperimentSettings | Omitted = Field(
        default=None, description="Replaces the whole settings object (omitted parts reset)."
    )
    guardrails: Guardrails | Omitted = Field(
        default=None, description="Replaces the whole list of guardrails ([] removes them)."
    )

    @model_validator(mode="after")
    def _something_to_change(self) -> ExperimentPatch:
        require_changes(
            self, "name, description, status, higher_is_better, metric_kind, settings, guardrails"
        )
        _unique_guardrails(self.guardrails)
        return self


class ExperimentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    description: str
    status: ExperimentStatus
    algorithm: str
    metric_kind: MetricKind
    higher_is_better: bool
    settings: ExperimentSettings
    guardrails: list[GuardrailIn]
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


class CredibleInterval(BaseModel):
    lower: float
    upper: float
    mass: float


class UpliftOut(BaseModel):
    """Relative difference to the control, (theta - theta_control) / |theta_control|."""

    mean: float
    lower: float
    upper: float
    mass: float


class StratifiedOut(BaseModel):
    """Each day's mean weighted by that day's share of all traffic (no Simpson bias)."""

    mean: float | None
    standard_error: float | None


class VariantSummary(BaseModel):
    variant_id: str
    is_control: bool
    active: bool
    impressions: int
    successes: int
    value_sum: float
    effective_impressions: float = Field(
        description="Impressions whose conversions should have been reported by now: the "
        "impressions, unless conversion_delay_days corrects recent days for conversions "
        "not yet reported."
    )
    conversion_rate: float | None = Field(
        description="successes / effective impressions; null if none."
    )
    mean: float | None = Field(
        description="Observed metric per effective unit: the rate, or value per unit for "
        "value metrics."
    )
    posterior_mean: float
    credible_interval: CredibleInterval
    probability_best: float
    expected_loss: float | None = Field(
        description="E[best - this], in the metric's units: the cost of choosing this one."
    )
    probability_beats_control: float | None
    uplift: UpliftOut | None
    stratified: StratifiedOut


class RecommendationOut(BaseModel):
    """What to do, and which kind of answer it is (docs/STATISTICS.md, "Stop advice")."""

    action: Literal["continue", "stop_winner", "stop_ship", "stop_no_difference"] = Field(
        description="stop_winner: `winner` is better (a claim, P(best) at the look's "
        "threshold); stop_ship: ship `winner`, whose expected loss is within "
        "stop_rule.ship_loss_threshold (not a claim that it is better: equal variants "
        "get this too); stop_no_difference: no variant differs by more than the "
        "equivalence margin, ship either; continue: keep the experiment running."
    )
    winner: str | None = Field(description="The variant stop_winner or stop_ship names.")
    claims_better: bool = Field(
        description="True only for stop_winner: act on `winner` being better only then."
    )
    reason: str
    days_to_decision: int | None = Field(
        description="About how many more days until advice other than continue, if today's "
        "estimates hold and today's traffic continues (0: the advice is here; null: not "
        "within a year, or a guardrail breach on the leader needs a person first)."
    )


class GainOut(BaseModel):
    """Successes (or value) earned beyond an even split of the same traffic: the units
    mabapi's allocation served (real-time units, and reported days an allocation was
    served for; imported history is not compared)."""

    mean: float
    lower: float
    upper: float
    mass: float
    unit: Literal["conversions", "value"]
    units: dict[str, int] = Field(
        default_factory=dict,
        description="Per variant, the units compared: those mabapi's allocation served.",
    )


class SampleRatioOut(BaseModel):
    observed: dict[str, float]
    expected: dict[str, float]
    chi_square: float | None
    p_value: float
    mismatch: StrictBool = Field(description="True when p < 0.001: check your traffic splitting.")


class GuardrailVariantOut(BaseModel):
    variant_id: str
    units: float
    successes: float
    mean: float | None = Field(description="The guardrail's rate (or value per unit).")
    relative_difference: UpliftOut | None = Field(
        description="(variant - control) / |control| with its 95% interval; null for the "
        "control and without data."
    )
    probability_harm: float | None = Field(
        description="P(worse than the control by more than max_relative_harm)."
    )
    breach: BreachOut | None


class GuardrailSummaryOut(BaseModel):
    guardrail: GuardrailIn
    control_id: str = Field(description="The variant the others are compared with.")
    check: int = Field(description="How many daily checks the data spans (1 on its 2nd day).")
    variants: list[GuardrailVariantOut]


class SummaryOut(BaseModel):
    experiment_id: str
    segment: str | None = Field(default=None, description="The segment summarised; null: all.")
    metric_kind: MetricKind
    higher_is_better: bool
    algorithm: str
    prior: dict[str, float]
    days_of_data: int
    variants: list[VariantSummary]
    value_remaining: float | None = Field(
        description="95th percentile of the relative gain still possible over the leader."
    )
    recommendation: RecommendationOut
    stop_rule: StopRuleSettings
    gain_vs_even_split: GainOut
    sample_ratio_mismatch: SampleRatioOut | None
    monte_carlo: dict[str, int] = Field(
        description="Seed and draws of the posterior samples behind uplift, value remaining "
        "and gain (probabilities and expected loss are exact)."
    )
    guardrails: list[GuardrailSummaryOut] = Field(default_factory=list)
    delay_curve: DelayCurveOut | None = Field(
        default=None, description="The late-conversion curve the summary used, and why."
    )
