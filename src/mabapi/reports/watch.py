"""The watcher: what no request announces. Run by the process holding the webhook
delivery lease every MABAPI_WEBHOOK_WATCH_SECONDS, in a thread of its own, over running
experiments that have guardrails or whose project has webhooks: guardrails are checked (a
breach is recorded even when no traffic asks for an allocation), and a change of the
recommendation or a new sample-ratio mismatch is announced once (compare-and-set on
`event_states`).

A recommendation change is announced only once it holds: the watcher must see the same
new recommendation (action and winner) on watches at least
MABAPI_WEBHOOK_CHANGE_HOLD_SECONDS apart, with nothing else seen in between. A round stops
starting experiments after MABAPI_WEBHOOK_WATCH_BUDGET_SECONDS and the next round begins
with those watched least recently, so one heavy experiment delays another's events by at
most a round."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mabapi.db.base import utcnow
from mabapi.db.transactions import background_transaction, read_only_transaction
from mabapi.errors import AppError
from mabapi.experiments.lifecycle import require_experiment
from mabapi.guardrails import service as guardrails
from mabapi.reports import repository
from mabapi.reports.summary import Summary, summarize
from mabapi.webhooks import outbox

log = logging.getLogger("mabapi.webhooks")


def _numbers(summary: Summary) -> dict[str, Any]:
    return {
        "variants": {
            item.variant.id: {
                "impressions": item.totals.impressions,
                "successes": item.totals.successes,
                "probability_best": item.probability_best,
            }
            for item in summary.variants
        },
        "days_of_data": summary.days_of_data,
    }


async def watch_one(
    session: AsyncSession,
    experiment_id: str,
    *,
    now: datetime | None = None,
    hold_seconds: float = 0.0,
    summary: Summary | None = None,
) -> None:
    """Check one experiment's guardrails and announce its changes. `summary`: the
    experiment's summary if the caller computed it (in a read-only transaction, so the
    long part holds no write lock on SQLite)."""
    now = now or utcnow()
    summary = summary or await summarize(session, experiment_id=experiment_id)
    # This transaction's own copy (a given summary's was read in another one).
    experiment = await require_experiment(session, experiment_id)
    await guardrails.enforce(session, experiment, day=now.date())
    about = {"id": experiment.id, "name": experiment.name}
    recommendation = summary.recommendation
    action = recommendation.action.value
    winner = summary.winner_id
    # The state is the action and its winner: "stop: b wins" -> "stop: c wins" is a change.
    state = action if winner is None else f"{action}:{winner}"[:64]
    old = None
    if await repository.held(session, experiment.id, state, now=now, hold_seconds=hold_seconds):
        old = await repository.swap_state(
            session, experiment.id, "recommendation", initial="continue", new=state
        )
    if old is not None:
        old_action, _, old_winner = old.partition(":")
        await outbox.emit(
            session,
            project_id=experiment.project_id,
            event="recommendation.changed",
            experiment_id=experiment.id,
            data={
                "experiment": about,
                "from": old_action,
                "from_winner": old_winner or None,
                "to": action,
                "winner": winner,
                "claims_better": recommendation.action.claims_better,
                "reason": recommendation.reason,
                **_numbers(summary),
            },
        )
    srm = summary.sample_ratio
    state = "mismatch" if srm is not None and srm.mismatch else "ok"
    old = await repository.swap_state(
        session, experiment.id, "sample_ratio", initial="ok", new=state
    )
    if old is not None and state == "mismatch" and srm is not None:
        ids = [item.variant.id for item in summary.variants]
        await outbox.emit(
            session,
            project_id=experiment.project_id,
            event="sample_ratio.mismatch",
            experiment_id=experiment.id,
            data={
                "experiment": about,
                "p_value": srm.p_value,
                "observed": dict(zip(ids, srm.observed.tolist(), strict=True)),
                "expected": dict(zip(ids, srm.expected.tolist(), strict=True)),
            },
        )


class Watcher:
    """Rounds of watching with a time budget, least recently watched first."""

    def __init__(self, *, hold_seconds: float, budget_seconds: float) -> None:
        self.hold_seconds = hold_seconds
        self.budget_seconds = budget_seconds
        self._last: dict[str, float] = {}

    async def round(self, sessionmaker: async_sessionmaker[AsyncSession]) -> int:
        """One round; returns how many experiments were watched."""
        async with background_transaction(sessionmaker) as session:
            ids = await repository.watched(session)
        self._last = {i: self._last.get(i, float("-inf")) for i in ids}
        started = time.monotonic()
        done = 0
        for experiment_id in sorted(ids, key=lambda i: (self._last[i], i)):
            if done and time.monotonic() - started >= self.budget_seconds:
                break  # the rest go first next round
            self._last[experiment_id] = time.monotonic()
            done += 1
            try:
                async with read_only_transaction(sessionmaker) as session:
                    summary = await summarize(session, experiment_id=experiment_id)
                async with background_transaction(sessionmaker) as session:
                    await watch_one(
                        session, experiment_id, hold_seconds=self.hold_seconds, summary=summary
                    )
            except AppError:  # deleted, archived or emptied meanwhile
                continue
            except Exception:
                log.exception("watching experiment %s failed", experiment_id)
        return done


async def watch_all(
    sessionmaker: async_sessionmaker[AsyncSession], *, hold_seconds: float = 0.0
) -> int:
    """One round over every watched experiment, without a budget; returns how many."""
    return await Watcher(hold_seconds=hold_seconds, budget_seconds=float("inf")).round(sessionmaker)
