"""Sparse vs dense SGD step on an embedding table, timed in one run.

A 1,000,000 x 64 float32 table (256 MB), 4,096 rows touched per step, Keras
SGD with momentum 0.9 (lazy sparse momentum vs a dense update of the whole
table). Both steps are jitted with the table and velocity donated. Prints
median ms/step over repeated steps after warm-up, the speed-up, and the
compiled programs' temporary memory (a dense gradient would show up there).

Usage: python benchmarks/sparse_embedding.py [--rows N] [--dim D] [--touched K]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import optax_keras_sgd as oks


def timed(fn, args_fn, repeats):
  times = []
  args = args_fn(None)
  for i in range(repeats + 3):
    start = time.perf_counter()
    out = fn(*args)
    jax.block_until_ready(out)
    if i >= 3:
      times.append(time.perf_counter() - start)
    args = args_fn(out)
  return statistics.median(times) * 1e3


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=1_000_000)
  parser.add_argument("--dim", type=int, default=64)
  parser.add_argument("--touched", type=int, default=4096)
  parser.add_argument("--repeats", type=int, default=20)
  a = parser.parse_args()

  tx = oks.sgd(0.1, momentum=0.9)
  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(0, a.rows, a.touched), jnp.int32)
  values = jnp.asarray(rng.normal(size=(a.touched, a.dim)), jnp.float32)
  sparse_grad = oks.IndexedSlices(values, ids, (a.rows, a.dim))

  def step(table, grad, state):
    u, state = tx.update(grad, state, table)
    return oks.apply_updates(table, u), state

  sparse_step = jax.jit(step, donate_argnums=(0, 2))
  dense_step = jax.jit(step, donate_argnums=(0, 2))

  def fresh():
    table = jnp.zeros((a.rows, a.dim), jnp.float32)
    return table, tx.init(table)

  table, state = fresh()
  sparse_mem = sparse_step.lower(table, sparse_grad, state).compile().memory_analysis()
  sparse_ms = timed(
    sparse_step,
    lambda out: (
      (out[0], sparse_grad, out[1]) if out else (*fresh()[:1], sparse_grad, fresh()[1])
    ),
    a.repeats,
  )

  # The dense equivalent: a dense gradient of the whole table each step.
  dense_grad = sparse_grad.to_dense()
  table, state = fresh()
  dense_mem = dense_step.lower(table, dense_grad, state).compile().memory_analysis()
  dense_ms = timed(
    dense_step,
    lambda out: (
      (out[0], dense_grad, out[1]) if out else (*fresh()[:1], dense_grad, fresh()[1])
    ),
    a.repeats,
  )

  mb = 1 / 2**20
  print(f"device: {jax.devices()[0].device_kind}, CPU threads: {os.cpu_count()}")
  print(
    f"table {a.rows} x {a.dim} float32 ({a.rows * a.dim * 4 * mb:.0f} MB), "
    f"{a.touched} rows touched, momentum 0.9"
  )
  print("| step | ms/step | temporaries (MB) |\n|---|---|---|")
  print(
    f"| sparse (IndexedSlices) | {sparse_ms:.3f} | "
    f"{sparse_mem.temp_size_in_bytes * mb:.2f} |"
  )
  print(f"| dense | {dense_ms:.3f} | {dense_mem.temp_size_in_bytes * mb:.2f} |")
  print(f"speed-up: {dense_ms / sparse_ms:.0f}x")


if __name__ == "__main__":
  main()
