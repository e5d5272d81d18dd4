"""What a running app holds, typed: the engine, sessions, caches, group-commit writers,
keys and rate limiter of one process on one event loop.

`app.py` builds it (`start_runtime`, from the lifespan or on the first request when the
lifespan never ran) and closes it; everything else reaches it through `runtime_of`, so
"go to definition" leads from any request handler to the object it uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mabapi.access.limits import RateLimiter
from mabapi.access.service import KeyRing
from mabapi.allocations.cache import AnswerCache
from mabapi.allocations.segments import SegmentFits
from mabapi.assignments.cache import AllocationCache, UnitMemo
from mabapi.db.group_commit import GroupCommit
from mabapi.experiments.owners import Owners
from mabapi.settings import Settings
from mabapi.webhooks.runner import WebhookRunner


@dataclass(slots=True)
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    answers: AnswerCache[Any, Any]  # GET /allocations answers
    allocation_cache: AllocationCache  # the allocation assignment draws from
    assignment_memo: UnitMemo  # units whose variant this process has seen
    conversion_memo: UnitMemo  # units whose (once-per-unit) conversion is counted
    keyring: KeyRing
    owners: Owners  # the project of each experiment, cached
    rate_limiter: RateLimiter
    assign_writer: GroupCommit[Any, Any]
    convert_writer: GroupCommit[Any, Any]
    ingest_writer: GroupCommit[Any, Any]
    segment_fits: SegmentFits  # each experiment's pooled segment model, shared
    webhooks: WebhookRunner | None = None  # the delivery loop (when this process runs one)


def runtime_of(app: Any) -> Runtime:
    """The runtime of `app` (a FastAPI app; started: LazyStart runs before any handler)."""
    runtime: Runtime = app.state.runtime
    return runtime
