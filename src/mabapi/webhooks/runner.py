"""The delivery loop of one process, and the watcher beside it.

The loop runs while this process holds the delivery lease (one process of the deployment
at a time; another takes over within LEASE_SECONDS if it dies). Every poll it renews the
lease and claims what is due into tasks of their own: at most service.IN_FLIGHT at once,
at most service.PER_WEBHOOK to one webhook, none to a webhook whose deliveries are still
in flight. A receiver that hangs therefore holds its own slots only: another project's
delivery is claimed at the next poll.

The watcher (events nothing else announces) runs in a thread of its own, with its own
event loop and database connections, so its numeric work never stalls delivery or
requests; it watches only while this process holds the lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mabapi.db.base import utcnow
from mabapi.db.engine import is_unavailable, make_sessionmaker
from mabapi.webhooks import network, service
from mabapi.webhooks.repository import Claimed

LEASE_SECONDS = 15.0
# On shutdown, deliveries in flight get this long before they are cut short.
CLOSE_GRACE_SECONDS = 1.0
log = logging.getLogger("mabapi.webhooks")


class WebhookRunner:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        config: service.DeliveryConfig,
        *,
        poll_seconds: float,
        watcher: WatchThread | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._config = config
        self._poll = poll_seconds
        self._watcher = watcher
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leader = False  # read by the watcher's thread
        self._task: asyncio.Task[None] | None = None
        self._in_flight: dict[asyncio.Task[network.Outcome], str] = {}

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="webhooks")
        if self._watcher is not None:
            self._watcher.start(lambda: self.leader)

    async def _renew(self) -> bool:
        self.leader = await service.take_lease(self._sessionmaker, self.holder, LEASE_SECONDS)
        return self.leader

    async def run_once(self) -> int:
        """Deliver everything due now, batch after batch, while holding the lease (tests
        and one-off runs); returns how many deliveries were tried."""
        sent = 0
        async with network.client() as client:
            while await self._renew():
                batch = await service.deliver_due(self._sessionmaker, client, self._config)
                if batch == 0:
                    break
                sent += batch
        return sent

    def _spawn(self, client: httpx.AsyncClient, claimed: Claimed) -> None:
        task = asyncio.get_running_loop().create_task(
            service.deliver(self._sessionmaker, client, self._config, claimed),
            name=f"webhook-delivery-{claimed.id}",
        )
        self._in_flight[task] = claimed.webhook_id
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[network.Outcome]) -> None:
        self._in_flight.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("a webhook delivery task failed", exc_info=task.exception())

    async def _claim(self, client: httpx.AsyncClient) -> None:
        claimed = await service.claim(
            self._sessionmaker,
            now=utcnow(),
            limit=service.IN_FLIGHT - len(self._in_flight),
            busy=set(self._in_flight.values()),
        )
        for item in claimed:
            self._spawn(client, item)

    async def _run(self) -> None:
        database_down = False
        async with network.client() as client:
            try:
                while True:
                    try:
                        if await self._renew():
                            await self._claim(client)
                        if database_down:
                            log.info("webhook delivery resumed: the database answers again")
                            database_down = False
                    except asyncio.CancelledError:
                        raise
                    except Exception as error:
                        self.leader = False
                        if is_unavailable(error):  # an outage: one line when it starts
                            if not database_down:
                                log.warning("webhook delivery paused: the database is unreachable")
                            database_down = True
                        else:
                            log.exception("webhook delivery round failed")
                    await asyncio.sleep(self._poll)
            finally:
                # A moment for what is being sent to finish; deliveries cut short stay
                # claimed, and are due again after their hold.
                if self._in_flight:
                    _, cut = await asyncio.wait(set(self._in_flight), timeout=CLOSE_GRACE_SECONDS)
                    for task in cut:
                        task.cancel()
                    await asyncio.gather(*cut, return_exceptions=True)

    async def close(self) -> None:
        if self._watcher is not None:
            await self._watcher.stop()
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self.leader = False
        with contextlib.suppress(Exception):
            await service.release_lease(self._sessionmaker, self.holder)


WatchRound = Callable[[async_sessionmaker[AsyncSession]], Awaitable[object]]


class WatchThread:
    """Runs `watch` every `every_seconds` in a thread with its own event loop and engine
    (made by `engine_factory` in that thread), while `is_leader()` says so."""

    def __init__(
        self,
        engine_factory: Callable[[], AsyncEngine],
        watch: WatchRound,
        *,
        every_seconds: float,
    ) -> None:
        self._engine_factory = engine_factory
        self._watch = watch
        self._every = every_seconds
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self.rounds = 0

    def start(self, is_leader: Callable[[], bool]) -> None:
        self._thread = threading.Thread(
            target=self._thread_main, args=(is_leader,), name="mabapi-watcher", daemon=True
        )
        self._thread.start()

    def _thread_main(self, is_leader: Callable[[], bool]) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(self._serve(is_leader))

    async def _serve(self, is_leader: Callable[[], bool]) -> None:
        self._loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        self._ready.set()
        engine = self._engine_factory()
        sessionmaker = make_sessionmaker(engine)
        last = float("-inf")
        try:
            while True:
                if is_leader() and time.monotonic() - last >= self._every:
                    last = time.monotonic()
                    try:
                        await self._watch(sessionmaker)
                        self.rounds += 1
                    except asyncio.CancelledError:
                        raise
                    except Exception as error:
                        if is_unavailable(error):
                            log.warning("watching paused: the database is unreachable")
                        else:
                            log.exception("a watch round failed")
                await asyncio.sleep(min(self._every, 0.5))
        finally:
            await engine.dispose()

    async def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        await asyncio.to_thread(self._ready.wait, 5.0)
        loop, main = self._loop, self._main
        if loop is not None and main is not None:
            with contextlib.suppress(RuntimeError):  # its loop already closed
                loop.call_soon_threadsafe(main.cancel)
        await asyncio.to_thread(thread.join, 30.0)
        self._thread = None
