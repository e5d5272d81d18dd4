"""A typed Python client for the mabapi HTTP API (httpx), sync and async.

    from mabapi.client import Client
    client = Client("http://127.0.0.1:8000", api_key="mab_...")
    print(client.allocations("homepage_test").allocations)   # {"control": 2.5, ...}

Calls that fail with 503 (database briefly unreachable), 429 (rate limited) or a
connection error are retried with exponential backoff, honouring Retry-After. That is
safe because the API's writes are idempotent: a re-posted day replaces itself,
assignment is sticky, a conversion counts once per unit or event_id. (Creating an
experiment is the exception: a retry after a lost answer may get 409 "already taken".)
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date
from typing import Any

import httpx

from mabapi import __version__
from mabapi.access.schemas import AuditListOut, KeyCreatedOut, KeyListOut, KeyOut
from mabapi.allocations.schemas import AllocationOut
from mabapi.assignments.schemas import (
    AssignOut,
    BatchAssignOut,
    BatchConversionOut,
    ConversionOut,
)
from mabapi.client_calls import (
    ApiError,
    BatchItem,
    Call,
    Calls,
    Model,
    answer_of,
    retry_after,
)
from mabapi.evaluation.schemas import EvaluationOut
from mabapi.experiments.schemas import ExperimentOut, ExperimentPage, StatusOut
from mabapi.guardrails.schemas import ClearedOut
from mabapi.metrics.schemas import BatchResultOut, MetricRowOut, MetricRowsOut, RevisionsOut
from mabapi.reports.schemas import SegmentsOut, SummaryOut
from mabapi.webhooks.schemas import (
    DeliveryListOut,
    TestQueuedOut,
    WebhookCreatedOut,
    WebhookListOut,
    WebhookOut,
)

__all__ = ["ApiError", "AsyncClient", "Client"]
BATCH_ROWS = 10_000


class _Base:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self._headers = {"User-Agent": f"mabapi-client/{__version__}"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = timeout


class Client(_Base):
    """Blocking client. Use as a context manager, or call close()."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout=timeout, retries=retries, backoff=backoff)
        self._http = httpx.Client(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: Call[Model]) -> Model:
        for attempt in itertools.count():
            response, error = None, None
            try:
                response = self._http.request(
                    call.method, call.path, json=call.json, params=dict(call.params)
                )
            except httpx.TransportError as failure:
                error = failure
            delay = retry_after(attempt, self.retries, self.backoff, response, error)
            if delay is None:
                return answer_of(call, response, error)
            time.sleep(delay)
        raise AssertionError("unreachable")

    # -- experiments --
    def create_experiment(
        self, experiment_id: str, variants: Sequence[str] = (), **fields: Any
    ) -> ExperimentOut:
        return self._run(Calls.create_experiment(experiment_id, variants, **fields))

    def experiment(self, experiment_id: str) -> ExperimentOut:
        return self._run(Call("GET", f"/experiments/{experiment_id}", ExperimentOut))

    def list_experiments(self, **filters: Any) -> ExperimentPage:
        return self._run(Calls.list_experiments(**filters))

    def update_experiment(self, experiment_id: str, **changes: Any) -> ExperimentOut:
        path = f"/experiments/{experiment_id}"
        return self._run(Call("PATCH", path, ExperimentOut, json=changes))

    def summary(self, experiment_id: str, segment: str | None = None) -> SummaryOut:
        """segment: that segment's summary (404 for a segment never seen)."""
        return self._run(Calls.summary(experiment_id, segment))

    def segments(self, experiment_id: str) -> SegmentsOut:
        return self._run(Calls.segments(experiment_id))

    def evaluate(
        self,
        experiment_id: str,
        policy: Mapping[str, Any],
        estimator: str = "dr",
        start: date | str | None = None,
        end: date | str | None = None,
        segment: str | None = None,
    ) -> EvaluationOut:
        """What `policy` ({"a": 0.5, "b": 0.5}) would have earned per unit (README)."""
        return self._run(Calls.evaluate(experiment_id, policy, estimator, start, end, segment))

    def conclude(self, experiment_id: str, winner: str) -> ExperimentOut:
        path = f"/experiments/{experiment_id}/conclude"
        return self._run(Call("POST", path, ExperimentOut, json={"winner": winner}))

    def reset(self, experiment_id: str) -> ExperimentOut:
        return self._run(Call("POST", f"/experiments/{experiment_id}/reset", ExperimentOut))

    def archive(self, experiment_id: str, archived: bool = True) -> ExperimentOut:
        verb = "archive" if archived else "restore"
        return self._run(Call("POST", f"/experiments/{experiment_id}/{verb}", ExperimentOut))

    def add_variant(self, experiment_id: str, variant_id: str, **fields: Any) -> ExperimentOut:
        body = {"id": variant_id, **fields}
        path = f"/experiments/{experiment_id}/variants"
        return self._run(Call("POST", path, ExperimentOut, json=body))

    def update_variant(self, experiment_id: str, variant_id: str, **changes: Any) -> ExperimentOut:
        path = f"/experiments/{experiment_id}/variants/{variant_id}"
        return self._run(Call("PATCH", path, ExperimentOut, json=changes))

    # -- metrics and allocations --
    def post_metric(
        self,
        experiment_id: str,
        variant_id: str,
        day: date | str,
        impressions: int,
        successes: int,
        **values: float,
    ) -> StatusOut:
        body = Calls.metric_body(experiment_id, variant_id, day, impressions, successes, **values)
        return self._run(Call("POST", "/metrics/", StatusOut, json=body))

    def post_metrics(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Post rows (dicts shaped like POST /metrics/ bodies) in batches of 10,000;
        each batch is one transaction. Returns the number of rows stored."""
        stored, batch = 0, []
        for row in rows:
            batch.append(dict(row))
            if len(batch) == BATCH_ROWS:
                stored += self._run(
                    Call("POST", "/metrics/batch", BatchResultOut, json={"metrics": batch})
                ).rows
                batch = []
        if batch:
            stored += self._run(
                Call("POST", "/metrics/batch", BatchResultOut, json={"metrics": batch})
            ).rows
        return stored

    def daily_metrics(
        self,
        experiment_id: str,
        start: date | str | None = None,
        end: date | str | None = None,
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> MetricRowsOut:
        """One page of daily rows (1,000 unless `limit`, at most 10,000); its
        `next_cursor` fetches the next. `iter_daily_metrics` follows them for you."""
        return self._run(Calls.daily_metrics(experiment_id, start, end, limit, cursor))

    def iter_daily_metrics(
        self,
        experiment_id: str,
        start: date | str | None = None,
        end: date | str | None = None,
        *,
        page_size: int = 10_000,
    ) -> Iterator[MetricRowOut]:
        """Every daily row, page after page (one page in memory at a time)."""
        cursor: str | None = None
        while True:
            page = self.daily_metrics(experiment_id, start, end, limit=page_size, cursor=cursor)
            yield from page.metrics
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def revisions(
        self,
        experiment_id: str,
        start: date | str | None = None,
        end: date | str | None = None,
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> RevisionsOut:
        """One page of the reported days' revisions; `next_cursor` fetches the next."""
        return self._run(Calls.revisions(experiment_id, start, end, limit, cursor))

    def allocations(
        self, experiment_id: str, for_date: date | str | None = None, segment: str | None = None
    ) -> AllocationOut:
        return self._run(Calls.allocations(experiment_id, for_date, segment))

    # -- real time --
    def assign(self, experiment_id: str, unit_id: str, segment: str | None = None) -> AssignOut:
        return self._run(Calls.assign(experiment_id, unit_id, segment))

    def assign_batch(self, items: Iterable[BatchItem]) -> BatchAssignOut:
        """items: (experiment, unit[, segment]) tuples or mappings with those keys."""
        return self._run(Calls.assign_batch(items))

    def convert(
        self,
        experiment_id: str,
        unit_id: str,
        value: float | None = None,
        event_id: str | None = None,
        metric_id: str | None = None,
    ) -> ConversionOut:
        """A conversion (metric_id: a guardrail's) for a unit assigned before."""
        return self._run(Calls.convert(experiment_id, unit_id, value, event_id, metric_id))

    def convert_batch(self, conversions: Iterable[BatchItem]) -> BatchConversionOut:
        """items: (experiment, unit[, value, event_id, metric_id]) tuples or mappings."""
        return self._run(Calls.convert_batch(conversions))

    # -- keys --
    def create_key(self, scope: str, project: str = "default", name: str = "") -> KeyCreatedOut:
        body = {"scope": scope, "project": project, "name": name}
        return self._run(Call("POST", "/keys", KeyCreatedOut, json=body))

    def keys(self) -> KeyListOut:
        return self._run(Call("GET", "/keys", KeyListOut))

    def revoke_key(self, key_id: str) -> KeyOut:
        return self._run(Call("DELETE", f"/keys/{key_id}", KeyOut))

    def audit(self, limit: int = 100) -> AuditListOut:
        return self._run(Call("GET", "/audit", AuditListOut, params={"limit": limit}))

    # -- webhooks --
    def create_webhook(
        self, url: str, events: Sequence[str], secret: str | None = None
    ) -> WebhookCreatedOut:
        return self._run(Calls.create_webhook(url, events, secret))

    def webhooks(self) -> WebhookListOut:
        return self._run(Call("GET", "/webhooks", WebhookListOut))

    def delete_webhook(self, webhook_id: str) -> WebhookOut:
        return self._run(Call("DELETE", f"/webhooks/{webhook_id}", WebhookOut))

    def test_webhook(self, webhook_id: str) -> TestQueuedOut:
        return self._run(Call("POST", f"/webhooks/{webhook_id}/test", TestQueuedOut))

    def webhook_deliveries(self, webhook_id: str, limit: int = 50) -> DeliveryListOut:
        path = f"/webhooks/{webhook_id}/deliveries"
        return self._run(Call("GET", path, DeliveryListOut, params={"limit": limit}))

    def clear_guardrail(self, experiment_id: str, metric_id: str) -> ClearedOut:
        path = f"/experiments/{experiment_id}/guardrails/{metric_id}/clear"
        return self._run(Call("POST", path, ClearedOut))


class AsyncClient(_Base):
    """The same calls, awaitable. Use `async with AsyncClient(...) as client`."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout=timeout, retries=retries, backoff=backoff)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, call: Call[Model]) -> Model:
        for attempt in itertools.count():
            response, error = None, None
            try:
                response = await self._http.request(
                    call.method, call.path, json=call.json, params=dict(call.params)
                )
            except httpx.TransportError as failure:
                error = failure
            delay = retry_after(attempt, self.retries, self.backoff, response, error)
            if delay is None:
                return answer_of(call, response, error)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def create_experiment(
        self, experiment_id: str, variants: Sequence[str] = (), **fields: Any
    ) -> ExperimentOut:
        return await self._run(Calls.create_experiment(experiment_id, variants, **fields))

    async def experiment(self, experiment_id: str) -> ExperimentOut:
        return await self._run(Call("GET", f"/experiments/{experiment_id}", ExperimentOut))

    async def list_experiments(self, **filters: Any) -> ExperimentPage:
        return await self._run(Calls.list_experiments(**filters))

    async def summary(self, experiment_id: str, segment: str | None = None) -> SummaryOut:
        return await self._run(Calls.summary(experiment_id, segment))

    async def segments(self, experiment_id: str) -> SegmentsOut:
        return await self._run(Calls.segments(experiment_id))

    async def evaluate(
        self,
        experiment_id: str,
        policy: Mapping[str, Any],
        estimator: str = "dr",
        start: date | str | None = None,
        end: date | str | None = None,
        segment: str | None = None,
    ) -> EvaluationOut:
        return await self._run(
            Calls.evaluate(experiment_id, policy, estimator, start, end, segment)
        )

    async def post_metric(
        self,
        experiment_id: str,
        variant_id: str,
        day: date | str,
        impressions: int,
        successes: int,
        **values: float,
    ) -> StatusOut:
        body = Calls.metric_body(experiment_id, variant_id, day, impressions, successes, **values)
        return await self._run(Call("POST", "/metrics/", StatusOut, json=body))

    async def allocations(
        self, experiment_id: str, for_date: date | str | None = None, segment: str | None = None
    ) -> AllocationOut:
        return await self._run(Calls.allocations(experiment_id, for_date, segment))

    async def assign(
        self, experiment_id: str, unit_id: str, segment: str | None = None
    ) -> AssignOut:
        return await self._run(Calls.assign(experiment_id, unit_id, segment))

    async def convert(
        self,
        experiment_id: str,
        unit_id: str,
        value: float | None = None,
        event_id: str | None = None,
        metric_id: str | None = None,
    ) -> ConversionOut:
        return await self._run(Calls.convert(experiment_id, unit_id, value, event_id, metric_id))

    async def daily_metrics(
        self,
        experiment_id: str,
        start: date | str | None = None,
        end: date | str | None = None,
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> MetricRowsOut:
        return await self._run(Calls.daily_metrics(experiment_id, start, end, limit, cursor))

    async def revisions(
        self,
        experiment_id: str,
        start: date | str | None = None,
        end: date | str | None = None,
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> RevisionsOut:
        return await self._run(Calls.revisions(experiment_id, start, end, limit, cursor))

    async def update_experiment(self, experiment_id: str, **changes: Any) -> ExperimentOut:
        path = f"/experiments/{experiment_id}"
        return await self._run(Call("PATCH", path, ExperimentOut, json=changes))

    async def conclude(self, experiment_id: str, winner: str) -> ExperimentOut:
        path = f"/experiments/{experiment_id}/conclude"
        return await self._run(Call("POST", path, ExperimentOut, json={"winner": winner}))

    async def reset(self, experiment_id: str) -> ExperimentOut:
        return await self._run(Call("POST", f"/experiments/{experiment_id}/reset", ExperimentOut))

    async def archive(self, experiment_id: str, archived: bool = True) -> ExperimentOut:
        verb = "archive" if archived else "restore"
        path = f"/experiments/{experiment_id}/{verb}"
        return await self._run(Call("POST", path, ExperimentOut))

    async def add_variant(
        self, experiment_id: str, variant_id: str, **fields: Any
    ) -> ExperimentOut:
        path = f"/experiments/{experiment_id}/variants"
        return await self._run(Call("POST", path, ExperimentOut, json={"id": variant_id, **fields}))

    async def update_variant(
        self, experiment_id: str, variant_id: str, **changes: Any
    ) -> ExperimentOut:
        path = f"/experiments/{experiment_id}/variants/{variant_id}"
        return await self._run(Call("PATCH", path, ExperimentOut, json=changes))

    async def post_metrics(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """As Client.post_metrics: batches of 10,000, one transaction each."""
        stored, batch = 0, []
        for row in [*rows, None]:
            if row is not None:
                batch.append(dict(row))
            if batch and (row is None or len(batch) == BATCH_ROWS):
                answer = await self._run(
                    Call("POST", "/metrics/batch", BatchResultOut, json={"metrics": batch})
                )
                stored, batch = stored + answer.rows, []
        return stored

    async def assign_batch(self, items: Iterable[BatchItem]) -> BatchAssignOut:
        return await self._run(Calls.assign_batch(items))

    async def convert_batch(self, conversions: Iterable[BatchItem]) -> BatchConversionOut:
        return await self._run(Calls.convert_batch(conversions))

    async def create_key(
        self, scope: str, project: str = "default", name: str = ""
    ) -> KeyCreatedOut:
        body = {"scope": scope, "project": project, "name": name}
        return await self._run(Call("POST", "/keys", KeyCreatedOut, json=body))

    async def keys(self) -> KeyListOut:
        return await self._run(Call("GET", "/keys", KeyListOut))

    async def revoke_key(self, key_id: str) -> KeyOut:
        return await self._run(Call("DELETE", f"/keys/{key_id}", KeyOut))

    async def audit(self, limit: int = 100) -> AuditListOut:
        return await self._run(Call("GET", "/audit", AuditListOut, params={"limit": limit}))
