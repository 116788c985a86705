"""`scale_by_keras_learning_rate`: decay, schedules, the step counter, dtypes."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
from helpers import enable_x64

import optax_keras_sgd as oks


def _updates(tx, grads, steps):
  state = tx.init(grads)
  out = []
  for _ in range(steps):
    u, state = tx.update(grads, state)
    out.append(u)
  return out, state


def test_legacy_decay_hand_numbers():
  # lr_t = 0.1 / (1 + 0.5 t) for t = 0, 1, 2, 3
  tx = oks.scale_by_keras_learning_rate(0.1, decay=0.5)
  out, state = _updates(tx, jnp.float32(1.0), 4)
  lr, decay = np.float32(0.1), np.float32(0.5)
  expected = [-(lr / (np.float32(1) + decay * np.float32(t))) for t in range(4)]
  np.testing.assert_array_equal(np.array(out), np.array(expected, np.float32))
  assert int(state.count) == 4


def test_optax_schedule_is_called_with_count_before_update():
  schedule = optax.linear_schedule(1.0, 0.0, 4)
  out, _ = _updates(oks.scale_by_keras_learning_rate(schedule), jnp.float32(1.0), 5)
  np.testing.assert_allclose(np.array(out), [-1.0, -0.75, -0.5, -0.25, 0.0])


def test_each_dtype_gets_its_own_rate():
  grads = {"h": jnp.ones((), jnp.float16), "f": jnp.ones((), jnp.float32)}
  tx = oks.scale_by_keras_learning_rate(0.1)
  out = tx.update(grads, tx.init(grads))[0]
  assert out["h"].dtype == jnp.float16 and out["f"].dtype == jnp.float32
  assert out["h"] == -jnp.float16(np.float32(0.1))
  assert out["f"] == -np.float32(0.1)


def test_float64_rate_passes_through_float32():
  with enable_x64(True):
    tx = oks.scale_by_keras_learning_rate(0.1)
    out = tx.update(jnp.ones((), jnp.float64), tx.init(None))[0]
    assert float(out) == -float(np.float32(0.1))
    assert float(out) != -0.1


def test_counter_saturates_instead_of_overflowing():
  tx = oks.scale_by_keras_learning_rate(0.1)
  state = oks.KerasLearningRateState(count=jnp.asarray(np.iinfo(np.int32).max))
  _, state = tx.update(jnp.ones(()), state)
  assert int(state.count) == np.iinfo(np.int32).max
