"""Response bodies of reports: the summary, its parts, and the segments listing."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, StrictBool

from mabapi.allocations.schemas import DelayCurveOut
from mabapi.experiments.models import MetricKind
from mabapi.experiments.schemas import GuardrailIn, StopRuleSettings
from mabapi.guardrails.schemas import BreachOut


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
        description="The impressions the posterior counts: those whose conversions should "
        "have been reported by now (conversion_delay_days corrects recent days), with old "
        "days down-weighted or dropped by forgetting (window_days, half_life_days, auto)."
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
