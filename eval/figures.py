"""The figure helpers every capgap plot shares: resolution, a grid of panels, a log axis over
parameter counts, and rendering to an image for TensorBoard.

Figures are ``matplotlib.figure.Figure`` objects drawn by the Agg canvas, so pyplot's global
state and backend are never touched (``capgap report`` runs in workers and in tests).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

DPI = 110
"""Resolution of every saved plot."""


def grid(n: int, width: float = 4.2, height: float = 3.2) -> tuple[Figure, list[Axes]]:
    """A figure with one axes per panel (at least one), three to a row; spare axes hidden."""
    n = max(n, 1)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), dpi=DPI, layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def log_x(ax: Axes, x: np.ndarray) -> None:
    """Log x axis with limits set from the parameter counts, so a panel whose scores are all NaN still draws."""
    positive = x[np.isfinite(x) & (x > 0)]
    if positive.size:
        ax.set_xscale("log")
        ax.set_xlim(positive.min() / 2, positive.max() * 2)
        ax.xaxis.set_minor_formatter(NullFormatter())  # decades only: minor labels collide


def rgb(fig: Figure) -> np.ndarray:
    """The figure rendered to an (H, W, 3) uint8 array (a TensorBoard image)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
