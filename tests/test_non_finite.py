"""Non-finite gradients: Keras's NaN by default, or skipped steps on request."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_keras_sgd as oks
from optax_keras_sgd import SGD, Variable


def test_default_propagates_nan_like_keras():
  tx = oks.sgd(0.1, momentum=0.9, global_clipnorm=1.0)
  params = [jnp.ones(2), jnp.ones(3)]
  updates, _ = tx.update(
    [jnp.array([1.0, jnp.inf]), jnp.ones(3)], tx.init(params), params
  )
  assert all(np.all(np.isnan(u)) for u in updates)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_functional_skip_leaves_everything_bitwise_unchanged(bad):
  tx = oks.skip_non_finite(oks.sgd(0.1, momentum=0.9, nesterov=True))
  params = {"a": jnp.array([1.0, -0.0, 0.0]), "b": jnp.array(2.0)}
  state = tx.init(params)
  step = jax.jit(
    lambda p, g, s: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(g, s, p))
  )
  good = {"a": jnp.ones(3), "b": jnp.array(1.0)}
  params, state = step(params, good, state)
  before_params, before_state = params, state
  bad_grads = {"a": jnp.array([1.0, bad, 1.0]), "b": jnp.array(1.0)}
  params, state = step(params, bad_grads, state)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(before_params)):
    np.testing.assert_array_equal(a, b)
    assert np.array_equal(np.signbit(a), np.signbit(b))
  assert int(oks.iterations(state)) == 1
  np.testing.assert_array_equal(
    oks.velocity(state)["a"], oks.velocity(before_state)["a"]
  )
  assert int(oks.skipped_steps(state)) == 1
  params, state = step(params, good, state)
  assert int(oks.iterations(state)) == 2 and int(oks.skipped_steps(state)) == 1


def test_skip_matches_a_run_without_the_bad_step():
  rng = np.random.default_rng(0)
  grads = [jnp.asarray(rng.normal(size=4), jnp.float32) for _ in range(6)]
  with_bad = grads[:3] + [jnp.full(4, jnp.nan)] + grads[3:]
  results = []
  for seq, tx in [
    (grads, oks.sgd(0.1, momentum=0.9)),
    (with_bad, oks.skip_non_finite(oks.sgd(0.1, momentum=0.9))),
  ]:
    p, s = jnp.zeros(4), tx.init(jnp.zeros(4))
    for g in seq:
      u, s = tx.update(g, s, p)
      p = optax.apply_updates(p, u)
    results.append(np.asarray(p))
  np.testing.assert_array_equal(results[0], results[1])


def test_facade_skip_non_finite():
  w = Variable(jnp.array([1.0, 2.0]))
  opt = SGD(0.1, momentum=0.9, skip_non_finite=True)
  opt.apply_gradients([(jnp.ones(2), w)])
  before = w.numpy().copy(), [x.copy() for x in opt.get_weights()]
  opt.apply_gradients([(jnp.array([jnp.nan, 1.0]), w)])
  np.testing.assert_array_equal(w.numpy(), before[0])
  for a, b in zip(opt.get_weights(), before[1]):
    np.testing.assert_array_equal(a, b)
  assert opt.skipped_steps == 1 and int(opt.iterations) == 1
  assert opt.get_config()["skip_non_finite"] is True
  assert SGD.from_config(opt.get_config()).get_config() == opt.get_config()


def test_facade_default_keeps_keras_nan():
  w = Variable(jnp.array([1.0, 2.0]))
  opt = SGD(0.1)
  opt.apply_gradients([(jnp.array([jnp.nan, 1.0]), w)])
  assert np.isnan(w.numpy()[0]) and opt.skipped_steps == 0
  assert "skip_non_finite" not in opt.get_config()


def test_sparse_gradients_are_checked_too():
  tx = oks.skip_non_finite(oks.sgd(0.1))
  table = jnp.ones((4, 2))
  g = oks.IndexedSlices(jnp.array([[jnp.inf, 1.0]]), jnp.array([2]), (4, 2))
  u, state = tx.update(g, tx.init(table), table)
  np.testing.assert_array_equal(oks.apply_updates(table, u), table)
  assert int(oks.skipped_steps(state)) == 1
