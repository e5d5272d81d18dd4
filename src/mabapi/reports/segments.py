"""The segments listing: every segment with data, its leader, a page at a time."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.allocations import segments
from mabapi.reports.summary import Summary, segment_fit, summarize


@dataclass(frozen=True, slots=True)
class SegmentPage:
    pooling: str
    overall_leader: str | None
    segments: list[segments.SegmentSummary]
    total: int  # segments with data, over every page
    units: float  # units of every segment, over every page
    next_after: str | None  # the last segment of this page, if more follow


async def list_segments(
    session: AsyncSession,
    *,
    experiment_id: str,
    overall: Summary | None = None,
    fits: segments.SegmentFits | None = None,
    after: str | None = None,
    limit: int | None = None,
) -> SegmentPage:
    """The segments (in name order, those after `after`, at most `limit`) with their
    leaders over the data so far, as each segment's split for tomorrow counts it (the
    summary's state: forgetting, late conversions, the variants traffic can reach).
    `overall`: the summary over all traffic, if the caller has it (else computed)."""
    summary = (
        overall
        if overall is not None and overall.segment is None
        else await summarize(session, experiment_id=experiment_id, fits=fits)
    )
    state = summary.state
    assert state is not None  # summarize always sets it
    experiment = state.experiment
    settings = state.settings
    variants = list(experiment.variants)
    # The variants traffic can reach (not paused, not stopped by a guardrail), as in
    # each segment's split.
    reachable = [item for item, on in zip(summary.variants, state.active, strict=True) if on]
    best = max(reachable, key=lambda item: item.probability_best, default=None)
    overall_leader = best.variant.id if best else None
    found, _, by_variant = await segment_fit(session, state, fits)
    rows = [i for i, name in enumerate(found.segments) if after is None or name > after]
    more = limit is not None and len(rows) > limit
    rows = rows[:limit] if limit is not None else rows
    return SegmentPage(
        pooling=settings.segments.pooling,
        overall_leader=overall_leader,
        segments=segments.leaders(
            found,
            by_variant,
            variants,
            active=state.active,
            rows=rows,
            overall_leader=overall_leader,
            higher_is_better=experiment.higher_is_better,
        ),
        total=len(found.segments),
        units=float(found.units.sum()),
        next_after=found.segments[rows[-1]] if more and rows else None,
    )
