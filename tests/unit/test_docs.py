"""The README's headline figures are the ones docs/benchmarks.md publishes, where every figure
lives with its machine, date and command."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _table_after(text: str, heading: str) -> dict[str, list[str]]:
    """First markdown table after `heading`: row label -> the row's other cells, bold removed."""
    section = text.split(heading, 1)[1]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [cell.strip().replace("**", "") for cell in line.strip("|").split("|")]
        if cells[0] and not set(cells[0]) <= set("-: "):
            rows[cells[0]] = cells[1:]
    return rows


def _numbers(cells: list[str]) -> list[str]:
    return [number for cell in cells for number in re.findall(r"\d+(?:\.\d+)?", cell)]


def test_readme_headline_figures_come_from_the_benchmarks_page() -> None:
    readme = _table_after((REPO / "README.md").read_text(), "## How well it works")
    published = _table_after((REPO / "docs/benchmarks.md").read_text(), "## Headline")
    published_numbers = {label: _numbers(cells) for label, cells in published.items()}
    assert len(readme) >= 4
    for label, cells in readme.items():
        if not _numbers(cells):
            continue  # the header row
        assert _numbers(cells) in published_numbers.values(), f"README row {label!r}: {cells}"


def test_readme_stays_a_front_door() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    assert "make run" in "\n".join(lines) and "make test" in "\n".join(lines)
