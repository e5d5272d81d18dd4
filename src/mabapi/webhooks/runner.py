"""The delivery loop of one process: it runs while this process holds the delivery
lease (one process of the whole deployment at a time; another takes over within
LEASE_SECONDS if it dies), sends what is due and runs the watcher (events nothing else
announces: recommendation changes, sample-ratio mismatches)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mabapi.db.engine import is_unavailable
from mabapi.webhooks import network, service

LEASE_SECONDS = 15.0
log = logging.getLogger("mabapi.webhooks")


class WebhookRunner:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        config: service.DeliveryConfig,
        *,
        poll_seconds: float,
        watch_seconds: float,
        watch: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._config = config
        self._poll = poll_seconds
        self._watch_every = watch_seconds
        self._watch = watch
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="webhooks")

    async def run_once(self) -> int:
        """One round (tests and the loop): deliver everything due while holding the lease."""
        if not await service.take_lease(self._sessionmaker, self.holder, LEASE_SECONDS):
            return 0
        sent = 0
        async with network.client() as client:
            while True:
                batch = await service.deliver_due(self._sessionmaker, client, self._config)
                sent += batch
                if batch < service.BATCH:
                    return sent

    async def _run(self) -> None:
        last_watch = float("-inf")
        database_down = False
        while True:
            try:
                await self.run_once()
                if self._watch is not None and time.monotonic() - last_watch >= self._watch_every:
                    last_watch = time.monotonic()
                    if await service.take_lease(self._sessionmaker, self.holder, LEASE_SECONDS):
                        await self._watch()
                if database_down:
                    log.info("webhook delivery resumed: the database answers again")
                    database_down = False
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if is_unavailable(error):  # an outage: one line when it starts, no traceback
                    if not database_down:
                        log.warning("webhook delivery paused: the database is unreachable")
                    database_down = True
                else:
                    log.exception("webhook delivery round failed")
            await asyncio.sleep(self._poll)

    async def close(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        with contextlib.suppress(Exception):
            await service.release_lease(self._sessionmaker, self.holder)
