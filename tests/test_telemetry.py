"""MABAPI_OPENTELEMETRY: FastAPI's own OpenTelemetry instrumentation asks OpenTelemetry
on every request whether an SDK is configured. Off (the default), it never asks; on, it
does, so an SDK the process configures gets FastAPI's spans and metrics."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace


@pytest.mark.parametrize("opentelemetry", [False, True])
async def test_fastapi_looks_for_an_sdk_only_when_asked(
    make_app: Any, monkeypatch: pytest.MonkeyPatch, opentelemetry: bool
) -> None:
    asked: list[object] = []
    real = trace.get_tracer_provider

    def counting() -> Any:
        asked.append(1)
        return real()

    monkeypatch.setattr(trace, "get_tracer_provider", counting)
    async with make_app(opentelemetry=opentelemetry) as (_app, http):
        asked.clear()
        for _ in range(3):
            assert (await http.get("/health")).status_code == 200
    assert (len(asked) >= 3) is opentelemetry, asked
