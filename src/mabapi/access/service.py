"""API keys, scopes and projects; the audit log. The use cases flush and never commit;
the key ring's own bookkeeping (a key's last use) runs in a background transaction.

A key is `mab_<id>_<secret>`: the id finds the row, the SHA-256 of the whole key is
compared in constant time (`hmac.compare_digest`), and the secret is shown once, at
creation. Scopes nest: `admin` > `write` > {`read`, `client`}.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mabapi.access import repository
from mabapi.access.models import DEFAULT_PROJECT, ApiKey, AuditEntry, Scope
from mabapi.db.base import utcnow
from mabapi.db.transactions import background_transaction
from mabapi.errors import ConflictError, ForbiddenError, NotFoundError

KEY_PATTERN = re.compile(r"^mab_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
BOOTSTRAP_KEY_ID = "bootstrap"

# What each scope may do (docs/SECURITY.md): write = read + client + ingestion; admin = all.
GRANTS: dict[Scope, frozenset[Scope]] = {
    Scope.CLIENT: frozenset({Scope.CLIENT}),
    Scope.READ: frozenset({Scope.READ}),
    Scope.WRITE: frozenset({Scope.CLIENT, Scope.READ, Scope.WRITE}),
    Scope.ADMIN: frozenset(Scope),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. `project_id` None means every project (an open local instance)."""

    key_id: str | None
    project_id: str | None
    scope: Scope

    def may(self, needed: Scope) -> bool:
        return needed in GRANTS[self.scope]

    @property
    def may_read(self) -> bool:
        return self.may(Scope.READ)

    @property
    def may_write(self) -> bool:
        return self.may(Scope.WRITE)

    @property
    def may_admin(self) -> bool:
        return self.may(Scope.ADMIN)

    def sees(self, project_id: str | None) -> bool:
        return self.project_id is None or project_id is None or project_id == self.project_id

    @property
    def home_project(self) -> str:
        return self.project_id or DEFAULT_PROJECT


OPEN = Principal(key_id=None, project_id=None, scope=Scope.ADMIN)


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def key_id_of(token: str) -> str:
    """The row a presented key names: its id, or the bootstrap key for any other shape."""
    match = KEY_PATTERN.match(token)
    return match.group(1) if match else BOOTSTRAP_KEY_ID


def new_key() -> tuple[str, str]:
    key_id = secrets.token_hex(8)
    return key_id, f"mab_{key_id}_{secrets.token_urlsafe(32)}"


async def create_key(
    session: AsyncSession, *, project_id: str, scope: Scope, name: str
) -> tuple[ApiKey, str]:
    """A new key for `project_id` (created if new); the secret is returned only here."""
    now = utcnow()
    await repository.ensure_project(session, project_id, now)
    key_id, token = new_key()
    key = ApiKey(
        id=key_id,
        project_id=project_id,
        scope=scope.value,
        name=name,
        secret_hash=hash_key(token),
        created_at=now,
    )
    await repository.add_key(session, key)
    return key, token


async def ensure_bootstrap_key(session: AsyncSession, *, token: str) -> None:
    """The admin key of MABAPI_BOOTSTRAP_ADMIN_KEY, for the `default` project. A changed
    value replaces the old one; a revoked key stays revoked while the value is the same."""
    now = utcnow()
    await repository.ensure_project(session, DEFAULT_PROJECT, now)
    digest = hash_key(token)
    # Idempotent: every worker of `mabapi serve --workers N` (and every replica) runs this
    # at start, at the same moment on a fresh database. A plain INSERT made the second one
    # fail on the unique key, and uvicorn then stopped the whole server.
    await repository.insert_key_if_missing(
        session,
        {
            "id": BOOTSTRAP_KEY_ID,
            "project_id": DEFAULT_PROJECT,
            "scope": Scope.ADMIN.value,
            "name": "bootstrap admin key (MABAPI_BOOTSTRAP_ADMIN_KEY)",
            "secret_hash": digest,
            "created_at": now,
        },
    )
    key = await repository.get_key(session, BOOTSTRAP_KEY_ID)
    if key is not None and not hmac.compare_digest(key.secret_hash, digest):
        key.secret_hash = digest
        key.revoked_at = None
    await session.flush()


async def revoke_key(session: AsyncSession, *, key_id: str, principal: Principal) -> ApiKey:
    key = await repository.get_key(session, key_id)
    if key is None or not principal.sees(key.project_id):
        raise NotFoundError(f"key {key_id!r} does not exist")
    if key.id == principal.key_id:
        # Locking yourself out is never what was meant (the bootstrap key especially).
        raise ConflictError("a key cannot revoke itself: revoke it with another admin key")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()
    return key


async def list_keys(session: AsyncSession, *, principal: Principal) -> Sequence[ApiKey]:
    return await repository.list_keys(session, principal.project_id)


def check_key_project(principal: Principal, project_id: str) -> None:
    if not principal.sees(project_id):
        raise ForbiddenError(
            f"this key manages project {principal.project_id!r} only; create keys for "
            f"{project_id!r} with `mabapi keys create --project {project_id}`"
        )


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One write to record in the audit log, in the transaction of the write itself."""

    principal: Principal
    method: str
    route: str
    path: str
    status_code: int
    request_id: str


async def record(session: AsyncSession, event: AuditEvent) -> None:
    await record_many(session, [event])


async def record_many(session: AsyncSession, events: Sequence[AuditEvent]) -> None:
    """Audit entries in one statement."""
    now = utcnow()
    await repository.add_audits(
        session,
        [
            {
                "at": now,
                "key_id": event.principal.key_id,
                "project_id": event.principal.project_id,
                "method": event.method,
                "route": event.route,
                "path": event.path[:1000],
                "status_code": event.status_code,
                "request_id": event.request_id,
            }
            for event in events
        ],
    )


async def audit_entries(
    session: AsyncSession, *, principal: Principal, limit: int, before_id: int | None
) -> Sequence[AuditEntry]:
    return await repository.list_audit(
        session, project_id=principal.project_id, limit=limit, before_id=before_id
    )


@dataclass(frozen=True, slots=True)
class _KnownKey:
    expires: float
    secret_hash: str | None  # None: no such key
    principal: Principal | None  # None: revoked


# Per-process tables keyed by what requests send are bounded: past this they start over.
MAX_ENTRIES = 100_000


class KeyRing:
    """Per-process cache of keys, so checking a key costs no round
    trip on most requests. A key revoked through another process stops working within
    `ttl` seconds; through this one, at once (`forget`)."""

    TOUCH_EVERY_S = 60.0

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], ttl: float) -> None:
        self._sessionmaker = sessionmaker
        self._ttl = ttl
        self._keys: dict[str, _KnownKey] = {}
        self._any_keys: tuple[float, bool] | None = None
        self._any_keys_lock = asyncio.Lock()
        self._touched: dict[str, float] = {}

    def forget(self) -> None:
        self._keys.clear()
        self._any_keys = None

    async def any_keys(self) -> bool:
        now = time.monotonic()
        if self._any_keys is not None and self._any_keys[0] > now:
            return self._any_keys[1]
        # One query when the entry expires, however many requests arrive meanwhile (a
        # stampede of identical queries showed up as latency spikes under load).
        async with self._any_keys_lock:
            if self._any_keys is not None and self._any_keys[0] > time.monotonic():
                return self._any_keys[1]
            async with self._sessionmaker() as session:
                found = await repository.count_live_keys(session) > 0
            self._any_keys = (time.monotonic() + self._ttl, found)
        return found

    async def _known(self, key_id: str) -> _KnownKey:
        now = time.monotonic()
        known = self._keys.get(key_id)
        if known is not None and known.expires > now:
            return known
        async with self._sessionmaker() as session:
            key = await repository.get_key(session, key_id)
        if key is None:
            known = _KnownKey(now + self._ttl, None, None)
        else:
            principal = (
                None if key.revoked_at else Principal(key.id, key.project_id, Scope(key.scope))
            )
            known = _KnownKey(now + self._ttl, key.secret_hash, principal)
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[key_id] = known
        return known

    async def authenticate(self, token: str) -> Principal | None:
        """The key's principal, or None for an unknown, wrong or revoked key. The hash is
        compared even when the id is unknown, so timing does not tell which it was."""
        known = await self._known(key_id_of(token))
        presented = hash_key(token)
        matches = hmac.compare_digest(presented, known.secret_hash or "0" * 64)
        if not matches or known.principal is None:
            return None
        await self._touch(known.principal)
        return known.principal

    async def _touch(self, principal: Principal) -> None:
        assert principal.key_id is not None
        now = time.monotonic()
        last = self._touched.get(principal.key_id)
        if last is not None and now - last < self.TOUCH_EVERY_S:
            return
        self._touched[principal.key_id] = now
        async with background_transaction(self._sessionmaker) as session:
            await repository.touch_key(session, principal.key_id, utcnow())
