"""Scenario files (TOML) and the policies a simulation compares."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mabapi.simulation.environments import Environment
from mabapi.simulation.runner import PolicySpec
from mabapi.simulation.segments import SegmentScenario
from mabapi.stats.decision import StopRule
from mabapi.stats.history import Forgetting
from mabapi.stats.policies import BurnIn, Controls, PolicyConfig, PolicyName

EXAMPLE = """\
# mabapi simulate --scenario this.toml
name = "two arms, 10% vs 12%"
rates = [0.10, 0.12]
days = 30
traffic_per_day = 2000
seeds = 200
policies = ["thompson", "top_two_thompson", "uniform"]
# optional:
# switch_day = 15            # rates become switch_rates from this day (0-based)
# switch_rates = [0.12, 0.10]
# value_log_mean = [3.5, 3.6] # log-normal order value per conversion (value metric)
# weekly_amplitude = 0.2
# floor = 0.0              # least share per arm (default 0)
# exploration = 0.001       # total share kept for measuring, split over the arms
# half_life_days = 7
# window_days = 7
# forgetting = "auto"       # forget only when a change-point test fires
# reporting_delay = [0.5, 0.3, 0.2]  # conversions reported 0, 1, 2 days late
# conversion_delay_days = 2  # the policies correct for it (curve learnt)
# burn_in_units = 100
# cadence = "event"         # update after every unit instead of once a day
#
# Segments instead of rates: each audience's share of the traffic and its rates; the
# three poolings (partial, none = a bandit per segment, full = one bandit) side by side.
# [[segments]]
# name = "desktop"
# share = 0.6
# rates = [0.10, 0.12]
# [[segments]]
# name = "mobile"
# share = 0.4
# rates = [0.12, 0.10]
"""


@dataclass(frozen=True)
class Scenario:
    environment: Environment
    days: int
    traffic_per_day: int
    seeds: int
    policies: tuple[PolicySpec, ...]
    stop_rule: StopRule = field(default_factory=StopRule)
    cadence: Literal["daily", "event"] = "daily"
    # Late conversions: the chance that a conversion is reported 0, 1, ... days late.
    reporting: tuple[float, ...] | None = None


def policy_spec(
    name: str,
    *,
    floor: float = 0.0,
    exploration: float = 0.001,
    half_life_days: float | None = None,
    window_days: int | None = None,
    burn_in_units: int = 0,
    epsilon: float = 0.1,
    forgetting: str = "none",
    conversion_delay_days: int = 0,
) -> PolicySpec:
    if conversion_delay_days < 0:
        raise ValueError("conversion_delay_days must be 0 or more")
    if forgetting not in ("none", "auto"):
        raise ValueError(f"forgetting is 'none' or 'auto', not {forgetting!r}")
    try:
        policy = PolicyName(name)
    except ValueError:
        choices = ", ".join(p.value for p in PolicyName)
        raise ValueError(f"unknown policy {name!r}; choose from {choices}") from None
    return PolicySpec(
        name=name,
        config=PolicyConfig(policy, epsilon=epsilon),
        controls=Controls(
            floor=floor, exploration=exploration, burn_in=BurnIn(units=burn_in_units)
        ),
        forgetting=Forgetting(
            window_days=window_days, half_life_days=half_life_days, auto=forgetting == "auto"
        ),
        delay_days=conversion_delay_days,
    )


def from_mapping(data: dict[str, Any]) -> Scenario:
    """Build a scenario from a TOML table (see EXAMPLE); raises ValueError on bad input."""
    known = {
        "name", "rates", "days", "traffic_per_day", "seeds", "policies", "switch_day",
        "switch_rates", "value_log_mean", "value_log_sigma", "weekly_amplitude", "floor",
        "exploration", "half_life_days", "window_days", "burn_in_units", "epsilon", "cadence",
        "forgetting", "reporting_delay", "conversion_delay_days",
    }  # fmt: skip
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown scenario keys: {', '.join(unknown)}")
    if "rates" not in data:
        raise ValueError("a scenario needs rates = [...]")
    environment = Environment(
        rates=tuple(float(r) for r in data["rates"]),
        switch_day=data.get("switch_day"),
        switch_rates=tuple(data["switch_rates"]) if "switch_rates" in data else None,
        value_log_mean=tuple(data["value_log_mean"]) if "value_log_mean" in data else None,
        value_log_sigma=float(data.get("value_log_sigma", 0.5)),
        weekly_amplitude=float(data.get("weekly_amplitude", 0.0)),
        name=str(data.get("name", "scenario")),
    )
    policies = tuple(
        policy_spec(
            name,
            floor=float(data.get("floor", 0.0)),
            exploration=float(data.get("exploration", 0.001)),
            half_life_days=data.get("half_life_days"),
            window_days=data.get("window_days"),
            burn_in_units=int(data.get("burn_in_units", 0)),
            epsilon=float(data.get("epsilon", 0.1)),
            forgetting=str(data.get("forgetting", "none")),
            conversion_delay_days=int(data.get("conversion_delay_days", 0)),
        )
        for name in data.get("policies", ["thompson", "uniform"])
    )
    days, traffic, seeds = (int(data.get(k, d)) for k, d in
                            (("days", 30), ("traffic_per_day", 2000), ("seeds", 50)))  # fmt: skip
    if days < 1 or traffic < 1 or seeds < 1:
        raise ValueError("days, traffic_per_day and seeds must be positive")
    cadence = data.get("cadence", "daily")
    if cadence not in ("daily", "event"):
        raise ValueError("cadence must be daily or event")
    reporting = data.get("reporting_delay")
    if reporting is not None:
        shares = [float(x) for x in reporting]
        if not shares or any(x < 0 for x in shares) or sum(shares) <= 0:
            raise ValueError("reporting_delay: non-negative chances, one per day of delay")
        if cadence != "daily":
            raise ValueError("reporting_delay needs cadence = daily")
        reporting = tuple(shares)
    return Scenario(environment, days, traffic, seeds, policies, cadence=cadence,
                    reporting=reporting)  # fmt: skip


def load(path: Path) -> Scenario:
    with path.open("rb") as handle:
        return from_mapping(tomllib.load(handle))


@dataclass(frozen=True)
class SegmentedScenario:
    name: str
    scenario: SegmentScenario
    segment_names: tuple[str, ...]
    seeds: int


def segmented_from_mapping(data: dict[str, Any]) -> SegmentedScenario:
    """A scenario with [[segments]] tables (see EXAMPLE); raises ValueError on bad input."""
    known = {"name", "segments", "days", "traffic_per_day", "seeds"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"unknown keys with segments: {', '.join(unknown)} (a segmented scenario takes "
            "name, days, traffic_per_day, seeds and [[segments]] with name, share, rates)"
        )
    items = data["segments"]
    if not isinstance(items, list) or not items:
        raise ValueError("segments: one [[segments]] table per audience")
    names, shares, rates = [], [], []
    for index, item in enumerate(items):
        if set(item) - {"name", "share", "rates"} or "share" not in item or "rates" not in item:
            raise ValueError(f"segments[{index}] needs share and rates (and a name)")
        names.append(str(item.get("name", f"segment {index + 1}")))
        shares.append(float(item["share"]))
        rates.append(tuple(float(r) for r in item["rates"]))
    total = sum(shares)
    if total <= 0 or any(s < 0 for s in shares):
        raise ValueError("segment shares must be non-negative and add up to more than 0")
    if any(not 0 <= r <= 1 for row in rates for r in row):
        raise ValueError("segment rates are conversion rates, between 0 and 1")
    days, traffic, seeds = (int(data.get(k, d)) for k, d in
                            (("days", 30), ("traffic_per_day", 5000), ("seeds", 50)))  # fmt: skip
    if days < 1 or traffic < 1 or seeds < 1:
        raise ValueError("days, traffic_per_day and seeds must be positive")
    scenario = SegmentScenario(
        tuple(s / total for s in shares), tuple(rates), days=days, units_per_day=traffic
    )
    return SegmentedScenario(str(data.get("name", "segments")), scenario, tuple(names), seeds)


def load_any(path: Path) -> Scenario | SegmentedScenario:
    """A scenario file: with [[segments]], a segmented one."""
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    return segmented_from_mapping(data) if "segments" in data else from_mapping(data)
