"""Matplotlib figures shared by training (weight histograms) and the report."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")  # files only: runs on machines with no screen

import numpy as np
from matplotlib.figure import Figure


def histogram_range(values: np.ndarray) -> tuple[float, float]:
    """Min to max, widened where they (nearly) coincide: all-equal weights are common here."""
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    pad = 1e-3 * max(abs(lo), abs(hi), 1.0)
    return (lo - pad, hi + pad) if hi - lo < pad else (lo, hi)


def weight_histograms(weights: dict[str, np.ndarray], title: str, bins: int = 100) -> Figure:
    """One panel per weight matrix, side by side; non-finite weights are counted, not drawn."""
    fig = Figure(figsize=(4 * len(weights), 3.2))  # fixed margins: a layout engine doubles the drawing time
    fig.subplots_adjust(left=0.2 / len(weights), right=0.98, bottom=0.16, top=0.8, wspace=0.3)
    axes = fig.subplots(1, len(weights), squeeze=False)[0]
    for ax, (name, w) in zip(axes, weights.items()):
        values = w.ravel().astype(np.float64)
        finite = values[np.isfinite(values)]
        counts, edges = np.histogram(finite, bins=bins, range=histogram_range(finite))
        ax.stairs(counts, edges, fill=True, color="tab:blue")
        dropped = values.size - finite.size
        ax.set_title(f"{name} {tuple(w.shape)}" + (f", {dropped} non-finite" if dropped else ""), fontsize=10)
        ax.set_xlabel("weight")
    axes[0].set_ylabel("count")
    fig.suptitle(title)
    return fig


def loss_figure(title: str, lines: list[tuple[str, np.ndarray]], log_scale: bool = False) -> Figure:
    """Loss per batch, one line per (label, curves) where curves is (seeds, batches).

    With several seeds the line is their mean and the band spans min to max.
    """
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.subplots()
    for label, curves in lines:
        steps = np.arange(1, curves.shape[1] + 1)
        finite = np.where(np.isfinite(curves), curves, np.nan)  # diverged runs: gaps, not crashes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns after a divergence
            mean, low, high = np.nanmean(finite, 0), np.nanmin(finite, 0), np.nanmax(finite, 0)
        (line,) = ax.plot(steps, mean, label=label, linewidth=1.2)
        if len(curves) > 1:
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_title(title)
    ax.set_xlabel("Batches")
    ax.set_ylabel("Loss" + (" (log scale)" if log_scale else ""))
    if log_scale:
        ax.set_yscale("log")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def sample_histogram(values: np.ndarray, title: str, bins: int = 500, value_range: tuple[float, float] = (-4, 4)) -> Figure:
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    ax.hist(values, bins=bins, range=value_range, histtype="stepfilled")
    ax.set_title(title)
    return fig


def image_grid(images: list[tuple[str, np.ndarray]]) -> Figure:
    """Already-rendered figures (RGBA arrays), stacked one per row with their captions."""
    fig = Figure(figsize=(12, 3.2 * len(images)), layout="constrained")
    axes = fig.subplots(len(images), 1, squeeze=False)[:, 0]
    for ax, (caption, image) in zip(axes, images):
        ax.imshow(image)
        ax.set_axis_off()
        ax.set_title(caption, fontsize=10)
    return fig
