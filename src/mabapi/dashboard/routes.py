"""Dashboard pages. Keys: the same scopes as the API (read to look, admin to act); a
browser sends its key once to /ui/login and then carries it in an HttpOnly, SameSite=
Strict cookie, so no page ever contains a secret."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from mabapi import csv_cells
from mabapi.deps import KEY_COOKIE, ExperimentId, PrincipalDep, SessionDep
from mabapi.errors import ForbiddenError, InvalidInputError, NotFoundError
from mabapi.experiments import service
from mabapi.experiments.models import ExperimentStatus
from mabapi.experiments.routes import summary_out
from mabapi.experiments.schemas import ExperimentPatch, SummaryOut
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


@router.get("", response_class=HTMLResponse)
async def experiments_page(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    q: Annotated[str, Query(max_length=128)] = "",
    status: Annotated[ExperimentStatus | None, Query()] = None,
) -> HTMLResponse:
    """Every experiment with its leader, probability to be best and recommendation."""
    items, total = await service.list_experiments(
        session,
        limit=200,
        offset=0,
        status=status,
        include_archived=False,
        project_id=principal.project_id,
    )
    needle = q.strip().lower()
    rows = []
    for experiment in items:
        if needle and needle not in experiment.id.lower() and needle not in experiment.name.lower():
            continue
        summary = summary_out(await service.summarize(session, experiment_id=experiment.id))
        leader = max(summary.variants, key=lambda v: v.probability_best, default=None)
        breaches = [
            f"{item.variant_id}: {report.guardrail.metric_id} ({item.breach.action})"
            for report in summary.guardrails
            for item in report.variants
            if item.breach is not None
        ]
        rows.append(
            {
                "id": experiment.id,
                "name": experiment.name,
                "status": experiment.status.value,
                "variants": [v.id for v in experiment.variants],
                "days": _days_running(experiment.created_at, summary.days_of_data),
                "leader": leader.variant_id if leader else None,
                "leader_probability": leader.probability_best if leader else None,
                "recommendation": summary.recommendation,
                "breaches": breaches,
            }
        )
    return templates.TemplateResponse(
        request,
        "list.html",
        {
            "rows": rows,
            "total": total,
            "q": q,
            "status": status.value if status else "",
            "statuses": [s.value for s in ExperimentStatus],
        },
    )


def _chart_data(
    history: service.History, summary: SummaryOut, guardrails: dict[str, Any]
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


@router.get("/experiments/{experiment_id}", response_class=HTMLResponse)
async def experiment_page(
    request: Request,
    experiment_id: ExperimentId,
    session: SessionDep,
    principal: PrincipalDep,
    segment: Annotated[str | None, Query(max_length=128, pattern=ID_PATTERN.pattern)] = None,
) -> HTMLResponse:
    """Charts, the summary table (of one segment, if picked), what the bandit earned, the
    segments, the rule and the actions."""
    history = await service.history(session, experiment_id=experiment_id)
    fits = runtime_of(request.app).segment_fits
    summarized = await service.summarize(
        session, experiment_id=experiment_id, segment=segment, fits=fits
    )
    summary = summary_out(summarized)
    page = await service.list_segments(
        session,
        experiment_id=experiment_id,
        overall=summarized if segment is None else None,
        fits=fits,
        limit=SEGMENTS_SHOWN,
    )
    experiment = history.experiment
    total = sum(v.impressions for v in summary.variants)
    leader = max(summary.variants, key=lambda v: v.probability_best, default=None)
    to_others = total - (leader.impressions if leader else 0)
    return templates.TemplateResponse(
        request,
        "experiment.html",
        {
            "experiment": experiment,
            "summary": summary,
            "charts": _chart_data(
                history, summary, await service.guardrail_series(session, experiment)
            ),
            "chart_names": CHARTS,
            "leader": leader,
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
        },
    )


def _csv_rows(history: service.History, chart: str) -> list[list[Any]]:
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


@router.get("/experiments/{experiment_id}/data/{chart}.csv")
async def chart_csv(
    experiment_id: ExperimentId, chart: str, session: SessionDep, _principal: PrincipalDep
) -> Response:
    """Each chart's numbers, as CSV."""
    if chart not in CHARTS:
        raise NotFoundError(f"no chart {chart!r}; charts: {', '.join(CHARTS)}")
    history = await service.history(session, experiment_id=experiment_id)
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


@router.post("/experiments/{experiment_id}/actions")
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
        await service.update_experiment(
            session, experiment_id=experiment_id, patch=ExperimentPatch(status=ACTIONS[action])
        )
    elif action == "conclude":
        # The allocation cache is dropped after the commit (deps._committed).
        await service.conclude(session, experiment_id=experiment_id, winner=winner)
    elif action == "clear_guardrail":
        await service.clear_guardrail(session, experiment_id=experiment_id, metric_id=metric_id)
    else:
        raise InvalidInputError("action must be pause, resume, conclude or clear_guardrail")
    return RedirectResponse(f"/ui/experiments/{experiment_id}", status_code=303)


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, error: str = "") -> HTMLResponse:
    return templates.TemplateResponse(request, "login.html", {"error": error[:200]})


@router.post("/login")
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


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(KEY_COOKIE, path="/ui")
    return response
