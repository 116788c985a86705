"""One of two processes in test_multi_device's `jax.distributed` run.

Usage: python multiprocess_worker.py PROCESS_ID PORT OUT.npy

Both processes join through a coordinator on 127.0.0.1:PORT, build a mesh of
the two processes' CPU devices, and train a linear model data-parallel for
five steps with `sgd(..., axis_name="data")` inside `shard_map`: each process
holds half of the batch, and gradients are summed across processes (gloo)
before clipping. Process 0 saves the final weights.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import optax_keras_sgd as oks

# clipnorm large enough not to engage, so a wrongly scaled sum would show.
CONFIG = dict(learning_rate=0.1, momentum=0.9, nesterov=True, clipnorm=100.0)
STEPS = 5


def data():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(32, 8)).astype(np.float32)
  y = rng.normal(size=(32, 4)).astype(np.float32)
  w = rng.normal(size=(8, 4)).astype(np.float32)
  return x, y, w


def loss(w, x, y):
  return jnp.sum((x @ w - y) ** 2) / 32.0


def data_parallel_step(tx, mesh, check_vma: bool = True):
  """One jitted step inside `shard_map`: each replica differentiates `loss` on
  its part of the batch and `tx` (made with `axis_name="data"`) sums."""

  def local_step(w, state, xb, yb):
    u, state = tx.update(jax.grad(loss)(w, xb, yb), state, w)
    return optax.apply_updates(w, u), state

  return jax.jit(
    jax.shard_map(
      local_step,
      mesh=mesh,
      in_specs=(P(), P(), P("data"), P("data")),
      out_specs=(P(), P()),
      check_vma=check_vma,
    )
  )


def main(process_id: int, port: int, out: str) -> None:
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    coordinator_address=f"127.0.0.1:{port}",
    num_processes=2,
    process_id=process_id,
    initialization_timeout=60,
  )
  assert jax.process_count() == 2 and jax.device_count() == 2
  mesh = jax.make_mesh((2,), ("data",))
  x, y, w0 = data()
  half = slice(16 * process_id, 16 * process_id + 16)
  batch = NamedSharding(mesh, P("data"))
  xs = jax.make_array_from_process_local_data(batch, x[half])
  ys = jax.make_array_from_process_local_data(batch, y[half])
  replicated = NamedSharding(mesh, P())

  tx = oks.sgd(**CONFIG, axis_name="data")
  step = data_parallel_step(tx, mesh)
  put = lambda a: jax.make_array_from_process_local_data(replicated, a)  # noqa: E731
  w = put(w0)
  state = jax.tree.map(lambda a: put(np.asarray(a)), tx.init(w0))
  for _ in range(STEPS):
    w, state = step(w, state, xs, ys)
  if process_id == 0:
    np.save(out, np.asarray(w.addressable_data(0)))
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
