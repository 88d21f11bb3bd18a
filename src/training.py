"""The lesson's training recipe: fixed-size shuffled batches, the partial batch dropped.

A compiled step returns the loss it computed for its own batch, before the update.
Keras' `fit` would only hand callbacks the running mean of the epoch so far.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
import tensorflow as tf

# (first global step of the chunk, the chunk's per-batch losses)
LossSink = Callable[[int, np.ndarray], None]
# (epoch number from 1, {"val_loss": ..., "val_accuracy": ...})
EpochSink = Callable[[int, dict], None]

loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer):
    @tf.function(reduce_retracing=True)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return train_step


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray) -> dict:
    logits = model(x, training=False)
    return {
        "loss": float(loss_fn(y, logits)),
        "accuracy": float(np.mean(np.argmax(np.asarray(logits), axis=1) == y)),
    }


def batches_per_epoch(n_examples: int, batch_size: int, cap: int | None = None) -> int:
    full = n_examples // batch_size
    return full if cap is None else min(full, cap)


def epoch_batches(rng: np.random.Generator, n_examples: int, batch_size: int, n_batches: int) -> np.ndarray:
    """A fresh permutation each epoch, cut into n_batches rows; the partial batch is dropped."""
    return rng.permutation(n_examples)[: n_batches * batch_size].reshape(n_batches, batch_size)


def fit(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    batch_size: int,
    epochs: int,
    seed: int,
    max_batches_per_epoch: int | None = None,
    on_losses: LossSink | None = None,
    on_epoch_end: EpochSink | None = None,
) -> np.ndarray:
    """Train in place; return the loss of every batch, in order of global step 1..N."""
    n_batches = batches_per_epoch(len(x_train), batch_size, max_batches_per_epoch)
    rng = np.random.default_rng(seed)
    train_step = make_train_step(model, optimizer)
    losses = []
    for epoch in range(1, epochs + 1):
        order = epoch_batches(rng, len(x_train), batch_size, n_batches)
        epoch_losses = [train_step(x_train[idx], y_train[idx]) for idx in order]
        epoch_losses = np.array([float(loss) for loss in epoch_losses], dtype=np.float64)
        if on_losses is not None:
            on_losses(len(losses) * n_batches + 1, epoch_losses)
        losses.append(epoch_losses)
        if on_epoch_end is not None:
            val = evaluate(model, x_val, y_val)
            on_epoch_end(epoch, {"val_loss": val["loss"], "val_accuracy": val["accuracy"]})
    return np.concatenate(losses)
