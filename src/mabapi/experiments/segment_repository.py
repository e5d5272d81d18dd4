"""The segment registry: which segments an experiment has, and the cap on how many.
Written where rows naming a segment are accepted (ingestion, assignment)."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi.db.base import utcnow
from mabapi.db.dialect import insert_for
from mabapi.errors import ConflictError
from mabapi.experiments.models import ExperimentSegment


async def known(session: AsyncSession, experiment_id: str, segment: str) -> bool:
    """Whether the experiment has registered `segment` (one primary-key lookup)."""
    found = await session.scalar(
        select(ExperimentSegment.segment).where(
            ExperimentSegment.experiment_id == experiment_id, ExperimentSegment.segment == segment
        )
    )
    return found is not None


async def registered(session: AsyncSession, experiment_id: str) -> int:
    """How many segments the experiment has registered."""
    return int(
        await session.scalar(
            select(func.count()).where(ExperimentSegment.experiment_id == experiment_id)
        )
        or 0
    )


async def register(
    session: AsyncSession, wanted: Mapping[str, set[str]], *, cap: int
) -> dict[str, set[str]]:
    """Register the segments each experiment's write names; returns, per experiment, the
    new ones the cap left out (nothing of those is registered). Idempotent."""
    refused: dict[str, set[str]] = {}
    for experiment_id, names in sorted(wanted.items()):
        if not names:
            continue
        have = set(
            await session.scalars(
                select(ExperimentSegment.segment).where(
                    ExperimentSegment.experiment_id == experiment_id,
                    ExperimentSegment.segment.in_(sorted(names)),
                )
            )
        )
        new = sorted(names - have)
        if not new:
            continue
        room = max(cap - await registered(session, experiment_id), 0)
        if len(new) > room:
            refused[experiment_id] = set(new[room:])
            new = new[:room]
        if new:
            await session.execute(
                insert_for(session, ExperimentSegment).on_conflict_do_nothing(),
                [{"experiment_id": experiment_id, "segment": name, "created_at": utcnow()}
                 for name in new],
            )  # fmt: skip
    return refused


async def register_all(session: AsyncSession, pairs: set[tuple[str, str]]) -> None:
    """Register (experiment, segment) pairs the caller has already let in (units of new
    segments, allowed when their allocation was computed): one INSERT, sorted."""
    if pairs:
        now = utcnow()
        await session.execute(
            insert_for(session, ExperimentSegment).on_conflict_do_nothing(),
            [{"experiment_id": e, "segment": name, "created_at": now}
             for e, name in sorted(pairs)],
        )  # fmt: skip


async def register_or_refuse(
    session: AsyncSession, wanted: Mapping[str, set[str]], *, cap: int
) -> None:
    """`register`, refusing the whole write (409) if any segment is past the cap."""
    refused = await register(session, wanted, cap=cap)
    if refused:
        experiment_id, names = min(refused.items())
        raise ConflictError(
            f"experiment {experiment_id!r} has {cap} segments, the most allowed "
            f"(MABAPI_SEGMENTS_MAX_PER_EXPERIMENT); this write names {len(names)} more "
            f"(first: {min(names)!r}): post them without a segment, or raise the cap"
        )
