"""Simulation reports on a plain install: charts need the optional `plots` extra
(matplotlib), and without it writing them is a quiet no-op, never an ImportError."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mabapi.simulation.report import write_charts


def test_no_charts_and_no_error_without_matplotlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as on a plain install
    assert write_charts([], tmp_path) == []
    assert list(tmp_path.iterdir()) == []
