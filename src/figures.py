"""Matplotlib figures shared by training (weight histograms) and the report."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only: runs on machines with no screen

import numpy as np
from matplotlib.figure import Figure


def weight_histograms(weights: dict[str, np.ndarray], title: str, bins: int = 100) -> Figure:
    """One panel per weight matrix, side by side."""
    fig = Figure(figsize=(4 * len(weights), 3.2), layout="constrained")
    axes = fig.subplots(1, len(weights), squeeze=False)[0]
    for ax, (name, w) in zip(axes, weights.items()):
        ax.hist(w.ravel(), bins=bins, color="tab:blue")
        ax.set_title(f"{name} {tuple(w.shape)}", fontsize=10)
        ax.set_xlabel("weight")
    axes[0].set_ylabel("count")
    fig.suptitle(title)
    return fig
