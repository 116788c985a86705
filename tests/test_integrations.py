"""flax (nnx.Optimizer, TrainState), equinox and orbax with this package.

Each integration must give exactly what driving `sgd` directly gives (whose
numbers are checked against tf_keras elsewhere): these tests check the wiring.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import optional

import optax_keras_sgd as oks

eqx = optional("equinox")
ocp = optional("orbax.checkpoint")
nnx = optional("flax.nnx")
train_state = optional("flax.training.train_state")

pytestmark = pytest.mark.integrations

X = jnp.asarray(np.random.default_rng(0).normal(size=(16, 3)), jnp.float32)
Y = jnp.asarray(np.random.default_rng(1).normal(size=(16, 2)), jnp.float32)


def _direct(params, loss, tx, steps, state=None):
  """`steps` plain optax steps, jitted as the integrations' steps are: a
  model's own math rounds differently jitted and eagerly, and that is not
  ours to compare."""

  @jax.jit
  def step(params, state):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state

  state = tx.init(params) if state is None else state
  for _ in range(steps):
    params, state = step(params, state)
  return params, state


def _assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_flax_nnx_optimizer():
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  start = jax.tree.map(jnp.array, nnx.state(model, nnx.Param))  # a copy
  tx = oks.sgd(0.1, momentum=0.9, nesterov=True, clipnorm=1.0)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  def loss(model):
    return jnp.mean((model(X) - Y) ** 2)

  for _ in range(5):
    grads = nnx.grad(loss)(model)
    optimizer.update(model, grads)

  graphdef, _ = nnx.split(model)
  expected, _ = _direct(
    start, lambda p: jnp.mean((nnx.merge(graphdef, p)(X) - Y) ** 2), tx, 5
  )
  _assert_same(nnx.state(model, nnx.Param), expected)


def test_flax_train_state():
  module_params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
  apply_fn = lambda p, x: x @ p["w"] + p["b"]  # noqa: E731
  tx = oks.sgd(oks.schedules.ExponentialDecay(0.1, 2, 0.5), momentum=0.9)
  state = train_state.TrainState.create(apply_fn=apply_fn, params=module_params, tx=tx)
  loss = lambda p: jnp.mean((apply_fn(p, X) - Y) ** 2)  # noqa: E731
  step = jax.jit(lambda s: s.apply_gradients(grads=jax.grad(loss)(s.params)))
  for _ in range(4):
    state = step(state)
  expected, opt_state = _direct(module_params, loss, tx, 4)
  _assert_same(state.params, expected)
  assert int(oks.iterations(state.opt_state)) == 4 == int(state.step)


def test_equinox_filtered_model():
  model = eqx.nn.MLP(3, 2, width_size=8, depth=1, key=jax.random.PRNGKey(0))
  tx = oks.sgd(0.05, momentum=0.9)
  params, static = eqx.partition(model, eqx.is_inexact_array)
  opt_state = tx.init(params)

  @eqx.filter_jit
  def step(model, opt_state):
    grads = eqx.filter_grad(lambda m: jnp.mean((jax.vmap(m)(X) - Y) ** 2))(model)
    updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_array))
    return eqx.apply_updates(model, updates), opt_state

  for _ in range(5):
    model, opt_state = step(model, opt_state)
  expected, _ = _direct(
    params, lambda p: jnp.mean((jax.vmap(eqx.combine(p, static))(X) - Y) ** 2), tx, 5
  )
  _assert_same(eqx.filter(model, eqx.is_inexact_array), expected)


def test_orbax_resumes_functional_state_bit_identically(tmp_path):
  tx = oks.sgd(0.1, momentum=0.9, nesterov=True, decay=0.01)
  loss = lambda p: jnp.mean((X @ p["w"] - Y) ** 2)  # noqa: E731
  params = {"w": jnp.ones((3, 2))}
  straight, _ = _direct(params, loss, tx, 8)

  half, state = _direct(params, loss, tx, 4)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(tmp_path / "ckpt", {"params": half, "opt_state": state})
  checkpointer.wait_until_finished()
  target = {"params": half, "opt_state": tx.init(half)}
  restored = checkpointer.restore(tmp_path / "ckpt", target)
  params, state = restored["params"], restored["opt_state"]
  assert int(oks.iterations(state)) == 4
  params, _ = _direct(params, loss, tx, 4, state)
  _assert_same(params, straight)


def test_orbax_resumes_the_facade_bit_identically(tmp_path):
  def run(opt, w, steps):
    for _ in range(steps):
      opt.minimize(lambda: jnp.mean((X @ w - Y) ** 2), [w])

  w = oks.Variable(jnp.ones((3, 2)), name="w")
  opt = oks.SGD(0.1, momentum=0.9)
  run(opt, w, 8)
  straight = w.numpy()

  w = oks.Variable(jnp.ones((3, 2)), name="w")
  opt = oks.SGD(0.1, momentum=0.9)
  run(opt, w, 4)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(
    tmp_path / "facade", {"w": w.value(), "optimizer": opt.get_weights()}
  )
  checkpointer.wait_until_finished()
  restored = checkpointer.restore(
    tmp_path / "facade", {"w": w.value(), "optimizer": opt.get_weights()}
  )

  w2 = oks.Variable(restored["w"], name="w")
  opt2 = oks.SGD(0.1, momentum=0.9)
  opt2.build([w2])
  opt2.set_weights(restored["optimizer"])
  run(opt2, w2, 4)
  np.testing.assert_array_equal(w2.numpy(), straight)
