"""Every documented route x method against every way a key can be wrong: no key, a
malformed one, a revoked one, one of the wrong scope, one of another project. Each must
be refused with the status docs/SECURITY.md specifies, and no row may change."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from mabapi.access.models import Scope
from mabapi.access.service import GRANTS
from mabapi.db.models import Base
from mabapi.deps import declared_scopes
from mabapi.runtime import runtime_of
from tests.fixtures.factories import create_experiment, metric
from tests.fixtures.keys import bearer, make_key

EXPERIMENT = "exp-a"

BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/keys"): {"scope": "read", "project": "shop"},
    ("POST", "/metrics/"): metric(experiment_id=EXPERIMENT),
    ("POST", "/metrics/batch"): {"metrics": [metric(experiment_id=EXPERIMENT)]},
    ("POST", "/experiments"): {"id": "new-exp", "variants": [{"id": "a"}]},
    ("PATCH", "/experiments/{experiment_id}"): {"description": "changed"},
    ("POST", "/experiments/{experiment_id}/variants"): {"id": "c"},
    ("PATCH", "/experiments/{experiment_id}/variants/{variant_id}"): {"active": False},
    ("POST", "/experiments/{experiment_id}/assign"): {"unit_id": "u2"},
    ("POST", "/assign/batch"): {"assignments": [{"experiment_id": EXPERIMENT, "unit_id": "u2"}]},
    ("POST", "/experiments/{experiment_id}/conversions"): {"unit_id": "u1"},
    ("POST", "/conversions/batch"): {
        "conversions": [{"experiment_id": EXPERIMENT, "unit_id": "u1"}]
    },
    ("POST", "/experiments/{experiment_id}/conclude"): {"winner": "control"},
}  # fmt: skip

# Routes that name shop's experiment (in the path or the body): another project's key
# must get the 404 a missing experiment gets. The others act on the caller's own project.
NAMES_AN_EXPERIMENT = {
    ("POST", "/metrics/"),
    ("POST", "/metrics/batch"),
    ("POST", "/assign/batch"),
    ("POST", "/conversions/batch"),
}

MALFORMED = ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc", "Bearer mab_123_x", "x" * 300]


def operations(app: FastAPI) -> list[tuple[str, str]]:
    found = [
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        if (declaration := declared_scopes(app).get((method.upper(), path))) is not None
        and declaration.scope is not None
    ]
    return [*found, ("POST", "/metrics")]  # the undocumented alias of POST /metrics/


def weaker_scope(needed: Scope) -> Scope:
    """A scope that does not cover `needed` (the strongest such one)."""
    for scope in (Scope.WRITE, Scope.READ, Scope.CLIENT):
        if needed not in GRANTS[scope]:
            return scope
    raise AssertionError(needed)


async def snapshot(app: FastAPI) -> dict[str, list[tuple[Any, ...]]]:
    tables: dict[str, list[tuple[Any, ...]]] = {}
    async with runtime_of(app).engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            # last_used_at moves when a valid key is refused for scope: not a data change.
            columns = (
                "id, project_id, scope, secret_hash, revoked_at"
                if table.name == "api_keys"
                else "*"
            )
            result = await connection.execute(text(f'SELECT {columns} FROM "{table.name}"'))
            tables[table.name] = sorted((tuple(row) for row in result), key=repr)
    return tables


@pytest.fixture
async def world(app: FastAPI, client: httpx.AsyncClient) -> dict[str, str]:
    keys = {f"shop-{scope}": await make_key(app, scope=scope, project="shop") for scope in Scope}
    keys |= {f"blog-{scope}": await make_key(app, scope=scope, project="blog") for scope in Scope}
    keys["revoked"] = await make_key(app, scope="admin", project="shop")
    keys["operator"] = await make_key(app, scope="admin", project="default")
    admin = bearer(keys["shop-admin"])
    await create_experiment(client, experiment_id=EXPERIMENT, headers=admin)
    assigned = await client.post(
        f"/experiments/{EXPERIMENT}/assign", json={"unit_id": "u1"}, headers=admin
    )
    assert assigned.status_code == 200
    revoked_id = keys["revoked"].split("_")[1]
    assert (await client.delete(f"/keys/{revoked_id}", headers=admin)).status_code == 200
    keys["shop-read-id"] = keys["shop-read"].split("_")[1]
    return keys


async def call(
    client: httpx.AsyncClient, keys: dict[str, str], method: str, path: str, header: str | None
) -> httpx.Response:
    url = (
        path.replace("{experiment_id}", EXPERIMENT)
        .replace("{variant_id}", "b")
        .replace("{key_id}", keys["shop-read-id"])
    )
    headers = {} if header is None else {"Authorization": header}
    body = BODIES.get((method, path), {} if method in ("POST", "PATCH") else None)
    return await client.request(method, url, json=body, headers=headers)


class TestAuthMatrix:
    async def test_every_route_refuses_every_bad_key(
        self, app: FastAPI, client: httpx.AsyncClient, world: dict[str, str]
    ) -> None:
        before = await snapshot(app)
        failures: list[str] = []
        checked = 0
        for method, path in operations(app):
            needed = declared_scopes(app)[(method, path)].scope
            assert needed is not None
            cases: list[tuple[str, str | None, int]] = [("no key", None, 401)]
            cases += [(f"malformed {h[:12]!r}", h, 401) for h in MALFORMED]
            cases.append(("revoked", f"Bearer {world['revoked']}", 401))
            weak = weaker_scope(needed)
            cases.append((f"scope {weak}", f"Bearer {world[f'shop-{weak}']}", 403))
            if "{experiment_id}" in path or (method, path) in NAMES_AN_EXPERIMENT:
                cases.append(("other project", f"Bearer {world[f'blog-{needed}']}", 404))
            if path == "/metrics" and method == "GET":
                cases.append(("other project", f"Bearer {world['blog-admin']}", 403))
            for label, header, expected in cases:
                response = await call(client, world, method, path, header)
                checked += 1
                if response.status_code != expected:
                    failures.append(
                        f"{method} {path} [{label}]: {response.status_code} != {expected} "
                        f"{response.text[:120]}"
                    )
                elif expected == 401:
                    assert response.headers["www-authenticate"].startswith("Bearer")
        assert not failures, "\n".join(failures)
        assert checked > 200
        assert await snapshot(app) == before

    async def test_right_key_gets_through(
        self, app: FastAPI, client: httpx.AsyncClient, world: dict[str, str]
    ) -> None:
        """The refusals above are the keys' doing: the same calls with the right key pass
        authorization (whatever the route then answers, it is not 401/403)."""
        for method, path in operations(app):
            if method == "DELETE":
                continue  # would revoke the key the other calls use
            needed = declared_scopes(app)[(method, path)].scope
            assert needed is not None
            key = world["operator"] if path == "/metrics" else world[f"shop-{needed}"]
            response = await call(client, world, method, path, f"Bearer {key}")
            assert response.status_code not in (401, 403), f"{method} {path}: {response.text}"

    async def test_other_projects_see_empty_lists(
        self, client: httpx.AsyncClient, world: dict[str, str]
    ) -> None:
        blog = bearer(world["blog-admin"])
        assert (await client.get("/experiments", headers=blog)).json()["items"] == []
        keys = (await client.get("/keys", headers=blog)).json()["keys"]
        assert {key["project"] for key in keys} == {"blog"}
        assert (await client.get("/audit", headers=blog)).json()["entries"] == []
        shop = bearer(world["shop-admin"])
        entries = (await client.get("/audit", headers=shop)).json()["entries"]
        assert [e["route"] for e in entries] == ["/keys/{key_id}", "/experiments"]
