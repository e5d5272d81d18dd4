"""Response bodies of guardrails: breaches and their clearing."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, Field


class BreachOut(BaseModel):
    """A variant's open guardrail breach: what its allocation obeys until it is cleared."""

    metric_id: str
    probability_harm: float = Field(description="P(harm beyond the margin) at the breach.")
    action: Literal["stop", "floor"]
    since: date = Field(description="The day of the check that found it.")


class ClearedOut(BaseModel):
    experiment_id: str
    metric_id: str
    cleared: int = Field(description="How many open breaches were cleared (0: none was open).")
