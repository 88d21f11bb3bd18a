"""Matplotlib figures shared by training (weight histograms) and the report."""

from __future__ import annotations

import io
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


class WeightHistograms:
    """One panel per weight matrix, side by side; non-finite weights are counted, not drawn.

    The figure is kept and drawn again for every set of weights with as many matrices:
    building its axes and ticks, and the first drawing (fonts, PNG encoder), cost about
    as much as a drawing, and each run draws its layers twice (initial and final weights)
    while it trains.
    """

    def __init__(self, panels: int, bins: int = 100):
        self.panels, self.bins = panels, bins
        self.figure = Figure(figsize=(4 * panels, 3.2))  # fixed margins: a layout engine doubles the drawing time
        self.figure.subplots_adjust(left=0.3 / panels, right=0.98, bottom=0.16, top=0.8, wspace=0.3)
        self.axes = self.figure.subplots(1, panels, squeeze=False)[0]
        self.bars = [ax.stairs(np.zeros(bins), np.arange(bins + 1.0), fill=True, color="tab:blue") for ax in self.axes]
        # Fixed positions for titles and labels: placed automatically, they cost a quarter
        # of the drawing time; only the y label moves with the width of the counts.
        for i, ax in enumerate(self.axes):
            ax.locator_params(nbins=4)  # tick labels are most of the drawing time
            ax.set_xlabel("weight")
            ax.xaxis.set_label_coords(0.5, -0.13)
            if i:  # no y label there
                ax.yaxis.set_label_coords(0, 0.5)
        self.axes[0].set_ylabel("count")

    def save(self, weights: dict[str, np.ndarray], title: str, path) -> None:
        """Drawn and written as PNG at zlib's fastest level: encoding a third faster, files ~15% larger."""
        self.draw(weights, title).savefig(path, format="png", pil_kwargs={"compress_level": 1})

    def warm_up(self) -> None:
        """One drawing thrown away, so that the first run's figure costs what the later ones do."""
        self.save({f"w{i}": np.zeros(1) for i in range(self.panels)}, "", io.BytesIO())

    def draw(self, weights: dict[str, np.ndarray], title: str) -> Figure:
        for ax, bars, (name, w) in zip(self.axes, self.bars, weights.items()):
            values = w.ravel().astype(np.float64)
            finite = values[np.isfinite(values)]
            counts, edges = np.histogram(finite, bins=self.bins, range=histogram_range(finite))
            bars.set_data(counts, edges)
            ax.set_xlim(edges[0], edges[-1])
            ax.set_ylim(0, 1.05 * max(counts.max(), 1))
            dropped = values.size - finite.size
            ax.set_title(f"{name} {tuple(w.shape)}" + (f", {dropped} non-finite" if dropped else ""), fontsize=10, y=1.0)
        self.figure.suptitle(title)
        return self.figure


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
