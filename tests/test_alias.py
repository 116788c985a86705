"""`sgd`: the seed's examples, the NumPy rule, jit, no recompilation, and
`update_and_apply`."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpy_rule
import optax
import pytest
from helpers import assert_trajectories, random_problem, run_sgd

import optax_keras_sgd as oks


def _minimize(tx, w, steps):
  state = tx.init(w)
  history = [w]
  for _ in range(steps):
    updates, state = tx.update(jax.grad(lambda w: w**2 / 2.0)(w), state, w)
    w = optax.apply_updates(w, updates)
    history.append(w)
  return history, state


def test_seed_example_plain():
  history, state = _minimize(oks.sgd(learning_rate=0.1), jnp.float32(1.0), 1)
  assert history[1] == np.float32(0.9)
  assert int(oks.iterations(state)) == 1


def test_seed_example_momentum():
  history, _ = _minimize(oks.sgd(learning_rate=0.1, momentum=0.9), jnp.float32(1.0), 2)
  assert history[0] - history[1] == np.float32(0.100000024)
  assert np.float32(history[1] - history[2]) == np.float32(0.18)


def test_spec_nesterov_numbers():
  history, _ = _minimize(
    oks.sgd(learning_rate=0.1, momentum=0.9, nesterov=True), jnp.float32(1.0), 3
  )
  np.testing.assert_array_equal(
    np.array(history[1:]), np.float32([0.81, 0.5751, 0.327321])
  )


OPTIONS = {
  "momentum": [0.0, 0.9],
  "nesterov": [False, True],
  "clipvalue": [None, 0.4],
  "clip": [None, ("clipnorm", 0.8), ("global_clipnorm", 1.1)],
  "decay": [0.0, 0.05],
}


def _configs():
  for momentum, nesterov, clipvalue, clip, decay in itertools.product(
    *OPTIONS.values()
  ):
    config = dict(
      learning_rate=0.07,
      momentum=momentum,
      nesterov=nesterov,
      clipvalue=clipvalue,
      decay=decay,
    )
    if clip:
      config[clip[0]] = clip[1]
    yield config


@pytest.mark.parametrize("config", list(_configs()), ids=str)
def test_matches_numpy_rule_over_every_option(config):
  rng = np.random.default_rng(0)
  shapes = [(5,), (3, 4), ()]
  params, grads = random_problem(rng, shapes, 12)
  params = [np.asarray(p, np.float32) for p in params]
  grads = [[np.asarray(g, np.float32) for g in gs] for gs in grads]
  expected = numpy_rule.run(params, grads, **config)
  ours = run_sgd(params, grads, **config)
  exact = config.get("clipnorm") is None and config.get("global_clipnorm") is None
  assert_trajectories(ours, expected, exact=exact)


def test_schedule_reads_step_before_update():
  schedule = lambda step: 0.1 * (step + 1)  # noqa: E731
  params, grads = [np.zeros(())], [[np.ones(())] for _ in range(4)]
  ours = run_sgd(params, grads, jit=False, learning_rate=schedule)
  expected = numpy_rule.run(
    [np.float32(0)], [[np.float32(1)]] * 4, learning_rate=schedule
  )
  assert_trajectories(ours, expected)


def test_works_on_nested_pytrees():
  params = {
    "dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)},
    "scale": jnp.float32(2.0),
  }
  grads = jax.tree.map(jnp.ones_like, params)
  tx = oks.sgd(0.5, momentum=0.5)
  updates, state = tx.update(grads, tx.init(params), params)
  assert jax.tree.structure(updates) == jax.tree.structure(params)
  np.testing.assert_array_equal(updates["dense"]["kernel"], -0.5 * np.ones((2, 3)))
  assert jax.tree.structure(oks.velocity(state)) == jax.tree.structure(params)


def test_second_jitted_call_does_not_recompile():
  tx = oks.sgd(0.1, momentum=0.9, clipnorm=1.0)
  params = [jnp.ones(3), jnp.ones((2, 2))]
  state = tx.init(params)

  @jax.jit
  def step(params, grads, state):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(3):
    params, state = step(params, params, state)
  assert step._cache_size() == 1


def test_inject_hyperparams_changes_do_not_recompile():
  tx = optax.inject_hyperparams(oks.sgd)(learning_rate=0.1, momentum=0.9, decay=0.01)
  params = jnp.ones(4)
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    updates, state = tx.update(params, state, params)
    return optax.apply_updates(params, updates), state

  for lr in [0.1, 0.2, 0.05]:
    state.hyperparams["learning_rate"] = jnp.asarray(lr)
    state.hyperparams["momentum"] = jnp.asarray(lr * 2)
    params, state = step(params, state)
  assert step._cache_size() == 1
  assert int(oks.iterations(state)) == 3


def test_momentum_zero_keeps_no_velocity_but_an_array_does():
  assert oks.velocity(oks.sgd(0.1).init(jnp.ones(2))) is None
  assert oks.velocity(oks.sgd(0.1, momentum=0.0).init(jnp.ones(2))) is None
  v = oks.velocity(oks.sgd(0.1, momentum=jnp.float32(0.0)).init(jnp.ones(2)))
  np.testing.assert_array_equal(v, np.zeros(2))


def test_state_dtypes_follow_params():
  params = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.ones(2, jnp.float16)}
  tx = oks.sgd(0.1, momentum=0.9)
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, state = jax.jit(tx.update)(grads, state, params)
  for tree in (updates, oks.velocity(state)):
    assert tree["a"].dtype == jnp.bfloat16 and tree["b"].dtype == jnp.float16
  assert oks.iterations(state).dtype == jnp.int32


def test_iterations_requires_an_sgd_state():
  with pytest.raises(ValueError, match="KerasLearningRateState"):
    oks.iterations(optax.EmptyState())


# `update_and_apply`: its parity with the reference is in test_parity_core.py
# and test_sparse.py, its single pass over memory in test_native.py.


@pytest.mark.parametrize(
  "way", ["eager", "jit", "jit, not donated", "not in place", "chained", "injected"]
)
def test_update_and_apply_gives_the_rule_numbers(way):
  """Every way in: in one pass (eager, jitted with or without donation),
  with `in_place=False`, and through transformations that wrap `sgd` (an
  update, then `apply_updates`). Parameters the caller still holds are
  left as they were."""
  config = dict(learning_rate=0.1, momentum=0.9, nesterov=True, clipnorm=2.0)
  params, grads = random_problem(np.random.default_rng(3), [(5,), (3, 4)], 4)
  tx = oks.sgd(**config)
  if way == "chained":
    tx = optax.chain(tx)
  elif way == "injected":
    tx = optax.inject_hyperparams(oks.sgd)(**config)
  step = functools.partial(oks.update_and_apply, tx, in_place=way != "not in place")
  if way == "jit":
    step = jax.jit(step, donate_argnums=(2,))
  elif way != "eager":
    step = jax.jit(step)
  p = [jnp.asarray(x) for x in params]
  state = tx.init(p)
  ours = []
  for g in grads:
    held = [np.asarray(x) for x in p]
    new_p, state = step([jnp.asarray(x) for x in g], state, p)
    if way != "jit":  # donated there
      for x, before in zip(p, held):
        np.testing.assert_array_equal(np.asarray(x), before)
    p = new_p
    ours.append([np.asarray(x) for x in p])
  assert_trajectories(ours, numpy_rule.run(params, grads, **config), exact=False)
  assert int(oks.iterations(state)) == len(grads)


@pytest.mark.parametrize(
  "tx", [oks.SGD(0.1), oks.sgd, None], ids=["the facade", "the factory", "None"]
)
def test_update_and_apply_wants_a_transformation(tx):
  with pytest.raises(TypeError, match=r"`tx` must be an optax.GradientTransformation"):
    oks.update_and_apply(tx, jnp.ones(2), (), jnp.ones(2))
