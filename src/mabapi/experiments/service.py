"""The experiments domain's use cases, one module per job: lifecycle, ingestion,
allocation, reporting. Callers import them from here."""

from __future__ import annotations

from mabapi.experiments.allocation import (
    Allocation as Allocation,
)
from mabapi.experiments.allocation import (
    Totals as Totals,
)
from mabapi.experiments.allocation import (
    compute_allocation as compute_allocation,
)
from mabapi.experiments.guardrails import (
    GuardrailReport as GuardrailReport,
)
from mabapi.experiments.guardrails import (
    breach_view as breach_view,
)
from mabapi.experiments.guardrails import (
    clear_guardrail as clear_guardrail,
)
from mabapi.experiments.guardrails import (
    guardrail_series as guardrail_series,
)
from mabapi.experiments.ingestion import (
    Report as Report,
)
from mabapi.experiments.ingestion import (
    check_experiments as check_experiments,
)
from mabapi.experiments.ingestion import (
    daily_metrics as daily_metrics,
)
from mabapi.experiments.ingestion import (
    ingest as ingest,
)
from mabapi.experiments.ingestion import (
    ingest_many as ingest_many,
)
from mabapi.experiments.ingestion import (
    record_metrics as record_metrics,
)
from mabapi.experiments.ingestion import (
    revisions as revisions,
)
from mabapi.experiments.late_conversions import (
    CurveChoice as CurveChoice,
)
from mabapi.experiments.lifecycle import (
    add_variant as add_variant,
)
from mabapi.experiments.lifecycle import (
    conclude as conclude,
)
from mabapi.experiments.lifecycle import (
    create_experiment as create_experiment,
)
from mabapi.experiments.lifecycle import (
    experiment_settings as experiment_settings,
)
from mabapi.experiments.lifecycle import (
    list_experiments as list_experiments,
)
from mabapi.experiments.lifecycle import (
    require_experiment as require_experiment,
)
from mabapi.experiments.lifecycle import (
    set_archived as set_archived,
)
from mabapi.experiments.lifecycle import (
    update_experiment as update_experiment,
)
from mabapi.experiments.lifecycle import (
    update_variant as update_variant,
)
from mabapi.experiments.reporting import (
    CREDIBLE_MASS as CREDIBLE_MASS,
)
from mabapi.experiments.reporting import (
    HISTORY_DAYS as HISTORY_DAYS,
)
from mabapi.experiments.reporting import (
    DailyPoint as DailyPoint,
)
from mabapi.experiments.reporting import (
    History as History,
)
from mabapi.experiments.reporting import (
    Summary as Summary,
)
from mabapi.experiments.reporting import (
    VariantStatistics as VariantStatistics,
)
from mabapi.experiments.reporting import (
    history as history,
)
from mabapi.experiments.reporting import (
    list_segments as list_segments,
)
from mabapi.experiments.reporting import (
    summarize as summarize,
)
