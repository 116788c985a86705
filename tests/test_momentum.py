"""`keras_momentum`: Keras's velocity on lr-scaled updates."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

import optax_keras_sgd as oks


def test_plain_zero_momentum_is_identity_without_state():
  tx = oks.keras_momentum(0.0)
  assert tx.init(jnp.ones(2)) == optax.EmptyState()
  np.testing.assert_array_equal(
    tx.update(jnp.ones(2), optax.EmptyState())[0], np.ones(2)
  )


def test_velocity_accumulates_scaled_updates():
  tx = oks.keras_momentum(0.5)
  state = tx.init(jnp.zeros(()))
  outs = []
  for u in [-1.0, -1.0, 0.0]:
    out, state = tx.update(jnp.float32(u), state)
    outs.append(float(out))
  assert outs == [-1.0, -1.5, -0.75]
  assert float(state.velocity) == -0.75


def test_nesterov_looks_ahead():
  tx = oks.keras_momentum(0.5, nesterov=True)
  state = tx.init(jnp.zeros(()))
  out, state = tx.update(jnp.float32(-1.0), state)
  assert float(out) == 0.5 * -1.0 + -1.0
  out, state = tx.update(jnp.float32(-1.0), state)
  assert float(state.velocity) == -1.5 and float(out) == 0.5 * -1.5 - 1.0


def test_learning_rate_inside_velocity_differs_from_optax_sgd():
  """Keras: v = m v - lr_t g. A learning-rate drop does not rescale old v."""
  schedule = lambda step: jnp.where(step < 1, 1.0, 0.1)  # noqa: E731
  ours = oks.sgd(schedule, momentum=0.9)
  theirs = optax.sgd(schedule, momentum=0.9)
  results = []
  for tx in (ours, theirs):
    w, state = jnp.float32(0.0), tx.init(jnp.float32(0.0))
    for _ in range(2):
      u, state = tx.update(jnp.float32(1.0), state, w)
      w = optax.apply_updates(w, u)
    results.append(float(w))
  np.testing.assert_allclose(results, [-1.0 - 1.0, -1.0 - 0.19], rtol=1e-6)
