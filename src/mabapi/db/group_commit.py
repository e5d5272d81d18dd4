"""Group commit: many requests' writes in one transaction, each acknowledged only after
that transaction has committed.

Why: a commit costs a WAL flush and a round trip per statement, and
the per-request transactions of assignment, conversions and daily totals serialised on
the rows they share (a variant's counters, an experiment's ingestion lock). Here each
request puts its item on a queue and waits; a writer task takes whatever is queued (up
to `max_batch` items), applies it in one transaction with a handful of multi-row
statements, commits, and only then resolves each request's future. While one batch
commits, the next one gathers, so batches grow with load and add no fixed delay when
the service is idle.

Nothing acknowledged is lost: a request's future resolves after COMMIT returns, and a
failed transaction fails every request of its batch (none of them was acknowledged).
Nothing is counted twice: the statements are the same idempotent ones the single-request
path used (unique keys, ON CONFLICT). One bad item must not sink its neighbours: `apply`
returns an error per item for the refusals it knows (AppError), and if the transaction
itself fails for one item's sake, the batch is retried one item per transaction so only
that item's request gets the error. Deadlocks and serialisation failures (other
processes' batches) are retried a few times, a connection the server dropped once.

State is per process and per event loop; nothing depends on another process: two
workers run two writers against the same unique keys and counters.

`one_writer` (SQLite): a lock the writers of a process share around each transaction.
SQLite has one write lock per database, and a connection that finds it taken sleeps in
SQLite's busy handler (1, 2, 5 ... 100 ms) instead of queueing: with three writers and two
batches each in flight, those sleeps were the p99 of assignment and conversions (195 and
378 ms at 16 clients, benchmarks/README.md). Waiting on an asyncio lock hands the write
lock over the moment it is free.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mabapi.db.engine import is_unavailable

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

# PostgreSQL's deadlock_detected and serialization_failure: the other transaction won;
# running the batch again is correct (it did not commit).
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
RETRIES = 3

Apply = Callable[[AsyncSession, Sequence[Item]], Awaitable[Sequence["Result | Exception"]]]


@dataclass(slots=True)
class _Pending(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result]


@dataclass(slots=True)
class _LoopState(Generic[Item, Result]):
    queue: list[_Pending[Item, Result]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class GroupCommit(Generic[Item, Result]):
    """`await writer.submit(item)` returns `apply`'s result for the item once committed
    (or raises its error). `parallel` batches may be in flight at once per process."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        apply: Apply[Item, Result],
        *,
        max_batch: int = 500,
        parallel: int = 2,
        after_commit: Callable[[], None] | None = None,
        observe_batch: Callable[[int], None] | None = None,
        name: str = "group-commit",
        one_writer: Callable[[], AbstractAsyncContextManager[object]] | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._apply = apply
        self._max_batch = max_batch
        self._parallel = parallel
        self._after_commit = after_commit
        self._observe_batch = observe_batch
        self._name = name
        self._one_writer = one_writer
        self._loops: dict[asyncio.AbstractEventLoop, _LoopState[Item, Result]] = {}

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None or not state.tasks:
            state = self._start(loop)
        future: asyncio.Future[Result] = loop.create_future()
        state.queue.append(_Pending(item, future))
        state.wake.set()
        return await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> _LoopState[Item, Result]:
        # A test suite may run several event loops in one process; each gets its writers.
        for old in [other for other in self._loops if other.is_closed()]:
            del self._loops[old]
        state: _LoopState[Item, Result] = _LoopState()
        self._loops[loop] = state
        for index in range(self._parallel):
            task = loop.create_task(self._run(state), name=f"{self._name}-{index}")
            state.tasks.add(task)
            task.add_done_callback(state.tasks.discard)
        return state

    async def close(self) -> None:
        """Stop this loop's writers after the queue is empty (requests drain first)."""
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is None:
            return
        for task in list(state.tasks):
            task.cancel()
        for pending in state.queue:
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("the server is shutting down"))
        state.queue.clear()

    async def _run(self, state: _LoopState[Item, Result]) -> None:
        while True:
            if not state.queue:
                state.wake.clear()
                await state.wake.wait()
                continue
            batch = state.queue[: self._max_batch]
            del state.queue[: self._max_batch]
            live = [pending for pending in batch if not pending.future.done()]
            if live:
                await self._commit(live)

    async def _commit(self, batch: list[_Pending[Item, Result]]) -> None:
        try:
            results = await self._transaction([pending.item for pending in batch])
        except asyncio.CancelledError:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(RuntimeError("the server is shutting down"))
            raise
        except Exception as error:
            if len(batch) > 1 and not is_unavailable(error):
                # Find the item the transaction failed for: one transaction each.
                logger.info("%s: batch of %d failed (%s); one by one", self._name,
                            len(batch), type(error).__name__)  # fmt: skip
                for pending in batch:
                    await self._commit([pending])
                return
            for pending in batch:
                _settle(pending.future, error)
            return
        if self._after_commit is not None:
            self._after_commit()
        if self._observe_batch is not None:
            self._observe_batch(len(batch))
        for pending, result in zip(batch, results, strict=True):
            _settle(pending.future, result)

    async def _transaction(self, items: list[Item]) -> Sequence[Result | Exception]:
        for attempt in range(RETRIES + 1):
            try:
                async with (
                    self._one_writer() if self._one_writer else nullcontext(),
                    self._sessionmaker() as session,  # closing rolls back
                ):
                    results = await self._apply(session, items)
                    await session.commit()
                    return results
            except sa_exc.DBAPIError as error:
                sqlstate = str(getattr(error.orig, "sqlstate", None) or "")
                # A pooled connection the server dropped (restart, failover; the engine
                # does not ping before use). Once more on a new connection: if the lost
                # COMMIT did land, the idempotent statements change nothing the second time.
                stale = error.connection_invalidated and attempt == 0
                if (sqlstate not in RETRYABLE_SQLSTATES and not stale) or attempt == RETRIES:
                    raise
                await asyncio.sleep(0.001 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover


def _settle(future: asyncio.Future[Result], outcome: Result | BaseException) -> None:
    if future.done():  # the request was cancelled (client gone): nothing to tell it
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
