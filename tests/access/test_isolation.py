"""What a key can learn about other projects' experiment ids (docs/SECURITY.md,
"Isolation"): another project's id and an id that exists nowhere get the same answer
after the same work, on the FastAPI routes and on the hot paths."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from mabapi.runtime import runtime_of
from tests.fixtures.keys import bearer, make_key


@contextmanager
def statements(app: FastAPI) -> Iterator[list[str]]:
    """Every SQL statement the app sends while the block runs."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]).split()[0])

    engine = runtime_of(app).engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.mark.parametrize(
    ("scope", "method", "path", "body"),
    [
        ("read", "GET", "/experiments/{id}", None),
        ("read", "GET", "/experiments/{id}/summary", None),
        ("read", "GET", "/allocations/{id}", None),
        ("client", "POST", "/experiments/{id}/assign", {"unit_id": "u1"}),
        ("client", "POST", "/experiments/{id}/conversions", {"unit_id": "u1"}),
        ("admin", "PATCH", "/experiments/{id}", {"name": "mine now"}),
        ("admin", "POST", "/experiments/{id}/variants", {"id": "c"}),
    ],
)
async def test_another_projects_id_looks_like_no_id_at_all(
    app: FastAPI,
    client: httpx.AsyncClient,
    scope: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    owner = await make_key(app, scope="admin", project="alpha")
    created = await client.post(
        "/experiments", json={"id": "secret-00001", "variants": [{"id": "a"}, {"id": "b"}]},
        headers=bearer(owner),
    )  # fmt: skip
    assert created.status_code == 201, created.text
    prober = bearer(await make_key(app, scope=scope, project="beta"))

    async def probe(experiment_id: str) -> tuple[int, str, list[str]]:
        url = path.format(id=experiment_id)
        await client.request(method, url, json=body, headers=prober)  # warm every cache
        with statements(app) as seen:
            answer = await client.request(method, url, json=body, headers=prober)
        return answer.status_code, answer.text.replace(experiment_id, "ID"), seen

    taken = await probe("secret-00001")
    nowhere = await probe("secret-00002")
    assert taken[0] == nowhere[0] == 404
    assert taken[1] == nowhere[1]
    assert taken[2] == nowhere[2]  # the same statements: one lookup, nothing else
    assert taken[2].count("SELECT") == 1


async def test_a_batch_naming_another_projects_id_looks_like_no_id_at_all(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """POST /assign/batch: refused before any allocation is computed for the id (the
    first, cold call too: a computed allocation could answer 409 or take longer)."""
    owner = await make_key(app, scope="admin", project="alpha")
    created = await client.post(
        "/experiments", json={"id": "secret-00001", "variants": [{"id": "a"}, {"id": "b"}]},
        headers=bearer(owner),
    )  # fmt: skip
    assert created.status_code == 201, created.text
    prober = bearer(await make_key(app, scope="client", project="beta"))

    async def probe(experiment_id: str) -> tuple[int, str, list[str]]:
        body = {"assignments": [{"experiment_id": experiment_id, "unit_id": "u1"}]}
        with statements(app) as seen:
            answer = await client.post("/assign/batch", json=body, headers=prober)
        return answer.status_code, answer.text.replace(experiment_id, "ID"), seen

    await probe("warm-the-key")  # a key's first use is recorded; not the ids' caches
    taken = await probe("secret-00001")
    nowhere = await probe("secret-00002")
    assert taken[0] == nowhere[0] == 404
    assert taken[1] == nowhere[1]
    assert taken[2] == nowhere[2]  # the same statements, cold cache or not
