"""`FlatParams`: the same training as unflattened params, on a few buffers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_trajectories

import optax_keras_sgd as oks

CONFIGS = [
  dict(learning_rate=0.1, momentum=0.9, nesterov=True),
  dict(learning_rate=0.1, momentum=0.9, clipnorm=0.5),
  dict(learning_rate=0.1, global_clipnorm=0.5, clipvalue=0.3, decay=0.01),
]


def _tree(rng, half):
  tree = {
    "a": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
    "b": [jnp.asarray(rng.normal(size=(5,)), jnp.float32) for _ in range(4)],
    "c": jnp.asarray(rng.normal(size=()), jnp.float32),
  }
  if half:
    tree["h"] = jnp.asarray(rng.normal(size=(6,)), jnp.float16)
  return tree


def _loss(params, x):
  total = jnp.sum(jnp.tanh(params["a"] * x))
  total += sum(jnp.sum(b * b) for b in params["b"]) + params["c"] ** 2
  if "h" in params:
    total += jnp.sum(params["h"].astype(jnp.float32) ** 2)
  return total


# With a float16 tensor the step is XLA's on the CPU; without, the native
# kernel's, which must then clip each row of a buffer on its own.
# With `one_call`, the flat run's step is `update_and_apply`.
@pytest.mark.parametrize("one_call", [False, True], ids=["update", "update_and_apply"])
@pytest.mark.parametrize("half", [True, False], ids=["float16", "float32"])
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_flat_training_matches_tree_training(config, half, one_call):
  rng = np.random.default_rng(0)
  params = _tree(rng, half)
  xs = [jnp.asarray(rng.normal(size=(3, 4)), jnp.float32) for _ in range(6)]
  tx = oks.sgd(**config)

  def run(p, loss, one_call=False):
    state = tx.init(p)

    def step(p, s, x):
      g = jax.grad(loss)(p, x)
      if one_call:
        return oks.update_and_apply(tx, g, s, p)
      u, s = tx.update(g, s, p)
      return optax.apply_updates(p, u), s

    step = jax.jit(step, donate_argnums=(0, 1) if one_call else ())
    for x in xs:
      p, state = step(p, state, x)
    return p, state

  tree, _ = run(params, _loss)
  flat, state = run(
    oks.flatten(params), lambda f, x: _loss(f.unflatten(), x), one_call=one_call
  )
  # One (count, size) buffer per dtype and size: a; the four b; c; h.
  shapes = [(1, 12), (4, 5), (1, 1)] + ([(1, 6)] if half else [])
  assert [b.shape for b in flat.buffers] == shapes
  if config.get("momentum"):
    assert isinstance(oks.velocity(state), oks.FlatParams)  # the state is flat too
  else:
    assert oks.velocity(state) is None
  # Elementwise steps are bitwise the same; norm sums may be ordered otherwise.
  exact = "clipnorm" not in config and "global_clipnorm" not in config
  for a, b in zip(jax.tree.leaves(flat.unflatten()), jax.tree.leaves(tree)):
    assert a.dtype == b.dtype
    assert_trajectories(
      [[np.asarray(a, np.float64)]],
      [[np.asarray(b, np.float64)]],
      dtype=a.dtype,
      exact=exact,
    )


def test_flatten_roundtrip_and_errors():
  params = {"x": jnp.arange(6.0).reshape(2, 3), "y": jnp.ones(2, jnp.bfloat16)}
  flat = oks.flatten(params)
  back = flat.unflatten()
  for k in params:
    np.testing.assert_array_equal(
      np.asarray(back[k], np.float32), np.asarray(params[k], np.float32)
    )
    assert back[k].dtype == params[k].dtype
  with pytest.raises(ValueError, match="no arrays"):
    oks.flatten({})
