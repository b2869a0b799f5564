"""One way to print a number with its interval, and one way to build a markdown table.

Every table capgap writes (``capgap report``, the mitigation tables, the certificate, the inspect
study) goes through these two functions, so "mean [lo, hi]" reads the same everywhere::

    from capgap.eval.table import ci, markdown

    ci(0.712, 0.70, 0.73)            # '0.71 [0.70, 0.73]'
    ci(0.712, 0.70, 0.73, n=1)       # '0.71 (1 seed)': one seed has no interval
    ci(0.712, float("nan"), float("nan"))  # '0.71 (no CI)': one usable seed, n not given
    ci(float("nan"), 0, 0)           # 'n/a'
    markdown(["env", "C"], [["CheeseCorner", ci(0.9, 0.8, 1.0)]])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def _missing(v: float | None) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def ci(mean: float, lo: float, hi: float, digits: int = 2, n: int | None = None) -> str:
    """``mean [lo, hi]`` to ``digits`` decimals; ``n=1`` prints ``mean (1 seed)`` (no interval to
    show); a NaN or missing end prints ``mean (no CI)`` (one usable seed once NaNs are dropped); a
    NaN mean prints ``n/a``."""
    if _missing(mean):
        return "n/a"
    if n == 1:
        return f"{mean:.{digits}f} (1 seed)"
    if _missing(lo) or _missing(hi):
        return f"{mean:.{digits}f} (no CI)"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def steps(v: float) -> str:
    """Env steps as ``845k`` or ``1.09M`` (``n/a`` for NaN)."""
    return "n/a" if _missing(v) else f"{v / 1e6:.2f}M" if abs(v) >= 1e6 else f"{v / 1e3:.0f}k"


def steps_ci(mean: float, lo: float, hi: float, n: int) -> str:
    """Steps with their interval, ``845k [600k, 1.09M]``; ``(1 seed)`` for one; ``never`` for none."""
    if n == 0:
        return "never"
    if n == 1 or _missing(lo) or _missing(hi):
        return f"{steps(mean)} (1 seed)" if n == 1 else steps(mean)
    return f"{steps(mean)} [{steps(lo)}, {steps(hi)}]"


def markdown(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """The lines of a markdown table: the header, its rule, one line per row (cells ``str()``-ed)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(c) for c in row]
        if len(cells) != len(header):
            raise ValueError(f"a table row has {len(cells)} cells for {len(header)} columns: {cells}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines
