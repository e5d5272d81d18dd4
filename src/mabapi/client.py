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
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from mabapi import __version__
from mabapi.access.schemas import AuditListOut, KeyCreatedOut, KeyListOut, KeyOut
from mabapi.assignments.schemas import (
    AssignOut,
    BatchAssignOut,
    BatchConversionOut,
    ConversionOut,
)
from mabapi.experiments.schemas import (
    AllocationOut,
    BatchResultOut,
    ClearedOut,
    ExperimentOut,
    ExperimentPage,
    MetricRowOut,
    MetricRowsOut,
    RevisionsOut,
    SegmentsOut,
    StatusOut,
    SummaryOut,
)
from mabapi.webhooks.schemas import (
    DeliveryListOut,
    TestQueuedOut,
    WebhookCreatedOut,
    WebhookListOut,
    WebhookOut,
)

__all__ = ["ApiError", "AsyncClient", "Client"]

# A batch item: a tuple in the documented order, or a mapping with the API's field names.
BatchItem = Sequence[Any] | Mapping[str, Any]


def _batch_item(item: BatchItem, keys: tuple[str, ...], call: str) -> dict[str, Any]:
    """One batch item as the API's JSON object; a clear TypeError for anything else."""
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - set(keys))
        if unknown:
            raise TypeError(f"{call}: unknown field(s) {unknown}; the fields are {list(keys)}")
        return _drop_none(dict(item))
    if isinstance(item, str | bytes) or not isinstance(item, Sequence):
        raise TypeError(
            f"{call}: each item is a tuple ({', '.join(keys)}) or a mapping, not {item!r}"
        )
    if not 2 <= len(item) <= len(keys):
        raise TypeError(
            f"{call}: a tuple item has 2 to {len(keys)} values ({', '.join(keys)}), not {len(item)}"
        )
    return _drop_none(dict(zip(keys, item, strict=False)))


Model = TypeVar("Model", bound=BaseModel)
RETRIED_STATUSES = frozenset({429, 503})
BATCH_ROWS = 10_000


class ApiError(Exception):
    """An answer other than 2xx, with the API's error code and message."""

    def __init__(self, status_code: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details or []


@dataclass(frozen=True)
class _Call(Generic[Model]):
    """One API call: what to send and how to read the answer."""

    method: str
    path: str
    model: type[Model]
    json: Any = None
    params: Mapping[str, Any] = field(default_factory=dict)


def _day(value: date | str | None) -> str | None:
    return value.isoformat() if isinstance(value, date) else value


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _error(response: httpx.Response) -> ApiError:
    try:
        error = response.json()["error"]
        return ApiError(response.status_code, error["code"], error["message"], error["details"])
    except (ValueError, KeyError, TypeError):
        return ApiError(response.status_code, "http_error", response.text[:500])


def _retry_delay(attempt: int, backoff: float, response: httpx.Response | None) -> float:
    delay: float = backoff * 2.0**attempt
    retry_after = "" if response is None else str(response.headers.get("retry-after", ""))
    if retry_after.isdigit():
        delay = max(delay, float(retry_after))
    return min(delay, 10.0)


class _Calls:
    """Every endpoint, described once; Client and AsyncClient send them."""

    @staticmethod
    def create_experiment(
        experiment_id: str, variants: Sequence[str] = (), **fields: Any
    ) -> _Call[ExperimentOut]:
        body = {"id": experiment_id, "variants": [{"id": v} for v in variants], **fields}
        return _Call("POST", "/experiments", ExperimentOut, json=body)

    @staticmethod
    def list_experiments(
        limit: int = 50, offset: int = 0, status: str | None = None, include_archived: bool = False
    ) -> _Call[ExperimentPage]:
        params = _drop_none({"limit": limit, "offset": offset, "status": status})
        params["include_archived"] = str(include_archived).lower()
        return _Call("GET", "/experiments", ExperimentPage, params=params)

    @staticmethod
    def metric_body(
        experiment_id: str,
        variant_id: str,
        day: date | str,
        impressions: int,
        successes: int,
        value_sum: float | None = None,
        value_sum_squares: float | None = None,
    ) -> dict[str, Any]:
        return _drop_none(
            {
                "experiment_id": experiment_id,
                "variant_id": variant_id,
                "date": _day(day),
                "impressions": impressions,
                "successes": successes,
                "value_sum": value_sum,
                "value_sum_squares": value_sum_squares,
            }
        )

    @staticmethod
    def allocations(
        experiment_id: str, for_date: date | str | None, segment: str | None = None
    ) -> _Call[AllocationOut]:
        params = _drop_none({"for_date": _day(for_date), "segment": segment})
        return _Call("GET", f"/allocations/{experiment_id}", AllocationOut, params=params)

    @staticmethod
    def summary(experiment_id: str, segment: str | None) -> _Call[SummaryOut]:
        params = _drop_none({"segment": segment})
        return _Call("GET", f"/experiments/{experiment_id}/summary", SummaryOut, params=params)

    @staticmethod
    def segments(experiment_id: str) -> _Call[SegmentsOut]:
        return _Call("GET", f"/experiments/{experiment_id}/segments", SegmentsOut)

    @staticmethod
    def assign(experiment_id: str, unit_id: str, segment: str | None) -> _Call[AssignOut]:
        body = _drop_none({"unit_id": unit_id, "segment": segment})
        return _Call("POST", f"/experiments/{experiment_id}/assign", AssignOut, json=body)

    @staticmethod
    def assign_batch(items: Iterable[BatchItem]) -> _Call[BatchAssignOut]:
        """(experiment, unit[, segment]) or a mapping with those keys, per item."""
        keys = ("experiment_id", "unit_id", "segment")
        body = {"assignments": [_batch_item(item, keys, "assign_batch") for item in items]}
        return _Call("POST", "/assign/batch", BatchAssignOut, json=body)

    @staticmethod
    def convert_batch(items: Iterable[BatchItem]) -> _Call[BatchConversionOut]:
        """(experiment, unit[, value, event_id, metric_id]) or a mapping, per item."""
        keys = ("experiment_id", "unit_id", "value", "event_id", "metric_id")
        body = {"conversions": [_batch_item(item, keys, "convert_batch") for item in items]}
        return _Call("POST", "/conversions/batch", BatchConversionOut, json=body)

    @staticmethod
    def daily_metrics(
        experiment_id: str,
        start: date | str | None,
        end: date | str | None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> _Call[MetricRowsOut]:
        params = _drop_none(
            {"from": _day(start), "to": _day(end), "limit": limit, "cursor": cursor}
        )
        return _Call("GET", f"/experiments/{experiment_id}/metrics", MetricRowsOut, params=params)

    @staticmethod
    def revisions(
        experiment_id: str,
        start: date | str | None,
        end: date | str | None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> _Call[RevisionsOut]:
        params = _drop_none(
            {"from": _day(start), "to": _day(end), "limit": limit, "cursor": cursor}
        )
        path = f"/experiments/{experiment_id}/metrics/revisions"
        return _Call("GET", path, RevisionsOut, params=params)

    @staticmethod
    def create_webhook(
        url: str, events: Sequence[str], secret: str | None
    ) -> _Call[WebhookCreatedOut]:
        body = _drop_none({"url": url, "events": list(events), "secret": secret})
        return _Call("POST", "/webhooks", WebhookCreatedOut, json=body)

    @staticmethod
    def convert(
        experiment_id: str,
        unit_id: str,
        value: float | None,
        event_id: str | None,
        metric_id: str | None = None,
    ) -> _Call[ConversionOut]:
        body = _drop_none(
            {"unit_id": unit_id, "value": value, "event_id": event_id, "metric_id": metric_id}
        )
        return _Call("POST", f"/experiments/{experiment_id}/conversions", ConversionOut, json=body)


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

    def _retry_after(
        self, attempt: int, response: httpx.Response | None, error: Exception | None
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to stop here."""
        if attempt >= self.retries:
            return None
        if error is not None:
            return _retry_delay(attempt, self.backoff, None)
        if response is not None and response.status_code in RETRIED_STATUSES:
            return _retry_delay(attempt, self.backoff, response)
        return None


def _answer(call: _Call[Model], response: httpx.Response | None, error: Exception | None) -> Model:
    if error is not None:
        raise error
    assert response is not None
    if response.status_code >= 400:
        raise _error(response)
    return call.model.model_validate(response.json())


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

    def _run(self, call: _Call[Model]) -> Model:
        for attempt in itertools.count():
            response, error = None, None
            try:
                response = self._http.request(
                    call.method, call.path, json=call.json, params=dict(call.params)
                )
            except httpx.TransportError as failure:
                error = failure
            delay = self._retry_after(attempt, response, error)
            if delay is None:
                return _answer(call, response, error)
            time.sleep(delay)
        raise AssertionError("unreachable")

    # -- experiments --
    def create_experiment(
        self, experiment_id: str, variants: Sequence[str] = (), **fields: Any
    ) -> ExperimentOut:
        return self._run(_Calls.create_experiment(experiment_id, variants, **fields))

    def experiment(self, experiment_id: str) -> ExperimentOut:
        return self._run(_Call("GET", f"/experiments/{experiment_id}", ExperimentOut))

    def list_experiments(self, **filters: Any) -> ExperimentPage:
        return self._run(_Calls.list_experiments(**filters))

    def update_experiment(self, experiment_id: str, **changes: Any) -> ExperimentOut:
        path = f"/experiments/{experiment_id}"
        return self._run(_Call("PATCH", path, ExperimentOut, json=changes))

    def summary(self, experiment_id: str, segment: str | None = None) -> SummaryOut:
        """segment: that segment's summary (404 for a segment never seen)."""
        return self._run(_Calls.summary(experiment_id, segment))

    def segments(self, experiment_id: str) -> SegmentsOut:
        return self._run(_Calls.segments(experiment_id))

    def conclude(self, experiment_id: str, winner: str) -> ExperimentOut:
        path = f"/experiments/{experiment_id}/conclude"
        return self._run(_Call("POST", path, ExperimentOut, json={"winner": winner}))

    def reset(self, experiment_id: str) -> ExperimentOut:
        return self._run(_Call("POST", f"/experiments/{experiment_id}/reset", ExperimentOut))

    def archive(self, experiment_id: str, archived: bool = True) -> ExperimentOut:
        verb = "archive" if archived else "restore"
        return self._run(_Call("POST", f"/experiments/{experiment_id}/{verb}", ExperimentOut))

    def add_variant(self, experiment_id: str, variant_id: str, **fields: Any) -> ExperimentOut:
        body = {"id": variant_id, **fields}
        path = f"/experiments/{experiment_id}/variants"
        return self._run(_Call("POST", path, ExperimentOut, json=body))

    def update_variant(self, experiment_id: str, variant_id: str, **changes: Any) -> ExperimentOut:
        path = f"/experiments/{experiment_id}/variants/{variant_id}"
        return self._run(_Call("PATCH", path, ExperimentOut, json=changes))

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
        body = _Calls.metric_body(experiment_id, variant_id, day, impressions, successes, **values)
        return self._run(_Call("POST", "/metrics/", StatusOut, json=body))

    def post_metrics(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Post rows (dicts shaped like POST /metrics/ bodies) in batches of 10,000;
        each batch is one transaction. Returns the number of rows stored."""
        stored, batch = 0, []
        for row in rows:
            batch.append(dict(row))
            if len(batch) == BATCH_ROWS:
                stored += self._run(
                    _Call("POST", "/metrics/batch", BatchResultOut, json={"metrics": batch})
                ).rows
                batch = []
        if batch:
            stored += self._run(
                _Call("POST", "/metrics/batch", BatchResultOut, json={"metrics": batch})
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
        return self._run(_Calls.daily_metrics(experiment_id, start, end, limit, cursor))

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
        return self._run(_Calls.revisions(experiment_id, start, end, limit, cursor))

    def allocations(
        self, experiment_id: str, for_date: date | str | None = None, segment: str | None = None
    ) -> AllocationOut:
        return self._run(_Calls.allocations(experiment_id, for_date, segment))

    # -- real time --
    def assign(self, experiment_id: str, unit_id: str, segment: str | None = None) -> AssignOut:
        return self._run(_Calls.assign(experiment_id, unit_id, segment))

    def assign_batch(self, items: Iterable[BatchItem]) -> BatchAssignOut:
        """items: (experiment, unit[, segment]) tuples or mappings with those keys."""
        return self._run(_Calls.assign_batch(items))

    def convert(
        self,
        experiment_id: str,
        unit_id: str,
        value: float | None = None,
        event_id: str | None = None,
        metric_id: str | None = None,
    ) -> ConversionOut:
        """A conversion (metric_id: a guardrail's) for a unit assigned before."""
        return self._run(_Calls.convert(experiment_id, unit_id, value, event_id, metric_id))

    def convert_batch(self, conversions: Iterable[BatchItem]) -> BatchConversionOut:
        """items: (experiment, unit[, value, event_id, metric_id]) tuples or mappings."""
        return self._run(_Calls.convert_batch(conversions))

    # -- keys --
    def create_key(self, scope: str, project: str = "default", name: str = "") -> KeyCreatedOut:
        body = {"scope": scope, "project": project, "name": name}
        return self._run(_Call("POST", "/keys", KeyCreatedOut, json=body))

    def keys(self) -> KeyListOut:
        return self._run(_Call("GET", "/keys", KeyListOut))

    def revoke_key(self, key_id: str) -> KeyOut:
        return self._run(_Call("DELETE", f"/keys/{key_id}", KeyOut))

    def audit(self, limit: int = 100) -> AuditListOut:
        return self._run(_Call("GET", "/audit", AuditListOut, params={"limit": limit}))

    # -- webhooks --
    def create_webhook(
        self, url: str, events: Sequence[str], secret: str | None = None
    ) -> WebhookCreatedOut:
        return self._run(_Calls.create_webhook(url, events, secret))

    def webhooks(self) -> WebhookListOut:
        return self._run(_Call("GET", "/webhooks", WebhookListOut))

    def delete_webhook(self, webhook_id: str) -> WebhookOut:
        return self._run(_Call("DELETE", f"/webhooks/{webhook_id}", WebhookOut))

    def test_webhook(self, webhook_id: str) -> TestQueuedOut:
        return self._run(_Call("POST", f"/webhooks/{webhook_id}/test", TestQueuedOut))

    def webhook_deliveries(self, webhook_id: str, limit: int = 50) -> DeliveryListOut:
        path = f"/webhooks/{webhook_id}/deliveries"
        return self._run(_Call("GET", path, DeliveryListOut, params={"limit": limit}))

    def clear_guardrail(self, experiment_id: str, metric_id: str) -> ClearedOut:
        path = f"/experiments/{experiment_id}/guardrails/{metric_id}/clear"
        return self._run(_Call("POST", path, ClearedOut))


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

    async def _run(self, call: _Call[Model]) -> Model:
        for attempt in itertools.count():
            response, error = None, None
            try:
                response = await self._http.request(
                    call.method, call.path, json=call.json, params=dict(call.params)
                )
            except httpx.TransportError as failure:
                error = failure
            delay = self._retry_after(attempt, response, error)
            if delay is None:
                return _answer(call, response, error)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def create_experiment(
        self, experiment_id: str, variants: Sequence[str] = (), **fields: Any
    ) -> ExperimentOut:
        return await self._run(_Calls.create_experiment(experiment_id, variants, **fields))

    async def experiment(self, experiment_id: str) -> ExperimentOut:
        return await self._run(_Call("GET", f"/experiments/{experiment_id}", ExperimentOut))

    async def list_experiments(self, **filters: Any) -> ExperimentPage:
        return await self._run(_Calls.list_experiments(**filters))

    async def summary(self, experiment_id: str, segment: str | None = None) -> SummaryOut:
        return await self._run(_Calls.summary(experiment_id, segment))

    async def segments(self, experiment_id: str) -> SegmentsOut:
        return await self._run(_Calls.segments(experiment_id))

    async def post_metric(
        self,
        experiment_id: str,
        variant_id: str,
        day: date | str,
        impressions: int,
        successes: int,
        **values: float,
    ) -> StatusOut:
        body = _Calls.metric_body(experiment_id, variant_id, day, impressions, successes, **values)
        return await self._run(_Call("POST", "/metrics/", StatusOut, json=body))

    async def allocations(
        self, experiment_id: str, for_date: date | str | None = None, segment: str | None = None
    ) -> AllocationOut:
        return await self._run(_Calls.allocations(experiment_id, for_date, segment))

    async def assign(
        self, experiment_id: str, unit_id: str, segment: str | None = None
    ) -> AssignOut:
        return await self._run(_Calls.assign(experiment_id, unit_id, segment))

    async def convert(
        self,
        experiment_id: str,
        unit_id: str,
        value: float | None = None,
        event_id: str | None = None,
        metric_id: str | None = None,
    ) -> ConversionOut:
        return await self._run(_Calls.convert(experiment_id, unit_id, value, event_id, metric_id))

    async def daily_metrics(
        self,
        experiment_id: str,
        start: date | str | None = None,
        end: date | str | None = None,
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> MetricRowsOut:
        return await self._run(_Calls.daily_metrics(experiment_id, start, end, limit, cursor))

    async def revisions(
        self,
        experiment_id: str,
        start: date | str | None = None,
        end: date | str | None = None,
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> RevisionsOut:
        return await self._run(_Calls.revisions(experiment_id, start, end, limit, cursor))

    async def update_experiment(self, experiment_id: str, **changes: Any) -> ExperimentOut:
        path = f"/experiments/{experiment_id}"
        return await self._run(_Call("PATCH", path, ExperimentOut, json=changes))

    async def conclude(self, experiment_id: str, winner: str) -> ExperimentOut:
        path = f"/experiments/{experiment_id}/conclude"
        return await self._run(_Call("POST", path, ExperimentOut, json={"winner": winner}))

    async def reset(self, experiment_id: str) -> ExperimentOut:
        return await self._run(_Call("POST", f"/experiments/{experiment_id}/reset", ExperimentOut))

    async def archive(self, experiment_id: str, archived: bool = True) -> ExperimentOut:
        verb = "archive" if archived else "restore"
        path = f"/experiments/{experiment_id}/{verb}"
        return await self._run(_Call("POST", path, ExperimentOut))

    async def add_variant(
        self, experiment_id: str, variant_id: str, **fields: Any
    ) -> ExperimentOut:
        path = f"/experiments/{experiment_id}/variants"
        return await self._run(
            _Call("POST", path, ExperimentOut, json={"id": variant_id, **fields})
        )

    async def update_variant(
        self, experiment_id: str, variant_id: str, **changes: Any
    ) -> ExperimentOut:
        path = f"/experiments/{experiment_id}/variants/{variant_id}"
        return await self._run(_Call("PATCH", path, ExperimentOut, json=changes))

    async def post_metrics(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """As Client.post_metrics: batches of 10,000, one transaction each."""
        stored, batch = 0, []
        for row in [*rows, None]:
            if row is not None:
                batch.append(dict(row))
            if batch and (row is None or len(batch) == BATCH_ROWS):
                answer = await self._run(
                    _Call("POST", "/metrics/batch", BatchResultOut, json={"metrics": batch})
                )
                stored, batch = stored + answer.rows, []
        return stored

    async def assign_batch(self, items: Iterable[BatchItem]) -> BatchAssignOut:
        return await self._run(_Calls.assign_batch(items))

    async def convert_batch(self, conversions: Iterable[BatchItem]) -> BatchConversionOut:
        return await self._run(_Calls.convert_batch(conversions))

    async def create_key(
        self, scope: str, project: str = "default", name: str = ""
    ) -> KeyCreatedOut:
        body = {"scope": scope, "project": project, "name": name}
        return await self._run(_Call("POST", "/keys", KeyCreatedOut, json=body))

    async def keys(self) -> KeyListOut:
        return await self._run(_Call("GET", "/keys", KeyListOut))

    async def revoke_key(self, key_id: str) -> KeyOut:
        return await self._run(_Call("DELETE", f"/keys/{key_id}", KeyOut))

    async def audit(self, limit: int = 100) -> AuditListOut:
        return await self._run(_Call("GET", "/audit", AuditListOut, params={"limit": limit}))
