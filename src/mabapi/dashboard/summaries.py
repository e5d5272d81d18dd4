"""The dashboard's summaries, kept per process so the experiment list and each
experiment's page show the same numbers without computing them on every load: an entry
lives `ttl` seconds and goes at once when this process commits a write (the answer
cache's epoch: reported data, settings, conclusions). Real-time exposures and conversions
show within `ttl`. Bounded (oldest out)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class SummaryCache:
    def __init__(self, ttl: float, *, epoch: Callable[[], int], capacity: int = 1000) -> None:
        self._ttl = ttl
        self._epoch = epoch
        self._capacity = capacity
        self._entries: OrderedDict[str, tuple[float, int, Any]] = OrderedDict()

    def get(self, experiment_id: str) -> Any | None:
        """The summary if it is fresh (younger than `ttl`, no write since)."""
        summary, fresh = self.get_stale(experiment_id)
        return summary if fresh else None

    def get_stale(self, experiment_id: str) -> tuple[Any | None, bool]:
        """(summary, fresh): an expired one too (no write since it was computed), which
        the list shows while it refreshes a few rows per load."""
        entry = self._entries.get(experiment_id)
        if entry is None:
            return None, False
        expires, epoch, summary = entry
        if epoch != self._epoch():
            self._entries.pop(experiment_id, None)
            return None, False
        return summary, time.monotonic() < expires

    def put(self, experiment_id: str, summary: Any, *, epoch: int) -> None:
        """Keep `summary`, computed when the epoch was `epoch` (dropped if a write came
        since: it may not show that write)."""
        if self._ttl <= 0 or epoch != self._epoch():
            return
        self._entries[experiment_id] = (time.monotonic() + self._ttl, epoch, summary)
        self._entries.move_to_end(experiment_id)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def epoch(self) -> int:
        return self._epoch()
