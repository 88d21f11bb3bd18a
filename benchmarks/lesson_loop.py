"""The lesson's own loop as a whole script, the reference for `make bench`'s whole-process time.

TensorFlow 1 style graph: the whole data set scaled up front, then per batch one session
call to step and one more to read the loss after the update, as the lesson does.
trunc_normal weights (stddev 0.1), zero biases, Adam 0.001, 858 batches of 128.
Run as `python -m benchmarks.lesson_loop`; prints the validation accuracy and last loss.
"""

from pathlib import Path

import numpy as np
import tensorflow as tf

from src.data import load_split, scaled

tf1 = tf.compat.v1
tf1.disable_eager_execution()

split = load_split(str(Path(__file__).resolve().parents[1] / "data"))  # the cache `make run` fills (no Hydra here)
x_train, y_train, x_val, y_val = scaled(split.x_train), split.y_train, scaled(split.x_val), split.y_val

x = tf1.placeholder(tf.float32, [None, 784])
y = tf1.placeholder(tf.int32, [None])


def dense(inputs, n_in, n_out):
    weights = tf1.Variable(tf1.truncated_normal([n_in, n_out], stddev=0.1, seed=42))
    return tf.matmul(inputs, weights) + tf1.Variable(tf1.zeros([n_out]))


logits = dense(tf.nn.relu(dense(tf.nn.relu(dense(x, 784, 256)), 256, 128)), 128, 10)
loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
step = tf1.train.AdamOptimizer(0.001).minimize(loss)
accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), y), tf.float32))

with tf1.Session() as session:
    session.run(tf1.global_variables_initializer())
    rng = np.random.default_rng(42)
    losses = []
    for _ in range(2):
        for rows in rng.permutation(55000)[: 429 * 128].reshape(429, 128):
            batch = {x: x_train[rows], y: y_train[rows]}
            session.run(step, batch)
            losses.append(session.run(loss, batch))
    print(f"validation accuracy {session.run(accuracy, {x: x_val, y: y_val}):.4f}, last loss {losses[-1]:.3f}")
