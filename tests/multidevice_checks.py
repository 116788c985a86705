"""Multi-device checks, run by test_multi_device.py in a subprocess with
`XLA_FLAGS=--xla_force_host_platform_device_count=8` (8 simulated CPU devices),
so the main test session keeps its single device.

Each check compares against a single-device run of the same numbers.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import multiprocess_worker
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import optax_keras_sgd as oks

assert jax.device_count() == 8, jax.devices()


def _meshes():
  devices = np.array(jax.devices()).reshape(4, 2)
  yield Mesh(devices, ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
  yield Mesh(devices, ("data", "model"), axis_types=(AxisType.Auto,) * 2)


def _model(mesh):
  rng = np.random.default_rng(0)
  params = {
    "w": rng.normal(size=(8, 16)).astype(np.float32),
    "b": rng.normal(size=(16,)).astype(np.float32),
  }
  specs = {"w": P("data", "model"), "b": P("model")}
  sharded = {
    k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in params.items()
  }
  return params, sharded


def check_state_follows_param_sharding():
  for mesh in _meshes():
    host, params = _model(mesh)
    tx = oks.sgd(0.1, momentum=0.9, clipnorm=1.0)
    for source in (
      params,
      jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), params
      ),
    ):
      state = tx.init(source)
      for k in params:
        assert oks.velocity(state)[k].sharding == params[k].sharding, k
    step = jax.jit(
      lambda p, g, s: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(g, s, p))
    )
    state = tx.init(params)
    p = params
    for _ in range(3):
      p, state = step(p, p, state)
    for k in params:
      assert p[k].sharding == params[k].sharding, k
      assert oks.velocity(state)[k].sharding == params[k].sharding, k
    # Same numbers as one device.
    tx1 = oks.sgd(0.1, momentum=0.9, clipnorm=1.0)
    q, s1 = host, tx1.init(host)
    for _ in range(3):
      u, s1 = tx1.update(q, s1, q)
      q = optax.apply_updates(q, u)
    for k in params:
      np.testing.assert_allclose(np.asarray(p[k]), np.asarray(q[k]), rtol=1e-6)


# The same data and loss as the two-process run.
_data, _loss = multiprocess_worker.data, multiprocess_worker.loss


def _single_device(config, x, y, w0, steps):
  tx = oks.sgd(**config)
  w, s = w0, tx.init(w0)
  for _ in range(steps):
    u, s = tx.update(jax.grad(_loss)(w, x, y), s, w)
    w = optax.apply_updates(w, u)
  return np.asarray(w)


def check_shard_map_sums_replica_gradients_once():
  """No clipping here, so a gradient summed twice (or not at all) shows."""
  x, y, w0 = _data()
  mesh = jax.make_mesh((8,), ("data",))
  put = lambda a, spec: jax.device_put(a, NamedSharding(mesh, spec))  # noqa: E731
  config = dict(learning_rate=0.1, momentum=0.9, nesterov=True)
  expected = _single_device(config, x, y, w0, 4)
  for check_vma in (True, False):
    tx = oks.sgd(**config, axis_name="data")
    step = multiprocess_worker.data_parallel_step(tx, mesh, check_vma)
    w, state = put(w0, P()), jax.tree.map(lambda a: put(a, P()), tx.init(w0))
    for _ in range(4):
      w, state = step(w, state, put(x, P("data")), put(y, P("data")))
    np.testing.assert_allclose(
      np.asarray(w), expected, rtol=2e-6, atol=1e-7, err_msg=f"check_vma={check_vma}"
    )


def check_shard_map_aggregates_before_clipping():
  x, y, w0 = _data()
  mesh = jax.make_mesh((8,), ("data",))
  config = dict(learning_rate=0.1, momentum=0.9, nesterov=True, clipnorm=0.01)
  tx = oks.sgd(**config, axis_name="data")  # psum, then clip, then step
  step = multiprocess_worker.data_parallel_step(tx, mesh)
  put = lambda a, spec: jax.device_put(a, NamedSharding(mesh, spec))  # noqa: E731
  xs, ys = put(x, P("data")), put(y, P("data"))
  w, state = put(w0, P()), jax.tree.map(lambda a: put(a, P()), tx.init(w0))
  for _ in range(4):
    w, state = step(w, state, xs, ys)

  single = oks.sgd(**config)
  v, s = w0, single.init(w0)
  for _ in range(4):
    u, s = single.update(jax.grad(_loss)(v, x, y), s, v)
    v = optax.apply_updates(v, u)
  np.testing.assert_allclose(np.asarray(w), np.asarray(v), rtol=2e-6, atol=1e-7)

  # Clipping saw the summed gradient: one step equals "sum, then clip", and
  # differs from "clip each replica's gradient, then sum".
  w1, _ = step(put(w0, P()), jax.tree.map(lambda a: put(a, P()), tx.init(w0)), xs, ys)
  local = [
    jax.grad(_loss)(w0, x[4 * i : 4 * i + 4], y[4 * i : 4 * i + 4]) for i in range(8)
  ]
  no_clip = oks.sgd(0.1, momentum=0.9, nesterov=True)
  clip = lambda g: oks.clip_by_norm(0.01).update(g, None)[0]  # noqa: E731
  sum_then_clip = optax.apply_updates(
    w0, no_clip.update(clip(sum(local)), no_clip.init(w0))[0]
  )
  clip_then_sum = optax.apply_updates(
    w0, no_clip.update(sum(clip(g) for g in local), no_clip.init(w0))[0]
  )
  np.testing.assert_allclose(np.asarray(w1), np.asarray(sum_then_clip), rtol=2e-6)
  assert not np.allclose(np.asarray(w1), np.asarray(clip_then_sum), rtol=1e-3)


def check_sparse_aggregation_concatenates_slices():
  mesh = jax.make_mesh((8,), ("data",))
  tx = oks.sgd(0.1, momentum=0.9, axis_name="data")
  table = jnp.ones((16, 2))
  ids = jnp.arange(16) % 5  # duplicates across replicas

  def local(table, state, ids):
    _, g = oks.embedding_gradient(lambda rows: rows.sum(), table, ids)
    u, state = tx.update(g, state, table)
    return oks.apply_updates(table, u), state

  step = jax.jit(
    jax.shard_map(
      local, mesh=mesh, in_specs=(P(), P(), P("data")), out_specs=(P(), P())
    )
  )
  put = lambda a, spec: jax.device_put(a, NamedSharding(mesh, spec))  # noqa: E731
  out, _ = step(
    put(table, P()),
    jax.tree.map(lambda a: put(a, P()), tx.init(table)),
    put(ids, P("data")),
  )
  counts = np.bincount(np.asarray(ids), minlength=16)
  np.testing.assert_allclose(np.asarray(out[:, 0]), 1 - 0.1 * counts, rtol=1e-6)


def check_facade_on_sharded_variables():
  x, y, w0 = _data()
  ref = oks.Variable(w0)
  ref_opt = oks.SGD(0.1, momentum=0.9, global_clipnorm=1.0)
  for _ in range(4):
    ref_opt.minimize(lambda: _loss(ref, x, y), [ref])

  devices = np.array(jax.devices())
  for axis_type in (AxisType.Explicit, AxisType.Auto):
    mesh = Mesh(devices, ("data",), axis_types=(axis_type,))
    with jax.set_mesh(mesh):
      xs = jax.device_put(x, NamedSharding(mesh, P("data")))
      ys = jax.device_put(y, NamedSharding(mesh, P("data")))
      w = oks.Variable(jax.device_put(w0, NamedSharding(mesh, P())), name="w")
      opt = oks.SGD(0.1, momentum=0.9, global_clipnorm=1.0)
      for _ in range(4):
        opt.minimize(lambda: _loss(w, xs, ys), [w])
    assert w.value().sharding.is_equivalent_to(NamedSharding(mesh, P()), 2)
    slot = opt.get_slot(w, "momentum").value()
    assert slot.sharding.is_equivalent_to(NamedSharding(mesh, P()), 2)
    np.testing.assert_allclose(w.numpy(), ref.numpy(), rtol=2e-6, atol=1e-7)


CHECKS = [
  check_state_follows_param_sharding,
  check_shard_map_sums_replica_gradients_once,
  check_shard_map_aggregates_before_clipping,
  check_sparse_aggregation_concatenates_slices,
  check_facade_on_sharded_variables,
]

if __name__ == "__main__":
  import multidevice_checks_names

  assert [c.__name__ for c in CHECKS] == multidevice_checks_names.CHECKS
  names = sys.argv[1:] or [c.__name__ for c in CHECKS]
  for check in CHECKS:
    if check.__name__ in names:
      check()
      print("PASSED", check.__name__, flush=True)
