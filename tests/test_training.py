"""batch_loss is the loss of each batch itself, and training is repeatable."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from src.data import scaled
from src.model import build_model, build_optimizer
from src.training import STEPS_PER_CALL, batches_per_epoch, epoch_batches, fit, loss_fn, network_inputs
from tests.conftest import compose_config


def numpy_loss(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Mean softmax cross-entropy of a ReLU MLP, computed by hand from the current weights."""
    h = x.astype(np.float64) / 255
    for i, layer in enumerate(model.layers):
        h = h @ np.asarray(layer.kernel, dtype=np.float64) + np.asarray(layer.bias, dtype=np.float64)
        if i < len(model.layers) - 1:
            h = np.maximum(h, 0)
    log_probs = h - h.max(axis=1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(y)), y].mean())


def test_batch_loss_is_the_loss_of_that_batch_before_its_update(mnist):
    """One batch per epoch holding the whole data set, so batch order cannot matter.

    Each logged value must equal the loss computed by hand from the weights that batch
    started with: neither Keras' running mean nor a re-read after the update.
    """
    cfg = compose_config("init=he_normal", "model.hidden_sizes=[16]", "optimizer.lr=0.01")
    x, y = mnist.x_train[:64], mnist.y_train[:64]
    logged = []
    fit(
        build_model(cfg.model, cfg.init, seed=5), build_optimizer(cfg.optimizer), x, y, x, y,
        batch_size=64, epochs=6, seed=5, on_losses=lambda first, values: logged.extend(values),
    )

    model, optimizer = build_model(cfg.model, cfg.init, seed=5), build_optimizer(cfg.optimizer)
    by_hand = []
    for _ in range(6):
        by_hand.append(numpy_loss(model, x, y))
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(scaled(x), training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    np.testing.assert_allclose(logged, by_hand, rtol=1e-5)
    assert by_hand[-1] < by_hand[0] - 0.1  # the losses really moved, so a lag of one step would show


def test_batches_steps_and_epoch_callbacks(mnist):
    cfg = compose_config()
    calls = []
    losses = fit(
        build_model(cfg.model, cfg.init, seed=1), build_optimizer(cfg.optimizer),
        mnist.x_train, mnist.y_train, mnist.x_val[:500], mnist.y_val[:500],
        batch_size=128, epochs=2, seed=1, max_batches_per_epoch=STEPS_PER_CALL + 3,
        on_losses=lambda first, values: calls.append((first, len(values))),
        on_epoch_end=lambda epoch, metrics: calls.append((f"epoch {epoch}", sorted(metrics))),
        on_start=lambda: calls.append("start"),
        on_trained=lambda: calls.append("trained"),
    ).losses
    n = STEPS_PER_CALL + 3
    assert len(losses) == 2 * n and np.isfinite(losses).all()
    # losses go out after every graph call; the last evaluation comes after "trained"
    assert calls == [
        "start", (1, STEPS_PER_CALL), (STEPS_PER_CALL + 1, 3), ("epoch 1", ["val_accuracy", "val_loss"]),
        (n + 1, STEPS_PER_CALL), (n + STEPS_PER_CALL + 1, 3), "trained", ("epoch 2", ["val_accuracy", "val_loss"]),
    ]


def test_same_seed_same_numbers_other_seed_other_numbers(mnist):
    cfg = compose_config("init=trunc_normal")

    def run(seed):
        keras.utils.set_random_seed(seed)
        return fit(
            build_model(cfg.model, cfg.init, seed=seed), build_optimizer(cfg.optimizer),
            mnist.x_train, mnist.y_train, mnist.x_val, mnist.y_val,
            batch_size=128, epochs=2, seed=seed, max_batches_per_epoch=40,
        ).losses

    first, again, other = run(11), run(11), run(12)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_each_epoch_is_a_new_permutation_with_the_partial_batch_dropped():
    n_batches = batches_per_epoch(55000, 128)
    assert n_batches == 429
    rng = np.random.default_rng(3)
    first, second = (epoch_batches(rng, 55000, 128, n_batches) for _ in range(2))
    for order in (first, second):
        assert order.shape == (429, 128)
        assert len(np.unique(order)) == 429 * 128 and order.max() < 55000
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, epoch_batches(np.random.default_rng(3), 55000, 128, n_batches))


def test_network_inputs_in_the_graph_equal_the_scaled_pixels(mnist):
    np.testing.assert_array_equal(network_inputs(mnist.x_val).numpy(), scaled(mnist.x_val))
