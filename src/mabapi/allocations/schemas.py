"""Response bodies of allocations: the split served and the delay curve it used."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, Field, StrictBool

from mabapi.guardrails.schemas import BreachOut


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
