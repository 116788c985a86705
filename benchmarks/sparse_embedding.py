"""Sparse vs dense SGD step on an embedding table, timed interleaved.

A 1,000,000 x 64 float32 table (256 MB), 4,096 rows touched per step, Keras
SGD with momentum 0.9: lazy sparse momentum on an `IndexedSlices` gradient
against the dense update of the whole table from the equivalent dense
gradient. Both are `tx.update` then `apply_updates`, jitted with the table
and the state donated, and again as `update_and_apply` (one pass over the
rows, or over the table). In each round both run a block of steps in a
shuffled order (timing.py); prints the median ms/step over rounds, the
median over rounds of the within-round speed-up, and the compiled
programs' temporary memory (a dense gradient would show up there).
`run.py` includes the same table.

Usage: python benchmarks/sparse_embedding.py [--rows N] [--dim D] [--touched K]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from timing import interleaved_ms, median_ratio  # noqa: E402

import optax_keras_sgd as oks  # noqa: E402


def contenders(rows=1_000_000, dim=64, touched=4096):
  """`({name: run}, {name: temporary bytes})` for "sparse" and "dense": each
  run does one donated step on its own table and state."""
  tx = oks.sgd(0.1, momentum=0.9)
  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(0, rows, touched), jnp.int32)
  values = jnp.asarray(rng.normal(size=(touched, dim)), jnp.float32)
  sparse_grad = oks.IndexedSlices(values, ids, (rows, dim))

  def step(table, grad, state):
    u, state = tx.update(grad, state, table)
    return oks.apply_updates(table, u), state

  def one_call(table, grad, state):
    return oks.update_and_apply(tx, grad, state, table)

  dense_grad = sparse_grad.to_dense()
  runs, temporaries = {}, {}
  for name, grad, fn in (
    ("sparse", sparse_grad, step),
    ("dense", dense_grad, step),
    ("sparse, update_and_apply", sparse_grad, one_call),
    ("dense, update_and_apply", dense_grad, one_call),
  ):
    table = jnp.zeros((rows, dim), jnp.float32)
    compiled = jax.jit(fn, donate_argnums=(0, 2)).lower(table, grad, tx.init(table))
    compiled = compiled.compile()
    memory = compiled.memory_analysis()
    temporaries[name] = None if memory is None else memory.temp_size_in_bytes
    carry = [table, tx.init(table)]

    def run(compiled=compiled, grad=grad, carry=carry):
      carry[0], carry[1] = compiled(carry[0], grad, carry[1])
      jax.block_until_ready(carry[0])

    runs[name] = run
  return runs, temporaries


def table(rows=1_000_000, dim=64, touched=4096, rounds=7) -> str:
  """The interleaved comparison, as Markdown."""
  runs, temporaries = contenders(rows, dim, touched)
  times = interleaved_ms(runs, rounds=rounds, steps=10, warmup=3)
  mb = 1 / 2**20
  out = [
    f"| {rows:,} x {dim} float32 table ({rows * dim * 4 * mb:.0f} MB), "
    f"{touched:,} rows, momentum 0.9 | ms/step | temporaries (MB) |",
    "|---|---|---|",
  ]
  for name in runs:
    temp = temporaries[name]
    temp_text = "n/a" if temp is None else f"{temp * mb:.2f}"
    out.append(f"| {name} | {statistics.median(times[name]):.3f} | {temp_text} |")
  for suffix, way in (
    ("", "an update and `apply_updates`"),
    (", update_and_apply", "`update_and_apply`"),
  ):
    speed_up = median_ratio(times["dense" + suffix], times["sparse" + suffix])
    out.append(
      f"\nSparse speed-up over dense with {way} (median of {rounds} rounds): "
      f"{speed_up:.0f}x"
    )
  return "\n".join(out) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", type=int, default=1_000_000)
  parser.add_argument("--dim", type=int, default=64)
  parser.add_argument("--touched", type=int, default=4096)
  parser.add_argument("--rounds", type=int, default=7)
  a = parser.parse_args()
  print(f"device: {jax.devices()[0].device_kind}, CPU threads: {os.cpu_count()}")
  print(f"native kernel: {oks.native_status().available}")
  print(table(a.rows, a.dim, a.touched, a.rounds))


if __name__ == "__main__":
  main()
