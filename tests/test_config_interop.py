"""Optimizer configs between `tf_keras` and this package, then trained on."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
import reference

from optax_keras_sgd import SGD, Variable, schedules

pytestmark = pytest.mark.reference

tf = reference.tf
keras_sgd = reference.tf_keras.optimizers.legacy.SGD
TFS = reference.schedules()


def _train(tf_opt, our_opt, steps=6):
  rng = np.random.default_rng(0)
  w0 = rng.normal(size=(3, 2)).astype(np.float32)
  tf_w, w = tf.Variable(w0), Variable(w0)
  for _ in range(steps):
    g = rng.normal(size=(3, 2)).astype(np.float32)
    tf_opt.apply_gradients([(tf.constant(g), tf_w)])
    our_opt.apply_gradients([(jnp.asarray(g), w)])
  return tf_w.numpy(), w.numpy()


TF_CONFIGS = {
  "plain": lambda: keras_sgd(0.1),
  "momentum_clipvalue": lambda: keras_sgd(
    0.05, momentum=0.9, nesterov=True, clipvalue=0.5, decay=0.01
  ),
  "schedule": lambda: keras_sgd(TFS.ExponentialDecay(0.1, 3, 0.5), momentum=0.9),
  "piecewise": lambda: keras_sgd(
    TFS.PiecewiseConstantDecay([2], [0.5, 0.05]), momentum=0.8
  ),
  "lr_alias": None,
}


@pytest.mark.parametrize("name", sorted(TF_CONFIGS))
def test_reference_config_loads_and_trains_the_same(name):
  if name == "lr_alias":
    config = {
      "name": "SGD",
      "lr": 0.2,
      "decay": 0.0,
      "momentum": 0.5,
      "nesterov": False,
    }
    tf_opt = keras_sgd.from_config(dict(config))
  else:
    tf_opt = TF_CONFIGS[name]()
    config = tf_opt.get_config()
  ours = SGD.from_config(json.loads(json.dumps(config)))
  a, b = _train(tf_opt, ours)
  np.testing.assert_allclose(b, a, rtol=2e-7, atol=1e-7)


@pytest.mark.parametrize(
  "make",
  [
    lambda: SGD(0.1, momentum=0.9, clipnorm=1.0),
    lambda: SGD(
      schedules.CosineDecay(0.1, 10, alpha=0.1),
      momentum=0.9,
      nesterov=True,
      decay=0.001,
    ),
    lambda: SGD(
      schedules.PiecewiseConstantDecay([1], [1.0, 0.1]),
      momentum=0.9,
      global_clipnorm=2.0,
    ),
  ],
  ids=["clipnorm", "cosine", "piecewise"],
)
def test_our_config_loads_in_reference_and_trains_the_same(make):
  ours = make()
  config = json.loads(json.dumps(ours.get_config()))
  tf_opt = keras_sgd.from_config(config)
  a, b = _train(tf_opt, ours)
  np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


def test_ours_to_json_to_ours():
  opt = SGD(schedules.InverseTimeDecay(0.1, 5, 0.5), momentum=0.7, clipvalue=1.0)
  again = SGD.from_config(json.loads(json.dumps(opt.get_config())))
  a, b = _train(keras_sgd.from_config(opt.get_config()), again)
  np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
  assert again.get_config() == opt.get_config()
