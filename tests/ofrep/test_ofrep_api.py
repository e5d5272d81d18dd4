"""OFREP through the API: a flag is an experiment, evaluating it assigns the unit."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from tests.fixtures.keys import bearer, make_key

EVAL = "/ofrep/v1/evaluate/flags"


async def create(client: httpx.AsyncClient, experiment_id: str = "headline", **extra: Any) -> None:
    variants = extra.pop(
        "variants",
        [{"id": "a", "value": "Save 10% today"}, {"id": "b", "value": "Free shipping"}],
    )
    response = await client.post(
        "/experiments", json={"id": experiment_id, "variants": variants, **extra}
    )
    assert response.status_code == 201, response.text


async def evaluate(
    client: httpx.AsyncClient, key: str, context: Any, **kwargs: Any
) -> httpx.Response:
    body = {"context": context} if context is not ... else {}
    return await client.post(f"{EVAL}/{key}", json=body, **kwargs)


class TestSingle:
    async def test_a_unit_gets_a_sticky_variant_with_its_value(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(client)
        first = await evaluate(client, "headline", {"targetingKey": "user-1"})
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["key"] == "headline"
        assert body["reason"] == "SPLIT"
        assert body["variant"] in {"a", "b"}
        assert body["value"] == {"a": "Save 10% today", "b": "Free shipping"}[body["variant"]]
        assert body["metadata"]["new"] is True
        assert 0 < body["metadata"]["propensity"] <= 1
        assert body["metadata"]["policy"] == "thompson"
        for _ in range(3):
            again = (await evaluate(client, "headline", {"targetingKey": "user-1"})).json()
            assert again["variant"] == body["variant"]
            assert again["metadata"]["new"] is False
        # The same operation as assign: the unit is the same unit, counted once.
        assigned = await client.post("/experiments/headline/assign", json={"unit_id": "user-1"})
        assert assigned.json()["variant_id"] == body["variant"]
        summary = (await client.get("/experiments/headline/summary")).json()
        assert sum(v["impressions"] for v in summary["variants"]) == 1

    async def test_without_values_the_value_is_the_variant_id(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(client, variants=[{"id": "a"}, {"id": "b"}])
        body = (await evaluate(client, "headline", {"targetingKey": "u"})).json()
        assert body["value"] == body["variant"]

    async def test_object_values_and_one_type_per_experiment(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(
            client,
            variants=[{"id": "a", "value": {"color": "red", "size": 3}},
                      {"id": "b", "value": {"color": "blue", "size": 4}}],
        )  # fmt: skip
        body = (await evaluate(client, "headline", {"targetingKey": "u"})).json()
        assert body["value"]["color"] in {"red", "blue"}
        mixed = await client.post(
            "/experiments", json={"id": "mixed", "variants": [{"id": "a", "value": 1},
                                                              {"id": "b", "value": "x"}]},
        )  # fmt: skip
        assert mixed.status_code == 422
        assert "one type" in mixed.text
        added = await client.post("/experiments/headline/variants", json={"id": "c", "value": 5})
        assert added.status_code == 409
        changed = await client.patch(
            "/experiments/headline/variants/b", json={"value": {"color": "green"}}
        )
        assert changed.status_code == 200, changed.text
        assert {v["id"]: v["value"] for v in changed.json()["variants"]}["b"] == {"color": "green"}

    async def test_concluded_is_static_and_paused_is_disabled(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(client)
        await client.patch("/experiments/headline", json={"status": "paused"})
        paused = (await evaluate(client, "headline", {"targetingKey": "u"})).json()
        assert paused["reason"] == "DISABLED"
        assert "value" not in paused  # the code's default applies
        assert paused["variant"] is None
        await client.patch("/experiments/headline", json={"status": "running"})
        concluded = await client.post("/experiments/headline/conclude", json={"winner": "b"})
        assert concluded.status_code == 200, concluded.text
        static = (await evaluate(client, "headline", {"targetingKey": "u2"})).json()
        assert static["reason"] == "STATIC"
        assert static["variant"] == "b"
        assert static["value"] == "Free shipping"

    async def test_errors_in_the_protocols_shape(self, client: httpx.AsyncClient) -> None:
        await create(client)
        missing = await evaluate(client, "headline", {"segment": "mobile"})
        assert missing.status_code == 400
        assert missing.json() == {
            "key": "headline",
            "errorCode": "TARGETING_KEY_MISSING",
            "errorDetails": missing.json()["errorDetails"],
        }
        unknown = await evaluate(client, "nope", {"targetingKey": "u"})
        assert unknown.status_code == 404
        assert unknown.json()["errorCode"] == "FLAG_NOT_FOUND"
        assert unknown.json()["key"] == "nope"
        bad_context = await evaluate(client, "headline", "not an object")
        assert bad_context.status_code == 400
        assert bad_context.json()["errorCode"] == "INVALID_CONTEXT"
        bad_segment = await evaluate(client, "headline", {"targetingKey": "u", "segment": "a b"})
        assert bad_segment.json()["errorCode"] == "INVALID_CONTEXT"
        not_json = await client.post(
            f"{EVAL}/headline", content=b"{nope", headers={"Content-Type": "application/json"}
        )
        assert not_json.status_code == 400
        assert not_json.json()["errorCode"] == "PARSE_ERROR"

    async def test_keys_scopes_and_other_projects(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        admin = bearer(await make_key(app, scope="admin"))
        browser = bearer(await make_key(app, scope="client"))
        other = bearer(await make_key(app, scope="client", project="shop"))
        created = await client.post(
            "/experiments", json={"id": "headline", "variants": [{"id": "a"}, {"id": "b"}]},
            headers=admin,
        )  # fmt: skip
        assert created.status_code == 201
        assert (await evaluate(client, "headline", {"targetingKey": "u"})).status_code == 401
        ok = await evaluate(client, "headline", {"targetingKey": "u"}, headers=browser)
        assert ok.status_code == 200
        hidden = await evaluate(client, "headline", {"targetingKey": "u"}, headers=other)
        assert hidden.status_code == 404
        assert hidden.json()["errorCode"] == "FLAG_NOT_FOUND"


class TestBulk:
    async def test_scoped_by_opt_in_or_by_the_flags_attribute(
        self, client: httpx.AsyncClient
    ) -> None:
        await create(client, "opted", settings={"openfeature": {"bulk": True}})
        await create(client, "quiet")
        answer = await client.post(EVAL, json={"context": {"targetingKey": "u1"}})
        assert answer.status_code == 200, answer.text
        assert [f["key"] for f in answer.json()["flags"]] == ["opted"]
        # Only the opted-in experiment counted an exposure.
        quiet = (await client.get("/experiments/quiet/summary")).json()
        assert sum(v["impressions"] for v in quiet["variants"]) == 0
        named = await client.post(
            EVAL, json={"context": {"targetingKey": "u1", "flags": ["quiet", "ghost"]}}
        )
        flags = {f["key"]: f for f in named.json()["flags"]}
        assert flags["quiet"]["reason"] == "SPLIT"
        assert flags["ghost"]["errorCode"] == "FLAG_NOT_FOUND"

    async def test_etag_and_if_none_match(self, client: httpx.AsyncClient) -> None:
        await create(client, "opted", settings={"openfeature": {"bulk": True}})
        first = await client.post(EVAL, json={"context": {"targetingKey": "u1"}})
        tag = first.headers["ETag"]
        again = await client.post(
            EVAL, json={"context": {"targetingKey": "u1"}}, headers={"If-None-Match": tag}
        )
        assert again.status_code == 304
        assert again.content == b""
        await client.post("/experiments/opted/conclude", json={"winner": "a"})
        changed = await client.post(
            EVAL, json={"context": {"targetingKey": "u1"}}, headers={"If-None-Match": tag}
        )
        assert changed.status_code == 200
        assert changed.headers["ETag"] != tag
        assert changed.json()["flags"][0]["reason"] == "STATIC"

    async def test_bulk_needs_a_targeting_key(self, client: httpx.AsyncClient) -> None:
        answer = await client.post(EVAL, json={"context": {}})
        assert answer.status_code == 400
        assert answer.json()["errorCode"] == "TARGETING_KEY_MISSING"


class TestBounds:
    async def test_value_sizes_at_the_bound(self, client: httpx.AsyncClient) -> None:
        ok = await client.post(
            "/experiments", json={"id": "s", "variants": [{"id": "a", "value": "x" * 4096}]}
        )
        assert ok.status_code == 201, ok.text
        long = await client.post(
            "/experiments", json={"id": "t", "variants": [{"id": "a", "value": "x" * 4097}]}
        )
        assert long.status_code == 422
        keys = {f"k{i}": i for i in range(65)}
        wide = await client.post(
            "/experiments", json={"id": "u", "variants": [{"id": "a", "value": keys}]}
        )
        assert wide.status_code == 422
        big = {f"k{i}": "y" * 600 for i in range(60)}  # 60 keys, ~37,000 characters
        heavy = await client.post(
            "/experiments", json={"id": "v", "variants": [{"id": "a", "value": big}]}
        )
        assert heavy.status_code == 422
        assert "32768" in heavy.text

    async def test_bulk_names_at_most_100_flags(self, client: httpx.AsyncClient) -> None:
        names = [f"f{i}" for i in range(101)]
        over = await client.post(EVAL, json={"context": {"targetingKey": "u", "flags": names}})
        assert over.status_code == 400
        assert over.json()["errorCode"] == "INVALID_CONTEXT"
        at = await client.post(EVAL, json={"context": {"targetingKey": "u", "flags": names[:100]}})
        assert at.status_code == 200
        assert len(at.json()["flags"]) == 100
        assert {f["errorCode"] for f in at.json()["flags"]} == {"FLAG_NOT_FOUND"}
