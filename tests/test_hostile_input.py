"""Input an adversarial run sent that answered 500: each must be a clear 4xx and write
nothing (on SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.fixtures.factories import post_metric
from tests.fixtures.keys import bearer, make_key

SURROGATE = "\\ud800"  # as JSON text: a lone surrogate, which UTF-8 cannot encode

# (method, path, JSON body with one id replaced by the surrogate)
SURROGATE_BODIES: list[tuple[str, str, str]] = [
    ("POST", "/metrics/", '{"experiment_id": "%s", "variant_id": "a", "date": "2024-01-01",'
     ' "impressions": 1, "successes": 0}'),
    ("POST", "/metrics/", '{"experiment_id": "e", "variant_id": "%s", "date": "2024-01-01",'
     ' "impressions": 1, "successes": 0}'),
    ("POST", "/metrics", '{"experiment_id": "%s", "variant_id": "a", "date": "2024-01-01",'
     ' "impressions": 1, "successes": 0}'),
    ("POST", "/metrics/batch", '{"metrics": [{"experiment_id": "%s", "variant_id": "a",'
     ' "date": "2024-01-01", "impressions": 1, "successes": 0}]}'),
    ("POST", "/experiments", '{"id": "%s", "variants": [{"id": "a"}, {"id": "b"}]}'),
    ("POST", "/experiments", '{"id": "x", "variants": [{"id": "%s"}, {"id": "b"}]}'),
    ("POST", "/experiments/e/variants", '{"id": "%s"}'),
    ("POST", "/experiments/e/assign", '{"unit_id": "%s"}'),
    ("POST", "/assign/batch", '{"assignments": [{"experiment_id": "%s", "unit_id": "u"}]}'),
    ("POST", "/assign/batch", '{"assignments": [{"experiment_id": "e", "unit_id": "%s"}]}'),
    ("POST", "/experiments/e/conversions", '{"unit_id": "%s"}'),
    ("POST", "/conversions/batch", '{"conversions": [{"experiment_id": "%s", "unit_id": "u"}]}'),
    ("POST", "/experiments/e/conclude", '{"winner": "%s"}'),
    ("POST", "/keys", '{"scope": "read", "project": "%s"}'),
]  # fmt: skip


async def _experiment(client: httpx.AsyncClient) -> None:
    for variant in ("a", "b"):
        response = await post_metric(client, experiment_id="e", variant_id=variant)
        assert response.status_code == 200


async def _rows(client: httpx.AsyncClient) -> Any:
    listing = await client.get("/experiments", params={"include_archived": True})
    metrics = await client.get("/experiments/e/metrics")
    return listing.json()["total"], metrics.json()["metrics"]


@pytest.mark.parametrize(
    ("method", "path", "template"),
    SURROGATE_BODIES,
    ids=[f"{m} {p} #{i}" for i, (m, p, _) in enumerate(SURROGATE_BODIES)],
)
async def test_a_lone_surrogate_in_an_id_is_a_422(
    client: httpx.AsyncClient, method: str, path: str, template: str
) -> None:
    await _experiment(client)
    before = await _rows(client)
    response = await client.request(
        method,
        path,
        content=(template % SURROGATE).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert await _rows(client) == before


@pytest.mark.parametrize(
    "path",
    [
        "/experiments/a%00b",
        "/experiments/a%00b/summary",
        "/allocations/a%00b",
        "/experiments/a%00b/metrics",
    ],
)
async def test_nul_in_a_path_id_is_a_422_with_any_key(
    app: FastAPI, client: httpx.AsyncClient, path: str
) -> None:
    key = await make_key(app, scope="read", project="shop")
    response = await client.get(path, headers=bearer(key))
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("key_of", ["write", "client"])
async def test_nul_in_a_hot_path_id_is_a_422(
    app: FastAPI, client: httpx.AsyncClient, key_of: str
) -> None:
    key = await make_key(app, scope=key_of, project="shop")
    response = await client.post(
        "/experiments/a%00b/assign", json={"unit_id": "u"}, headers=bearer(key)
    )
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "path", ["/metrics/", "/experiments/e/assign", "/experiments/e/conversions", "/metrics/batch"]
)
async def test_json_nested_a_thousand_deep_is_a_400(client: httpx.AsyncClient, path: str) -> None:
    await _experiment(client)
    before = await _rows(client)
    deep = "[" * 1000 + "]" * 1000
    response = await client.post(
        path, content=deep.encode(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code in (400, 422), response.text
    assert await _rows(client) == before


@pytest.mark.parametrize(
    "policy", [{"window_days": 30}, {"half_life_days": 365}, {"half_life_days": 3650}]
)
async def test_planning_near_year_one_with_forgetting(
    client: httpx.AsyncClient, policy: dict[str, Any]
) -> None:
    await _experiment(client)
    patched = await client.patch("/experiments/e", json={"settings": {"policy": policy}})
    assert patched.status_code == 200, patched.text
    for day in ("0001-01-01", "0001-01-02", "0001-03-01"):
        response = await client.get("/allocations/e", params={"for_date": day})
        assert response.status_code == 200, response.text
        assert sum(response.json()["allocations"].values()) == pytest.approx(100.0)


async def test_counts_that_would_pass_bigint_are_refused(client: httpx.AsyncClient) -> None:
    rows = [
        {
            "experiment_id": "big",
            "variant_id": "a",
            "date": f"{2000 + day // 365:04d}-01-01",
            "impressions": 2**53,
            "successes": 0,
        }
        for day in range(0, 365 * 3, 365)
    ]
    response = await client.post("/metrics/batch", json={"metrics": rows})
    assert response.status_code == 422
    assert "impressions" in response.text
    listing = await client.get("/experiments", params={"include_archived": True})
    assert listing.json()["total"] == 0


ROW = (
    '{"experiment_id": "enc", "variant_id": "a", "date": "2024-01-01", '
    '"impressions": 10, "successes": 1}'
)


@pytest.mark.parametrize("path", ["/metrics/", "/metrics/batch"])
@pytest.mark.parametrize(
    ("encoding", "content_type"),
    [
        ("utf-16", "application/json"),  # with its BOM
        ("utf-16-le", "application/json"),
        ("utf-16-be", "application/json"),
        ("utf-32", "application/json"),
        ("utf-8", "application/json; charset=utf-16"),
        ("latin-1", "application/json; charset=iso-8859-1"),
    ],
)
async def test_json_that_is_not_utf8_is_a_415_and_writes_nothing(
    client: httpx.AsyncClient, path: str, encoding: str, content_type: str
) -> None:
    text = ROW if path == "/metrics/" else '{"metrics": [' + ROW + "]}"
    response = await client.post(
        path, content=text.encode(encoding), headers={"Content-Type": content_type}
    )
    assert response.status_code == 415, response.text
    assert "UTF-8" in response.json()["error"]["message"]
    assert (await client.get("/experiments/enc")).status_code == 404


async def test_a_utf8_byte_order_mark_is_ignored(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/metrics/",
        content=b"\xef\xbb\xbf" + ROW.encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200, response.text
    assert (await client.get("/experiments/enc")).status_code == 200
