"""ASGI middleware: request ids, logs and metrics; body limits enforced before the body
is read in full; the per-request hot paths served without FastAPI's dependency solver."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mabapi.assignments.routes import assign_unit, convert_unit
from mabapi.assignments.schemas import AssignIn, ConversionIn
from mabapi.deps import authorize
from mabapi.errors import error_body
from mabapi.experiments.routes import allocation_answer, record_metric
from mabapi.experiments.schemas import MetricIn
from mabapi.observability import LATENCY, REQUESTS, request_id_var
from mabapi.schemas import ID_PATTERN, IsoDate


class LazyStart:
    """Start the app's runtime on the first request of an event loop that has none.

    The lifespan starts it before any request; this covers servers and test clients that
    never run the lifespan (`TestClient(app)` without `with`: one event loop per request).
    Concurrent first requests of a loop wait on one lock, so the start runs once.
    """

    def __init__(self, app: ASGIApp, *, start: Callable[[], Awaitable[None]]) -> None:
        self.app = app
        self._start = start
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            state = scope["app"].state
            loop = asyncio.get_running_loop()
            if getattr(state, "runtime_loop", None) is not loop:
                for old in [other for other in self._locks if other.is_closed()]:
                    del self._locks[old]
                lock = self._locks.setdefault(loop, asyncio.Lock())
                async with lock:
                    if getattr(state, "runtime_loop", None) is not loop:
                        await self._start()
        await self.app(scope, receive, send)


# The routes a web page calls with a client key (docs/SECURITY.md, "Browsers").
CLIENT_ROUTES = re.compile(r"^/experiments/[^/]+/(assign|conversions)(/batch)?$")


class ClientCors:
    """CORS for the client-scope routes only, for the origins on the allow-list.

    Starlette's CORSMiddleware answers preflights and adds the headers; every other path
    goes straight to the app, so no other route is ever readable cross-origin. Credentials
    (cookies) are never allowed: a page sends its client key in `Authorization`.
    """

    def __init__(self, app: ASGIApp, *, origins: Sequence[str]) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=list(origins),
            allow_methods=["POST"],
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=False,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and CLIENT_ROUTES.match(scope["path"]):
            await self.cors(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodySizeLimit:
    """413 for bodies over the limit; batch paths get the larger batch limit.

    A declared Content-Length over the limit is refused without reading anything; a body
    without one (chunked) is read up to the limit and refused as soon as it passes it.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_batch_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_batch_bytes = max_batch_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.max_batch_bytes if scope["path"].endswith("/batch") else self.max_bytes
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _reject(send, 400, "bad_request", "Content-Length is not a number")
                return
            if length > limit:
                await _too_large(send, limit)
                return
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replaying(b"".join(chunks), receive), send)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that gives `body` (already read) first, then the real receive."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a header (names arrive lower-cased from the server)."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


async def _send_json(send: Send, payload: bytes, status: int = 200) -> None:
    """A JSON response, as Starlette's Response would send it, without building one."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-length", str(len(payload)).encode()),
                (b"content-type", b"application/json"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _too_large(send: Send, limit: int) -> None:
    await _reject(
        send,
        413,
        "payload_too_large",
        f"request body is larger than {limit} bytes; split it into smaller requests",
    )


async def _reject(send: Send, status: int, code: str, message: str) -> None:
    payload = json.dumps(error_body(code, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


# `on_finish` (the pool gauges) runs at most this often: a gauge, not a per-request count.
FINISH_INTERVAL_S = 0.5
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
access_logger = logging.getLogger("mabapi.access")


class RequestContext:
    """A request id for every request (the caller's X-Request-ID if well formed, else a
    new one), echoed in the response and put on every log line; then one log line and
    the Prometheus request metrics, labelled by route template (never the raw path, so
    ids in paths cannot blow up label cardinality)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        on_finish: Callable[[], None] | None = None,
        on_status: Callable[[int, str], None] | None = None,
    ) -> None:
        self.app = app
        self.on_finish = on_finish
        self.on_status = on_status
        self._next_finish = 0.0
        self._metric_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = (_header(scope, b"x-request-id") or b"").decode("latin-1")
        # 32 hex digits, as uuid4().hex gave, from the same source at a third of the cost.
        request_id = supplied if _REQUEST_ID.match(supplied) else os.urandom(16).hex()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            counter, histogram = self._children(method, template, status)
            counter.inc()
            histogram.observe(elapsed)
            if self.on_status is not None:
                self.on_status(status, template)
            if self.on_finish is not None and started >= self._next_finish:
                self._next_finish = started + FINISH_INTERVAL_S
                self.on_finish()
            if access_logger.isEnabledFor(logging.INFO):
                access_logger.info(
                    "%s %s %d",
                    method,
                    scope["path"],
                    status,
                    extra={
                        "method": method,
                        "path": scope["path"],
                        "route": template,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            request_id_var.reset(token)

    def _children(self, method: str, template: str, status: int) -> tuple[Any, Any]:
        """The labelled metrics of one (method, route, status): looked up once, since
        `labels()` costs more than the increment (bounded: route templates, not paths)."""
        key = (method, template, status)
        children = self._metric_children.get(key)
        if children is None:
            children = (
                REQUESTS.labels(method, template, str(status)),
                LATENCY.labels(method, template),
            )
            self._metric_children[key] = children
        return children


# The per-request hot paths, served without FastAPI's router and dependency solver.
#
# Returning-unit assignment and GET /allocations are meant to reach 0.6x of a bare
# FastAPI endpoint (benchmarks/load.py). A py-spy profile of a returning-unit assign under
# wrk showed 35% of the worker's CPU in FastAPI's dependency solving, most of the rest in
# route matching and request parsing, and under 5% in the work itself (a memo lookup). So
# these routes are matched here first, by one regular expression each, and run the very
# same code as their FastAPI routes: `deps.authorize`, the route's core function (`assign_unit`,
# `convert_unit`, `allocation_answer`, `record_metric`), the same transaction context
# managers, the same response models and the exception handlers registered on the app.
#
# Anything this layer does not fully understand (a body that is not JSON or fails
# validation, another content type, an unexpected query string, an invalid path id) is
# handed to FastAPI untouched, body included, and FastAPI gives the documented answer.
# The routes stay declared in FastAPI, so the OpenAPI document does not change, and
# `scope["route"]` is set to the FastAPI route so metrics and logs label them the same.

_DATE = TypeAdapter(IsoDate)
_DELEGATE: Any = object()  # "hand this request to FastAPI"
_ID_MAX = 128

# The answer for a request: a model to send as JSON, or None to hand it to FastAPI.
Handler = Callable[[Request, str, Any], Awaitable[BaseModel]]


@dataclass(frozen=True, slots=True)
class HotRoute:
    method: str
    pattern: re.Pattern[str]
    template: str
    body: type[BaseModel] | None
    handler: Handler


async def _assign(request: Request, experiment_id: str, body: AssignIn) -> BaseModel:
    await authorize(request)
    return await assign_unit(request.app.state, experiment_id, body)


async def _convert(request: Request, experiment_id: str, body: ConversionIn) -> BaseModel:
    await authorize(request)
    return await convert_unit(request.app.state, experiment_id, body)


async def _allocation(request: Request, experiment_id: str, for_date: Any) -> BaseModel:
    principal = await authorize(request)
    return await allocation_answer(
        request.app.state, experiment_id, for_date, record=principal.may_write
    )


async def _metric(request: Request, _unused: str, body: MetricIn) -> BaseModel:
    principal = await authorize(request)
    audit = getattr(request.state, "audit", None)
    return await record_metric(request.app.state, principal, body, audit)


ROUTES = (
    HotRoute(
        "POST",
        re.compile(r"^/experiments/([^/]+)/assign$"),
        "/experiments/{experiment_id}/assign",
        AssignIn,
        _assign,
    ),
    HotRoute(
        "POST",
        re.compile(r"^/experiments/([^/]+)/conversions$"),
        "/experiments/{experiment_id}/conversions",
        ConversionIn,
        _convert,
    ),
    HotRoute(
        "GET",
        re.compile(r"^/allocations/([^/]+)$"),
        "/allocations/{experiment_id}",
        None,
        _allocation,
    ),
    HotRoute("POST", re.compile(r"^/metrics/$"), "/metrics/", MetricIn, _metric),
)


def _json_content_type(scope: Scope) -> bool:
    """FastAPI parses a body as JSON only under a JSON content type (application/json or
    application/*+json; none at all is not JSON: FastAPI's strict content type, which
    keeps a page on another origin from posting without a CORS preflight). This layer
    takes the same bodies and leaves every other case to FastAPI."""
    value = _header(scope, b"content-type")
    if value is None:
        return False
    kind = value.split(b";", 1)[0].strip().lower()
    return kind == b"application/json" or (
        kind.startswith(b"application/") and kind.endswith(b"+json")
    )


class HotPaths:
    """ASGI middleware serving `ROUTES` directly (see the module's docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._routes: dict[str, APIRoute] | None = None

    def _route(self, app: FastAPI, method: str, template: str) -> APIRoute | None:
        if self._routes is None:
            self._routes = {
                f"{m} {route.path}": route
                for route in _api_routes(app.routes)
                for m in route.methods or ()
            }
        return self._routes.get(f"{method} {template}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            for hot in ROUTES:
                if hot.method == method and (match := hot.pattern.match(path)):
                    await self._serve(hot, match, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _serve(
        self, hot: HotRoute, match: re.Match[str], scope: Scope, receive: Receive, send: Send
    ) -> None:
        body = b""
        if hot.method != "GET":
            body, receive = await _read_body(receive)
        experiment_id = match.group(1) if match.groups() else ""
        payload = self._parse(hot, scope, experiment_id, body)
        api_route = self._route(scope["app"], hot.method, hot.template)
        if payload is _DELEGATE or api_route is None:
            await self.app(scope, receive, send)  # FastAPI gives the documented answer
            return
        scope["route"] = api_route
        scope["endpoint"] = api_route.endpoint
        scope["path_params"] = {"experiment_id": experiment_id} if experiment_id else {}
        request = Request(scope, receive)
        try:
            answer = await hot.handler(request, experiment_id, payload)
        except Exception as error:
            handler = _handler_for(scope["app"], error)
            if handler is None:
                raise  # as for a FastAPI route: ServerErrorMiddleware answers (500/503)
            response: Response = await handler(request, error)
        else:
            await _send_json(send, answer.model_dump_json().encode())
            return
        await response(scope, receive, send)

    @staticmethod
    def _parse(hot: HotRoute, scope: Scope, experiment_id: str, body: bytes) -> Any:
        if experiment_id and not (
            len(experiment_id) <= _ID_MAX and ID_PATTERN.fullmatch(experiment_id)
        ):
            return _DELEGATE
        if hot.body is None:  # GET /allocations: only ?for_date=YYYY-MM-DD is ours
            query = scope.get("query_string", b"")
            if not query:
                return None
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            if len(pairs) != 1 or pairs[0][0] != "for_date":
                return _DELEGATE
            try:
                return _DATE.validate_python(pairs[0][1])
            except ValidationError:
                return _DELEGATE
        if scope.get("query_string") or not body or not _json_content_type(scope):
            return _DELEGATE
        try:
            return hot.body.model_validate(json.loads(body))
        # JSONDecodeError is a ValueError; JSON nested ~1,000 deep is a RecursionError.
        # FastAPI then gives the documented 4xx for each.
        except (ValueError, ValidationError, RecursionError):
            return _DELEGATE


def _api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    """Every APIRoute, including those of routers FastAPI keeps as included routers."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _api_routes(included.routes)


async def _read_body(receive: Receive) -> tuple[bytes, Receive]:
    """The whole body (BodySizeLimit, outside this layer, has bounded it), and a receive
    that replays it for FastAPI if the request is handed on."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    return body, _replaying(body, receive)


def _handler_for(
    app: FastAPI, error: Exception
) -> Callable[[Request, Exception], Awaitable[Response]] | None:
    """The handler Starlette's ExceptionMiddleware would pick: the registered handler of
    the nearest class in the error's MRO, except the catch-all `Exception` one, which
    (as for any route) is ServerErrorMiddleware's to run."""
    for cls in type(error).__mro__:
        if cls is Exception:
            return None
        handler = app.exception_handlers.get(cls)
        if handler is not None:
            return handler  # type: ignore[return-value]
    return None
