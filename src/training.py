"""The lesson's training recipe: fixed-size shuffled batches, the partial batch dropped.

A compiled step returns the loss it computed for its own batch, before the update.
Keras' `fit` would only hand callbacks the running mean of the epoch so far.
Steps run STEPS_PER_CALL at a time inside one graph call, gathering their batches from
data already on the device: a Python round trip per batch costs more than the batch.
Images are held as uint8 pixels and scaled per batch with the data module's table, which
gives the network exactly the values of scaling the whole set up front.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from src.data import PIXEL_SCALE

# (first global step of the chunk, the chunk's per-batch losses)
LossSink = Callable[[int, np.ndarray], None]
# (epoch number from 1, {"val_loss": ..., "val_accuracy": ...})
EpochSink = Callable[[int, dict], None]

STEPS_PER_CALL = 32  # ~0.2 s of training: progress and Ctrl-C stay prompt

loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def network_inputs(pixels) -> tf.Tensor:
    """uint8 pixels -> float32 inputs through the data module's table: the values of `src.data.scaled`."""
    return tf.gather(PIXEL_SCALE, tf.cast(pixels, tf.int32))


def make_train_steps(model: keras.Model, optimizer: keras.optimizers.Optimizer, pixels: np.ndarray, labels: np.ndarray):
    """A graph function, already traced: one training step per row of batch indices, each batch's loss returned."""
    pixels, labels = tf.constant(pixels), tf.constant(labels)
    # The optimizer's slots exist before the first trace: created inside it, they make
    # tf.function trace the whole loop a second time (~0.4 s).
    if not optimizer.built:
        optimizer.build(model.trainable_variables)

    # One signature for every chunk length, so the loop graph is traced once, not again for an epoch's
    # last chunk. A plain while_loop: AutoGraph's rewriting of a Python loop costs ~0.2 s per trace.
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64)], autograph=False)
    def train_steps(batches):
        def step(i, losses):
            rows = batches[i]
            with tf.GradientTape() as tape:
                loss = loss_fn(tf.gather(labels, rows), model(network_inputs(tf.gather(pixels, rows)), training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return i + 1, losses.write(i, loss)

        n = tf.shape(batches)[0]
        _, losses = tf.while_loop(lambda i, _: i < n, step, (tf.constant(0), tf.TensorArray(tf.float32, size=n)))
        return losses.stack()

    train_steps.get_concrete_function()
    return train_steps


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cycle collector off for one run.

    Its full passes walk the ~500k objects that TensorFlow, Keras and MLflow keep alive
    (0.25-0.6 s per run measured here), while a run itself makes few reference cycles;
    collection resumes as usual once the run is stored.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def evaluate(model: keras.Model, pixels: np.ndarray, y: np.ndarray) -> dict:
    logits = model(network_inputs(pixels), training=False)
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
    on_start: Callable[[], None] | None = None,
    on_trained: Callable[[], None] | None = None,
) -> FitResult:
    """Train in place on uint8 pixels (see `src.data.scaled`).

    `on_start` runs before the step graph is traced, `on_trained` after the last step,
    before the last evaluation: work handed to another process there overlaps the trace,
    which keeps only one core busy, or the evaluation, instead of waiting until the end.
    Losses reach `on_losses` after every graph call (STEPS_PER_CALL batches) and, if
    training is cut short by an error or Ctrl-C, for every batch trained until then, so
    nothing computed is lost.
    """
    n_batches = batches_per_epoch(len(x_train), batch_size, max_batches_per_epoch)
    rng = np.random.default_rng(seed)
    if on_start is not None:
        on_start()
    train_steps = make_train_steps(model, optimizer, x_train, y_train)
    losses: list[float] = []
    sent = 0
    diverged_at = None

    def send() -> None:
        nonlocal sent
        if on_losses is not None and sent < len(losses):
            on_losses(sent + 1, np.array(losses[sent:]))
        sent = len(losses)

    def trained() -> FitResult:
        if on_trained is not None:
            on_trained()
        return FitResult(np.array(losses), diverged_at)

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
                        return trained()
                losses.extend(chunk.tolist())
                send()
            if epoch == epochs:
                result = trained()
            if on_epoch_end is not None:
                val = evaluate(model, x_val, y_val)
                on_epoch_end(epoch, {"val_loss": val["loss"], "val_accuracy": val["accuracy"]})
        return result
    finally:
        send()
