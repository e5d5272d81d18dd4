"""Migrations: up, down, up again with data; models and migrations agree; concurrent
starts on PostgreSQL apply each migration once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, inspect, select, text
from sqlalchemy.engine import URL, Connection

from mabapi.db import migrate
from mabapi.db.base import Base
from mabapi.db.engine import make_engine
from mabapi.experiments.models import ExperimentMetric
from tests.fixtures.databases import (
    create_postgres_database,
    drop_postgres_database,
    fresh_postgres,
    selected_backends,
    sqlite_url,
    url_text,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=selected_backends())
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[URL]:
    """A database with no schema at all, per backend."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "empty.db")
        return
    url = create_postgres_database("mabapi_migration")
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture
def empty_postgres_database() -> Iterator[URL]:
    with fresh_postgres("mabapi_concurrent") as url:
        yield url


def _diff(connection: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


INSERT_EXPERIMENT = (
    "INSERT INTO experiments (id, name, description, status, algorithm, created_at, "
    "updated_at) VALUES ('e', 'e', '', 'running', 'thompson', CURRENT_TIMESTAMP, "
    "CURRENT_TIMESTAMP)"
)
INSERT_VARIANT = (
    "INSERT INTO variants (experiment_id, id, name, is_control, active, position, "
    "created_at) VALUES ('e', 'a', 'a', true, true, 0, CURRENT_TIMESTAMP)"
)


class TestMigrations:
    async def test_up_down_up_with_data(self, empty_database: URL) -> None:
        engine = make_engine(empty_database)
        try:
            await migrate.upgrade(engine)
            assert await migrate.current_revision(engine) == migrate.head_revision()
            async with engine.begin() as connection:
                await connection.execute(text(INSERT_EXPERIMENT))
                await connection.execute(text(INSERT_VARIANT))
            await migrate.downgrade(engine, "base")
            async with engine.connect() as connection:
                assert await connection.run_sync(_tables) <= {"alembic_version"}
            await migrate.upgrade(engine)
            async with engine.begin() as connection:
                assert await connection.run_sync(_diff) == []
                tables = await connection.run_sync(_tables)
                assert {"experiments", "variants", "experiment_metrics"} <= tables
                # The schema works after the round trip: constraints included.
                await connection.execute(text(INSERT_EXPERIMENT))
        finally:
            await engine.dispose()

    async def test_segments_are_registered_from_the_data_there(self, empty_database: URL) -> None:
        engine = make_engine(empty_database)
        try:
            await migrate.upgrade(engine, "0009")
            async with engine.begin() as connection:
                for sql in (
                    "INSERT INTO experiments (id, name, description, status, algorithm, "
                    "metric_kind, higher_is_better, settings, live_generation, created_at, "
                    "updated_at) VALUES ('e', 'e', '', 'running', 'thompson', 'conversion', "
                    "true, '{}', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
                    "INSERT INTO variants (experiment_id, id, name, is_control, active, "
                    "position, created_at) VALUES ('e', 'a', 'a', true, true, 0, "
                    "CURRENT_TIMESTAMP)",
                    "INSERT INTO experiment_metrics (experiment_id, variant_id, date, segment, "
                    "impressions, successes, created_at, updated_at) VALUES "
                    "('e', 'a', '2024-01-01', 'mobile', 100, 10, CURRENT_TIMESTAMP, "
                    "CURRENT_TIMESTAMP), ('e', 'a', '2024-01-02', 'mobile', 50, 5, "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP), ('e', 'a', '2024-01-01', '', 9, 1, "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
                    "INSERT INTO assignments (experiment_id, unit_id, variant_id, probability, "
                    "assigned_at, assigned_date, segment) VALUES ('e', 'u1', 'a', 1.0, "
                    "CURRENT_TIMESTAMP, '2024-01-01', 'desktop'), ('e', 'u2', 'a', 1.0, "
                    "CURRENT_TIMESTAMP, '2024-01-01', NULL)",
                ):
                    await connection.execute(text(sql))
            await migrate.upgrade(engine)
            async with engine.connect() as connection:
                registered = (
                    await connection.execute(
                        text("SELECT experiment_id, segment FROM experiment_segments ORDER BY 2")
                    )
                ).all()
            assert [tuple(row) for row in registered] == [("e", "desktop"), ("e", "mobile")]
        finally:
            await engine.dispose()

    async def test_running_totals_are_backfilled(self, empty_database: URL) -> None:
        engine = make_engine(empty_database)
        try:
            await migrate.upgrade(engine, "0004")
            async with engine.begin() as connection:
                for sql in (
                    "INSERT INTO experiments (id, name, description, status, algorithm, "
                    "metric_kind, higher_is_better, settings, live_generation, created_at, "
                    "updated_at) VALUES ('e', 'e', '', 'running', 'thompson', 'conversion', "
                    "true, '{}', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
                    "INSERT INTO variants (experiment_id, id, name, is_control, active, "
                    "position, created_at) VALUES ('e', 'a', 'a', true, true, 0, "
                    "CURRENT_TIMESTAMP)",
                    "INSERT INTO experiment_metrics (experiment_id, variant_id, date, "
                    "impressions, successes, created_at, updated_at) VALUES "
                    "('e', 'a', '2024-01-01', 100, 10, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP), "
                    "('e', 'a', '2024-01-02', 50, 5, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
                    "INSERT INTO live_metrics (experiment_id, variant_id, date, shard, "
                    "impressions, successes, value_sum, value_sum_squares) VALUES "
                    "('e', 'a', '2024-01-03', 3, 7, 2, 0, 0)",
                ):
                    await connection.execute(text(sql))
            await migrate.upgrade(engine)
            async with engine.connect() as connection:
                rows = (
                    await connection.execute(
                        text(
                            "SELECT source, shard, impressions, successes FROM variant_totals "
                            "ORDER BY source"
                        )
                    )
                ).all()
            assert [tuple(row) for row in rows] == [(0, 0, 150, 15), (1, 3, 7, 2)]
        finally:
            await engine.dispose()

    async def test_models_and_migrations_do_not_drift(self, empty_database: URL) -> None:
        engine = make_engine(empty_database)
        try:
            await migrate.upgrade(engine)
            async with engine.connect() as connection:
                assert await connection.run_sync(_diff) == []
        finally:
            await engine.dispose()

    async def test_check_constraints_hold_in_the_database(self, empty_database: URL) -> None:
        from sqlalchemy.exc import IntegrityError

        engine = make_engine(empty_database)
        try:
            await migrate.upgrade(engine)
            async with engine.begin() as connection:
                await connection.execute(text(INSERT_EXPERIMENT))
                await connection.execute(text(INSERT_VARIANT))
            bad = insert(ExperimentMetric).values(
                experiment_id="e",
                variant_id="a",
                date=date(2023, 1, 1),
                impressions=1,
                successes=2,
                created_at=None,
            )
            with pytest.raises(IntegrityError):
                async with engine.begin() as connection:
                    await connection.execute(bad)
            async with engine.connect() as connection:
                count = (await connection.execute(select(ExperimentMetric.id))).all()
                assert count == []
        finally:
            await engine.dispose()


def _cli(*args: str, url: URL, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MABAPI_DATABASE_URL": url_text(url).replace("+asyncpg", "")}
    env["MABAPI_DATABASE_URL"] = env["MABAPI_DATABASE_URL"].replace("+aiosqlite", "")
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


class TestCommands:
    def test_db_check_then_upgrade_then_check(self, empty_database: URL) -> None:
        before = _cli("-m", "mabapi", "db", "check", url=empty_database)
        assert before.returncode == 1
        assert "mabapi db upgrade" in before.stderr
        upgraded = _cli("-m", "mabapi", "db", "upgrade", url=empty_database)
        assert upgraded.returncode == 0, upgraded.stderr
        after = _cli("-m", "mabapi", "db", "check", url=empty_database)
        assert after.returncode == 0, after.stderr
        assert "up to date" in after.stderr

    def test_init_db_alias(self, empty_database: URL) -> None:
        result = _cli("-m", "mabapi", "init-db", url=empty_database)
        assert result.returncode == 0, result.stderr
        assert _cli("-m", "mabapi", "db", "check", url=empty_database).returncode == 0

    def test_original_init_db_script(self, empty_database: URL) -> None:
        result = _cli("init_db.py", url=empty_database)
        assert result.returncode == 0, result.stderr
        assert _cli("-m", "mabapi", "db", "check", url=empty_database).returncode == 0

    def test_password_is_not_printed(self, tmp_path: Path) -> None:
        url = URL.create("postgresql", username="u", password="s3cret", host="127.0.0.1", port=1)
        result = _cli("-m", "mabapi", "db", "check", url=url)
        assert result.returncode != 0
        assert "s3cret" not in result.stdout + result.stderr

    def test_an_empty_database_is_said_to_have_no_tables_yet(self, empty_database: URL) -> None:
        result = _cli("-m", "mabapi", "db", "check", url=empty_database)
        assert result.returncode == 1
        assert "has no mabapi tables yet" in result.stderr
        assert "None" not in result.stderr

    @pytest.mark.parametrize("command", [("db", "check"), ("db", "upgrade"), ("serve",)])
    def test_an_unreachable_database_is_one_line_and_exit_3(self, command: tuple[str, ...]) -> None:
        url = URL.create("postgresql", username="u", host="127.0.0.1", port=1, database="x")
        result = _cli("-m", "mabapi", *command, url=url)
        assert result.returncode == 3, result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "cannot be reached" in result.stderr

    def test_a_missing_postgresql_database_says_to_create_it(
        self, empty_postgres_database: URL
    ) -> None:
        missing = empty_postgres_database.set(database="mabapi_no_such_database")
        result = _cli("-m", "mabapi", "db", "upgrade", url=missing)
        assert result.returncode == 3, result.stderr
        assert "Traceback" not in result.stderr
        assert "createdb" in result.stderr

    def test_a_sqlite_file_in_a_missing_folder_is_one_line(self, tmp_path: Path) -> None:
        url = URL.create("sqlite", database=str(tmp_path / "no" / "such" / "mabapi.db"))
        result = _cli("-m", "mabapi", "db", "upgrade", url=url)
        assert result.returncode == 3
        assert "Traceback" not in result.stderr
        assert "does not exist" in result.stderr

    def test_concurrent_starts_on_postgresql(self, empty_postgres_database: URL) -> None:
        env = {**os.environ, "MABAPI_DATABASE_URL": url_text(empty_postgres_database)}
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "mabapi", "db", "upgrade"],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        results = [process.communicate(timeout=120) for process in processes]
        assert [process.returncode for process in processes] == [0, 0, 0, 0], results

        async def revision() -> str | None:
            engine = make_engine(empty_postgres_database)
            try:
                return await migrate.current_revision(engine)
            finally:
                await engine.dispose()

        assert asyncio.run(revision()) == migrate.head_revision()
