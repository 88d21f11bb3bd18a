"""The lesson's training recipe: fixed-size shuffled batches, the partial batch dropped.

A compiled step returns the loss it computed for its own batch, before the update.
Keras' `fit` would only hand callbacks the running mean of the epoch so far.
Steps run STEPS_PER_CALL at a time inside one graph call, gathering their batches from
data already on the device: a Python round trip per batch costs more than the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

# (first global step of the chunk, the chunk's per-batch losses)
LossSink = Callable[[int, np.ndarray], None]
# (epoch number from 1, {"val_loss": ..., "val_accuracy": ...})
EpochSink = Callable[[int, dict], None]

STEPS_PER_CALL = 32  # ~0.2 s of training: progress and Ctrl-C stay prompt

loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def make_train_steps(model: keras.Model, optimizer: keras.optimizers.Optimizer, x: tf.Tensor, y: tf.Tensor):
    """A graph function: one training step per row of batch indices, returning each batch's loss."""

    # One signature for every chunk length, so the loop graph is traced once, not again for an epoch's last chunk.
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64)])
    def train_steps(batches):
        losses = tf.TensorArray(tf.float32, size=tf.shape(batches)[0])
        for i in tf.range(tf.shape(batches)[0]):
            with tf.GradientTape() as tape:
                loss = loss_fn(tf.gather(y, batches[i]), model(tf.gather(x, batches[i]), training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            losses = losses.write(i, loss)
        return losses.stack()

    return train_steps


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


@dataclass
class FitResult:
    losses: np.ndarray  # the loss of every batch trained, in order of global step 1..N
    diverged_at: int | None = None  # first global step whose loss was not finite


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
    stop_on_divergence: bool = True,
    on_losses: LossSink | None = None,
    on_epoch_end: EpochSink | None = None,
) -> FitResult:
    """Train in place.

    Losses reach `on_losses` at every epoch end and, if training is cut short by an
    error or Ctrl-C, for every batch trained until then, so nothing computed is lost.
    """
    n_batches = batches_per_epoch(len(x_train), batch_size, max_batches_per_epoch)
    rng = np.random.default_rng(seed)
    train_steps = make_train_steps(model, optimizer, tf.constant(x_train), tf.constant(y_train))
    losses: list[float] = []
    sent = 0
    diverged_at = None

    def send() -> None:
        nonlocal sent
        if on_losses is not None and sent < len(losses):
            on_losses(sent + 1, np.array(losses[sent:]))
        sent = len(losses)

    try:
        for epoch in range(1, epochs + 1):
            order = epoch_batches(rng, len(x_train), batch_size, n_batches)
            for start in range(0, n_batches, STEPS_PER_CALL):
                chunk = train_steps(tf.constant(order[start : start + STEPS_PER_CALL])).numpy().astype(np.float64)
                bad = np.flatnonzero(~np.isfinite(chunk))
                if diverged_at is None and bad.size:
                    diverged_at = len(losses) + int(bad[0]) + 1
                    if stop_on_divergence:  # the batches after it in this call only trained on NaN
                        losses.extend(chunk[: bad[0] + 1].tolist())
                        return FitResult(np.array(losses), diverged_at)
                losses.extend(chunk.tolist())
            send()
            if on_epoch_end is not None:
                val = evaluate(model, x_val, y_val)
                on_epoch_end(epoch, {"val_loss": val["loss"], "val_accuracy": val["accuracy"]})
        return FitResult(np.array(losses), diverged_at)
    finally:
        send()
