"""CSV cells a spreadsheet would run as a formula (OWASP, CSV injection): a text cell that
starts with =, +, -, @, TAB or CR is written behind a single quote, which spreadsheets show
as text. Numbers are written as they are. Ids never contain a quote, so `unescape` on an
id cell is exact and `mabapi metrics push` reads back what `metrics export` wrote."""

from __future__ import annotations

from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def escape(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def unescape(text: str) -> str:
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_STARTS) else text


def escaped_row(cells: list[Any]) -> list[Any]:
    """A row with every text cell escaped (numbers, dates as ISO text, kept)."""
    return [escape(cell) if isinstance(cell, str) else cell for cell in cells]
