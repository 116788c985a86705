"""The benchmark suite: this package against its peers.

    python benchmarks/run.py            # everything (about 45 minutes on 2 cores)
    python benchmarks/run.py --quick    # momentum variants only, fewer rounds
    python benchmarks/run.py --write    # also write RESULTS.md and the README table
    python benchmarks/run.py --workloads ResNet-50-like --variants momentum

Times one SGD step per contender (see peers.py) on each workload (see
workloads.py) and variant, interleaved: in each of several rounds every
contender runs a short block of steps (each waited for) in a shuffled
order. Each contender runs in a process of its own, and each workload in
several fresh sets of them, whose rounds are pooled (see `step_table`).
Prints the median over rounds of ms/step, achieved GB/s (bytes that must
move / time), and the median over rounds of each contender's time
relative to the hand-written fused kernel and to ours, each ratio taken
within one round.
Then compile time against leaf count, the peak memory of a
256M-parameter momentum step with and without donation, each in a fresh
process (resident memory on the CPU, the device's peak allocation on an
accelerator), and the sparse embedding step against the dense one
(sparse_embedding.py). Timings belong here, never in tests.

On a GPU every contender runs there: torch on CUDA and TensorFlow on its GPU
when they can, left out when they cannot. JAX allocates GPU memory as it
goes (no preallocation), so the three libraries share the device.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from unittest import mock

# Before JAX starts: on a GPU, share its memory with torch and TensorFlow.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers  # noqa: E402
import sparse_embedding  # noqa: E402
import workloads  # noqa: E402
from timing import block_ms, interleaved_blocks, median_ratio  # noqa: E402

import optax_keras_sgd as oks  # noqa: E402
from optax_keras_sgd import _native  # noqa: E402


def serve_contender(name: str, peer: str) -> None:
  """A contender's own process (a child of `workload_times`): reads commands
  on stdin and answers each with one line on stdout. `build VARIANT` builds
  `peer` on workload `name` for that variant (dropping the last one's
  arrays first) and answers `ready`, or `none` where the contender does not
  run; `block` runs one block of steps and answers its ms/step."""
  answers, sys.stdout = sys.stdout, sys.stderr  # a stray print must not answer
  shapes = workloads.WORKLOADS[name]()
  run = None
  for line in sys.stdin:
    command, _, variant = line.strip().partition(" ")
    if command == "build":
      run = None
      run = peers.PEERS[peer](shapes, variant)
      answer = "none" if run is None else "ready"
    elif command == "block" and run is not None:
      answer = json.dumps(block_ms(run))
    else:
      raise ValueError(f"unexpected command for {peer!r}: {line.strip()!r}")
    print(answer, file=answers, flush=True)


class _Contender:
  """A contender's process (`serve_contender`), spoken to line by line."""

  def __init__(self, name: str, peer: str):
    self.peer = peer
    command = [sys.executable, __file__, "--serve", peer, "--workload", name]
    self.process = subprocess.Popen(
      command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )

  def send(self, command: str) -> None:
    assert self.process.stdin is not None
    self.process.stdin.write(command + "\n")
    self.process.stdin.flush()

  def answer(self) -> str:
    assert self.process.stdout is not None
    line = self.process.stdout.readline()
    if not line:
      raise RuntimeError(
        f"the process of contender {self.peer!r} ended (exit status "
        f"{self.process.wait()}); its error is above"
      )
    return line.strip()

  def block(self) -> float:
    self.send("block")
    return json.loads(self.answer())

  def close(self) -> None:
    with contextlib.suppress(BrokenPipeError):  # a process that has failed
      self.process.communicate()


def workload_times(name: str, variants, rounds: int, seed: int, contenders=None):
  """One set of processes' share of a workload: per variant, every
  contender's per-round ms/step. Each contender (of `contenders`, default
  every peer) runs in a process of its own, built there once per variant,
  and their blocks are interleaved from here, the rounds' orders shuffled by
  `seed` (see `step_table`)."""
  processes = [_Contender(name, peer) for peer in contenders or peers.PEERS]
  try:
    out = {}
    for variant in variants:
      for process in processes:  # the processes build at the same time
        process.send(f"build {variant}")
      built = {p.peer: p.block for p in processes if p.answer() == "ready"}
      out[variant] = interleaved_blocks(built, rounds=rounds, seed=seed)
      print(
        f"  {name:18s} {variant:16s} "
        + "  ".join(f"{p}={statistics.median(t):.2f}" for p, t in out[variant].items()),
        file=sys.stderr,
        flush=True,
      )
    return out
  finally:
    for process in processes:
      process.close()


def pooled_rows(name: str, processes):
  """A workload's rows from its processes' `workload_times`: every round of
  every process pooled. ms/step is the median over the rounds; each ratio
  (to the fused kernel, to ours) the median over the rounds of the ratio
  taken within a round."""
  n = workloads.size(workloads.WORKLOADS[name]())
  rows = []
  for variant in processes[0]:
    times: dict[str, list[float]] = {}
    for process in processes:
      for peer, ts in process[variant].items():
        times.setdefault(peer, []).extend(ts)
    fused, ours = times["fused kernel"], times["ours (sgd)"]
    gb = n * peers.bytes_per_param(variant) / 1e9
    for peer in (p for p in peers.PEERS if p in times):
      ms = statistics.median(times[peer])
      rows.append(
        (
          name,
          variant,
          peer,
          ms,
          gb / (ms / 1e3),
          median_ratio(times[peer], fused),
          median_ratio(times[peer], ours),
        )
      )
  return rows


def step_table(args):
  """Every workload's rows. Each contender runs in a process of its own
  (`workload_times`), and each workload in `args.processes` fresh sets of
  them, whose rounds are pooled. In one shared process a contender's speed
  depended on the others: where its buffers landed followed the order of
  building (five identical contenders built one after another on the
  ResNet-like tree ran at 1.00, 0.91, 0.88, 0.86 and 0.85x the first's
  time, in each of three processes), and the JAX contenders' steps on many
  small arrays slowed each other's through the allocator (the facade over
  1,000 tiny tensors, Nesterov: 1.55 to 1.67x torch fused there, 1.10x
  with each in a process of its own). A process of its own is also what a
  training process gives an optimizer."""
  rows = []
  for name in workloads.WORKLOADS:
    if args.workloads and name not in args.workloads:
      continue
    processes = [
      workload_times(name, args.variants, args.rounds, seed)
      for seed in range(args.processes)
    ]
    rows += pooled_rows(name, processes)
  return rows


COMPILE_COLUMNS = {
  "optax.sgd momentum": lambda: optax.sgd(0.01, momentum=0.9),
  "momentum": lambda: oks.sgd(0.01, momentum=0.9),
  "momentum, XLA step": lambda: oks.sgd(0.01, momentum=0.9),
  "optax.sgd nesterov": lambda: optax.sgd(0.01, momentum=0.9, nesterov=True),
  "nesterov": lambda: oks.sgd(0.01, momentum=0.9, nesterov=True),
  "clipnorm": lambda: oks.sgd(0.01, momentum=0.9, clipnorm=1.0),
  "optax global_clipnorm": lambda: optax.chain(
    optax.clip_by_global_norm(1.0), optax.sgd(0.01, momentum=0.9)
  ),
  "global_clipnorm": lambda: oks.sgd(0.01, momentum=0.9, global_clipnorm=1.0),
  "skip_non_finite": lambda: oks.skip_non_finite(oks.sgd(0.01, momentum=0.9)),
  "clipnorm, FlatParams": lambda: oks.sgd(0.01, momentum=0.9, clipnorm=1.0),
}

# Left out at 5,000 leaves unless asked for (minutes each): `skip_non_finite`
# is XLA's per-leaf finiteness check.
SLOW_AT_5000 = ("skip_non_finite",)


def compile_times(counts=(10, 100, 1000, 5000), everything=False):
  """Seconds to trace, lower and compile a momentum step over `count` leaves
  of 64 floats, for each column of COMPILE_COLUMNS (the best of two below
  5,000 leaves; at 5,000 the columns of SLOW_AT_5000 are left out unless
  `everything`)."""
  out = []
  for count in counts:
    row = []
    for column, make in COMPILE_COLUMNS.items():
      if count >= 5000 and column in SLOW_AT_5000 and not everything:
        row.append(float("nan"))
        continue
      params = [jnp.zeros((64,)) for _ in range(count)]
      params = oks.flatten(params) if "FlatParams" in column else params
      best = float("inf")
      for _ in range(1 if count >= 5000 else 2):
        tx = make()  # a new function each time: nothing cached

        def step(p, g, s, tx=tx):
          u, s = tx.update(g, s, p)
          return optax.apply_updates(p, u), s

        state = tx.init(params)
        xla = "XLA step" in column  # the native kernel turned off
        with (
          mock.patch.object(_native, "usable", lambda *t: False)
          if xla
          else contextlib.nullcontext()
        ):
          start = time.perf_counter()
          jax.jit(step, donate_argnums=(0, 2)).lower(params, params, state).compile()
          best = min(best, time.perf_counter() - start)
      row.append(best)
    out.append((count, *row))
  return out


def memory_probe(donate: bool) -> None:
  """Run in a fresh process: the peak memory of 256M-parameter momentum
  steps (resident memory on the CPU, peak device allocation otherwise)."""
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
  if peers.accelerator() is None:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
  else:
    print(jax.devices()[0].memory_stats()["peak_bytes_in_use"])


def peak_memory():
  out = {}
  for donate in (True, False):
    result = subprocess.run(
      [sys.executable, __file__, "--memory-probe", "donate" if donate else "copy"],
      capture_output=True,
      text=True,
      check=True,
    )
    out[donate] = int(result.stdout.strip().splitlines()[-1])
  return out


README_ROWS = (
  ("32M tensor", "momentum"),
  ("32M tensor", "clipnorm"),
  ("ResNet-50-like", "momentum"),
  ("transformer-like", "momentum"),
  ("1000 tiny leaves", "momentum"),
  ("small MLP", "momentum"),
)
README_COLUMNS = {
  "ours (sgd)": "ours (sgd)",
  "ours (update_and_apply)": "update_and_apply",
  "ours (SGD facade)": "facade",
  "ours (sgd, XLA step)": "ours, XLA step",
  "ours (sgd, FlatParams)": "FlatParams",
  "optax.sgd": "optax.sgd",
  "tf_keras legacy": "tf_keras",
  "torch fused": "torch fused",
}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_PREAMBLE = """# Benchmark results

Written by `python benchmarks/run.py --write` ({date}); the README's
performance table comes from the same run. Each contender runs in a process
of its own (in one shared process, a contender's speed depended on the
order of building and on the other contenders' steps), and each workload in
several fresh sets of them. Contenders are interleaved: in each round every
contender runs a short block of steps, in a shuffled order; ms/step is the
median over the rounds of all sets, and each ratio is the median of ratios
taken within a round. Small VMs drift between runs by
tens of percent, so only ratios well beyond that are conclusions; what was
tried and why is in docs/performance.md. "fused kernel, again" is the fused
kernel a second time, with buffers of its own: its "/ fused kernel" column
is what two identical contenders differ by in this run.
"""


def _ms(value: float) -> str:
  """A time in ms: one decimal, three below 1 ms (the small MLP's steps)."""
  return f"{value:.1f}" if value >= 1 else f"{value:.3f}"


def readme_table(rows) -> str:
  """The README's short table (ms/step) from `step_table`'s rows."""
  ms = {(name, variant, peer): value for name, variant, peer, value, *_ in rows}
  lines = [
    "| workload | variant | " + " | ".join(README_COLUMNS.values()) + " |",
    "|---|---|" + "---|" * len(README_COLUMNS),
  ]
  for name, variant in README_ROWS:
    cells = [
      _ms(ms[name, variant, peer]) if (name, variant, peer) in ms else "n/a"
      for peer in README_COLUMNS
    ]
    lines.append(f"| {name} | {variant} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def replace_between(text: str, marker: str, new: str) -> str:
  """`text` with what lies between `<!-- marker -->` and `<!-- /marker -->`
  replaced by `new`."""
  start, end = f"<!-- {marker} -->\n", f"<!-- /{marker} -->"
  head, found, rest = text.partition(start)
  if not found or end not in rest:
    raise ValueError(f"no {start.strip()} ... {end} block to replace")
  return head + start + new + end + rest.split(end, 1)[1]


def write_outputs(report: str, rows, root: str = ROOT) -> None:
  """RESULTS.md (the whole report) and the README's table."""
  date = time.strftime("%Y-%m-%d")
  with open(os.path.join(root, "benchmarks", "RESULTS.md"), "w") as f:
    f.write(RESULTS_PREAMBLE.format(date=date) + "\n" + report)
  readme = os.path.join(root, "README.md")
  with open(readme) as f:
    text = f.read()
  with open(readme, "w") as f:
    f.write(replace_between(text, "performance-table", readme_table(rows)))


def step_report(rows) -> str:
  """The step table, as Markdown."""
  out = [
    "| workload | variant | contender | ms/step | GB/s | / fused kernel "
    "| / ours (sgd) |\n|---|---|---|---|---|---|---|"
  ]
  for name, variant, peer, ms, gbs, vs_fused, vs_ours in rows:
    out.append(
      f"| {name} | {variant} | {peer} | {ms:.3f} | {gbs:.1f} | "
      f"{vs_fused:.2f} | {vs_ours:.2f} |"
    )
  return "\n".join(out)


def report(args, memory, rows) -> str:
  """The run's tables, as Markdown."""
  out = [step_report(rows)]
  out.append(
    "\n| leaves | "
    + " | ".join(COMPILE_COLUMNS)
    + " |\n|---|"
    + "---|" * len(COMPILE_COLUMNS)
  )
  for count, *seconds in compile_times(everything=args.all_compile_times):
    out.append(f"| {count} | " + " | ".join(f"{t:.2f}" for t in seconds) + " |")
  floor = 3 * 256 * 2**20 * 4
  kind = "RSS" if peers.accelerator() is None else "device memory"
  out.append(
    f"\n| 256M-param momentum step | peak {kind} (GiB) "
    "| / (params + grads + velocity) |\n|---|---|---|"
  )
  for donate, label in ((True, "donated"), (False, "not donated")):
    out.append(
      f"| {label} | {memory[donate] / 2**30:.2f} | {memory[donate] / floor:.2f} |"
    )
  out.append("\n" + sparse_embedding.table(rounds=args.processes * args.rounds))
  return "\n".join(out)


def main():
  parser = argparse.ArgumentParser(description="optax-keras-sgd benchmarks")
  parser.add_argument(
    "--quick", action="store_true", help="momentum variants only, fewer rounds"
  )
  parser.add_argument("--workloads", nargs="*", choices=list(workloads.WORKLOADS))
  parser.add_argument(
    "--all-compile-times",
    action="store_true",
    help="also the slow per-leaf columns at 5,000 leaves (minutes)",
  )
  parser.add_argument(
    "--write",
    action="store_true",
    help="write benchmarks/RESULTS.md and the README's performance table",
  )
  parser.add_argument(
    "--memory-probe", choices=["donate", "copy"], help=argparse.SUPPRESS
  )
  parser.add_argument(
    "--variants", nargs="*", choices=list(peers.VARIANTS), help="default: all"
  )
  parser.add_argument(
    "--processes",
    type=int,
    help="fresh sets of processes (one a contender) per workload (default 3; "
    "--quick 2)",
  )
  parser.add_argument(
    "--rounds", type=int, help="interleaved rounds per set (default 3; --quick 2)"
  )
  parser.add_argument(
    "--steps-only",
    action="store_true",
    help="the step table alone (no compile times, memory or sparse tables)",
  )
  parser.add_argument("--serve", help=argparse.SUPPRESS)
  parser.add_argument("--workload", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.steps_only and args.write:
    parser.error("--write needs every table: leave out --steps-only")
  if args.memory_probe:
    memory_probe(args.memory_probe == "donate")
    return
  if args.serve:  # a contender's own process (`workload_times`)
    serve_contender(args.workload, args.serve)
    return
  if not args.variants:
    args.variants = ["momentum"] if args.quick else list(peers.VARIANTS)
  args.processes = args.processes or (2 if args.quick else 3)
  args.rounds = args.rounds or (2 if args.quick else 3)

  torch_threads = ""
  try:
    import torch

    where = peers.torch_device() or "left out"
    torch_threads = (
      f", torch {torch.__version__} ({where}, {torch.get_num_threads()} CPU threads)"
    )
  except ImportError:
    pass
  header = (
    f"## {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
    f"jax {jax.__version__} on {jax.devices()[0].device_kind}, optax "
    f"{optax.__version__}{torch_threads}, each contender in a process of its "
    f"own, {args.processes} sets of {args.rounds} rounds per workload\n"
  )
  print(header)

  if args.steps_only:
    print(step_report(step_table(args)))
    return
  # Memory first, in fresh processes.
  memory = peak_memory()
  rows = step_table(args)
  text = header + "\n" + report(args, memory, rows)
  print(text)
  if args.write:
    write_outputs(text, rows)


if __name__ == "__main__":
  main()
