"""Figures never fail on the weights training produces: equal, nearly equal, or diverged."""

from __future__ import annotations

import io

import numpy as np
import pytest

from src.figures import WeightHistograms, histogram_range

CASES = {
    "all equal": np.ones((784, 256), np.float32),
    "nearly equal, large": (1000 + 1e-4 * np.random.default_rng(0).standard_normal((256, 128))).astype(np.float32),
    "with nan and inf": np.array([[0.1, np.nan], [np.inf, -0.2]], np.float32),
    "all nan": np.full((4, 4), np.nan, np.float32),
}


def weight_histograms(weights: dict[str, np.ndarray], title: str):
    return WeightHistograms(len(weights)).draw(weights, title)


def png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


@pytest.mark.parametrize("name", CASES)
def test_weight_histograms_render(name):
    fig = weight_histograms({"w": CASES[name], "ok": np.linspace(-1, 1, 100).reshape(10, 10)}, name)
    assert png(fig)[:4] == b"\x89PNG"


def test_nonfinite_weights_are_counted_in_the_title():
    fig = weight_histograms({"w": CASES["with nan and inf"]}, "t")
    assert fig.axes[0].get_title() == "w (2, 2), 2 non-finite"


def test_a_figure_drawn_again_shows_only_the_new_weights():
    rng = np.random.default_rng(1)
    first = {"a": rng.uniform(0, 1, (784, 256)), "b": np.full((256, 128), np.nan)}
    second = {"a": rng.normal(0, 0.1, (784, 256)), "b": rng.normal(0, 3, (256, 128))}
    reused = WeightHistograms(2)
    reused.warm_up()
    reused.draw(first, "first")
    assert png(reused.draw(second, "second")) == png(weight_histograms(second, "second"))


def test_histogram_range_widens_only_degenerate_ranges():
    assert histogram_range(np.array([-1.0, 2.0])) == (-1.0, 2.0)
    lo, hi = histogram_range(np.array([1000.0, 1000.0]))
    assert lo < 1000 < hi and hi - lo == pytest.approx(2.0)
