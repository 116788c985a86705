"""Properties over random configurations (hypothesis)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpy_rule
import optax
from helpers import assert_trajectories, run_sgd
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import optax_keras_sgd as oks

# TensorFlow and XLA both flush subnormals to zero on CPU, NumPy does not
# (test_parity_core covers that case against the reference); keep the NumPy
# statement's inputs and products away from the subnormal range.
floats = st.floats(-10, 10, allow_nan=False, width=32).filter(
  lambda x: x == 0 or abs(x) >= 1e-10
)
shapes = st.lists(
  hnp.array_shapes(min_dims=0, max_dims=2, max_side=4), min_size=1, max_size=3
)


@st.composite
def configs(draw):
  config = dict(
    learning_rate=draw(
      st.floats(-1, 1, allow_nan=False).filter(lambda x: x == 0 or abs(x) >= 1e-6)
    ),
    momentum=draw(st.sampled_from([0.0, 0.5, 0.9, 1.0])),
    nesterov=draw(st.booleans()),
    decay=draw(st.sampled_from([0.0, 0.01, 0.5])),
  )
  if draw(st.booleans()):
    config["clipvalue"] = draw(st.floats(0.01, 5))
  return config


@st.composite
def problems(draw, steps=6):
  ss = draw(shapes)
  params = [draw(hnp.arrays(np.float32, s, elements=floats)) for s in ss]
  grads = [
    [draw(hnp.arrays(np.float32, s, elements=floats)) for s in ss] for _ in range(steps)
  ]
  return params, grads


@settings(max_examples=40, deadline=None)
@given(configs(), problems())
def test_matches_numpy_rule_bitwise(config, problem):
  params, grads = problem
  expected = numpy_rule.run(params, grads, **config)
  assert_trajectories(run_sgd(params, grads, **config), expected)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.001, 10), problems(steps=1))
def test_clipped_norm_is_at_most_clipnorm(clipnorm, problem):
  _, (grads,) = problem
  tx = oks.clip_by_norm(clipnorm)
  out = tx.update([jnp.asarray(g) for g in grads], tx.init(None))[0]
  for g in out:
    assert float(jnp.linalg.norm(g.ravel())) <= clipnorm * (1 + 1e-5)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.001, 10), problems(steps=1))
def test_clipped_global_norm_is_at_most_global_clipnorm(c, problem):
  _, (grads,) = problem
  grads = [jnp.asarray(g) for g in grads]
  if float(oks.global_norm(grads)) == 0:
    return
  tx = oks.clip_by_global_norm(c)
  out = tx.update(grads, tx.init(None))[0]
  assert float(oks.global_norm(out)) <= c * (1 + 1e-5)


@settings(max_examples=30, deadline=None)
@given(configs(), problems(steps=1))
def test_zero_gradients_and_zero_velocity_leave_params_unchanged(config, problem):
  params, _ = problem
  tx = oks.sgd(**config)
  p = [jnp.asarray(x) for x in params]
  updates, _ = tx.update([jnp.zeros_like(x) for x in p], tx.init(p), p)
  for a, b in zip(optax.apply_updates(p, updates), p):
    np.testing.assert_array_equal(a, b)


@settings(max_examples=20, deadline=None)
@given(configs(), problems())
def test_identical_runs_are_bitwise_identical(config, problem):
  params, grads = problem
  a = run_sgd(params, grads, **config)
  b = run_sgd(params, grads, **config)
  assert_trajectories(a, b)


def test_resume_functional_state_is_bitwise():
  rng = np.random.default_rng(0)
  tx = oks.sgd(
    oks.schedules.ExponentialDecay(0.1, 3, 0.5),
    momentum=0.9,
    nesterov=True,
    clipnorm=1.0,
    decay=0.01,
  )
  grads = [jnp.asarray(rng.normal(size=(3, 4)), jnp.float32) for _ in range(10)]
  step = jax.jit(
    lambda p, g, s: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(g, s, p))
  )
  p, s = jnp.ones((3, 4)), tx.init(jnp.ones((3, 4)))
  for g in grads:
    p, s = step(p, g, s)
  straight = np.asarray(p)

  p, s = jnp.ones((3, 4)), tx.init(jnp.ones((3, 4)))
  for g in grads[:4]:
    p, s = step(p, g, s)
  saved = jax.tree.map(np.asarray, (p, s))  # to host, as a checkpoint
  p, s = jax.tree.map(jnp.asarray, saved)
  for g in grads[4:]:
    p, s = step(p, g, s)
  np.testing.assert_array_equal(np.asarray(p), straight)


def test_resume_facade_from_get_weights_is_bitwise():
  rng = np.random.default_rng(1)
  grads = [
    [jnp.asarray(rng.normal(size=s), jnp.float32) for s in [(3,), (2, 2)]]
    for _ in range(8)
  ]

  def fresh():
    return [oks.Variable(jnp.ones(3)), oks.Variable(jnp.ones((2, 2)))], oks.SGD(
      0.05, momentum=0.9, decay=0.01
    )

  ws, opt = fresh()
  for g in grads:
    opt.apply_gradients(zip(g, ws))
  straight = [w.numpy() for w in ws]

  ws, opt = fresh()
  for g in grads[:5]:
    opt.apply_gradients(zip(g, ws))
  weights, values = opt.get_weights(), [w.numpy() for w in ws]
  ws2, opt2 = fresh()
  for w, v in zip(ws2, values):
    w.assign(v)
  opt2.build(ws2)
  opt2.set_weights(weights)
  for g in grads[5:]:
    opt2.apply_gradients(zip(g, ws2))
  for a, b in zip(ws2, straight):
    np.testing.assert_array_equal(a.numpy(), b)
