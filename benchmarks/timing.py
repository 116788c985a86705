"""Interleaved timing: every contender measured in every round."""

from __future__ import annotations

import random
import statistics
import time


def interleaved_ms(runs, rounds=7, steps=5, warmup=2, pause=0.1, seed=0):
  """Per-round median ms/step of each run.

  In each round every contender runs a short block (`warmup` steps, then
  `steps` timed steps, each waited for) after a brief idle pause, in a
  freshly shuffled order. A slow moment of the machine therefore lands on
  every contender in some round instead of on one contender's whole
  measurement, and ratios are taken within a round, where all contenders
  saw the same machine.
  """
  rng = random.Random(seed)
  per_round = {name: [] for name in runs}
  for _ in range(rounds):
    order = list(runs)
    rng.shuffle(order)
    for name in order:
      time.sleep(pause)  # let the previous library's thread pool go idle
      run = runs[name]
      for _ in range(warmup):
        run()
      times = []
      for _ in range(steps):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
      per_round[name].append(statistics.median(times) * 1e3)
  return per_round


def median_ratio(a, b):
  """The median over rounds of `a`'s time over `b`'s, each within a round."""
  return statistics.median(x / y for x, y in zip(a, b))
