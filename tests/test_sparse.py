"""`IndexedSlices` gradients against the reference's `tf.IndexedSlices`."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference
from helpers import KernelPath, assert_trajectories, enable_x64, paths_for, run_sgd

import optax_keras_sgd as oks

pytestmark = pytest.mark.reference

TABLE = (10, 3)


def _sparse_steps(rng, steps=6, with_dense=False):
  out = []
  for _ in range(steps):
    n = int(rng.integers(1, 7))
    indices = rng.integers(0, TABLE[0], size=n)  # duplicates likely
    grads = [(rng.normal(size=(n, TABLE[1])), indices, TABLE)]
    if with_dense:
      grads.append(rng.normal(size=(4,)))
    out.append(grads)
  return out


CONFIGS = {
  "plain": dict(learning_rate=0.1),
  "momentum": dict(learning_rate=0.1, momentum=0.9),
  "nesterov": dict(learning_rate=0.1, momentum=0.9, nesterov=True),
  "clipvalue_decay": dict(learning_rate=0.1, momentum=0.5, clipvalue=0.4, decay=0.05),
}
NORM_CONFIGS = {
  "clipnorm": dict(learning_rate=0.1, momentum=0.9, clipnorm=0.8),
  "clipnorm_plain": dict(learning_rate=0.3, clipnorm=0.5),
  "global_clipnorm_mixed": dict(learning_rate=0.1, momentum=0.9, global_clipnorm=1.0),
}


# (dtype, path, one_call): `sgd`'s update and `apply_updates` on every path;
# `update_and_apply` where its one pass runs.
WAYS = [
  (dtype, path, False)
  for dtype, path in paths_for(["float16", "bfloat16", "float32", "float64"])
] + [("float32", "native", True), ("float64", "native", True)]


@pytest.mark.parametrize("mode", ["jit", "eager"])
@pytest.mark.parametrize("dtype, path, one_call", WAYS)
@pytest.mark.parametrize("name", sorted(CONFIGS) + sorted(NORM_CONFIGS))
def test_sparse_parity(name, dtype, path, one_call, mode, monkeypatch):
  """Bitwise without norm clipping; to rounding with it (sums are ordered
  differently by TensorFlow and XLA); jitted against `tf.function`, eager
  against eager. On the native path the row kernels (and the dense leaf's)
  must run; with `one_call` (`update_and_apply`), the dense leaf's as in the
  facade."""
  kernel = KernelPath(path, monkeypatch)
  exact = name in CONFIGS
  config = CONFIGS[name] if exact else NORM_CONFIGS[name]
  rng = np.random.default_rng(len(name))
  params = [rng.normal(size=TABLE), rng.normal(size=(4,))]
  steps = _sparse_steps(rng, with_dense=True)
  with enable_x64(dtype == "float64"):
    graph = mode == "jit"
    ref, _ = reference.run(params, steps, dtype, graph=graph, **config)
    ours = run_sgd(params, steps, dtype, jit=graph, one_call=one_call, **config)
  assert_trajectories(ours, ref, dtype, exact=exact)
  assert (kernel.calls > 0) == (path == "native")
  if one_call:
    kernel.check(config, facade=True, shapes=[(4,)])


def test_spec_lazy_momentum_numbers():
  steps = [[(np.ones((2, 2)), [0, 1], (4, 2))], [(np.ones((2, 2)), [0, 0], (4, 2))]]
  ref, tf_opt = reference.run([np.ones((4, 2))], steps, learning_rate=0.1, momentum=0.9)
  tx = oks.sgd(0.1, momentum=0.9)
  table = jnp.ones((4, 2))
  state = tx.init(table)
  for grads in steps:
    values, idx, shape = grads[0]
    u, state = tx.update(
      oks.IndexedSlices(jnp.asarray(values, jnp.float32), jnp.asarray(idx), shape),
      state,
      table,
    )
    table = oks.apply_updates(table, u)
  np.testing.assert_array_equal(table, ref[-1][0])
  np.testing.assert_allclose(table[:, 0], [0.61, 0.9, 1.0, 1.0], rtol=1e-6)
  np.testing.assert_allclose(
    oks.velocity(state)[:, 0], [-0.29, -0.1, 0.0, 0.0], rtol=1e-6
  )
  np.testing.assert_array_equal(oks.velocity(state), tf_opt.get_weights()[1])


def test_spec_clipnorm_sees_raw_values_before_duplicates_merge():
  steps = [[(np.array([[3.0, 4.0], [3.0, 4.0]]), [0, 0], (2, 2))]]
  ref, _ = reference.run([np.zeros((2, 2))], steps, learning_rate=1.0, clipnorm=1.0)
  ours = run_sgd([np.zeros((2, 2))], steps, learning_rate=1.0, clipnorm=1.0)
  np.testing.assert_allclose(ours[0][0][0], [-0.8485281, -1.1313709], rtol=1e-6)
  assert_trajectories(ours, ref, exact=False)


@pytest.mark.parametrize("path", ["native", "xla"])
def test_facade_with_sparse_gradients_matches_reference(path, monkeypatch):
  kernel = KernelPath(path, monkeypatch)
  rng = np.random.default_rng(5)
  table0 = rng.normal(size=TABLE).astype(np.float32)
  tf_table = reference.tf.Variable(table0)
  tf_opt = reference.tf_keras.optimizers.legacy.SGD(0.1, momentum=0.9, nesterov=True)
  table = oks.Variable(table0)
  opt = oks.SGD(0.1, momentum=0.9, nesterov=True)
  for step in _sparse_steps(rng, steps=5):
    values, idx, shape = step[0]
    tf_opt.apply_gradients([(reference.to_tf_grad(step[0], "float32"), tf_table)])
    opt.apply_gradients(
      [
        (
          oks.IndexedSlices(jnp.asarray(values, jnp.float32), jnp.asarray(idx), shape),
          table,
        )
      ]
    )
  np.testing.assert_array_equal(table.numpy(), tf_table.numpy())
  np.testing.assert_array_equal(opt.get_weights()[1], tf_opt.get_weights()[1])
  assert (kernel.calls > 0) == (path == "native")


def test_sparse_step_reads_and_writes_rows_only():
  """No dense gradient or dense update in the compiled step: the program's
  largest intermediate is the table itself (updated in place)."""
  rows, dim, touched = 4096, 8, 16
  tx = oks.sgd(0.1, momentum=0.9)
  table = jnp.zeros((rows, dim))
  state = tx.init(table)
  g = oks.IndexedSlices(jnp.ones((touched, dim)), jnp.arange(touched), (rows, dim))

  def step(table, g, state):
    u, state = tx.update(g, state, table)
    return oks.apply_updates(table, u), state

  compiled = jax.jit(step, donate_argnums=(0, 2)).lower(table, g, state).compile()
  hlo = compiled.as_text()
  assert "scatter" in hlo
  # Aliased in place: both table and velocity are outputs reusing inputs.
  assert hlo.count("input_output_alias") >= 1
  memory = compiled.memory_analysis()
  assert memory is not None, "no memory analysis for this backend"
  temp = memory.temp_size_in_bytes
  assert temp < rows * dim * 4, f"{temp} bytes of temporaries: a dense pass"


def test_update_and_apply_is_one_pass_over_the_rows(monkeypatch):
  """With the row kernels, `update_and_apply` sums the duplicates and then
  updates the velocity's and the table's rows in one call, where an update
  and `apply_updates` take a second pass (the scatter into the table)."""
  KernelPath("native", monkeypatch)
  rows, dim = 4096, 8
  tx = oks.sgd(0.1, momentum=0.9)
  table = jnp.zeros((rows, dim))
  g = oks.IndexedSlices(jnp.ones((16, dim)), jnp.arange(16), (rows, dim))

  def calls(step):
    hlo = jax.jit(step, donate_argnums=(0, 2)).lower(table, g, tx.init(table))
    text = hlo.compile().as_text()
    return sorted(re.findall(r'custom_call_target="optax_keras_sgd_(\w+)"', text))

  def two_calls(table, g, state):
    u, state = tx.update(g, state, table)
    return oks.apply_updates(table, u), state

  def one_call(table, g, state):
    return oks.update_and_apply(tx, g, state, table)

  assert calls(two_calls) == ["scatter_add", "sparse_step", "sum_duplicates"]
  assert calls(one_call) == ["sparse_step", "sum_duplicates"]


def test_embedding_gradient_helper():
  table = jnp.arange(12.0).reshape(6, 2)
  ids = jnp.array([[1, 3], [3, 5]])

  def loss(rows, target):
    return jnp.sum((rows.sum(axis=1) - target) ** 2)

  value, g = oks.embedding_gradient(loss, table, ids, jnp.ones(2))
  dense_value, dense = jax.value_and_grad(lambda t: loss(t[ids], jnp.ones(2)))(table)
  assert float(value) == float(dense_value)
  np.testing.assert_array_equal(g.to_dense(), dense)
  assert g.values.shape == (4, 2) and g.dense_shape == (6, 2)


def test_bad_indexed_slices():
  with pytest.raises(IndexError, match=r"must lie in \[0, 4\).*\[7\]"):
    oks.IndexedSlices(jnp.ones((2, 2)), jnp.array([1, 7]), (4, 2))
  with pytest.raises(TypeError, match="must be integers"):
    oks.IndexedSlices(jnp.ones((2, 2)), jnp.array([1.0, 2.0]), (4, 2))
  with pytest.raises(ValueError, match="must have shape"):
    oks.IndexedSlices(jnp.ones((2, 3)), jnp.array([1, 2]), (4, 2))
