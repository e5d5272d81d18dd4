"""`mabapi evaluate`: what another split would have earned (off-policy evaluation)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from mabapi.cli_client import Key, SegmentOption, Url, connect, failed, out
from mabapi.evaluation.schemas import EvaluationOut


def parse_policy(specs: list[str]) -> dict[str, Any]:
    """["a=0.5,b=0.5"] -> {"a": 0.5, "b": 0.5}; a "segment:" prefix makes that segment's
    split (["mobile:a=1", "b=1"] -> {"segments": {"mobile": {"a": 1}}, "default": {"b": 1}})."""
    default: dict[str, float] = {}
    segments: dict[str, dict[str, float]] = {}
    for spec in specs:
        segment, _, split = spec.rpartition(":")
        into = segments.setdefault(segment, {}) if segment else default
        for part in split.split(","):
            variant, sep, share = part.partition("=")
            try:
                into[variant.strip()] = float(share)
            except ValueError:
                raise typer.BadParameter(
                    f"{part!r}: write each share as variant=probability, e.g. a=0.5,b=0.5"
                ) from None
            if not sep:
                raise typer.BadParameter(f"{part!r}: write variant=probability")
    if segments:
        return {"segments": segments, "default": default}
    return default


def show(answer: EvaluationOut) -> None:
    table = Table("estimator", "per unit", "95% interval", title=f"{answer.experiment_id}: what if")
    for name, estimate in answer.estimates.items():
        chosen = " (chosen)" if name == answer.estimator else ""
        if estimate is None:
            table.add_row(name + chosen, "refused", answer.refused.get(name, ""))
        else:
            low, high = estimate.interval
            table.add_row(name + chosen, f"{estimate.value:.5g}", f"[{low:.5g}, {high:.5g}]")
    table.add_row("served (logged)", f"{answer.logged.value:.5g}", f"{answer.logged.units:,} units")
    out.print(table)
    d = answer.diagnostics
    out.print(
        f"effective sample size {d.effective_sample_size:,.0f}, largest weight "
        f"{d.max_weight:.3g}, mean weight {d.mean_weight:.3f}"
    )
    if answer.trustworthy:
        out.print("trustworthy: yes")
    else:
        out.print("trustworthy: no: " + "; ".join(answer.reasons))


def evaluate(
    experiment_id: Annotated[str, typer.Argument(help="The experiment.")],
    policy: Annotated[
        list[str],
        typer.Option(
            "--policy",
            help="Target split, e.g. a=0.5,b=0.5; repeat with a segment: prefix for a "
            "segment's own (mobile:a=1,b=0).",
        ),
    ],
    estimator: Annotated[
        str, typer.Option("--estimator", help="dm, ipw, snipw, dr, switch-dr.")
    ] = "dr",
    start: Annotated[str | None, typer.Option("--from", help="First day (YYYY-MM-DD).")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Last day (YYYY-MM-DD).")] = None,
    segment: SegmentOption = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """What another split would have earned per unit on the units logged so far, by each
    estimator, with the diagnostics that say whether to trust it."""
    target = parse_policy(policy)
    try:
        with connect(url, key) as client:
            answer = client.evaluate(experiment_id, target, estimator, start, end, segment)
    except Exception as error:
        raise failed(error) from error
    show(answer)
