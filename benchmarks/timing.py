"""Interleaved timing: every contender measured in every round."""

from __future__ import annotations

import functools
import random
import statistics
import time


def block_ms(run, steps=5, warmup=2):
  """The median ms/step of one block: `warmup` steps, then `steps` timed
  steps, each waited for (`run` does one step and waits for it)."""
  for _ in range(warmup):
    run()
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    run()
    times.append(time.perf_counter() - t)
  return statistics.median(times) * 1e3


def interleaved_blocks(blocks, rounds=7, pause=0.1, seed=0):
  """Per-round ms/step of each contender: `blocks[name]()` runs one block
  of its steps, wherever it runs, and returns its ms/step.

  In each round every contender runs a block after a brief idle pause, in
  a freshly shuffled order. A slow moment of the machine therefore lands on
  every contender in some round instead of on one contender's whole
  measurement, and ratios are taken within a round, where all contenders
  saw the same machine.
  """
  rng = random.Random(seed)
  per_round = {name: [] for name in blocks}
  for _ in range(rounds):
    order = list(blocks)
    rng.shuffle(order)
    for name in order:
      time.sleep(pause)  # let the previous library's thread pool go idle
      per_round[name].append(blocks[name]())
  return per_round


def interleaved_ms(runs, rounds=7, steps=5, warmup=2, pause=0.1, seed=0):
  """`interleaved_blocks` of contenders stepped in this process (`runs[name]()`
  does one step and waits for it)."""
  blocks = {
    name: functools.partial(block_ms, run, steps, warmup) for name, run in runs.items()
  }
  return interleaved_blocks(blocks, rounds, pause, seed)


def median_ratio(a, b):
  """The median over rounds of `a`'s time over `b`'s, each within a round."""
  return statistics.median(x / y for x, y in zip(a, b))
