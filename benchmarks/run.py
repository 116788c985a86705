"""The benchmark suite: this package against its peers, in one process.

    python benchmarks/run.py            # everything (about 12 minutes on 2 cores)
    python benchmarks/run.py --quick    # momentum variants only, fewer steps

Times one SGD step per contender (see peers.py) on each workload (see
workloads.py) and variant: the median of consecutive steps after warm-up,
each waited for, in two passes of shuffled order (the better pass counts).
Prints ms/step, achieved GB/s (bytes that must move / time), the ratio to
the hand-written fused kernel, and each contender's time relative to ours.
Then compile time against leaf count, and the peak resident memory of a
256M-parameter momentum step with and without donation (each in a fresh
process). Timings belong here, never in tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers  # noqa: E402
import workloads  # noqa: E402

import optax_keras_sgd as oks  # noqa: E402


def block_ms(runs, passes=2, warmup=3, min_steps=5, max_steps=20, budget_s=1.0,
             seed=0):
  """Median ms/step of each run. Each contender is timed in a block of
  consecutive steps after a short idle pause (so the thread pools of the
  previous library stop spinning), in two passes of shuffled order; the
  better of its two medians is kept, so neither position nor a noisy moment
  decides a comparison."""
  rng = random.Random(seed)
  best = {name: float("inf") for name in runs}
  for _ in range(passes):
    order = list(runs)
    rng.shuffle(order)
    for name in order:
      time.sleep(0.3)
      run = runs[name]
      for _ in range(warmup):
        run()
      times = []
      start = time.perf_counter()
      while len(times) < max_steps and (len(times) < min_steps
                                        or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
      best[name] = min(best[name], statistics.median(times) * 1e3)
  return best


def step_table(args):
  rows = []
  for name, make_shapes in workloads.WORKLOADS.items():
    if args.workloads and name not in args.workloads:
      continue
    shapes = make_shapes()
    n = workloads.size(shapes)
    for variant in args.variants:
      runs = {peer: build(shapes, variant) for peer, build in peers.PEERS.items()}
      results = block_ms({k: r for k, r in runs.items() if r is not None},
                         max_steps=args.max_steps)
      del runs
      fused, ours = results["fused kernel"], results["ours (sgd)"]
      gb = n * peers.bytes_per_param(variant) / 1e9
      for peer, ms in results.items():
        rows.append((name, variant, peer, ms, gb / (ms / 1e3), ms / fused, ms / ours))
      print(f"  {name:18s} {variant:16s} " + "  ".join(
          f"{p}={ms:.2f}" for p, ms in results.items()), flush=True)
  return rows


def compile_times(counts=(10, 100, 1000, 5000)):
  """Seconds to trace and compile a step over `count` leaves of 64 floats:
  momentum, momentum with clipnorm, and momentum with clipnorm on FlatParams."""
  out = []
  for count in counts:
    row = []
    for clipnorm, flat in ((None, False), (1.0, False), (1.0, True)):
      params = [jnp.zeros((64,)) for _ in range(count)]
      params = oks.flatten(params) if flat else params
      tx = oks.sgd(0.01, momentum=0.9, clipnorm=clipnorm)

      def step(p, g, s):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

      state = tx.init(params)
      start = time.perf_counter()
      jax.jit(step, donate_argnums=(0, 2)).lower(params, params, state).compile()
      row.append(time.perf_counter() - start)
    out.append((count, *row))
  return out


def memory_probe(donate: bool) -> None:
  """Run in a fresh process: peak RSS of 256M-parameter momentum steps."""
  n = 256 * 2**20
  tx = oks.sgd(0.01, momentum=0.9)

  def step(p, g, s):
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  step = jax.jit(step, donate_argnums=(0, 2) if donate else ())
  params, grads = jnp.zeros(n), jnp.full(n, 0.01)
  state = tx.init(params)
  jax.block_until_ready((params, grads, state))
  for _ in range(3):
    params, state = step(params, grads, state)
    jax.block_until_ready(params)
  print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def peak_memory():
  out = {}
  for donate in (True, False):
    result = subprocess.run([sys.executable, __file__, "--memory-probe",
                             "donate" if donate else "copy"],
                            capture_output=True, text=True, check=True)
    out[donate] = int(result.stdout.strip().splitlines()[-1])
  return out


def main():
  parser = argparse.ArgumentParser(description="optax-keras-sgd benchmarks")
  parser.add_argument("--quick", action="store_true",
                      help="momentum variants only, fewer steps")
  parser.add_argument("--workloads", nargs="*", choices=list(workloads.WORKLOADS))
  parser.add_argument("--memory-probe", choices=["donate", "copy"],
                      help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.memory_probe:
    memory_probe(args.memory_probe == "donate")
    return
  args.variants = ["momentum"] if args.quick else list(peers.VARIANTS)
  args.max_steps = 10 if args.quick else 20

  torch_threads = ""
  try:
    import torch
    torch_threads = f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
  except ImportError:
    pass
  print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}, optax "
        f"{optax.__version__}{torch_threads}\n")

  # Memory first, in fresh processes, before this one fills up with peers.
  memory = peak_memory()
  rows = step_table(args)
  print("\n| workload | variant | contender | ms/step | GB/s | / fused kernel "
        "| / ours (sgd) |\n|---|---|---|---|---|---|---|")
  for name, variant, peer, ms, gbs, vs_fused, vs_ours in rows:
    print(f"| {name} | {variant} | {peer} | {ms:.3f} | {gbs:.1f} | "
          f"{vs_fused:.2f} | {vs_ours:.2f} |")

  print("\n| leaves | compile (s): momentum | + clipnorm | + clipnorm, FlatParams |"
        "\n|---|---|---|---|")
  for count, plain, clipped, flat in compile_times():
    print(f"| {count} | {plain:.2f} | {clipped:.2f} | {flat:.2f} |")

  floor = 3 * 256 * 2**20 * 4
  print("\n| 256M-param momentum step | peak RSS (GiB) "
        "| / (params + grads + velocity) |\n|---|---|---|")
  for donate, label in ((True, "donated"), (False, "not donated")):
    print(f"| {label} | {memory[donate] / 2**30:.2f} | {memory[donate] / floor:.2f} |")


if __name__ == "__main__":
  main()
