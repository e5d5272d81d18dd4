"""Write simulation results: JSON, CSV, and charts when matplotlib is installed."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mabapi.simulation.runner import Aggregate


def rows(results: Sequence[Aggregate]) -> list[dict[str, Any]]:
    return [
        {
            "policy": a.policy,
            "runs": a.runs,
            "regret_mean": round(a.regret_mean, 3),
            "regret_se": round(a.regret_se, 3),
            "best_arm_share": round(a.best_arm_share, 4),
            "gain_vs_even": round(a.gain_vs_even, 3),
            "gain_vs_even_se": round(a.gain_vs_even_se, 3),
            "winner_rate": round(a.winner_rate, 4),
            "wrong_winner_rate": round(a.wrong_winner_rate, 4),
            "median_winner_day": a.median_winner_day,
        }
        for a in results
    ]


def write_tables(results: Sequence[Aggregate], folder: Path, scenario: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    table = rows(results)
    payload = {
        "scenario": scenario,
        "results": table,
        "regret_by_day": {a.policy: a.regret_curves.mean(axis=0).tolist() for a in results},
        "allocation_by_day": {a.policy: a.mean_allocations.tolist() for a in results},
    }
    (folder / "results.json").write_text(json.dumps(payload, indent=2))
    with (folder / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)


def write_charts(results: Sequence[Aggregate], folder: Path) -> list[Path]:
    """Allocation over time (first policy, stacked) and cumulative regret with 10-90%
    bands, as PNG and SVG. Returns the files written; [] without matplotlib, which is the
    optional `plots` extra (`pip install 'mabapi[plots]'`): a plain install has none."""
    try:
        import matplotlib
    except ImportError:  # the plots extra is not installed: no charts, no error
        return []

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for aggregate in results:
        curves = aggregate.regret_curves
        days = np.arange(1, curves.shape[1] + 1)
        low, high = np.quantile(curves, [0.1, 0.9], axis=0)
        axis.plot(days, curves.mean(axis=0), label=aggregate.policy)
        axis.fill_between(days, low, high, alpha=0.2)
    axis.set(xlabel="day", ylabel="cumulative regret (expected)", title="Regret, 10-90% band")
    axis.legend()
    for suffix in ("png", "svg"):
        path = folder / f"regret.{suffix}"
        figure.savefig(path, dpi=120, bbox_inches="tight")
        written.append(path)
    plt.close(figure)
    for aggregate in results:
        figure, axis = plt.subplots(figsize=(8, 4.5))
        shares = aggregate.mean_allocations
        days = np.arange(1, shares.shape[0] + 1)
        axis.stackplot(days, shares.T * 100, labels=[f"arm {i}" for i in range(shares.shape[1])])
        axis.set(
            xlabel="day", ylabel="% of traffic", ylim=(0, 100),
            title=f"Allocation over time: {aggregate.policy} (mean over runs)",
        )  # fmt: skip
        axis.legend(loc="upper left", fontsize="small")
        for suffix in ("png", "svg"):
            path = folder / f"allocation_{aggregate.policy}.{suffix}"
            figure.savefig(path, dpi=120, bbox_inches="tight")
            written.append(path)
        plt.close(figure)
    return written
