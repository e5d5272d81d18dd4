"""Keys over HTTP and the CLI, open mode, projects, the audit log."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner

from mabapi import cli
from mabapi.runtime import runtime_of
from tests.fixtures.databases import clear_tables, url_text
from tests.fixtures.factories import create_experiment, metric
from tests.fixtures.keys import bearer, make_key


async def rows(app: FastAPI, sql: str) -> list[tuple[Any, ...]]:
    async with runtime_of(app).engine.connect() as connection:
        return [tuple(row) for row in (await connection.execute(text(sql))).all()]


class TestOpenMode:
    async def test_no_keys_means_open_and_a_warning(
        self, app: FastAPI, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        assert (await client.get("/experiments")).status_code == 200
        with caplog.at_level(logging.WARNING, logger="mabapi"):
            async with app.router.lifespan_context(app):
                pass
        assert any("OPEN" in record.getMessage() for record in caplog.records)

    async def test_first_key_closes_the_instance(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        created = await client.post("/keys", json={"scope": "admin"})
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["key"].startswith(f"mab_{body['id']}_")
        assert body["scope"] == "admin"
        assert body["project"] == "default"
        assert (await client.get("/experiments")).status_code == 401
        answer = await client.get("/experiments", headers=bearer(body["key"]))
        assert answer.status_code == 200

    async def test_require_auth_closes_an_instance_without_keys(
        self, database_url: Any, make_app: Any
    ) -> None:
        async with make_app(require_auth=True) as (_, client):
            response = await client.get("/experiments")
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/ready")).status_code == 200


class TestKeys:
    async def test_only_a_hash_is_stored(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        body = (await client.post("/keys", json={"scope": "read", "name": "ci"})).json()
        stored = await rows(app, "SELECT id, secret_hash, name FROM api_keys")
        assert stored == [(body["id"], hashlib.sha256(body["key"].encode()).hexdigest(), "ci")]
        assert body["key"] not in str(await rows(app, "SELECT * FROM api_keys"))

    async def test_list_never_shows_secrets_and_records_last_use(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        admin = await make_key(app, scope="admin")
        listing = (await client.get("/keys", headers=bearer(admin))).json()["keys"]
        assert len(listing) == 1
        assert "key" not in listing[0]
        assert "secret_hash" not in listing[0]
        assert listing[0]["last_used_at"] is not None

    async def test_revoked_key_is_refused(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        admin = await make_key(app, scope="admin")
        reader = (await client.post("/keys", json={"scope": "read"}, headers=bearer(admin))).json()
        assert (await client.get("/experiments", headers=bearer(reader["key"]))).status_code == 200
        revoked = await client.delete(f"/keys/{reader['id']}", headers=bearer(admin))
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None
        assert (await client.get("/experiments", headers=bearer(reader["key"]))).status_code == 401

    async def test_key_in_query_string_is_refused(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        admin = await make_key(app, scope="admin")
        response = await client.get("/experiments", params={"api_key": admin})
        assert response.status_code == 400
        assert "Authorization" in response.json()["error"]["message"]

    async def test_admin_cannot_make_keys_for_another_project(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        admin = await make_key(app, scope="admin", project="shop")
        response = await client.post(
            "/keys", json={"scope": "read", "project": "blog"}, headers=bearer(admin)
        )
        assert response.status_code == 403
        own = await client.post(
            "/keys", json={"scope": "read", "project": "shop"}, headers=bearer(admin)
        )
        assert own.status_code == 201

    async def test_a_new_key_defaults_to_the_creators_project(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        admin = await make_key(app, scope="admin", project="shop")
        response = await client.post("/keys", json={"scope": "read"}, headers=bearer(admin))
        assert response.status_code == 201, response.text
        assert response.json()["project"] == "shop"

    async def test_any_projects_write_key_posts_to_the_metrics_alias(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        writer = await make_key(app, scope="write", project="shop")
        body = {"experiment_id": "alias", "variant_id": "a", "date": "2024-01-01",
                "impressions": 10, "successes": 1}  # fmt: skip
        response = await client.post("/metrics", json=body, headers=bearer(writer))
        assert response.status_code == 200, response.text
        # GET /metrics (the Prometheus scrape) stays the default project's admins' only.
        assert (await client.get("/metrics", headers=bearer(writer))).status_code == 403

    @pytest.mark.parametrize(
        "body",
        [{"scope": "root"}, {"scope": "read", "project": "a b"}, {"scope": "read", "x": 1},
         {"scope": "read", "name": "nul\x00"}],
    )  # fmt: skip
    async def test_bad_key_requests_are_422(
        self, client: httpx.AsyncClient, body: dict[str, Any]
    ) -> None:
        assert (await client.post("/keys", json=body)).status_code == 422

    async def test_bootstrap_key(self, make_app: Any) -> None:
        secret = "s" * 40
        async with make_app(require_auth=True, bootstrap_admin_key=secret) as (_, client):
            assert (await client.get("/keys", headers=bearer(secret))).status_code == 200
            assert (await client.get("/keys", headers=bearer("t" * 40))).status_code == 401


class TestProjects:
    async def test_keys_see_only_their_project(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        shop = await make_key(app, scope="admin", project="shop")
        blog = await make_key(app, scope="admin", project="blog")
        created = await client.post(
            "/experiments", json={"id": "cart", "variants": [{"id": "a"}]}, headers=bearer(shop)
        )
        assert created.status_code == 201
        mine = (await client.get("/experiments", headers=bearer(shop))).json()
        theirs = (await client.get("/experiments", headers=bearer(blog))).json()
        assert [e["id"] for e in mine["items"]] == ["cart"]
        assert theirs["items"] == []
        hidden = await client.get("/experiments/cart", headers=bearer(blog))
        missing = await client.get("/experiments/nope", headers=bearer(blog))
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["error"]["message"] == missing.json()["error"]["message"].replace(
            "nope", "cart"
        )

    async def test_auto_created_experiments_join_the_writers_project(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        writer = await make_key(app, scope="write", project="shop")
        posted = await client.post(
            "/metrics/", json=metric(experiment_id="promo"), headers=bearer(writer)
        )
        assert posted.status_code == 200
        assert await rows(app, "SELECT project_id FROM experiments WHERE id = 'promo'") == [
            ("shop",)
        ]
        other = await make_key(app, scope="write", project="blog")
        refused = await client.post(
            "/metrics/", json=metric(experiment_id="promo"), headers=bearer(other)
        )
        assert refused.status_code == 404


class TestAudit:
    async def test_writes_and_key_changes_are_recorded(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        admin = await make_key(app, scope="admin")
        headers = bearer(admin)
        await create_experiment(client, headers=headers)
        reader = (await client.post("/keys", json={"scope": "read"}, headers=headers)).json()
        await client.delete(f"/keys/{reader['id']}", headers=headers)
        await client.get("/experiments", headers=headers)  # reads are not audited
        failed = await client.post("/experiments", json={"id": "x y"}, headers=headers)
        assert failed.status_code == 422  # nothing written, nothing audited
        entries = (await client.get("/audit", headers=headers)).json()["entries"]
        assert [(e["method"], e["route"]) for e in entries] == [
            ("DELETE", "/keys/{key_id}"),
            ("POST", "/keys"),
            ("POST", "/experiments"),
        ]
        admin_id = admin.split("_")[1]
        assert {e["key_id"] for e in entries} == {admin_id}
        assert all(e["request_id"] for e in entries)


class TestCli:
    def test_create_list_revoke(self, database_url: URL) -> None:
        env = {"MABAPI_DATABASE_URL": url_text(database_url)}
        runner = CliRunner()
        try:
            created = runner.invoke(
                cli.app, ["keys", "create", "--project", "shop", "--scope", "write"], env=env
            )
            assert created.exit_code == 0, created.output
            token = created.stdout.strip().splitlines()[-1]
            key_id = token.split("_")[1]
            assert token.startswith(f"mab_{key_id}_")
            listed = runner.invoke(cli.app, ["keys", "list"], env=env)
            assert key_id in listed.stdout
            assert token not in listed.stdout
            revoked = runner.invoke(cli.app, ["keys", "revoke", key_id], env=env)
            assert revoked.exit_code == 0, revoked.output
            again = runner.invoke(cli.app, ["keys", "revoke", "nope"], env=env)
            assert again.exit_code == 1
            audit = asyncio.run(_select(database_url, "SELECT method, route FROM audit_log"))
            assert audit == [("CLI", "mabapi keys create"), ("CLI", "mabapi keys revoke")]
            keys = asyncio.run(_select(database_url, "SELECT scope, revoked_at FROM api_keys"))
            assert keys[0][0] == "write"
            assert keys[0][1] is not None
        finally:
            asyncio.run(_clear(database_url))


async def _select(url: URL, sql: str) -> list[tuple[Any, ...]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return [tuple(row) for row in (await connection.execute(text(sql))).all()]
    finally:
        await engine.dispose()


async def _clear(url: URL) -> None:
    engine = create_async_engine(url)
    try:
        await clear_tables(engine)
    finally:
        await engine.dispose()


class TestSelfRevoke:
    async def test_a_key_cannot_revoke_itself(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        admin = await make_key(app, scope="admin")
        response = await client.delete(f"/keys/{admin.split('_')[1]}", headers=bearer(admin))
        assert response.status_code == 409
        assert (await client.get("/keys", headers=bearer(admin))).status_code == 200
