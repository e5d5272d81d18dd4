"""The hot paths answer exactly as FastAPI does: the same table of requests (valid, bad
id, bad JSON, extra query, wrong content type, another project's key, no key...) sent
with the hot paths on and off must give identical status, body and headers."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
from fastapi import FastAPI

from tests.fixtures.keys import make_key

# Headers that differ by design between two runs (ids, clocks) are left out.
VARYING = {"x-request-id", "date"}

Request = tuple[str, str, str, dict[str, str], bytes | None]  # label, method, url, headers, body
JSON = {"Content-Type": "application/json"}


def table(keys: dict[str, str]) -> list[Request]:
    def auth(name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {keys[name]}"}

    writer, client, reader, other = auth("writer"), auth("client"), auth("reader"), auth("other")
    metric = b'{"experiment_id": "solo", "variant_id": "only", "date": "2024-01-02",' \
             b' "impressions": 10, "successes": 1}'  # fmt: skip
    assign, convert = "/experiments/solo/assign", "/experiments/solo/conversions"
    flag = "/ofrep/v1/evaluate/flags/solo"
    c_json, w_json, o_json = {**client, **JSON}, {**writer, **JSON}, {**other, **JSON}
    text = {"Content-Type": "text/plain"}

    def unit(unit_id: str) -> bytes:
        return b'{"unit_id": "' + unit_id.encode() + b'"}'

    return [
        ("assign", "POST", assign, c_json, unit("u1")),
        ("assign again", "POST", assign, c_json, unit("u1")),
        ("convert", "POST", convert, c_json, unit("u1")),
        ("convert again", "POST", convert, c_json, unit("u1")),
        ("convert unknown unit", "POST", convert, c_json, unit("nobody")),
        ("allocation", "GET", "/allocations/solo?for_date=2024-01-03", reader, None),
        ("allocation today", "GET", "/allocations/solo", reader, None),
        ("allocation bad date", "GET", "/allocations/solo?for_date=2024-13-01", reader, None),
        ("allocation extra query", "GET", "/allocations/solo?for_date=2024-01-03&x=1", reader,
         None),
        ("allocation unknown", "GET", "/allocations/ghost", reader, None),
        ("allocation bad id", "GET", "/allocations/a%00b", reader, None),
        ("metric", "POST", "/metrics/", w_json, metric),
        ("metric no content type", "POST", "/metrics/", writer, metric),
        ("metric text/plain", "POST", "/metrics/", {**writer, **text}, metric),
        ("metric +json", "POST", "/metrics/", {**writer, "Content-Type": "application/x+json"},
         metric),
        ("metric bad JSON", "POST", "/metrics/", w_json, b'{"experiment_id": '),
        ("metric deep JSON", "POST", "/metrics/", w_json, b"[" * 1000 + b"]" * 1000),
        ("metric unknown field", "POST", "/metrics/", w_json, metric[:-1] + b', "x": 1}'),
        ("metric extra query", "POST", "/metrics/?x=1", w_json, metric),
        ("metric alias", "POST", "/metrics", w_json, metric),
        ("metric other project", "POST", "/metrics/", o_json, metric),
        ("metric read key", "POST", "/metrics/", {**reader, **JSON}, metric),
        ("assign bad id", "POST", "/experiments/bad%20id/assign", c_json, unit("u")),
        ("assign bad unit", "POST", assign, c_json, unit("a\\tb")),
        ("assign extra query", "POST", assign + "?x=1", c_json, unit("u2")),
        ("assign wrong type", "POST", assign, {**client, **text}, unit("u3")),
        ("assign no body", "POST", assign, c_json, b""),
        ("assign other project", "POST", assign, o_json, unit("u4")),
        ("assign no key", "POST", assign, JSON, unit("u5")),
        ("assign bad key", "POST", assign, {"Authorization": "Bearer nope", **JSON}, unit("u6")),
        ("assign key in query", "POST", f"{assign}?api_key={keys['client']}", JSON, unit("u7")),
        ("assign unknown experiment", "POST", "/experiments/ghost/assign", c_json, unit("u8")),
        ("convert other project", "POST", convert, o_json, unit("u1")),
        ("allocation no key", "GET", "/allocations/solo", {}, None),
        ("ofrep", "POST", flag, c_json, b'{"context": {"targetingKey": "f1"}}'),
        ("ofrep again", "POST", flag, c_json, b'{"context": {"targetingKey": "f1"}}'),
        ("ofrep no targeting key", "POST", flag, c_json, b'{"context": {}}'),
        ("ofrep no body", "POST", flag, c_json, b""),
        ("ofrep bad JSON", "POST", flag, c_json, b'{"context": '),
        ("ofrep bad context", "POST", flag, c_json, b'{"context": 3}'),
        ("ofrep bad segment", "POST", flag, c_json,
         b'{"context": {"targetingKey": "f2", "segment": "a b"}}'),
        ("ofrep unknown flag", "POST", "/ofrep/v1/evaluate/flags/ghost", c_json,
         b'{"context": {"targetingKey": "f3"}}'),
        ("ofrep other project", "POST", flag, o_json, b'{"context": {"targetingKey": "f4"}}'),
        ("ofrep no key", "POST", flag, JSON, b'{"context": {"targetingKey": "f5"}}'),
    ]  # fmt: skip


async def run_table(
    make_app: Callable[..., AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]],
    *,
    hot_paths: bool,
) -> list[tuple[str, int, bytes, dict[str, str]]]:
    async with make_app(hot_paths=hot_paths) as (app, http):
        admin = await make_key(app, scope="admin")
        created = await http.post(
            "/experiments",
            json={"id": "solo", "variants": [{"id": "only"}]},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert created.status_code == 201, created.text
        keys = {
            "writer": await make_key(app, scope="write"),
            "client": await make_key(app, scope="client"),
            "reader": await make_key(app, scope="read"),
            "other": await make_key(app, scope="write", project="elsewhere"),
        }
        answers = []
        for label, method, url, headers, body in table(keys):
            response = await http.request(method, url, headers=headers, content=body)
            kept = {k: v for k, v in response.headers.items() if k not in VARYING}
            answers.append((label, response.status_code, response.content, kept))
        return answers


def test_the_hot_table_is_built_from_the_marked_routes() -> None:
    from mabapi.app import create_app
    from mabapi.hot_paths import hot_routes
    from mabapi.settings import Settings

    app = create_app(Settings(_env_file=None))
    table = {(hot.method, hot.route.path, hot.status_code) for hot in hot_routes(app)}
    assert table == {
        ("POST", "/experiments/{experiment_id}/assign", 200),
        ("POST", "/experiments/{experiment_id}/conversions", 200),
        ("GET", "/allocations/{experiment_id}", 200),
        ("POST", "/metrics/", 200),
        ("POST", "/metrics", 200),  # the original README's alias: the same endpoint
        ("POST", "/ofrep/v1/evaluate/flags/{experiment_id}", 200),
    }


async def test_hot_paths_answer_as_fastapi_does(make_app: Any) -> None:
    fast = await run_table(make_app, hot_paths=True)
    plain = await run_table(make_app, hot_paths=False)
    assert [label for label, *_ in fast] == [label for label, *_ in plain]
    differences = [(f[0], f[1:], p[1:]) for f, p in zip(fast, plain, strict=True) if f[1:] != p[1:]]
    assert differences == []
    # The table exercises both sides: answers that succeed and answers that refuse.
    statuses = {status for _, status, _, _ in fast}
    assert {200, 400, 401, 403, 404, 409, 422} <= statuses
