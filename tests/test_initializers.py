"""Each init option draws the distribution it names, on the real layers of the model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from src.model import build_model, weight_matrices
from tests.conftest import INIT_OPTIONS, compose_config

TRUNCATION_STDDEV_FACTOR = 0.87962566103423978  # std of a unit normal truncated at +-2


def expected(init, fan_in: int, fan_out: int) -> dict:
    """What one weight matrix must look like, computed from the config's own parameters."""
    family = init._target_.rsplit(".", 1)[1]
    if family == "Constant":
        return {"constant": init.value}
    if family == "RandomUniform":
        return {"low": init.minval, "high": init.maxval}
    if family == "RandomNormal":
        return {"mean": init.mean, "std": init.stddev, "beyond_2_std": True}
    if family == "TruncatedNormal":
        return {"mean": init.mean, "std": init.stddev * TRUNCATION_STDDEV_FACTOR, "bound": 2 * init.stddev}
    if family == "VarianceScaling":
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[init.mode]
        variance = init.scale / n
        if init.distribution == "uniform":
            limit = math.sqrt(3 * variance)
            return {"low": -limit, "high": limit}
        std = math.sqrt(variance)
        return {"mean": 0.0, "std": std, "bound": 2 * std / TRUNCATION_STDDEV_FACTOR}
    if family == "Orthogonal":
        return {"orthogonal": init.gain}
    raise AssertionError(f"no expectation for {family}")


def check(w: np.ndarray, want: dict) -> None:
    if "constant" in want:
        np.testing.assert_array_equal(w, want["constant"])
    if "low" in want:
        low, high = want["low"], want["high"]
        assert w.min() >= low and w.max() < high
        # the samples reach both ends and fill the range evenly
        assert w.min() < low + 0.02 * (high - low) and w.max() > high - 0.02 * (high - low)
        assert abs(w.std() - (high - low) / math.sqrt(12)) < 0.05 * (high - low) / math.sqrt(12)
    if "std" in want:
        assert abs(w.mean() - want["mean"]) < 0.1 * want["std"]
        assert abs(w.std() - want["std"]) < 0.06 * want["std"]
    if "bound" in want:
        assert np.abs(w - want["mean"]).max() <= want["bound"] * (1 + 1e-6)
        assert np.abs(w - want["mean"]).max() > 0.95 * want["bound"]
    if want.get("beyond_2_std"):
        assert (np.abs(w - want["mean"]) > 2 * want["std"]).mean() > 0.03  # ~4.6% for a normal
    if "orthogonal" in want:
        gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        np.testing.assert_allclose(gram, want["orthogonal"] ** 2 * np.eye(len(gram)), atol=1e-4)


CASES = [[f"init={name}"] for name in INIT_OPTIONS] + [
    ["init=normal", "init.stddev=0.01"],
    ["init=trunc_normal", "init.stddev=0.5", "init.mean=1"],
    ["init=uniform01", "init.minval=-3", "init.maxval=3"],
    ["init=he_uniform", "init.scale=0.5"],
    ["init=ones", "init.value=0.25"],
]


@pytest.mark.parametrize("overrides", CASES, ids=[" ".join(c) for c in CASES])
def test_every_layer_draws_the_configured_distribution(overrides):
    cfg = compose_config(*overrides)
    model = build_model(cfg.model, cfg.init, seed=0)
    for layer in model.layers:
        fan_in, fan_out = layer.kernel.shape
        check(np.asarray(layer.kernel), expected(cfg.init, fan_in, fan_out))
        np.testing.assert_array_equal(np.asarray(layer.bias), 0.0)


def test_general_rule_limit_is_one_over_sqrt_fan_in():
    cfg = compose_config("init=general_rule")
    for name, w in weight_matrices(build_model(cfg.model, cfg.init, seed=1)).items():
        y = 1 / math.sqrt(w.shape[0])
        assert np.abs(w).max() <= y and np.abs(w).max() > 0.99 * y, name


@pytest.mark.parametrize("init", [o for o in INIT_OPTIONS if o not in ("zeros", "ones")])
def test_layers_of_equal_shape_get_independent_weights(init):
    """A shared Keras initializer instance would give these two 64x64 layers identical weights."""
    cfg = compose_config(f"init={init}", "model.hidden_sizes=[64,64,64]")
    w = weight_matrices(build_model(cfg.model, cfg.init, seed=3))
    a, b = w["hidden2"].ravel(), w["hidden3"].ravel()
    assert not np.array_equal(a, b)
    assert abs(np.corrcoef(a - a.mean(), b - b.mean())[0, 1]) < 0.1


def test_seed_decides_the_weights():
    cfg = compose_config("init=normal")

    def weights(seed):
        return weight_matrices(build_model(cfg.model, cfg.init, seed=seed))

    first, again, other = weights(7), weights(7), weights(8)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
        assert not np.array_equal(first[name], other[name])
