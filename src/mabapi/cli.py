"""The `mabapi` command line (typer)."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from mabapi import cli_client, cli_evaluate, cli_webhooks, observability
from mabapi.access import service as access
from mabapi.access.models import Scope
from mabapi.db import migrate
from mabapi.db.engine import engine_from_settings, is_unavailable, make_sessionmaker
from mabapi.db.transactions import background_transaction
from mabapi.errors import NotFoundError
from mabapi.schemas import ID_PATTERN
from mabapi.settings import Settings

app = typer.Typer(help="mabapi: a multi-armed bandit service for A/B tests.", no_args_is_help=True)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"mabapi {metadata.version('mabapi')} (schema {migrate.head_revision()})")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Version and schema."
        ),
    ] = False,
) -> None:
    """mabapi: a multi-armed bandit service for A/B tests."""


db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(cli_client.experiments_app, name="experiments")
app.add_typer(cli_client.metrics_app, name="metrics")
app.add_typer(cli_webhooks.webhooks_app, name="webhooks")
app.command("allocations")(cli_client.allocations)
app.command("segments")(cli_client.segments)
app.command("evaluate")(cli_evaluate.evaluate)
console = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")


def _settings() -> Settings:
    try:
        return Settings()
    except ValueError as error:
        console.print(f"[red]invalid settings:[/red] {error}")
        raise typer.Exit(2) from error


def _describe(settings: Settings) -> str:
    # Never print credentials: render the URL with its password masked.
    return settings.async_database_url.render_as_string(hide_password=True)


# Exit codes of the database commands (and of `serve` when it cannot migrate): 0 done,
# 1 a migration is pending (`db check`), 2 invalid settings, 3 the database cannot be
# reached or does not exist.
EXIT_UNREACHABLE = 3


def _database_problem(error: BaseException) -> str | None:
    """One line saying why the database cannot be used, or None for any other error."""
    sqlstate = str(getattr(getattr(error, "orig", None), "sqlstate", None) or "")
    text = str(error)
    if sqlstate == "3D000" or ("does not exist" in text and "database" in text):
        return "the database does not exist: create it (createdb NAME, or CREATE DATABASE)"
    if sqlstate in ("28P01", "28000"):
        return "the database refused the credentials in MABAPI_DATABASE_URL"
    if is_unavailable(error) or isinstance(error, OSError):
        reason = str(getattr(error, "orig", None) or error).splitlines()[0][:200]
        return f"the database cannot be reached ({reason}): is it running, at that address?"
    return None


def _say(text: str) -> None:
    console.print(text, markup=False)


def _run_on_database(
    settings: Settings, work: Coroutine[Any, Any, T], report: Callable[[str], None] = _say
) -> T:
    """Run `work`; a database that cannot be used is one line and exit 3, no traceback."""
    url = settings.async_database_url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        folder = Path(str(url.database)).expanduser().parent
        if not folder.is_dir():
            work.close()
            report(
                f"{_describe(settings)}: the SQLite file's folder {folder} does not exist: "
                "create it, or point MABAPI_DATABASE_URL elsewhere"
            )
            raise typer.Exit(EXIT_UNREACHABLE)
    try:
        return asyncio.run(work)
    except Exception as error:
        problem = _database_problem(error)
        if problem is None:
            raise
        report(f"{_describe(settings)}: {problem}")
        raise typer.Exit(EXIT_UNREACHABLE) from None


async def _upgrade(settings: Settings) -> str | None:
    engine = engine_from_settings(settings)
    try:
        await migrate.upgrade(engine)
        return await migrate.current_revision(engine)
    finally:
        await engine.dispose()


async def _current(settings: Settings) -> str | None:
    engine = engine_from_settings(settings)
    try:
        return await migrate.current_revision(engine)
    finally:
        await engine.dispose()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the configured database to the latest schema."""
    settings = _settings()
    revision = _run_on_database(settings, _upgrade(settings))
    console.print(f"database {_describe(settings)} is at revision {revision}")


@app.command("init-db")
def init_db() -> None:
    """Alias of `mabapi db upgrade`."""
    db_upgrade()


@db_app.command("check")
def db_check() -> None:
    """Exit 0 if the database is at the latest revision, 1 if it needs `db upgrade`, 2 for
    invalid settings, 3 if it cannot be reached or does not exist."""
    settings = _settings()
    current = _run_on_database(settings, _current(settings))
    head = migrate.head_revision()
    if current != head:
        where = "has no mabapi tables yet" if current is None else f"is at {current}"
        console.print(
            f"database {_describe(settings)} {where}, latest is {head}: run `mabapi db upgrade`"
        )
        raise typer.Exit(1)
    console.print(f"database {_describe(settings)} is up to date ({head})")


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development).")] = False,
) -> None:
    """Run the API server (migrating the database first unless told not to)."""
    import uvicorn

    settings = _settings()
    # Every line the server writes goes through logging, in MABAPI_LOG_FORMAT, its
    # first line included.
    observability.configure_logging(settings.log_format, settings.log_level)
    log = logging.getLogger("mabapi.serve")
    if settings.migrate_on_start:
        revision = _run_on_database(settings, _upgrade(settings), log.error)
        log.info("database %s migrated to %s", _describe(settings), revision)
        # Migrated once here; the worker processes need not race to do it again.
        os.environ["MABAPI_MIGRATE_ON_START"] = "false"
    processes = None if reload else (workers or settings.workers)
    if (processes or 1) > 1 and not settings.prometheus_multiproc_dir:
        # prometheus-client multi-process mode: every worker writes its metrics here and
        # GET /metrics adds them up. Fresh per start, so a restart starts from zero.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mabapi-metrics-")
    uvicorn.run(
        "mabapi.app:app_factory",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=processes,
        reload=reload,
        log_level=settings.log_level,
        log_config=None,  # the app configures logging (JSON by default)
        access_log=False,  # one log line per request comes from the app, with its id
        timeout_keep_alive=settings.keep_alive_seconds,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_seconds),
    )


def _float_list(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"{option} takes numbers separated by commas") from None


@app.command("simulate")
def simulate(
    scenario: Annotated[
        Path | None, typer.Option(help="TOML scenario file (see --example).", exists=True)
    ] = None,
    rates: Annotated[str, typer.Option(help="Conversion rate per arm, e.g. 0.10,0.12")] = (
        "0.10,0.12"
    ),
    days: Annotated[int, typer.Option(min=1, max=3650)] = 30,
    traffic: Annotated[int, typer.Option(min=1, help="Units per day.")] = 2000,
    seeds: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
    policies: Annotated[str, typer.Option(help="Comma-separated policy names.")] = (
        "thompson,top_two_thompson,uniform"
    ),
    switch_day: Annotated[int | None, typer.Option(help="Day the rates change.")] = None,
    switch_rates: Annotated[str | None, typer.Option(help="Rates from switch-day on.")] = None,
    half_life: Annotated[float | None, typer.Option(help="Decay half-life, days.")] = None,
    cadence: Annotated[
        str, typer.Option(help="daily (one allocation a day) or event (update per unit).")
    ] = "daily",
    out: Annotated[Path, typer.Option(help="Folder for JSON, CSV and charts.")] = Path(
        "simulation-results"
    ),
    example: Annotated[bool, typer.Option(help="Print an example scenario file.")] = False,
) -> None:
    """Compare policies on simulated traffic: regret, traffic to the best arm, gain over
    an even split, and when (and how often wrongly) a winner is declared."""
    from rich.progress import Progress
    from rich.table import Table

    from mabapi.simulation import report
    from mabapi.simulation import scenario as scenarios
    from mabapi.simulation.runner import aggregate, run

    if example:
        typer.echo(scenarios.EXAMPLE)
        return
    try:
        if scenario is not None:
            loaded = scenarios.load_any(scenario)
            if isinstance(loaded, scenarios.SegmentedScenario):
                _simulate_segments(loaded)
                return
            chosen = loaded
        else:
            data: dict[str, object] = {
                "rates": list(_float_list(rates, "--rates")),
                "days": days,
                "traffic_per_day": traffic,
                "seeds": seeds,
                "policies": [p.strip() for p in policies.split(",") if p.strip()],
            }
            if switch_day is not None:
                data["switch_day"] = switch_day
                data["switch_rates"] = list(_float_list(switch_rates or "", "--switch-rates"))
            if half_life is not None:
                data["half_life_days"] = half_life
            data["cadence"] = cadence
            chosen = scenarios.from_mapping(data)
    except (ValueError, OSError) as error:
        console.print(f"[red]bad scenario:[/red] {error}")
        raise typer.Exit(2) from error
    results = []
    with Progress(console=console, transient=True) as progress:
        for spec in chosen.policies:
            task = progress.add_task(spec.name, total=chosen.seeds)
            runs = []
            for seed in range(chosen.seeds):
                runs.append(
                    run(
                        chosen.environment,
                        spec,
                        days=chosen.days,
                        traffic_per_day=chosen.traffic_per_day,
                        seed=seed,
                        stop_rule=chosen.stop_rule,
                        cadence=chosen.cadence,
                        reporting=chosen.reporting,
                    )
                )
                progress.advance(task)
            results.append(aggregate(spec.name, runs))
    table = Table(title=f"{chosen.environment.name}: {chosen.seeds} seeds, {chosen.days} days")
    for column in ("policy", "regret (± se)", "traffic to best", "gain vs even split",
                   "winner declared", "wrong winner", "median day"):  # fmt: skip
        table.add_column(column, justify="right")
    for item in results:
        table.add_row(
            item.policy,
            f"{item.regret_mean:,.1f} ± {item.regret_se:,.1f}",
            f"{item.best_arm_share:.1%}",
            f"{item.gain_vs_even:,.1f} ± {item.gain_vs_even_se:,.1f}",
            f"{item.winner_rate:.0%}",
            f"{item.wrong_winner_rate:.1%}",
            "-" if item.median_winner_day is None else f"{item.median_winner_day:g}",
        )
    Console().print(table)
    env = chosen.environment
    report.write_tables(
        results,
        out,
        {"name": env.name, "rates": list(env.rates), "days": chosen.days,
         "traffic_per_day": chosen.traffic_per_day, "seeds": chosen.seeds},
    )  # fmt: skip
    charts = report.write_charts(results, out)
    note = f", {len(charts)} charts" if charts else " (for charts: pip install 'mabapi[plots]')"
    # Not rich markup: "[plots]" would be read as a style tag and vanish.
    console.print(f"results written to {out}/ (results.json, results.csv{note})", markup=False)


def _simulate_segments(chosen: Any) -> None:
    """The three poolings side by side on a segmented scenario: regret summed over
    segments (each against its own best variant)."""
    import numpy as np
    from rich.table import Table

    from mabapi.simulation.segments import run as run_segments

    scenario = chosen.scenario
    rows = {}
    for pooling in ("partial", "none", "full"):
        regrets = np.array([run_segments(scenario, pooling, seed) for seed in range(chosen.seeds)])
        rows[pooling] = (float(regrets.mean()), float(regrets.std(ddof=1) / np.sqrt(chosen.seeds))
                         if chosen.seeds > 1 else 0.0)  # fmt: skip
    table = Table(
        title=f"{chosen.name}: {len(scenario.shares)} segments, {chosen.seeds} seeds, "
        f"{scenario.days} days"
    )
    for column in ("pooling", "regret (± se)", "vs one bandit (full)", "vs a bandit per segment"):
        table.add_column(column, justify="right")
    labels = {
        "partial": "partial",
        "none": "none (a bandit per segment)",
        "full": "full (one bandit)",
    }
    for pooling, (mean, se) in rows.items():
        table.add_row(
            labels[pooling],
            f"{mean:,.1f} ± {se:,.1f}",
            f"{mean / rows['full'][0]:.2f}x" if rows["full"][0] else "-",
            f"{mean / rows['none'][0]:.2f}x" if rows["none"][0] else "-",
        )
    Console().print(table)


async def _with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    engine = engine_from_settings(settings)
    try:
        await migrate.upgrade(engine)
        async with background_transaction(make_sessionmaker(engine)) as session:
            return await work(session)
    finally:
        await engine.dispose()


def _cli_audit(route: str, path: str) -> Callable[[AsyncSession], Awaitable[None]]:
    async def record(session: AsyncSession) -> None:
        await access.record(
            session,
            access.AuditEvent(
                principal=access.OPEN,
                method="CLI",
                route=route,
                path=path,
                status_code=0,
                request_id="",
            ),
        )

    return record


@keys_app.command("create")
def keys_create(
    project: Annotated[str, typer.Option(help="The key's project (created if new).")] = "default",
    scope: Annotated[Scope, typer.Option(help="client, read, write or admin.")] = Scope.READ,
    name: Annotated[str, typer.Option(help="What the key is for.")] = "",
) -> None:
    """Create a key and print its secret (shown this once; only a hash is stored)."""
    if not ID_PATTERN.fullmatch(project):
        raise typer.BadParameter("project: letters, digits, '_', '.', ':' or '-' (1-128)")
    settings = _settings()

    async def create(session: AsyncSession) -> tuple[str, str]:
        key, token = await access.create_key(
            session, project_id=project, scope=scope, name=name[:200]
        )
        await _cli_audit("mabapi keys create", f"/keys/{key.id}")(session)
        return key.id, token

    key_id, token = asyncio.run(_with_session(settings, create))
    console.print(f"created key {key_id} (scope {scope.value}, project {project}); secret:")
    typer.echo(token)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id.")]) -> None:
    """Revoke a key (other server processes notice within MABAPI_KEY_CACHE_SECONDS)."""
    settings = _settings()

    async def revoke(session: AsyncSession) -> None:
        await access.revoke_key(session, key_id=key_id, principal=access.OPEN)
        await _cli_audit("mabapi keys revoke", f"/keys/{key_id}")(session)

    try:
        asyncio.run(_with_session(settings, revoke))
    except NotFoundError as error:
        console.print(f"[red]{error.message}[/red]")
        raise typer.Exit(1) from error
    console.print(f"revoked key {key_id}")


@keys_app.command("list")
def keys_list() -> None:
    """Every key, with its project, scope and last use (never a secret)."""
    settings = _settings()

    async def fetch(session: AsyncSession) -> list[tuple[str, ...]]:
        keys = await access.list_keys(session, principal=access.OPEN)
        return [
            (
                key.id,
                key.project_id,
                key.scope,
                key.name,
                str(key.last_used_at or "-"),
                "revoked" if key.revoked_at else "active",
            )
            for key in keys
        ]

    table = Table("id", "project", "scope", "name", "last used", "state")
    for row in asyncio.run(_with_session(settings, fetch)):
        table.add_row(*row)
    Console().print(table)
