"""The one CI formatter and table builder (capgap.eval.table)."""

from __future__ import annotations

import pytest

from capgap.eval.table import ci, markdown


def test_ci_prints_mean_and_interval_or_says_why_not() -> None:
    assert ci(0.712, 0.701, 0.734) == "0.71 [0.70, 0.73]"
    assert ci(0.7125, 0.7, 0.73, digits=3) == "0.713 [0.700, 0.730]"
    assert ci(0.5, 0.5, 0.5, n=1) == "0.50 (1 seed)"
    assert ci(0.5, float("nan"), float("nan")) == "0.50 (no CI)"  # one usable seed, n not given: no interval
    assert ci(float("nan"), 0.0, 1.0) == "n/a"


def test_markdown_table_rows_match_the_header() -> None:
    assert markdown(["a", "b"], [[1, "x"]]) == ["| a | b |", "|---|---|", "| 1 | x |"]
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        markdown(["a", "b", "c"], [[1, 2]])
