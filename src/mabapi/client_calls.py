"""The client's calls, one per endpoint: method, path, body and the model of the answer.
Shared by the sync and async clients (mabapi.client)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from mabapi.allocations.schemas import AllocationOut
from mabapi.assignments.schemas import (
    AssignOut,
    BatchAssignOut,
    BatchConversionOut,
    ConversionOut,
)
from mabapi.evaluation.schemas import EvaluationOut
from mabapi.experiments.schemas import ExperimentOut, ExperimentPage
from mabapi.metrics.schemas import MetricRowsOut, RevisionsOut
from mabapi.reports.schemas import SegmentsOut, SummaryOut
from mabapi.webhooks.schemas import (
    WebhookCreatedOut,
)

# A batch item: a tuple in the documented order, or a mapping with the API's field names.
BatchItem = Sequence[Any] | Mapping[str, Any]
Model = TypeVar("Model", bound=BaseModel)


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


RETRIED_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Call(Generic[Model]):
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


class Calls:
    """Every endpoint, described once; Client and AsyncClient send them."""

    @staticmethod
    def create_experiment(
        experiment_id: str, variants: Sequence[str] = (), **fields: Any
    ) -> Call[ExperimentOut]:
        body = {"id": experiment_id, "variants": [{"id": v} for v in variants], **fields}
        return Call("POST", "/experiments", ExperimentOut, json=body)

    @staticmethod
    def list_experiments(
        limit: int = 50, offset: int = 0, status: str | None = None, include_archived: bool = False
    ) -> Call[ExperimentPage]:
        params = _drop_none({"limit": limit, "offset": offset, "status": status})
        params["include_archived"] = str(include_archived).lower()
        return Call("GET", "/experiments", ExperimentPage, params=params)

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
    ) -> Call[AllocationOut]:
        params = _drop_none({"for_date": _day(for_date), "segment": segment})
        return Call("GET", f"/allocations/{experiment_id}", AllocationOut, params=params)

    @staticmethod
    def summary(experiment_id: str, segment: str | None) -> Call[SummaryOut]:
        params = _drop_none({"segment": segment})
        return Call("GET", f"/experiments/{experiment_id}/summary", SummaryOut, params=params)

    @staticmethod
    def evaluate(
        experiment_id: str,
        policy: Mapping[str, Any],
        estimator: str,
        start: date | str | None,
        end: date | str | None,
        segment: str | None,
    ) -> Call[EvaluationOut]:
        body = _drop_none(
            {
                "policy": dict(policy),
                "estimator": estimator,
                "from": None if start is None else str(start),
                "to": None if end is None else str(end),
                "segment": segment,
            }
        )
        return Call("POST", f"/experiments/{experiment_id}/evaluate", EvaluationOut, json=body)

    @staticmethod
    def segments(experiment_id: str) -> Call[SegmentsOut]:
        return Call("GET", f"/experiments/{experiment_id}/segments", SegmentsOut)

    @staticmethod
    def assign(experiment_id: str, unit_id: str, segment: str | None) -> Call[AssignOut]:
        body = _drop_none({"unit_id": unit_id, "segment": segment})
        return Call("POST", f"/experiments/{experiment_id}/assign", AssignOut, json=body)

    @staticmethod
    def assign_batch(items: Iterable[BatchItem]) -> Call[BatchAssignOut]:
        """(experiment, unit[, segment]) or a mapping with those keys, per item."""
        keys = ("experiment_id", "unit_id", "segment")
        body = {"assignments": [_batch_item(item, keys, "assign_batch") for item in items]}
        return Call("POST", "/assign/batch", BatchAssignOut, json=body)

    @staticmethod
    def convert_batch(items: Iterable[BatchItem]) -> Call[BatchConversionOut]:
        """(experiment, unit[, value, event_id, metric_id]) or a mapping, per item."""
        keys = ("experiment_id", "unit_id", "value", "event_id", "metric_id")
        body = {"conversions": [_batch_item(item, keys, "convert_batch") for item in items]}
        return Call("POST", "/conversions/batch", BatchConversionOut, json=body)

    @staticmethod
    def daily_metrics(
        experiment_id: str,
        start: date | str | None,
        end: date | str | None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Call[MetricRowsOut]:
        params = _drop_none(
            {"from": _day(start), "to": _day(end), "limit": limit, "cursor": cursor}
        )
        return Call("GET", f"/experiments/{experiment_id}/metrics", MetricRowsOut, params=params)

    @staticmethod
    def revisions(
        experiment_id: str,
        start: date | str | None,
        end: date | str | None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Call[RevisionsOut]:
        params = _drop_none(
            {"from": _day(start), "to": _day(end), "limit": limit, "cursor": cursor}
        )
        path = f"/experiments/{experiment_id}/metrics/revisions"
        return Call("GET", path, RevisionsOut, params=params)

    @staticmethod
    def create_webhook(
        url: str, events: Sequence[str], secret: str | None
    ) -> Call[WebhookCreatedOut]:
        body = _drop_none({"url": url, "events": list(events), "secret": secret})
        return Call("POST", "/webhooks", WebhookCreatedOut, json=body)

    @staticmethod
    def convert(
        experiment_id: str,
        unit_id: str,
        value: float | None,
        event_id: str | None,
        metric_id: str | None = None,
    ) -> Call[ConversionOut]:
        body = _drop_none(
            {"unit_id": unit_id, "value": value, "event_id": event_id, "metric_id": metric_id}
        )
        return Call("POST", f"/experiments/{experiment_id}/conversions", ConversionOut, json=body)


class ApiError(Exception):
    """An answer other than 2xx, with the API's error code and message."""

    def __init__(self, status_code: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details or []


def error_of(response: httpx.Response) -> ApiError:
    try:
        error = response.json()["error"]
        return ApiError(response.status_code, error["code"], error["message"], error["details"])
    except (ValueError, KeyError, TypeError):
        return ApiError(response.status_code, "http_error", response.text[:500])


def retry_delay(attempt: int, backoff: float, response: httpx.Response | None) -> float:
    delay: float = backoff * 2.0**attempt
    retry_after = "" if response is None else str(response.headers.get("retry-after", ""))
    if retry_after.isdigit():
        delay = max(delay, float(retry_after))
    return min(delay, 10.0)


def answer_of(call: Call[Model], response: httpx.Response | None, error: Exception | None) -> Model:
    if error is not None:
        raise error
    assert response is not None
    if response.status_code >= 400:
        raise error_of(response)
    return call.model.model_validate(response.json())


def retry_after(
    attempt: int,
    retries: int,
    backoff: float,
    response: httpx.Response | None,
    error: Exception | None,
) -> float | None:
    """Seconds to wait before the next attempt, or None to stop here."""
    if attempt >= retries:
        return None
    if error is not None:
        return retry_delay(attempt, backoff, None)
    if response is not None and response.status_code in RETRIED_STATUSES:
        return retry_delay(attempt, backoff, response)
    return None
