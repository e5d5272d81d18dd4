"""mabapi.client against a live server the test starts, its retries against a scripted
transport, and the CLI commands built on it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from mabapi import cli, cli_evaluate
from mabapi.client import ApiError, AsyncClient, Client
from tests.fixtures.servers import free_port, keyed_server

ADMIN_KEY = "client-test-admin-key-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with keyed_server(tmp_path_factory.mktemp("client") / "mabapi.db", ADMIN_KEY) as base:
        yield base


class TestClient:
    def test_three_lines_from_import_to_an_allocation(self, server: str) -> None:
        with Client(server, api_key=ADMIN_KEY) as admin:
            admin.post_metric("readme", "control", "2023-07-15", 1000, 120)
            admin.post_metric("readme", "variant1", "2023-07-15", 1000, 150)
        # The README's three lines:
        from mabapi.client import Client as ReadmeClient

        client = ReadmeClient(server, api_key=ADMIN_KEY)
        allocation = client.allocations("readme", for_date="2023-07-16")
        assert allocation.allocations == {"control": 2.5, "variant1": 97.5}
        assert allocation.probability_best["variant1"] == pytest.approx(0.975067837, abs=1e-9)
        client.close()

    def test_every_call_round_trips(self, server: str) -> None:
        with Client(server, api_key=ADMIN_KEY) as client:
            created = client.create_experiment("rt", ["a", "b"], name="Round trip")
            assert [v.id for v in created.variants] == ["a", "b"]
            assert client.experiment("rt").name == "Round trip"
            assert "rt" in [e.id for e in client.list_experiments().items]
            assert client.update_experiment("rt", description="x").description == "x"
            assert (
                client.post_metrics(
                    {
                        "experiment_id": "rt",
                        "variant_id": v,
                        "date": f"2024-01-0{d}",
                        "impressions": 100,
                        "successes": 10 + d,
                    }
                    for v in "ab"
                    for d in (1, 2)
                )
                == 4
            )
            rows = client.daily_metrics("rt").metrics
            assert [(r.variant_id, r.date.isoformat()) for r in rows][:2] == [
                ("a", "2024-01-01"),
                ("b", "2024-01-01"),
            ]
            first = client.assign("rt", "user-1")
            assert client.assign("rt", "user-1").variant_id == first.variant_id
            assert client.convert("rt", "user-1").counted is True
            assert client.convert("rt", "user-1").counted is False
            batch = client.assign_batch([("rt", "user-2"), ("rt", "user-3", "mobile")])
            assert len(batch.assignments) == 2
            assert client.assign("rt", "user-4", segment="mobile").new is True
            mobile = [s for s in client.segments("rt").segments if s.segment == "mobile"]
            assert mobile[0].units == 2  # user-3 and user-4
            assert client.summary("rt", segment="mobile").segment == "mobile"
            tomorrow = datetime.now(UTC).date() + timedelta(days=1)  # today's units count
            assert client.allocations("rt", tomorrow, segment="mobile").segment == "mobile"
            cold = client.create_experiment("cold", ["a", "b"]).id  # nothing cached yet
            assert client.assign_batch([(cold, "u1", "tablet")]).assignments[0].new is True
            conversions = client.convert_batch([{"experiment_id": "rt", "unit_id": "user-2"}])
            assert conversions.conversions[0].counted is True
            assert client.add_variant("rt", "c").variants[-1].id == "c"
            assert client.update_variant("rt", "c", active=False).variants[-1].active is False
            assert client.archive("rt").archived is True
            assert client.archive("rt", archived=False).archived is False
            summary = client.summary("rt")
            assert sum(v.impressions for v in summary.variants) == 400 + 4
            assert client.conclude("rt", "b").status.value == "stopped"
            assert client.reset("rt").status.value == "running"
            key = client.create_key("read", name="reporting")
            assert key.key.startswith("mab_")
            assert key.id in [k.id for k in client.keys().keys]
            assert client.revoke_key(key.id).revoked_at is not None
            assert client.audit().entries

    def test_batch_items_are_tuples_or_mappings_in_both_calls(self, server: str) -> None:
        with Client(server, api_key=ADMIN_KEY) as client:
            client.create_experiment("shapes", ["a", "b"])
            assigned = client.assign_batch(
                [("shapes", "t1"), {"experiment_id": "shapes", "unit_id": "t2"}]
            )
            assert [a.unit_id for a in assigned.assignments] == ["t1", "t2"]
            converted = client.convert_batch(
                [("shapes", "t1"), {"experiment_id": "shapes", "unit_id": "t2"}]
            )
            assert [c.counted for c in converted.conversions] == [True, True]
            for bad, words in (
                (["shapes"], "not 'shapes'"),
                ([("shapes",)], "2 to 3 values"),
                ([{"experiment": "shapes", "unit_id": "x"}], "unknown field"),
            ):
                with pytest.raises(TypeError, match=words):
                    client.assign_batch(bad)

    def test_errors_carry_the_api_message(self, server: str) -> None:
        with Client(server, api_key=ADMIN_KEY) as client:
            with pytest.raises(ApiError) as raised:
                client.allocations("no-such-experiment")
            assert raised.value.status_code == 404
            assert "does not exist" in raised.value.message
        with Client(server) as anonymous, pytest.raises(ApiError) as raised:
            anonymous.list_experiments()
        assert raised.value.status_code == 401

    def test_async_client(self, server: str) -> None:
        async def scenario() -> tuple[str, bool]:
            async with AsyncClient(server, api_key=ADMIN_KEY) as client:
                await client.create_experiment("async-exp", ["a", "b"])
                await client.post_metric("async-exp", "a", "2024-01-01", 10, 1)
                first = await client.assign("async-exp", "u")
                again = await client.assign("async-exp", "u")
                allocation = await client.allocations("async-exp")
                assert sum(allocation.allocations.values()) == pytest.approx(100.0)
                assert (await client.convert("async-exp", "u")).counted is True
                rows = [
                    {
                        "experiment_id": "async-exp",
                        "variant_id": "b",
                        "date": "2024-01-02",
                        "impressions": 5,
                        "successes": 1,
                    }
                ]
                assert await client.post_metrics(rows) == 1
                assert len((await client.daily_metrics("async-exp")).metrics) == 2
                assert (await client.summary("async-exp")).experiment_id == "async-exp"
                batch = await client.assign_batch([("async-exp", "w")])
                assert batch.assignments[0].unit_id == "w"
                converted = await client.convert_batch(
                    [{"experiment_id": "async-exp", "unit_id": "w"}]
                )
                assert converted.conversions[0].counted is True
                await client.add_variant("async-exp", "c")
                await client.update_variant("async-exp", "c", active=False)
                await client.update_experiment("async-exp", description="async")
                assert (await client.experiment("async-exp")).description == "async"
                assert (await client.archive("async-exp")).archived is True
                await client.archive("async-exp", archived=False)
                assert (await client.conclude("async-exp", "a")).status.value == "stopped"
                await client.reset("async-exp")
                key = await client.create_key("read")
                assert key.id in [k.id for k in (await client.keys()).keys]
                assert (await client.revoke_key(key.id)).revoked_at is not None
                assert (await client.audit(limit=5)).entries
                assert (await client.list_experiments()).total >= 1
                return first.variant_id, again.variant_id == first.variant_id

        _, sticky = asyncio.run(scenario())
        assert sticky


class TestRetries:
    def scripted(self, answers: list[int | Exception]) -> tuple[httpx.MockTransport, list[int]]:
        seen: list[int] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(1)
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            if answer == 200:
                return httpx.Response(200, json={"status": "success"})
            return httpx.Response(
                answer,
                headers={"Retry-After": "0"},
                json={"error": {"code": "x", "message": "down", "details": []}},
            )

        return httpx.MockTransport(handler), seen

    def test_503_and_connection_errors_are_retried(self) -> None:
        transport, seen = self.scripted([503, httpx.ConnectError("refused"), 429, 200])
        with Client("http://x", transport=transport, backoff=0.001) as client:
            assert client.post_metric("e", "v", "2024-01-01", 1, 0).status == "success"
        assert len(seen) == 4

    def test_gives_up_after_the_retries(self) -> None:
        transport, seen = self.scripted([503, 503, 503])
        client = Client("http://x", transport=transport, retries=2, backoff=0.001)
        with client, pytest.raises(ApiError) as raised:
            client.post_metric("e", "v", "2024-01-01", 1, 0)
        assert raised.value.status_code == 503
        assert len(seen) == 3

    def test_client_errors_are_not_retried(self) -> None:
        transport, seen = self.scripted([422])
        with Client("http://x", transport=transport) as client, pytest.raises(ApiError):
            client.post_metric("e", "v", "2024-01-01", 1, 0)
        assert len(seen) == 1


class TestCommands:
    def invoke(self, server: str, *args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(cli.app, [*args, "--url", server, "--key", ADMIN_KEY])
        return result.exit_code, result.stdout, result.stderr

    def test_create_list_show_allocations(self, server: str) -> None:
        code, stdout, _ = self.invoke(
            server, "experiments", "create", "cli-exp", "-v", "a", "-v", "b"
        )
        assert code == 0, stdout
        assert "created cli-exp" in stdout
        code, stdout, _ = self.invoke(server, "experiments", "list")
        assert code == 0
        assert "cli-exp" in stdout
        with Client(server, api_key=ADMIN_KEY) as client:
            client.post_metric("cli-exp", "a", "2024-01-01", 1000, 120)
            client.post_metric("cli-exp", "b", "2024-01-01", 1000, 150)
            expected = client.allocations("cli-exp", for_date="2024-01-02")
        code, stdout, _ = self.invoke(server, "allocations", "cli-exp", "--date", "2024-01-02")
        assert code == 0
        for variant, percent in expected.allocations.items():
            assert f"{percent:.1f}%" in stdout
            assert variant in stdout
        code, stdout, _ = self.invoke(server, "experiments", "show", "cli-exp")
        assert code == 0
        assert "P(best)" in stdout
        assert "12.00%" in stdout
        assert "1 day)" in stdout  # not "1 days"
        assert "continue: continue:" not in stdout
        assert "stop_winner: stop_winner:" not in stdout
        assert "more day" in stdout  # continue says about how many more days

    def test_show_says_ship_for_equal_variants(self, server: str) -> None:
        with Client(server, api_key=ADMIN_KEY) as client:
            client.create_experiment("eq", ["a", "b"])
            for day in range(1, 29):
                for variant in ("a", "b"):
                    client.post_metric("eq", variant, f"2024-02-{day:02d}", 10_000, 1_000)
        code, stdout, _ = self.invoke(server, "experiments", "show", "eq")
        assert code == 0
        assert "stop_ship: ship " in " ".join(stdout.split())
        assert "not a claim" in " ".join(stdout.split())

    def test_an_auto_created_experiment_gets_a_control_and_shows_uplift(self, server: str) -> None:
        with Client(server, api_key=ADMIN_KEY) as client:
            client.post_metric("no-ctl", "a", "2024-01-01", 10_000, 1000)
            client.post_metric("no-ctl", "b", "2024-01-01", 10_000, 1250)
        code, stdout, _ = self.invoke(server, "experiments", "show", "no-ctl")
        assert code == 0
        assert "no control variant, so no uplift" in stdout
        assert "mabapi experiments control no-ctl VARIANT" in stdout
        code, stdout, _ = self.invoke(server, "experiments", "control", "no-ctl", "a")
        assert code == 0, stdout
        code, stdout, _ = self.invoke(server, "experiments", "show", "no-ctl")
        assert "no control variant" not in stdout
        assert "(control)" in stdout
        with Client(server, api_key=ADMIN_KEY) as client:
            [b] = [v for v in client.summary("no-ctl").variants if v.variant_id == "b"]
        assert b.uplift is not None
        assert f"{b.uplift.mean:+.1%}" in stdout  # about +25%

    def test_segments_from_the_command_line(self, server: str) -> None:
        """Opposite winners in two segments: `segments` lists each leader, `allocations
        --segment` and `experiments show --segment` answer for one."""
        rates = {"desktop": {"a": 0.10, "b": 0.14}, "mobile": {"a": 0.14, "b": 0.10}}
        with Client(server, api_key=ADMIN_KEY) as client:
            client.create_experiment("cli-seg", ["a", "b"])
            client.post_metrics(
                {"experiment_id": "cli-seg", "variant_id": v, "date": "2024-03-01",
                 "impressions": 5000, "successes": int(5000 * r), "segment": segment}
                for segment, by_variant in rates.items()
                for v, r in by_variant.items()
            )  # fmt: skip
        code, stdout, _ = self.invoke(server, "segments", "cli-seg")
        assert code == 0, stdout
        lines = {
            line.split()[1]: line
            for line in stdout.splitlines()
            if "desktop" in line or "mobile" in line
        }
        assert " b " in lines["desktop"]
        assert " a " in lines["mobile"]
        assert "differs" in stdout
        code, stdout, _ = self.invoke(
            server, "allocations", "cli-seg", "--date", "2024-03-02", "--segment", "mobile"
        )
        assert code == 0, stdout
        assert "cli-seg / mobile" in stdout
        with Client(server, api_key=ADMIN_KEY) as client:
            mobile = client.allocations("cli-seg", "2024-03-02", segment="mobile")
        assert f"{mobile.allocations['a']:.1f}%" in stdout
        code, stdout, _ = self.invoke(
            server, "experiments", "show", "cli-seg", "--segment", "mobile"
        )
        assert code == 0, stdout
        assert "5,000" in stdout
        assert "14.00%" in stdout

    def test_push_reports_rejected_rows_and_export_round_trips(
        self, server: str, tmp_path: Path
    ) -> None:
        source = tmp_path / "in.csv"
        source.write_text(
            "experiment_id,variant_id,date,impressions,successes\n"
            "csv-exp,a,2024-02-01,100,10\n"
            "csv-exp,b,2024-02-01,100,12\n"
            "csv-exp,a,2024-02-30,100,10\n"  # line 4: no such day
            "csv-exp,b,2024-02-02,1e3,5\n"  # line 5: not an integer
            "csv-exp,a,2024-02-02,100,9\n"
        )
        # A segment column (optional) and value columns (optional) are read too.
        segmented = tmp_path / "segmented.csv"
        segmented.write_text(
            "experiment_id,variant_id,date,impressions,successes,segment\n"
            "csv-exp,a,2024-02-02,50,4,mobile\n"
        )
        code, stdout, _ = self.invoke(server, "metrics", "push", str(segmented))
        assert code == 0, stdout
        code, stdout, stderr = self.invoke(server, "metrics", "push", str(source))
        assert code == 1  # some rows were rejected
        assert "stored 3 row(s)" in stdout
        assert "2 rejected" in stderr
        assert "4" in stderr
        assert "5" in stderr
        target = tmp_path / "out.csv"
        code, _, _ = self.invoke(server, "metrics", "export", "csv-exp", "--out", str(target))
        assert code == 0
        lines = target.read_text().splitlines()
        assert lines[0] == (
            "experiment_id,variant_id,date,impressions,successes,value_sum,value_sum_squares,"
            "segment"
        )
        assert sorted(lines[1:]) == sorted(
            [
                "csv-exp,a,2024-02-01,100,10,,,",
                "csv-exp,b,2024-02-01,100,12,,,",
                "csv-exp,a,2024-02-02,100,9,,,",
                "csv-exp,a,2024-02-02,50,4,,,mobile",
            ]
        )
        # What export writes, push reads back unchanged (the segment row stays its own).
        code, stdout, _ = self.invoke(server, "metrics", "push", str(target))
        assert code == 0
        assert "stored 4 row(s)" in stdout
        with Client(server, api_key=ADMIN_KEY) as client:
            rows = client.daily_metrics("csv-exp").metrics
        assert len(rows) == 4
        assert [r.impressions for r in rows if r.segment == "mobile"] == [50]
        # Value experiments keep their sums through the export.
        with Client(server, api_key=ADMIN_KEY) as client:
            client.create_experiment("csv-val", ["a"], metric_kind="value")
            client.post_metric("csv-val", "a", "2024-02-01", 4, 4, value_sum=12.5,
                               value_sum_squares=50.25)  # fmt: skip
        code, stdout, _ = self.invoke(server, "metrics", "export", "csv-val")
        assert code == 0
        assert stdout.splitlines()[1] == "csv-val,a,2024-02-01,4,4,12.5,50.25,"

    def test_a_column_push_does_not_understand_stores_nothing_and_is_named(
        self, server: str, tmp_path: Path
    ) -> None:
        with Client(server, api_key=ADMIN_KEY) as client:
            client.create_experiment("csv-cols", ["a", "b"])
            client.post_metric("csv-cols", "a", "2024-02-01", 1000, 100)
        source = tmp_path / "extra.csv"
        source.write_text(
            "experiment_id,variant_id,date,impressions,successes,refund_count,\n"
            "csv-cols,a,2024-02-01,1000,7,7,\n"
        )
        code, stdout, stderr = self.invoke(server, "metrics", "push", str(source))
        assert code == 2
        assert "refund_count" in stderr
        assert "a column without a name" in stderr
        assert "nothing was stored" in stderr
        assert "stored" not in stdout
        with Client(server, api_key=ADMIN_KEY) as client:
            [row] = client.daily_metrics("csv-cols").metrics
        assert (row.impressions, row.successes) == (1000, 100)  # untouched

    def test_a_metric_id_column_routes_rows_to_the_guardrail_as_the_api_does(
        self, server: str, tmp_path: Path
    ) -> None:
        refunds = {"metric_id": "refunds", "max_relative_harm": 0.05, "probability": 0.95}
        with Client(server, api_key=ADMIN_KEY) as client:
            client.create_experiment(
                "csv-guard", ["a", "b"], guardrails=[refunds],
            )  # fmt: skip
        source = tmp_path / "guard.csv"
        source.write_text(
            "experiment_id,variant_id,date,impressions,successes,metric_id\n"
            "csv-guard,a,2024-02-01,1000,100,\n"
            "csv-guard,b,2024-02-01,1000,120,\n"
            "csv-guard,a,2024-02-01,1000,7,refunds\n"
            "csv-guard,b,2024-02-01,1000,30,refunds\n"
        )
        code, stdout, stderr = self.invoke(server, "metrics", "push", str(source))
        assert code == 0, stdout + stderr
        assert "stored 4 row(s)" in stdout
        with Client(server, api_key=ADMIN_KEY) as client:
            primary = {r.variant_id: r.successes for r in client.daily_metrics("csv-guard").metrics}
            summary = client.summary("csv-guard")
        assert primary == {"a": 100, "b": 120}  # the refunds did not replace them
        [guardrail] = summary.guardrails
        assert {v.variant_id: v.successes for v in guardrail.variants} == {"a": 7, "b": 30}

    def test_export_escapes_cells_a_spreadsheet_would_run_and_push_reads_them_back(
        self, server: str, tmp_path: Path
    ) -> None:
        with Client(server, api_key=ADMIN_KEY) as client:
            client.create_experiment("-1-1", ["-A1", "b"])  # ids may start with "-" only
            client.post_metric("-1-1", "-A1", "2024-02-01", 10, 1)
            client.post_metric("-1-1", "b", "2024-02-01", 10, 2)
        target = tmp_path / "formulas.csv"
        exported = CliRunner().invoke(
            cli.app,
            ["metrics", "export", "--out", str(target), "--url", server, "--key", ADMIN_KEY,
             "--", "-1-1"],
        )  # fmt: skip
        assert exported.exit_code == 0, exported.stderr
        lines = target.read_text().splitlines()[1:]
        assert sorted(lines) == ["'-1-1,'-A1,2024-02-01,10,1,,,", "'-1-1,b,2024-02-01,10,2,,,"]
        code, stdout, _ = self.invoke(server, "metrics", "push", str(target))
        assert code == 0, stdout
        with Client(server, api_key=ADMIN_KEY) as client:
            rows = client.daily_metrics("-1-1").metrics
        assert sorted((r.variant_id, r.successes) for r in rows) == [("-A1", 1), ("b", 2)]

    def test_unreachable_server_is_a_clear_error(self) -> None:
        result = CliRunner().invoke(
            cli.app, ["experiments", "list", "--url", f"http://127.0.0.1:{free_port()}"]
        )
        assert result.exit_code == 1
        assert "cannot reach the server" in result.stderr


class TestEvaluate:
    """Off-policy evaluation from the client and the command line, on reported days."""

    def setup_experiment(self, client: Client, experiment_id: str) -> None:
        client.create_experiment(experiment_id, ["a", "b"])
        client.post_metrics(
            {"experiment_id": experiment_id, "variant_id": v, "date": f"2024-02-0{d}",
             "impressions": n, "successes": s}
            for d in (1, 2)
            for v, n, s in (("a", 3000, 150), ("b", 1000, 80))
        )  # fmt: skip

    def test_client_and_async_client(self, server: str) -> None:
        with Client(server, api_key=ADMIN_KEY) as client:
            self.setup_experiment(client, "ope")
            answer = client.evaluate("ope", {"a": 0.5, "b": 0.5}, start="2024-02-01")
        # Observed shares 3/4 and 1/4: IPW = 0.5 * 0.05 + 0.5 * 0.08.
        assert answer.estimates["ipw"] is not None
        assert answer.estimates["ipw"].value == pytest.approx(0.065)
        assert answer.diagnostics.days_without_served_allocation == 2

        async def call() -> float:
            async with AsyncClient(server, api_key=ADMIN_KEY) as client:
                found = await client.evaluate("ope", {"a": 1.0}, estimator="snipw")
                assert found.value is not None
                return found.value

        assert asyncio.run(call()) == pytest.approx(0.05)
        with Client(server, api_key=ADMIN_KEY) as client, pytest.raises(ApiError) as error:
            client.evaluate("ope", {"a": 0.5, "zz": 0.5})
        assert "zz is not a variant" in str(error.value)

    def test_command_line(self, server: str) -> None:
        with Client(server, api_key=ADMIN_KEY) as client:
            self.setup_experiment(client, "ope-cli")
        result = CliRunner().invoke(
            cli.app,
            ["evaluate", "ope-cli", "--policy", "a=0.5,b=0.5", "--url", server, "--key", ADMIN_KEY],
        )
        assert result.exit_code == 0, result.stdout
        assert "ope-cli: what if" in result.stdout
        assert "0.065" in result.stdout
        assert "served (logged)" in result.stdout
        assert "trustworthy:" in result.stdout
        segmented = cli_evaluate.parse_policy(["mobile:a=1,b=0", "a=0.5,b=0.5"])
        assert segmented == {
            "segments": {"mobile": {"a": 1.0, "b": 0.0}},
            "default": {"a": 0.5, "b": 0.5},
        }
        bad = CliRunner().invoke(
            cli.app,
            ["evaluate", "ope-cli", "--policy", "a:0.5", "--url", server, "--key", ADMIN_KEY],
        )
        assert bad.exit_code != 0
        assert "variant=probability" in bad.output
