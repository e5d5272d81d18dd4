"""Request and response bodies of the experiments domain."""

from __future__ import annotations

import json
from datetime import datetime
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from mabapi.experiments.models import ExperimentStatus, MetricKind
from mabapi.schemas import (
    IDENTIFIER_SCHEMA,
    Description,
    Identifier,
    Name,
    StrictModel,
    require_changes,
)
from mabapi.stats.policies import PolicyName

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
        "0 turns ship advice off). Value metrics allow half of it in the first week of "
        "looks (days min_days to min_days + 6).",
    )


class SegmentSettings(StrictModel):
    pooling: Literal["partial", "none", "full"] = Field(
        default="partial",
        description="How a segment's allocation uses the other segments' data: partial "
        "(its own data shrunk toward each variant's overall rate as much as segments are "
        "seen to agree), none (independent bandits), full (ignore segments).",
    )


class OpenFeatureSettings(StrictModel):
    bulk: StrictBool = Field(
        default=False,
        description="OFREP bulk evaluation (POST /ofrep/v1/evaluate/flags) includes this "
        "experiment when the context names no `flags`: every such evaluation assigns the "
        "unit to it (one exposure, sticky), so opt in only experiments every page shows.",
    )


class ExperimentSettings(StrictModel):
    policy: PolicySettings = Field(default_factory=PolicySettings)
    segments: SegmentSettings = Field(default_factory=SegmentSettings)
    prior: PriorSettings = Field(default_factory=PriorSettings)
    stop_rule: StopRuleSettings = Field(default_factory=StopRuleSettings)
    openfeature: OpenFeatureSettings = Field(default_factory=OpenFeatureSettings)


class StatusOut(BaseModel):
    status: Literal["success"] = "success"


# A variant's value (what an OpenFeature evaluation returns): a string (at most
# MAX_VALUE_STRING characters), a number, a boolean or a JSON object (at most
# MAX_VALUE_KEYS keys, MAX_VALUE_JSON characters as JSON), one type per experiment.
MAX_VALUE_STRING = 4096
MAX_VALUE_KEYS = 64
MAX_VALUE_JSON = 32_768


def _bounded_value(value: Any) -> Any:
    try:
        size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False))
    except ValueError:
        raise PydanticCustomError("value_not_json", "a variant value must be finite JSON") from None
    if size > MAX_VALUE_JSON:
        raise PydanticCustomError(
            "value_too_large", "a variant value is at most {limit} characters as JSON ({size})",
            {"limit": MAX_VALUE_JSON, "size": size},
        )  # fmt: skip
    return value


VariantValue = Annotated[
    StrictBool
    | Annotated[int, Strict(), Field(ge=-(2**53), le=2**53)]
    | Annotated[float, Strict(), Field(allow_inf_nan=False)]
    | Annotated[str, Strict(), Field(max_length=MAX_VALUE_STRING)]
    | Annotated[dict[str, Any], Field(max_length=MAX_VALUE_KEYS)],
    AfterValidator(_bounded_value),
]


def value_type(value: Any) -> str | None:
    """The OpenFeature type of a variant value: boolean, number, string or object."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else "object"


class VariantIn(StrictModel):
    id: Identifier
    name: Name | None = None
    is_control: StrictBool = False
    value: VariantValue | None = Field(
        default=None,
        description="What a flag evaluation (OpenFeature, OFREP) returns for this variant: "
        "a string (at most 4,096 characters), number, boolean or JSON object (at most 64 "
        "keys, 32,768 characters as JSON), one type per experiment. Absent: the variant's id.",
    )


# PATCH fields may be left out but not sent as null: `| Omitted` keeps null out of the
# OpenAPI document (the validators below refuse it with a clear message).


class VariantPatch(StrictModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    name: Name | Omitted = None
    active: StrictBool | Omitted = Field(default=None, description="false pauses the variant.")
    is_control: StrictBool | Omitted = None
    value: VariantValue | Omitted = Field(
        default=None, description="A new value (the type of the experiment's other values)."
    )

    @model_validator(mode="after")
    def _something_to_change(self) -> VariantPatch:
        require_changes(self, "name, active, is_control, value")
        return self


class VariantOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    is_control: bool
    active: bool
    value: Any = Field(default=None, description="The variant's value; null: its id.")


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
        types = sorted({t for v in self.variants if (t := value_type(v.value)) is not None})
        if len(types) > 1:
            raise PydanticCustomError(
                "mixed_values", "variant values must all have one type; these mix {types}",
                {"types": ", ".join(types)},
            )  # fmt: skip
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
