"""Prometheus metrics and structured (JSON) logging.

Metrics are module-level prometheus-client objects. With several workers, `mabapi serve`
sets PROMETHEUS_MULTIPROC_DIR before the workers start, every worker writes its values
there, and GET /metrics adds them up (prometheus-client's multi-process mode), so a
scrape sees the whole server whichever worker answers it.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from pythonjsonlogger.json import JsonFormatter

REQUESTS = Counter(
    "mabapi_http_requests_total",
    "HTTP requests answered, by route template, method and status code.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "mabapi_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template and method.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
POOL = Gauge(
    "mabapi_db_pool_connections",
    "Database connections of this server's pools, in use or idle.",
    ["state"],
    multiprocess_mode="livesum",
)
ALLOCATIONS = Counter(
    "mabapi_allocations_computed_total", "Allocations computed (cache misses included only)."
)
ASSIGNMENTS = Counter(
    "mabapi_assignments_total", "Assignment answers, new units or returning.", ["new"]
)
CONVERSIONS = Counter(
    "mabapi_conversions_total", "Conversions received, counted or already counted.", ["counted"]
)
GROUP_COMMIT_BATCH = Histogram(
    "mabapi_group_commit_batch_size",
    "Requests written per group-commit transaction, by writer (assign, conversions, metrics).",
    ["writer"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
ROWS_INGESTED = Counter("mabapi_metric_rows_ingested_total", "Daily metric rows stored.")
ALLOCATION_SHARE = Gauge(
    "mabapi_allocation_share",
    "Latest traffic share per variant (capped to MABAPI_METRICS_MAX_EXPERIMENTS experiments).",
    ["experiment", "variant"],
    multiprocess_mode="mostrecent",
)
AUTH_FAILURES = Counter(
    "mabapi_auth_failures_total", "Requests refused for a missing, bad or weak key.", ["status"]
)
RATE_LIMITED = Counter("mabapi_rate_limited_total", "Requests refused with 429.")

_tracked_experiments: set[str] = set()


def observe_allocation(
    experiment_id: str, variant_ids: Sequence[str], shares: Sequence[float], *, cap: int
) -> None:
    """Count a computed allocation and publish its shares, for at most `cap` experiments
    per process (label cardinality is what makes a Prometheus server fall over)."""
    ALLOCATIONS.inc()
    if experiment_id not in _tracked_experiments:
        if len(_tracked_experiments) >= cap:
            return
        _tracked_experiments.add(experiment_id)
    for variant_id, share in zip(variant_ids, shares, strict=True):
        ALLOCATION_SHARE.labels(experiment_id, variant_id).set(share)


def observe_pool(in_use: int, idle: int) -> None:
    POOL.labels("in_use").set(in_use)
    POOL.labels("idle").set(idle)


def exposition(multiprocess_dir: str | None) -> tuple[bytes, str]:
    """The text exposition of every metric: all workers' when in multi-process mode."""
    if multiprocess_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def process_exited(multiprocess_dir: str | None) -> None:
    """Drop this worker's live gauges (the pool) from the multi-process files."""
    if multiprocess_dir:
        multiprocess.mark_process_dead(os.getpid(), multiprocess_dir)  # type: ignore[no-untyped-call]


# -- logging -------------------------------------------------------------------------

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        # uvicorn attaches a copy of the message with terminal colour codes; a log line
        # never carries them (JSON would show them as raw \u001b escapes).
        record.__dict__.pop("color_message", None)
        return True


def resolve_log_format(log_format: str, stream: TextIO | None = None) -> str:
    """`auto` is text on a terminal (a person reads it) and JSON elsewhere (a collector)."""
    if log_format != "auto":
        return log_format
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    return "text" if callable(isatty) and isatty() else "json"


def log_handler(log_format: str) -> logging.Handler:
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    if resolve_log_format(log_format) == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}{request_id}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    return handler


def configure_logging(log_format: str, level: str) -> None:
    """One handler on the `mabapi` and `uvicorn` loggers (set once per process)."""
    handler = log_handler(log_format)
    for name in ("mabapi", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        if any(getattr(h, "_mabapi", False) for h in logger.handlers):
            continue
        handler._mabapi = True  # type: ignore[attr-defined]
        logger.handlers = [h for h in logger.handlers if not isinstance(h, logging.StreamHandler)]
        logger.addHandler(handler)
        logger.setLevel(level.upper())
        logger.propagate = False
