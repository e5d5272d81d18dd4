"""The per-request hot paths, served without FastAPI's router and dependency solver.

A py-spy profile of a returning-unit assign under wrk showed 35% of the worker's CPU in
FastAPI's dependency solving, most of the rest in route matching and request parsing,
and under 5% in the work itself (a memo lookup). So a few routes are served here first.

Nothing here is declared twice. A route opts in where it is declared, with `@hot_path`
(its body model, its one optional query parameter, and the function computing its
answer); at the first request the table is built from the app's own `APIRoute`s: their
`path_regex`, methods and status code. Authorization happens here, once, for every hot
route (`deps.authorize`, the same function the FastAPI routes depend on), so a new hot
route cannot forget it. Errors go through the exception handlers registered on the app.

Anything this layer does not fully understand (a path id outside the id pattern, a body
that is not JSON under a JSON content type or fails validation, an unexpected query
string) is handed to FastAPI untouched, body included, and FastAPI gives the documented
answer. `scope["route"]` is set to the FastAPI route, so metrics and logs label both
paths the same. `tests/test_hot_path_parity.py` keeps the two paths' answers identical.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from mabapi.access.service import Principal
from mabapi.deps import api_routes, authorize
from mabapi.middleware import header, replaying, send_json
from mabapi.schemas import ID_PATTERN

# The answer of a hot route: (request, principal, path params, body or query value).
Answer = Callable[[Request, Principal, dict[str, str], Any], Awaitable[BaseModel]]
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

_MARK = "__mabapi_hot_path__"
_DELEGATE: Any = object()  # "hand this request to FastAPI"


@dataclass(frozen=True, slots=True)
class HotPath:
    answer: Answer
    body: type[BaseModel] | None = None  # the JSON body's model (POST)
    query: tuple[str, TypeAdapter[Any]] | None = None  # one optional query parameter (GET)


def hot_path(
    answer: Answer,
    *,
    body: type[BaseModel] | None = None,
    query: tuple[str, TypeAdapter[Any]] | None = None,
) -> Callable[[Endpoint], Endpoint]:
    """Mark a FastAPI endpoint as served by the hot paths with `answer`."""

    def mark(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, _MARK, HotPath(answer, body, query))
        return endpoint

    return mark


@dataclass(frozen=True, slots=True)
class _HotRoute:
    method: str
    route: APIRoute
    spec: HotPath
    status_code: int


def hot_routes(app: FastAPI) -> list[_HotRoute]:
    """The app's marked routes, in the order FastAPI would match them."""
    found = []
    for route in api_routes(app.routes):
        spec = getattr(route.endpoint, _MARK, None)
        if isinstance(spec, HotPath):
            for method in sorted(route.methods or ()):
                found.append(_HotRoute(method, route, spec, route.status_code or 200))
    return found


def _json_content_type(scope: Scope) -> bool:
    """FastAPI parses a body as JSON only under a JSON content type (application/json or
    application/*+json; none at all is not JSON: FastAPI's strict content type, which
    keeps a page on another origin from posting without a CORS preflight). This layer
    takes the same bodies and leaves every other case to FastAPI."""
    value = header(scope, b"content-type")
    if value is None:
        return False
    kind = value.split(b";", 1)[0].strip().lower()
    return kind == b"application/json" or (
        kind.startswith(b"application/") and kind.endswith(b"+json")
    )


class HotPaths:
    """ASGI middleware serving the routes marked `@hot_path` (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._table: list[_HotRoute] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self._table is None:
                self._table = hot_routes(scope["app"])
            method, path = scope["method"], scope["path"]
            for hot in self._table:
                if hot.method == method and (match := hot.route.path_regex.match(path)):
                    await self._serve(hot, match.groupdict(), scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _serve(
        self,
        hot: _HotRoute,
        params: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        body = b""
        if hot.spec.body is not None:
            body, receive = await _read_body(receive)
        payload = _parse(hot.spec, scope, params, body)
        if payload is _DELEGATE:
            await self.app(scope, receive, send)  # FastAPI gives the documented answer
            return
        scope["route"] = hot.route
        scope["endpoint"] = hot.route.endpoint
        scope["path_params"] = params
        request = Request(scope, receive)
        try:
            principal = await authorize(request)
            answer = await hot.spec.answer(request, principal, params, payload)
        except Exception as error:
            handler = _handler_for(scope["app"], error)
            if handler is None:
                raise  # as for a FastAPI route: ServerErrorMiddleware answers (500)
            response: Response = await handler(request, error)
        else:
            await send_json(send, answer.model_dump_json().encode(), hot.status_code)
            return
        await response(scope, receive, send)


def _parse(spec: HotPath, scope: Scope, params: dict[str, str], body: bytes) -> Any:
    """The body model or query value, or _DELEGATE for anything FastAPI should answer."""
    if any(not ID_PATTERN.fullmatch(value) for value in params.values()):
        return _DELEGATE
    query = scope.get("query_string", b"")
    if spec.body is None:
        if not query:
            return None
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        if spec.query is None or len(pairs) != 1 or pairs[0][0] != spec.query[0]:
            return _DELEGATE
        try:
            return spec.query[1].validate_python(pairs[0][1])
        except ValidationError:
            return _DELEGATE
    if query or not body or not _json_content_type(scope):
        return _DELEGATE
    try:
        return spec.body.model_validate(json.loads(body))
    # JSONDecodeError is a ValueError; JSON nested ~1,000 deep is a RecursionError.
    # FastAPI then gives the documented 4xx for each.
    except (ValueError, ValidationError, RecursionError):
        return _DELEGATE


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
    return body, replaying(body, receive)


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
