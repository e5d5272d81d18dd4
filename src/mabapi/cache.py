"""A short-lived, per-process cache of answers that a committed write invalidates."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


class AnswerCache(Generic[Key, Value]):
    """Answers reused for `ttl` seconds, dropped as soon as this process commits a write.

    Serves `GET /allocations`: most callers ask the same question many times a second.
    A write committed by this process (any POST/PATCH/DELETE) bumps `epoch`, and an
    answer computed before it is not served again, so a client that writes then reads
    through one process sees its write. Another process's writes show within `ttl`.
    One computation per key at a time; the others wait for its answer.
    """

    def __init__(self, ttl: float, capacity: int = 10_000) -> None:
        self._ttl = ttl
        self._capacity = capacity
        self._entries: dict[Key, tuple[float, int, Value]] = {}
        self._locks: dict[Key, asyncio.Lock] = {}
        self.epoch = 0

    def note_write(self) -> None:
        self.epoch += 1

    def _fresh(self, key: Key) -> Value | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, epoch, value = entry
        if epoch != self.epoch or time.monotonic() >= expires:
            return None
        return value

    async def get(self, key: Key, compute: Callable[[], Awaitable[Value]]) -> Value:
        if self._ttl <= 0:
            return await compute()
        value = self._fresh(key)
        if value is not None:
            return value
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            value = self._fresh(key)
            if value is not None:
                return value
            epoch = self.epoch
            value = await compute()
            if epoch == self.epoch:
                if len(self._entries) >= self._capacity:
                    self._entries.clear()
                    self._locks = {key: lock}
                self._entries[key] = (time.monotonic() + self._ttl, epoch, value)
            return value
