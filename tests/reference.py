"""Runs the real reference, `tf_keras.optimizers.legacy.SGD`, for the tests.

Nothing here restates our formulas: it feeds gradient sequences to TensorFlow
and returns what TensorFlow computed.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from helpers import optional  # noqa: E402

tf = optional("tensorflow")
tf_keras = optional("tf_keras")

tf.config.set_visible_devices([], "GPU")

TF_DTYPES = {
  "float16": tf.float16,
  "bfloat16": tf.bfloat16,
  "float32": tf.float32,
  "float64": tf.float64,
  "complex64": tf.complex64,
  "complex128": tf.complex128,
}


def tf_dtype(dtype) -> tf.DType:
  return TF_DTYPES[np.dtype(dtype).name]


def _wide(x, dtype):
  """`x` as float64 (complex128 for complex dtypes), exact for every dtype."""
  return np.asarray(x, np.complex128 if np.dtype(dtype).kind == "c" else np.float64)


def to_tf_grad(g, dtype):
  """A gradient for TF: a dense array, or a `(values, indices, dense_shape)`
  triple standing for `tf.IndexedSlices`."""
  if isinstance(g, tuple):
    values, indices, dense_shape = g
    return tf.IndexedSlices(
      tf.constant(_wide(values, dtype), dtype=tf_dtype(dtype)),
      tf.constant(indices, dtype=tf.int64),
      tf.constant(dense_shape, dtype=tf.int64),
    )
  if g is None:
    return None
  return tf.constant(_wide(g, dtype), dtype=tf_dtype(dtype))


def run(params, grad_steps, dtype="float32", graph=True, **sgd_kwargs):
  """Applies each list of gradients in `grad_steps` to `params` with the
  reference; returns the params after each step and the optimizer.

  With `graph` (the default), each step runs inside one `tf.function`, as
  `model.fit` runs it, the mode our jit-compiled code matches; otherwise
  eagerly, the mode our eager calls match.
  """
  variables = [
    tf.Variable(_wide(p, dtype), dtype=tf_dtype(dtype), name=f"w{i}")
    for i, p in enumerate(params)
  ]
  opt = tf_keras.optimizers.legacy.SGD(**sgd_kwargs)
  apply = opt.apply_gradients
  if graph:
    apply = tf.function(lambda pairs: opt.apply_gradients(pairs) and None)
  trajectory = []
  for grads in grad_steps:
    pairs = [(to_tf_grad(g, dtype), v) for g, v in zip(grads, variables)]
    apply(pairs)
    trajectory.append([_to_numpy(v) for v in variables])
  return trajectory, opt


def stepper(param, dtype="float32", **sgd_kwargs):
  """The reference on one variable, one step at a time, inside `tf.function`.

  Returns `step(gradient)`, which applies one step and returns the state
  before and after it: `(param, velocity)` pairs as float64 arrays (the
  optimizer must have momentum). Tests start our step from the reference's
  own state, so each comparison covers one step and nothing accumulated.
  """
  variable = tf.Variable(_wide(param, dtype), dtype=tf_dtype(dtype), name="w")
  opt = tf_keras.optimizers.legacy.SGD(**sgd_kwargs)
  apply = tf.function(lambda pairs: opt.apply_gradients(pairs) and None)

  def state():
    velocity = opt.get_slot(variable, "momentum") if opt.weights else None
    return (
      np.asarray(_to_numpy(variable), np.float64),
      np.zeros(variable.shape)
      if velocity is None
      else np.asarray(_to_numpy(velocity), np.float64),
    )

  def step(gradient):
    before = state()
    apply([(to_tf_grad(gradient, dtype), variable)])
    return before, state()

  return step


def _to_numpy(v):
  value = v.numpy()
  if v.dtype == tf.bfloat16:
    return np.asarray(tf.cast(v, tf.float32).numpy())
  return value


def schedules():
  return tf_keras.optimizers.schedules


def decayed_lr(learning_rate, steps, dtype="float32", decay=0.0, graph=True):
  """The learning rate the reference applies at each of `steps` to a variable
  of `dtype`: `SGD._decayed_lr`, the schedule and legacy `decay` included.

  With `graph`, inside one `tf.function` as `model.fit` runs it: a
  `tf.while_loop` sets `iterations` to each step in turn and reads the rate,
  op by op on scalars as the optimizer does. Otherwise eagerly, step by step.
  """
  opt = tf_keras.optimizers.legacy.SGD(learning_rate=learning_rate, decay=decay)
  var_dtype = tf_dtype(dtype)
  steps = np.asarray(steps, np.int64)

  def rate():
    return tf.cast(opt._decayed_lr(var_dtype), tf.float64)

  if not graph:
    values = []
    for step in steps:
      opt.iterations.assign(step)
      values.append(rate().numpy())
    return np.asarray(values)

  @tf.function
  def sweep(steps):
    out = tf.TensorArray(tf.float64, size=tf.size(steps))

    def body(i, out):
      opt.iterations.assign(steps[i])
      return i + 1, out.write(i, rate())

    _, out = tf.while_loop(lambda i, _: i < tf.size(steps), body, (0, out))
    return out.stack()

  opt.iterations  # creates the variable outside the function  # noqa: B018
  return sweep(tf.constant(steps)).numpy()
