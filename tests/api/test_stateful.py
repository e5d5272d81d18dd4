"""A hypothesis state machine drives ingestion, assignment and conversion in any order
and checks, after every step, that the service's totals equal a plain model's."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy.engine import URL

from mabapi.app import create_app
from mabapi.runtime import runtime_of
from tests.conftest import make_settings
from tests.fixtures.databases import clear_tables

VARIANTS = ("a", "b")
UNITS = st.sampled_from([f"u{i}" for i in range(8)])
DAYS = st.integers(min_value=1, max_value=4)


def metric_rows() -> st.SearchStrategy[tuple[str, int, int, int]]:
    return st.tuples(st.sampled_from(VARIANTS), DAYS, st.integers(0, 50)).flatmap(
        lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.just(t[2]), st.integers(0, t[2]))
    )


def body(
    experiment: str, variant: str, day: int, impressions: int, successes: int
) -> dict[str, Any]:
    return {"experiment_id": experiment, "variant_id": variant, "date": f"2024-01-{day:02d}",
            "impressions": impressions, "successes": successes}  # fmt: skip


@pytest.mark.slow
def test_service_totals_match_the_model(database_url: URL) -> None:
    app = create_app(make_settings(database_url))
    with TestClient(app) as client:
        client.portal.call(clear_tables, runtime_of(app).engine)  # type: ignore[union-attr]

        class Ingestion(RuleBasedStateMachine):
            runs = 0

            def __init__(self) -> None:
                super().__init__()
                # A new experiment per example: the app's per-process caches (rightly)
                # never expect an experiment's rows to vanish under them.
                Ingestion.runs += 1
                self.experiment = f"sm-{Ingestion.runs}"
                created = client.post("/experiments", json={
                    "id": self.experiment, "variants": [{"id": v} for v in VARIANTS]})  # fmt: skip
                assert created.status_code == 201, created.text
                self.reported: dict[tuple[str, int], tuple[int, int]] = {}
                self.assigned: dict[str, str] = {}
                self.converted: set[str] = set()

            @rule(row=metric_rows())
            def post_metric(self, row: tuple[str, int, int, int]) -> None:
                variant, day, impressions, successes = row
                response = client.post("/metrics/", json=body(self.experiment, *row))
                assert response.status_code == 200, response.text
                self.reported[(variant, day)] = (impressions, successes)

            @rule(rows=st.lists(metric_rows(), min_size=1, max_size=4, unique_by=lambda r: r[:2]))
            def post_batch(self, rows: list[tuple[str, int, int, int]]) -> None:
                response = client.post(
                    "/metrics/batch", json={"metrics": [body(self.experiment, *r) for r in rows]}
                )
                assert response.status_code == 200, response.text
                for variant, day, impressions, successes in rows:
                    self.reported[(variant, day)] = (impressions, successes)

            @rule(unit=UNITS)
            def assign(self, unit: str) -> None:
                response = client.post(
                    f"/experiments/{self.experiment}/assign", json={"unit_id": unit}
                )
                assert response.status_code == 200, response.text
                answer = response.json()
                if unit in self.assigned:
                    assert answer["variant_id"] == self.assigned[unit]
                    assert answer["new"] is False
                else:
                    assert answer["new"] is True
                    self.assigned[unit] = answer["variant_id"]

            @rule(unit=UNITS)
            def convert(self, unit: str) -> None:
                response = client.post(
                    f"/experiments/{self.experiment}/conversions", json={"unit_id": unit}
                )
                if unit not in self.assigned:
                    assert response.status_code == 409, response.text
                    return
                assert response.status_code == 200, response.text
                assert response.json()["counted"] is (unit not in self.converted)
                self.converted.add(unit)

            @invariant()
            def totals_match(self) -> None:
                summary = client.get(f"/experiments/{self.experiment}/summary")
                assert summary.status_code == 200, summary.text
                for variant in summary.json()["variants"]:
                    name = variant["variant_id"]
                    impressions = sum(i for (v, _), (i, _) in self.reported.items() if v == name)
                    successes = sum(s for (v, _), (_, s) in self.reported.items() if v == name)
                    impressions += sum(1 for v in self.assigned.values() if v == name)
                    successes += sum(1 for u in self.converted if self.assigned[u] == name)
                    assert (variant["impressions"], variant["successes"]) == (
                        impressions,
                        successes,
                    )

        run_state_machine_as_test(
            Ingestion,
            settings=settings(
                max_examples=25,
                stateful_step_count=25,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
