"""ASGI middleware: the runtime started on first use, CORS for the client routes, request
ids, logs and metrics, body limits enforced before the body is read in full. (The hot
paths are in hot_paths.py.)"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mabapi.access.models import Scope as AccessScope
from mabapi.deps import api_routes, declared
from mabapi.errors import error_body
from mabapi.observability import LATENCY, REQUESTS, request_id_var


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


class ClientCors:
    """CORS for the client-scope routes only (those declaring `needs(Scope.CLIENT)`: what a
    web page calls with a client key, docs/SECURITY.md "Browsers"), for the origins on the
    allow-list.

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
        self._paths: list[re.Pattern[str]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._paths is None:
            self._paths = client_paths(scope["app"])
        if scope["type"] == "http" and any(p.match(scope["path"]) for p in self._paths or ()):
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
        declared = header(scope, b"content-length")
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
        await self.app(scope, replaying(b"".join(chunks), receive), send)


class Utf8Json:
    """JSON between systems is UTF-8 (RFC 8259, section 8.1): a JSON body in UTF-16 or
    UTF-32 (found from its first bytes, as RFC 4627 did, or declared by a charset) is a
    415 saying so, before the app reads it. A UTF-8 byte order mark is ignored, as the RFC
    allows."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        content_type = (header(scope, b"content-type") or b"").decode("latin-1").lower()
        if "json" not in content_type:
            await self.app(scope, receive, send)
            return
        charset = re.search(r"charset\s*=\s*\"?([^\s;\"]+)", content_type)
        if charset and charset.group(1) not in ("utf-8", "utf8"):
            await _not_utf8(send, f"it declares charset={charset.group(1)}")
            return
        first = await receive()
        start = bytes(first.get("body", b""))[:4]
        if start.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(start) >= 2 and 0 in start):
            await _not_utf8(send, "it is UTF-16 or UTF-32")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()

        await self.app(scope, replay, send)


async def _not_utf8(send: Send, why: str) -> None:
    await _reject(
        send,
        415,
        "unsupported_media_type",
        f"JSON bodies must be UTF-8 (RFC 8259) and {why}: send the same JSON encoded as UTF-8",
    )


def replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that gives `body` (already read) first, then the real receive."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a header (names arrive lower-cased from the server)."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


async def send_json(send: Send, payload: bytes, status: int = 200) -> None:
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
        supplied = (header(scope, b"x-request-id") or b"").decode("latin-1")
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


def client_paths(app: Any) -> list[re.Pattern[str]]:
    """The path patterns of the routes a client key may call, read from their declarations."""
    return [
        route.path_regex
        for route in api_routes(app.routes)
        if (declaration := declared(route)) is not None and declaration.scope is AccessScope.CLIENT
    ]
