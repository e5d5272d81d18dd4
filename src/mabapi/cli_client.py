"""CLI commands that talk to a running server through `mabapi.client`:
`mabapi experiments list|show|create`, `mabapi metrics push|export`, `mabapi allocations`,
`mabapi webhooks list|create|delete|test`."""

from __future__ import annotations

import contextlib
import csv
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from mabapi import csv_cells
from mabapi.client import ApiError, Client
from mabapi.metrics.schemas import MetricIn
from mabapi.settings import Settings

experiments_app = typer.Typer(help="Experiments on a running server.", no_args_is_help=True)
metrics_app = typer.Typer(help="Daily metrics: push a CSV, export one.", no_args_is_help=True)
out = Console()
err = Console(stderr=True, soft_wrap=True)

Url = Annotated[str | None, typer.Option("--url", help="Server (default MABAPI_API_URL).")]
Key = Annotated[str | None, typer.Option("--key", help="API key (default MABAPI_API_KEY).")]
SegmentOption = Annotated[
    str | None, typer.Option("--segment", help="One segment's answer (e.g. mobile).")
]
CSV_FIELDS = (
    "experiment_id",
    "variant_id",
    "date",
    "impressions",
    "successes",
    "value_sum",
    "value_sum_squares",
    "segment",
)


def _days(count: int) -> str:
    return f"{count} day" if count == 1 else f"{count} days"


def connect(url: str | None, key: str | None) -> Client:
    try:
        settings = Settings()
    except ValueError as error:
        err.print(f"[red]invalid settings:[/red] {error}")
        raise typer.Exit(2) from error
    secret = key or (settings.api_key.get_secret_value() if settings.api_key else None)
    return Client(url or settings.api_url, api_key=secret)


def failed(error: Exception) -> typer.Exit:
    if isinstance(error, ApiError):
        err.print(f"[red]{error.status_code} {error.code}:[/red] {error.message}")
    else:
        err.print(f"[red]cannot reach the server:[/red] {error}")
    return typer.Exit(1)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


@experiments_app.command("list")
def experiments_list(
    url: Url = None,
    key: Key = None,
    status: Annotated[str | None, typer.Option(help="draft, running, paused, stopped")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
) -> None:
    """Experiments, newest first."""
    try:
        with connect(url, key) as client:
            page = client.list_experiments(limit=limit, status=status)
    except Exception as error:
        raise failed(error) from error
    table = Table("id", "name", "status", "metric", "variants", "created")
    for experiment in page.items:
        table.add_row(
            experiment.id,
            experiment.name,
            experiment.status.value,
            experiment.metric_kind.value,
            ", ".join(v.id for v in experiment.variants),
            experiment.created_at.date().isoformat(),
        )
    out.print(table)
    out.print(f"{len(page.items)} of {page.total}")


@experiments_app.command("show")
def experiments_show(
    experiment_id: Annotated[str, typer.Argument(help="The experiment.")],
    segment: SegmentOption = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """The summary: totals, rate, probability to be best, expected loss, recommendation
    (of one segment with --segment)."""
    try:
        with connect(url, key) as client:
            summary = client.summary(experiment_id, segment=segment)
    except Exception as error:
        raise failed(error) from error
    table = Table(
        "variant",
        "impressions",
        "successes",
        "rate",
        "P(best)",
        "expected loss",
        "uplift vs control (95%)",
        title=f"{experiment_id}{f' / {segment}' if segment else ''} "
        f"({summary.metric_kind.value}, {_days(summary.days_of_data)})",
    )
    for variant in summary.variants:
        name = variant.variant_id + (" (control)" if variant.is_control else "")
        table.add_row(
            name,
            f"{variant.impressions:,}",
            f"{variant.successes:,}",
            _percent(variant.conversion_rate),
            f"{variant.probability_best:.4f}",
            "-" if variant.expected_loss is None else f"{variant.expected_loss:.5f}",
            "-"
            if variant.uplift is None
            else f"{variant.uplift.mean:+.1%} ({variant.uplift.lower:+.1%} to "
            f"{variant.uplift.upper:+.1%})",
        )
    out.print(table)
    if not any(variant.is_control for variant in summary.variants):
        out.print(
            f"no control variant, so no uplift: name one with `mabapi experiments control "
            f"{experiment_id} VARIANT`",
            markup=False,
            soft_wrap=True,
        )
    gain = summary.gain_vs_even_split
    served = sum(gain.units.values())
    if served:
        out.print(
            f"gain over an even split: {gain.mean:+.1f} {gain.unit} "
            f"({100 * gain.mass:.0f}% interval {gain.lower:+.1f} to {gain.upper:+.1f}), "
            f"over the {served:,} units mabapi's allocation served"
        )
    else:
        out.print("gain over an even split: nothing to compare (no unit served by mabapi yet)")
    curve = summary.delay_curve
    if curve is not None and curve.source != "off":
        out.print(f"late conversions: {curve.source} curve; {curve.note}")
    recommendation = summary.recommendation
    reason = recommendation.reason.removeprefix(f"{recommendation.action}: ")
    reason = reason.removeprefix("stop: ")  # the action already says stop_...
    out.print(f"[bold]{recommendation.action}[/bold]: {reason}", markup=True)


@experiments_app.command("control")
def experiments_control(
    experiment_id: Annotated[str, typer.Argument(help="The experiment.")],
    variant_id: Annotated[str, typer.Argument(help="The variant the others are compared with.")],
    url: Url = None,
    key: Key = None,
) -> None:
    """Name the control variant (uplift is measured against it; the previous one, if
    any, stops being the control)."""
    try:
        with connect(url, key) as client:
            client.update_variant(experiment_id, variant_id, is_control=True)
    except Exception as error:
        raise failed(error) from error
    out.print(f"{experiment_id}: the control is now {variant_id}")


@experiments_app.command("create")
def experiments_create(
    experiment_id: Annotated[str, typer.Argument(help="Its id (letters, digits, _.:-).")],
    variant: Annotated[
        list[str], typer.Option("--variant", "-v", help="A variant id (repeat; first: control).")
    ],
    name: Annotated[str | None, typer.Option(help="A readable name.")] = None,
    metric_kind: Annotated[str, typer.Option(help="conversion or value")] = "conversion",
    url: Url = None,
    key: Key = None,
) -> None:
    """Create an experiment with its variants."""
    fields: dict[str, Any] = {"metric_kind": metric_kind}
    if name:
        fields["name"] = name
    try:
        with connect(url, key) as client:
            created = client.create_experiment(experiment_id, variant, **fields)
    except Exception as error:
        raise failed(error) from error
    out.print(f"created {created.id} with variants {', '.join(v.id for v in created.variants)}")


# Columns `metrics push` reads besides CSV_FIELDS: a guardrail's rows name its metric_id
# (routed as POST /metrics/ routes it).
PUSH_FIELDS = (*CSV_FIELDS, "metric_id")


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """The file's rows by line number, once its header is known to be right: every
    required column there, no column twice, and none that push does not understand (a
    row read without it would be stored as something it is not)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in reader.fieldnames or ()]
        missing = {"experiment_id", "variant_id", "date", "impressions", "successes"} - set(columns)
        if missing:
            raise ValueError(f"{path}: missing column(s): {', '.join(sorted(missing))}")
        unknown = [
            name or "(a column without a name)" for name in columns if name not in PUSH_FIELDS
        ]
        if unknown:
            raise ValueError(
                f"{path}: unknown column(s): {', '.join(unknown)}; nothing was stored. "
                f"The columns push reads: {', '.join(PUSH_FIELDS)}"
            )
        twice = sorted({name for name in columns if columns.count(name) > 1})
        if twice:
            raise ValueError(f"{path}: column(s) given twice: {', '.join(twice)}")
        reader.fieldnames = columns
        for line, row in enumerate(reader, start=2):
            if None in row:  # more cells than the header names
                raise ValueError(f"{path}: line {line} has more cells than the header")
            yield line, row


def _metric(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row as a POST /metrics/ body; numbers parsed, validated as the server would."""
    body: dict[str, Any] = {name: (row.get(name) or "").strip() for name in CSV_FIELDS[:3]}
    for name in ("experiment_id", "variant_id"):
        body[name] = csv_cells.unescape(body[name])
    for name in ("impressions", "successes"):
        text = (row.get(name) or "").strip()
        body[name] = int(text) if text.lstrip("-").isdigit() else text
    for name in ("value_sum", "value_sum_squares"):
        text = (row.get(name) or "").strip()
        if text:
            try:
                body[name] = float(text)
            except ValueError:
                body[name] = text
    for name in ("segment", "metric_id"):
        if text := csv_cells.unescape((row.get(name) or "").strip()):
            body[name] = text
    MetricIn.model_validate(body)
    return body


@metrics_app.command("push")
def metrics_push(
    file: Annotated[
        Path,
        typer.Argument(
            help="CSV: experiment_id, variant_id, date, "
            "impressions, successes[, value_sum, "
            "value_sum_squares, segment, metric_id]; any other column is refused",
            exists=True,
            dir_okay=False,
        ),
    ],
    url: Url = None,
    key: Key = None,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000)] = 1000,
) -> None:
    """Import daily metrics from a CSV file: rows are checked first, good rows are sent in
    batches (each batch all or nothing), and every rejected row is reported by line."""
    rejected: list[tuple[int, str]] = []
    good: list[tuple[int, dict[str, Any]]] = []
    try:
        for line, row in _rows(file):
            try:
                good.append((line, _metric(row)))
            except ValidationError as error:
                problem = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg']}"
                    for e in error.errors()
                )
                rejected.append((line, problem))
    except (OSError, ValueError, csv.Error) as error:
        err.print(f"[red]cannot read {file}:[/red] {error}")
        raise typer.Exit(2) from error
    stored = 0
    with (
        connect(url, key) as client,
        Progress(TextColumn("pushing"), BarColumn(), MofNCompleteColumn(), console=err) as progress,
    ):
        task = progress.add_task("rows", total=len(good))
        for start in range(0, len(good), batch_size):
            batch = good[start : start + batch_size]
            try:
                stored += client.post_metrics(body for _, body in batch)
            except ApiError as error:
                first, last = batch[0][0], batch[-1][0]
                rejected.append(
                    (
                        first,
                        f"lines {first}-{last} refused by the server "
                        f"({error.status_code}): {error.message}",
                    )
                )
            except Exception as error:
                raise failed(error) from error
            progress.advance(task, len(batch))
    out.print(f"stored {stored} row(s) from {file}")
    if rejected:
        table = Table("line", "problem", title=f"{len(rejected)} rejected")
        for line, problem in sorted(rejected):
            table.add_row(str(line), problem)
        err.print(table)
        raise typer.Exit(1)


@metrics_app.command("export")
def metrics_export(
    experiment_id: Annotated[str, typer.Argument(help="The experiment.")],
    output: Annotated[Path | None, typer.Option("--out", help="File (default stdout).")] = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Every daily row of an experiment as CSV (the format `metrics push` reads), fetched
    a page (10,000 rows) at a time and written as it comes."""
    written = 0
    try:
        with connect(url, key) as client:
            rows = client.iter_daily_metrics(experiment_id)
            first = next(rows, None)  # a missing experiment fails before anything is written
            with contextlib.ExitStack() as stack:
                handle = (
                    sys.stdout
                    if output is None
                    else stack.enter_context(output.open("w", newline=""))
                )
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow(CSV_FIELDS)
                for row in itertools.chain([] if first is None else [first], rows):
                    sums = (row.value_sum, row.value_sum_squares)
                    values = ("" if v is None else repr(v) for v in sums)
                    writer.writerow(
                        csv_cells.escaped_row(
                            [experiment_id, row.variant_id, row.date.isoformat(),
                             row.impressions, row.successes, *values, row.segment or ""]
                        )
                    )  # fmt: skip
                    written += 1
    except Exception as error:
        raise failed(error) from error
    if output is not None:
        err.print(f"wrote {written} row(s) to {output}")


def segments(
    experiment_id: Annotated[str, typer.Argument(help="The experiment.")],
    url: Url = None,
    key: Key = None,
) -> None:
    """Every segment: units, leader, its P(best), and whether it differs from the leader
    over all traffic."""
    try:
        with connect(url, key) as client:
            listing = client.segments(experiment_id)
    except Exception as error:
        raise failed(error) from error
    table = Table(
        "segment",
        "units",
        "leader",
        "P(best)",
        f"vs overall ({listing.overall_leader or '-'})",
        title=f"{experiment_id} segments (pooling: {listing.pooling})",
    )
    for item in listing.segments:
        probability = item.leader_probability_best
        table.add_row(
            item.segment,
            f"{item.units:,.0f}",
            item.leader or "-",
            "-" if probability is None else f"{probability:.4f}",
            "differs" if item.differs_from_overall else "same",
        )
    out.print(table)


def allocations(
    experiment_id: Annotated[str, typer.Argument(help="The experiment.")],
    date: Annotated[str | None, typer.Option("--date", help="Day planned (YYYY-MM-DD).")] = None,
    segment: SegmentOption = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Today's (or --date's) traffic split as a table (one segment's with --segment; a
    segment never seen gets the split over all traffic)."""
    try:
        with connect(url, key) as client:
            answer = client.allocations(experiment_id, for_date=date, segment=segment)
    except Exception as error:
        raise failed(error) from error
    table = Table(
        "variant",
        "traffic",
        "P(best)",
        "impressions",
        "successes",
        title=f"{experiment_id}{f' / {answer.segment}' if answer.segment else ''} on "
        f"{answer.date} ({answer.algorithm_version})",
    )
    for variant, percent in answer.allocations.items():
        inputs = answer.inputs.get(variant, {})
        table.add_row(
            variant,
            f"{percent:.1f}%",
            f"{answer.probability_best[variant]:.4f}",
            f"{int(inputs.get('impressions', 0)):,}",
            f"{int(inputs.get('successes', 0)):,}",
        )
    out.print(table)
    if not answer.burned_in:
        out.print("burn-in: an even split until every variant has enough data")
