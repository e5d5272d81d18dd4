"""Dashboard pages. Keys: the same scopes as the API (read to look, admin to act); a
browser sends its key once to /ui/login and then carries it in an HttpOnly, SameSite=
Strict cookie, so no page ever contains a secret."""

from __future__ import annotations

import contextlib
import csv
import io
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from mabapi import csv_cells
from mabapi.access.models import Scope
from mabapi.dashboard.summaries import SummaryCache
from mabapi.db.transactions import read_only_transaction
from mabapi.deps import (
    KEY_COOKIE,
    ExperimentId,
    PrincipalDep,
    ReadSessionDep,
    SessionDep,
    needs,
)
from mabapi.errors import AppError, ForbiddenError, InvalidInputError, NotFoundError
from mabapi.evaluation import service as evaluation
from mabapi.experiments import lifecycle
from mabapi.experiments.models import ExperimentStatus, MetricKind
from mabapi.experiments.schemas import ExperimentPatch
from mabapi.guardrails import service as guardrail_service
from mabapi.reports import history as histories
from mabapi.reports import segments as segment_listing
from mabapi.reports import summary as summaries
from mabapi.reports.routes import summary_out
from mabapi.reports.schemas import SummaryOut
from mabapi.runtime import runtime_of
from mabapi.schemas import ID_PATTERN

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/ui", include_in_schema=False)

CHARTS = ("allocation", "daily", "density", "best")
ACTIONS = {"pause": ExperimentStatus.PAUSED, "resume": ExperimentStatus.RUNNING}


def _days_running(created: datetime, days_of_data: int) -> int:
    """Days since the experiment was created, or as many days as it has data for when
    that is more (daily rows may be posted for dates before it was created)."""
    return max(0, (datetime.now(UTC) - created).days, days_of_data)


# The experiment list shows this many a page, and computes summaries it does not have
# (or has only an expired one of) for at most this long a load, one after the other,
# missing ones first; a page with rows still missing reloads itself.
PAGE_SIZE = 20
LIST_BUDGET_SECONDS = 1.0


async def _summary_now(request: Request, experiment_id: str) -> summaries.Summary:
    """An experiment's summary computed now, in a transaction of its own, and kept in the
    dashboard's cache (see summaries.py)."""
    runtime = runtime_of(request.app)
    cache: SummaryCache = request.app.state.summaries
    epoch = cache.epoch()
    # Read-only: on SQLite a summary (a third of a second at 100 variants) would
    # otherwise hold the write lock that every other writer waits for.
    async with read_only_transaction(runtime.sessionmaker) as session:
        summary = await summaries.summarize(
            session, experiment_id=experiment_id, fits=runtime.segment_fits
        )
    cache.put(experiment_id, summary, epoch=epoch)
    return summary


def _row(experiment: Any, summary: SummaryOut | None) -> dict[str, Any]:
    leader = (
        max(summary.variants, key=lambda v: v.probability_best, default=None) if summary else None
    )
    return {
        "id": experiment.id,
        "name": experiment.name,
        "status": experiment.status.value,
        "variants": [v.id for v in experiment.variants],
        "days": _days_running(experiment.created_at, summary.days_of_data if summary else 0),
        "ready": summary is not None,
        "leader": leader.variant_id if leader else None,
        "leader_probability": leader.probability_best if leader else None,
        "recommendation": summary.recommendation if summary else None,
        "breaches": [
            f"{item.variant_id}: {report.guardrail.metric_id} ({item.breach.action})"
            for report in (summary.guardrails if summary else [])
            for item in report.variants
            if item.breach is not None
        ],
    }


@router.get("", dependencies=[needs(Scope.READ)], response_class=HTMLResponse)
async def experiments_page(
    request: Request,
    principal: PrincipalDep,
    q: Annotated[str, Query(max_length=128)] = "",
    status: Annotated[ExperimentStatus | None, Query()] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """The experiments, a page at a time, each with its leader, probability to be best
    and recommendation. Bounded: PAGE_SIZE rows, LIST_BUDGET_SECONDS of waiting for
    summaries not computed yet."""
    runtime = runtime_of(request.app)
    async with read_only_transaction(runtime.sessionmaker) as session:
        items, total = await lifecycle.list_experiments(
            session,
            limit=PAGE_SIZE,
            offset=(page - 1) * PAGE_SIZE,
            status=status,
            include_archived=False,
            project_id=principal.project_id,
            search=q,
        )
    cache: SummaryCache = request.app.state.summaries
    known = {item.id: cache.get_stale(item.id) for item in items}
    todo = sorted(
        (item.id for item in items if not known[item.id][1]),
        key=lambda experiment_id: known[experiment_id][0] is not None,  # missing first
    )
    started = time.monotonic()
    for done, experiment_id in enumerate(todo):
        if done and time.monotonic() - started >= LIST_BUDGET_SECONDS:
            break  # at least one a load: a page always catches up
        with contextlib.suppress(AppError):  # deleted meanwhile: shown as pending
            known[experiment_id] = (await _summary_now(request, experiment_id), True)
    rows = []
    for item in items:
        summary: summaries.Summary | None = known[item.id][0]
        rows.append(_row(item, None if summary is None else summary_out(summary)))
    pages = max(1, -(-total // PAGE_SIZE))
    return templates.TemplateResponse(
        request,
        "list.html",
        {
            "rows": rows,
            "total": total,
            "q": q,
            "status": status.value if status else "",
            "statuses": [s.value for s in ExperimentStatus],
            "page": page,
            "pages": pages,
            "pending": any(not row["ready"] for row in rows),
        },
    )


def _chart_data(
    history: histories.History, summary: SummaryOut, guardrails: dict[str, Any]
) -> dict[str, Any]:
    days = [d.isoformat() for d in history.days]
    return {
        "guardrails": guardrails,
        "variants": history.variant_ids,
        "metric_kind": summary.metric_kind.value,
        "allocation": {
            "labels": [d.isoformat() for d in history.served_days],
            "series": history.served,
        },
        "daily": {
            "labels": days,
            "series": {
                v: [
                    {
                        "mean": p.mean,
                        "lower": p.lower,
                        "upper": p.upper,
                        "impressions": p.impressions,
                        "successes": p.successes,
                    }
                    for p in points
                ]
                for v, points in history.daily.items()
            },
        },
        "density": {"x": history.density_x, "series": history.densities},
        "best": {
            "labels": [d.isoformat() for d in history.best_days],
            "series": history.probability_best,
        },
    }


# The experiment page's segments table shows this many (GET .../segments pages the rest).
SEGMENTS_SHOWN = 100


@router.get(
    "/experiments/{experiment_id}", dependencies=[needs(Scope.READ)], response_class=HTMLResponse
)
async def experiment_page(
    request: Request,
    experiment_id: ExperimentId,
    session: ReadSessionDep,
    principal: PrincipalDep,
    segment: Annotated[str | None, Query(max_length=128, pattern=ID_PATTERN.pattern)] = None,
) -> HTMLResponse:
    """Charts, the summary table (of one segment, if picked), what the bandit earned, the
    segments, the rule and the actions."""
    fits = runtime_of(request.app).segment_fits
    cache: SummaryCache = request.app.state.summaries
    cached = cache.get(experiment_id) if segment is None else None
    epoch = cache.epoch()
    summarized = cached or await summaries.summarize(
        session, experiment_id=experiment_id, segment=segment, fits=fits
    )
    if segment is None and cached is None:
        cache.put(experiment_id, summarized, epoch=epoch)
    summary = summary_out(summarized)
    # The charts are of what the table shows: the segment's rows and posteriors, if picked.
    history = await histories.history(
        session,
        experiment_id=experiment_id,
        segment=segment,
        posteriors=[item.posterior for item in summarized.variants],
    )
    page = await segment_listing.list_segments(
        session,
        experiment_id=experiment_id,
        overall=summarized if segment is None else None,
        fits=fits,
        limit=SEGMENTS_SHOWN,
    )
    experiment = history.experiment
    # What the bandit earned, and where its traffic went: the units it served.
    served = summary.gain_vs_even_split.units
    total = sum(served.values())
    leader = max(summary.variants, key=lambda v: v.probability_best, default=None)
    to_others = total - (served.get(leader.variant_id, 0) if leader else 0)
    what_if = await evaluation.what_if(
        session,
        experiment_id,
        MetricKind(experiment.metric_kind),
        [v.variant_id for v in summary.variants],
        segment,
    )
    return templates.TemplateResponse(
        request,
        "experiment.html",
        {
            "experiment": experiment,
            "summary": summary,
            "charts": _chart_data(
                history, summary, await guardrail_service.guardrail_series(session, experiment)
            ),
            "chart_names": CHARTS,
            "leader": leader,
            "suggested": _suggested(summarized),
            "total_impressions": total,
            "traffic_to_others": to_others,
            "can_act": principal.may_admin,
            "segment": segment,
            "segments": page.segments,
            "segments_total": page.total,
            "pooling": page.pooling,
            "overall_leader": page.overall_leader,
            "segment_units": page.units,
            "days": _days_running(experiment.created_at, summary.days_of_data),
            "what_if": what_if,
        },
    )


def _csv_rows(history: histories.History, chart: str) -> list[list[Any]]:
    variants = history.variant_ids
    if chart == "allocation":
        return [["date", *variants]] + [
            [day.isoformat(), *(history.served[v][i] for v in variants)]
            for i, day in enumerate(history.served_days)
        ]
    if chart == "best":
        return [["date", *variants]] + [
            [day.isoformat(), *(history.probability_best[v][i] for v in variants)]
            for i, day in enumerate(history.best_days)
        ]
    if chart == "density":
        return [["x", *variants]] + [
            [x, *(history.densities[v][i] for v in variants)]
            for i, x in enumerate(history.density_x)
        ]
    rows: list[list[Any]] = [
        ["date", "variant", "impressions", "successes", "mean", "lower_95", "upper_95"]
    ]
    for i, day in enumerate(history.days):
        for v in variants:
            p = history.daily[v][i]
            rows.append([day.isoformat(), v, p.impressions, p.successes, p.mean, p.lower, p.upper])
    return rows


def _suggested(summarized: summaries.Summary) -> str | None:
    """The variant the Conclude form preselects: the one the advice names, else the
    leader among those traffic fully reaches (never one a guardrail stopped or holds at
    its floor: the advice says not to ship those)."""
    if summarized.winner_id is not None:
        return summarized.winner_id
    state = summarized.state
    candidates = [
        item
        for i, item in enumerate(summarized.variants)
        if state is None or (state.active[i] and not state.floored[i])
    ]
    best = max(candidates, key=lambda item: item.probability_best, default=None)
    return best.variant.id if best is not None else None


@router.get("/experiments/{experiment_id}/data/{chart}.csv", dependencies=[needs(Scope.READ)])
async def chart_csv(
    experiment_id: ExperimentId,
    chart: str,
    session: ReadSessionDep,
    _principal: PrincipalDep,
    segment: Annotated[str | None, Query(max_length=128, pattern=ID_PATTERN.pattern)] = None,
) -> Response:
    """Each chart's numbers, as CSV (of one segment's, if asked: as its page shows them)."""
    if chart not in CHARTS:
        raise NotFoundError(f"no chart {chart!r}; charts: {', '.join(CHARTS)}")
    posteriors = None
    if segment is not None:
        summarized = await summaries.summarize(
            session, experiment_id=experiment_id, segment=segment
        )
        posteriors = [item.posterior for item in summarized.variants]
    history = await histories.history(
        session, experiment_id=experiment_id, segment=segment, posteriors=posteriors
    )
    buffer = io.StringIO()
    rows = [csv_cells.escaped_row(row) for row in _csv_rows(history, chart)]
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    filename = f"{experiment_id}-{chart}-{date.today().isoformat()}.csv"
    return Response(
        buffer.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _same_origin(request: Request) -> bool:
    """Forms that change things must come from our own pages (with the SameSite=Strict
    cookie, a second line against cross-site request forgery)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return False
    return urlsplit(origin).netloc == request.url.netloc


@router.post("/experiments/{experiment_id}/actions", dependencies=[needs(Scope.ADMIN)])
async def experiment_action(
    request: Request,
    experiment_id: ExperimentId,
    session: SessionDep,
    _principal: PrincipalDep,
    action: Annotated[str, Form(max_length=16)],
    winner: Annotated[str, Form(max_length=128)] = "",
    metric_id: Annotated[str, Form(max_length=128)] = "",
) -> RedirectResponse:
    """Pause, resume, conclude with a winner, or clear a guardrail (admin keys)."""
    if not _same_origin(request):
        raise ForbiddenError("this form must be sent from the dashboard itself")
    if action in ACTIONS:
        await lifecycle.update_experiment(
            session, experiment_id=experiment_id, patch=ExperimentPatch(status=ACTIONS[action])
        )
    elif action == "conclude":
        # The allocation cache is dropped after the commit (deps._committed).
        await lifecycle.conclude(session, experiment_id=experiment_id, winner=winner)
    elif action == "clear_guardrail":
        await guardrail_service.clear_guardrail(
            session, experiment_id=experiment_id, metric_id=metric_id
        )
    else:
        raise InvalidInputError("action must be pause, resume, conclude or clear_guardrail")
    return RedirectResponse(f"/ui/experiments/{experiment_id}", status_code=303)


@router.get("/login", dependencies=[needs(None)], response_class=HTMLResponse)
async def login_page(request: Request, error: str = "") -> HTMLResponse:
    return templates.TemplateResponse(request, "login.html", {"error": error[:200]})


@router.post("/login", dependencies=[needs(None)])
async def login(request: Request, key: Annotated[str, Form(max_length=256)]) -> Response:
    """Check a key (read scope or more) and keep it in an HttpOnly cookie."""
    keyring = runtime_of(request.app).keyring
    principal = await keyring.authenticate(key.strip())
    if principal is None or not (principal.may_read):
        return templates.TemplateResponse(
            request,
            "login.html",
            {"error": "unknown, revoked or client-only key"},
            status_code=401,
        )
    response = RedirectResponse("/ui", status_code=303)
    response.set_cookie(
        KEY_COOKIE,
        key.strip(),
        httponly=True,
        samesite="strict",
        path="/ui",
        secure=request.url.scheme == "https",
        max_age=12 * 3600,
    )
    return response


@router.post("/logout", dependencies=[needs(None)])
async def logout() -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(KEY_COOKIE, path="/ui")
    return response
