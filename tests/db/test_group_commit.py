"""The group-commit writer on its own (mabapi/db/group_commit.py), with a fake session
whose commit can fail: batching, acknowledgement only after COMMIT, per-item refusals,
isolation of an item that breaks its transaction, retries of deadlocks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc

from mabapi.db.group_commit import GroupCommit
from mabapi.errors import ConflictError


class FakeSession:
    def __init__(self, log: Log) -> None:
        self.log = log
        self.committed = False

    async def __aenter__(self) -> FakeSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.log.closed += 1

    async def commit(self) -> None:
        if self.log.commit_failures:
            self.log.commit_failures -= 1
            raise sa_exc.OperationalError("COMMIT", {}, ConnectionError("server closed"))
        await asyncio.sleep(0.001)  # a flush to disk: requests pile up meanwhile
        self.committed = True
        self.log.commits.append(list(self.log.pending))
        self.log.pending.clear()


class Log:
    def __init__(self) -> None:
        self.commits: list[list[int]] = []
        self.pending: list[int] = []
        self.applied: list[list[int]] = []
        self.commit_failures = 0
        self.closed = 0

    def sessionmaker(self) -> FakeSession:
        self.pending.clear()  # an uncommitted transaction's writes are gone
        return FakeSession(self)


class DeadlockError(Exception):
    sqlstate = "40P01"


def writer(log: Log, apply: Any = None, **kwargs: Any) -> GroupCommit[int, int]:
    async def double(session: Any, items: Sequence[int]) -> list[int | Exception]:
        log.applied.append(list(items))
        log.pending.extend(items)
        return [item * 2 for item in items]

    return GroupCommit(log.sessionmaker, apply or double, **kwargs)  # type: ignore[arg-type]


class TestBatching:
    async def test_concurrent_requests_share_transactions_and_get_their_own_answers(
        self,
    ) -> None:
        log = Log()
        commit = writer(log)
        answers = await asyncio.gather(*(commit.submit(n) for n in range(200)))
        assert answers == [n * 2 for n in range(200)]
        assert sorted(n for batch in log.commits for n in batch) == list(range(200))
        assert len(log.commits) < 20  # not one transaction per request
        await commit.close()

    async def test_a_batch_never_exceeds_max_batch(self) -> None:
        log = Log()
        commit = writer(log, max_batch=7)
        await asyncio.gather(*(commit.submit(n) for n in range(50)))
        assert max(len(batch) for batch in log.applied) <= 7
        await commit.close()

    async def test_an_idle_writer_answers_a_lone_request_without_waiting(self) -> None:
        log = Log()
        commit = writer(log)
        assert await asyncio.wait_for(commit.submit(21), timeout=1) == 42
        assert log.commits == [[21]]
        await commit.close()


class TestNothingAcknowledgedIsLost:
    async def test_a_failed_commit_fails_every_request_of_its_batch(self) -> None:
        log = Log()
        log.commit_failures = 1
        commit = writer(log)
        outcomes = await asyncio.gather(
            *(commit.submit(n) for n in range(10)), return_exceptions=True
        )
        failed = [o for o in outcomes if isinstance(o, Exception)]
        acknowledged = [o for o in outcomes if not isinstance(o, Exception)]
        committed = {n * 2 for batch in log.commits for n in batch}
        assert failed  # the first batch's requests learn it failed...
        assert all(isinstance(o, sa_exc.OperationalError) for o in failed)
        assert set(acknowledged) == committed  # ...and every 2xx is committed
        # A connection failure is not retried item by item (it would fail N times).
        assert len(log.applied) == len(log.commits) + 1
        await commit.close()

    async def test_answers_arrive_only_after_commit(self) -> None:
        log = Log()
        commit = writer(log)
        seen_committed: list[bool] = []

        async def submit_and_check(n: int) -> None:
            await commit.submit(n)
            seen_committed.append(n in {m for batch in log.commits for m in batch})

        await asyncio.gather(*(submit_and_check(n) for n in range(30)))
        assert seen_committed == [True] * 30
        await commit.close()


class TestOneItemCannotSinkTheOthers:
    async def test_a_refused_item_is_refused_alone(self) -> None:
        log = Log()

        async def refuse_odd(session: Any, items: Sequence[int]) -> list[int | Exception]:
            log.pending.extend(items)
            return [ConflictError(f"{n} is odd") if n % 2 else n for n in items]

        commit = writer(log, refuse_odd)
        outcomes = await asyncio.gather(
            *(commit.submit(n) for n in range(10)), return_exceptions=True
        )
        for n, outcome in enumerate(outcomes):
            if n % 2:
                assert isinstance(outcome, ConflictError)
            else:
                assert outcome == n
        await commit.close()

    async def test_an_item_that_breaks_the_transaction_fails_alone(self) -> None:
        log = Log()

        async def explode_on_13(session: Any, items: Sequence[int]) -> list[int | Exception]:
            log.applied.append(list(items))
            if 13 in items:
                raise sa_exc.DataError("INSERT", {}, ValueError("value out of range"))
            log.pending.extend(items)
            return list(items)

        commit = writer(log, explode_on_13)
        outcomes = await asyncio.gather(
            *(commit.submit(n) for n in range(30)), return_exceptions=True
        )
        assert isinstance(outcomes[13], sa_exc.DataError)
        assert [o for n, o in enumerate(outcomes) if n != 13] == [n for n in range(30) if n != 13]
        assert [13] in log.applied  # retried on its own, after its batch failed
        assert sorted(n for batch in log.commits for n in batch) == [
            n for n in range(30) if n != 13
        ]
        await commit.close()


class TestRetries:
    async def test_a_deadlock_is_retried_and_counted_once(self) -> None:
        log = Log()
        deadlocks = [True]

        async def deadlock_once(session: Any, items: Sequence[int]) -> list[int | Exception]:
            log.applied.append(list(items))
            if deadlocks:
                deadlocks.pop()
                raise sa_exc.DBAPIError("UPDATE", {}, DeadlockError("deadlock detected"))
            log.pending.extend(items)
            return list(items)

        commit = writer(log, deadlock_once)
        assert await commit.submit(5) == 5
        assert log.applied == [[5], [5]]
        assert log.commits == [[5]]
        await commit.close()


@pytest.mark.parametrize("size", [1, 3])
async def test_close_fails_nothing_that_was_answered(size: int) -> None:
    log = Log()
    commit = writer(log, max_batch=size)
    assert await asyncio.gather(*(commit.submit(n) for n in range(6))) == [n * 2 for n in range(6)]
    await commit.close()
    # A new request after close starts a new writer (e.g. a test's next event loop).
    assert await commit.submit(4) == 8
    await commit.close()


class TestOneWriter:
    """SQLite: the writers of a process share one lock around each transaction, so no
    two write transactions are ever open at once (they would wait in SQLite's busy
    handler, which sleeps)."""

    @staticmethod
    async def most_at_once(one_writer: Any) -> int:
        open_now = most = 0

        async def slow(session: Any, items: Sequence[int]) -> list[int | Exception]:
            nonlocal open_now, most
            open_now += 1
            most = max(most, open_now)
            await asyncio.sleep(0.002)
            open_now -= 1
            return list(items)

        log = Log()
        writers = [writer(log, slow, parallel=2, max_batch=3, one_writer=one_writer)
                   for _ in range(3)]  # fmt: skip
        await asyncio.gather(*(w.submit(n) for w in writers for n in range(30)))
        for each in writers:
            await each.close()
        return most

    async def test_a_shared_lock_keeps_one_transaction_open_at_a_time(self) -> None:
        lock = asyncio.Lock()
        assert await self.most_at_once(lambda: lock) == 1

    async def test_without_it_transactions_overlap(self) -> None:
        assert await self.most_at_once(None) > 1
