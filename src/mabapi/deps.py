"""FastAPI dependencies the routes share."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.routing import BaseRoute

from mabapi.access import service as access
from mabapi.access.models import DEFAULT_PROJECT, Scope
from mabapi.access.service import OPEN, Principal
from mabapi.db.transactions import read_only_transaction
from mabapi.errors import (
    AppError,
    ForbiddenError,
    InvalidInputError,
    RateLimitedError,
    Responses,
    UnauthorizedError,
    documented_error,
)
from mabapi.observability import AUTH_FAILURES, RATE_LIMITED, request_id_var
from mabapi.runtime import runtime_of
from mabapi.schemas import ID_PATTERN, Identifier, IsoDate
from mabapi.settings import Settings


# Dependencies are `async def` even when they do no I/O: FastAPI runs plain `def`
# dependencies in a thread pool, which costs more than the work they do.
async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request owns the transaction: commit on success, roll back on any error.

    Used with scope="function", so the commit happens before the response is sent: a
    client never sees a 2xx for a write that failed to commit.
    """
    sessionmaker = runtime_of(request.app).sessionmaker
    async with sessionmaker() as session, session.begin():
        yield session
        # The audit entry of a write commits with the write, or not at all.
        audit: access.AuditEvent | None = getattr(request.state, "audit", None)
        if audit is not None:
            await access.record(session, audit)
    _committed(request)


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """For a route that only reads: one snapshot for the whole answer
    (`read_only_transaction`: REPEATABLE READ on PostgreSQL, no write lock on SQLite),
    rolled back at the end."""
    async with read_only_transaction(runtime_of(request.app).sessionmaker) as session:
        yield session


def _committed(request: Request) -> None:
    """A write committed: this process's cached answers may now be out of date, and an
    experiment's own change (a variant paused or resumed, its settings, a conclusion) is
    seen by assignment in this process at once, not when the cached allocation expires."""
    if request.method not in ("GET", "HEAD"):
        runtime_of(request.app).answers.note_write()
        experiment_id = request.path_params.get("experiment_id")
        if experiment_id:
            runtime_of(request.app).allocation_cache.invalidate(str(experiment_id))


class LazySession:
    """A session opened on first use: a request that finds its answer in a per-process
    memo (a returning unit) never takes a pooled connection or a transaction."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._session: AsyncSession | None = None
        self._after_commit: list[Callable[[], None]] = []

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run `action` once the transaction has committed (never if it does not): how a
        per-process cache learns only what is durable."""
        self._after_commit.append(action)

    async def __call__(self) -> AsyncSession:
        if self._session is None:
            session = self._sessionmaker()
            await session.begin()
            self._session = session
        return self._session

    async def finish(self, *, commit: bool) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:
            if commit:
                await session.commit()
            else:
                await session.rollback()
        finally:
            await session.close()
        if commit:
            for action in self._after_commit:
                action()


async def get_lazy_session(request: Request) -> AsyncIterator[LazySession]:
    """Same transaction rule as `get_session` (commit before the response, roll back on
    error), for a session that may never be opened."""
    lazy = LazySession(runtime_of(request.app).sessionmaker)
    try:
        yield lazy
    except BaseException:
        await lazy.finish(commit=False)
        raise
    await lazy.finish(commit=True)
    _committed(request)


SettingsDep = Annotated[Settings, Depends(get_settings)]
# The one path-parameter type of an experiment id, for every router (dashboard included).
ExperimentId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=ID_PATTERN.pattern,
        description="Experiment id: 1-128 of A-Z a-z 0-9 _ . : -",
    ),
]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]
LazySessionDep = Annotated[LazySession, Depends(get_lazy_session, scope="function")]


# The dashboard's browser sessions carry their key in this HttpOnly cookie (path /ui).
KEY_COOKIE = "mabapi_key"
QUERY_KEY_NAMES = frozenset({"api_key", "apikey", "key", "token", "access_token"})


@dataclass(frozen=True)
class Needs:
    """The scope a route declares (`dependencies=[needs(Scope.READ)]`): `authorize`, the
    hot paths and browser CORS read it from the route. None: open (the probes, the login
    page). `operator`: only a key of the default project (GET /metrics, whose gauges
    name every project's experiments)."""

    scope: Scope | None
    operator: bool = False

    def __call__(self) -> None:
        return None


def needs(scope: Scope | None, *, operator: bool = False) -> Any:
    """Declare the scope a route needs (docs/SECURITY.md, "Scopes"): `client` for
    assignment and conversions (safe in a web page), `read` for reads, `write` for
    ingestion, `admin` for the rest."""
    return Depends(Needs(scope, operator))


def declared(route: BaseRoute) -> Needs | None:
    """What a route declares; None for a route that declares nothing (FastAPI's docs
    pages, static files, a path no route matches)."""
    found = [
        dependency.dependency
        for dependency in getattr(route, "dependencies", ())
        if isinstance(dependency.dependency, Needs)
    ]
    return found[0] if len(found) == 1 else None


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    """Every APIRoute, including those of routers FastAPI keeps as included routers."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from api_routes(included.routes)


def declared_scopes(app: FastAPI) -> dict[tuple[str, str], Needs]:
    """(method, path template) -> what the route declares, for every declaring route."""
    found: dict[tuple[str, str], Needs] = {}
    for route in api_routes(app.routes):
        declaration = declared(route)
        if declaration is not None:
            for method in route.methods or ():
                found[(method, route.path)] = declaration
    return found


# A request no declaring route matched (static files, the docs pages): reads need `read`,
# anything else `admin`.
def _undeclared(method: str) -> Needs:
    return Needs(Scope.READ if method in ("GET", "HEAD") else Scope.ADMIN)


def _refuse(status: int, error: Exception) -> Exception:
    AUTH_FAILURES.labels(str(status)).inc()
    return error


async def _principal(request: Request, settings: Settings) -> Principal:
    keyring = runtime_of(request.app).keyring
    header = request.headers.get("authorization")
    if header is None and request.scope["path"].startswith("/ui"):
        cookie = request.cookies.get(KEY_COOKIE)
        if cookie:
            header = f"Bearer {cookie}"
    if header is None:
        if not settings.require_auth and not await keyring.any_keys():
            return OPEN
        raise _refuse(401, UnauthorizedError("missing API key: send 'Authorization: Bearer <key>'"))
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 256:
        raise _refuse(401, UnauthorizedError("malformed Authorization header: use 'Bearer <key>'"))
    principal = await keyring.authenticate(token)
    if principal is None:
        raise _refuse(401, UnauthorizedError("unknown or revoked API key"))
    return principal


async def authorize(request: Request) -> Principal:
    """Who is calling and whether they may: 401 without a valid key, 403 for a key whose
    scope does not cover the route, 429 over the key's rate, 404 for an experiment of
    another project (worded as for one that does not exist). Applied to every route."""
    route = request.scope.get("route")
    path: str = request.scope["path"]
    template = route.path if isinstance(route, APIRoute) else path
    declaration = (declared(route) if route is not None else None) or _undeclared(request.method)
    needed = declaration.scope
    if needed is None:
        return OPEN
    if request.scope.get("query_string") and QUERY_KEY_NAMES & set(request.query_params):
        raise _refuse(
            400,
            AppError(
                "API keys in the query string are refused (they end up in logs): send "
                "'Authorization: Bearer <key>'"
            ),
        )
    settings: Settings = request.app.state.settings
    principal = await _principal(request, settings)
    if declaration.operator and not principal.sees(DEFAULT_PROJECT):
        raise _refuse(
            403,
            ForbiddenError(
                f"{request.method} {template} needs an admin key of the default project"
            ),
        )
    if not principal.may(needed):
        raise _refuse(
            403,
            ForbiddenError(
                f"this key's scope ({principal.scope}) does not allow this: {needed} needed"
            ),
        )
    if principal.key_id is not None and settings.rate_limit_per_second > 0:
        limiter = runtime_of(request.app).rate_limiter
        wait = await limiter.wait_time(principal.key_id)
        if wait > 0:
            RATE_LIMITED.inc()
            raise RateLimitedError(
                f"rate limit of {settings.rate_limit_per_second:g} requests/s for this key "
                "reached; retry after the given delay",
                retry_after=max(1, math.ceil(wait)),
            )
    experiment_id = request.path_params.get("experiment_id")
    # An id no experiment can have (NUL, a surrogate, too long...) is left to the route's
    # validation (422); looking it up would hand the database text it refuses.
    if (
        experiment_id
        and principal.project_id is not None
        and ID_PATTERN.fullmatch(str(experiment_id))
    ):
        owners = runtime_of(request.app).owners
        owner, asked = await owners.owner(str(experiment_id))
        if owner != principal.project_id:
            # Another project's id, or one that exists nowhere: the same 404 after the
            # same work, decided here for both (docs/SECURITY.md, "Isolation").
            raise await owners.refuse_hidden(str(experiment_id), asked_database=asked)
    if request.method not in ("GET", "HEAD") and needed in (Scope.WRITE, Scope.ADMIN):
        status = route.status_code if isinstance(route, APIRoute) and route.status_code else 200
        request.state.audit = access.AuditEvent(
            principal=principal,
            method=request.method,
            route=template,
            path=path,
            status_code=status,
            request_id=request_id_var.get(),
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(authorize)]


# --- Shared by the routes: documented errors, segment and page parameters ---

INVALID: Responses = {
    422: documented_error("The request does not have the documented shape or values.")
}
NOT_FOUND: Responses = {404: documented_error("No such experiment (or variant).")}
CONFLICT: Responses = {
    409: documented_error("The request conflicts with the experiment's current state.")
}
TOO_LARGE: Responses = {
    413: documented_error("The request body is larger than the configured limit.")
}
UNAVAILABLE: Responses = {
    503: documented_error("The database is unreachable; retry after the given delay.")
}

SegmentQuery = Annotated[
    Identifier | None,
    Query(
        description="One segment (settings.segments.pooling). Allocations: a segment never "
        "seen gets the split over all traffic.",
    ),
]


# The filters GET .../metrics and GET .../metrics/revisions share.
FromDay = Annotated[IsoDate | None, Query(alias="from", description="First day (inclusive).")]
ToDay = Annotated[IsoDate | None, Query(alias="to", description="Last day (inclusive).")]
VariantFilter = Annotated[str | None, Query(pattern=ID_PATTERN.pattern, max_length=128)]
# Pages: at most MAX_PAGE rows an answer (DEFAULT_PAGE unless `limit` says otherwise), and
# an opaque cursor to the next page (keyset paging: a page costs the same however deep).
DEFAULT_PAGE = 1000
MAX_PAGE = 10_000
PageLimit = Annotated[
    int, Query(ge=1, le=MAX_PAGE, description=f"Rows per page (at most {MAX_PAGE}).")
]
Cursor = Annotated[
    str | None,
    Query(max_length=600, pattern=r"^[A-Za-z0-9_-]+={0,2}$", description="`next_cursor` of "
          "the previous page."),
]  # fmt: skip


def encode_cursor(key: Sequence[object]) -> str:
    text = json.dumps([str(part) if isinstance(part, date) else part for part in key])
    return base64.urlsafe_b64encode(text.encode()).decode()


def decode_cursor(cursor: str, kinds: tuple[type, ...]) -> tuple[Any, ...]:
    """The key a cursor holds, checked part by part; a 422 for one this API did not give."""
    problem = InvalidInputError("cursor is not one this API gave: pass next_cursor as it came")
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(parts, list) or len(parts) != len(kinds):
            raise problem
        key: list[Any] = []
        for part, kind in zip(parts, kinds, strict=True):
            if kind is date:
                key.append(date.fromisoformat(part))
            elif not isinstance(part, kind) or isinstance(part, bool):
                raise problem
            else:
                key.append(part)
        return tuple(key)
    except (ValueError, TypeError, binascii.Error):
        raise problem from None
