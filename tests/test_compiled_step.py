"""Structural facts about the compiled step: no extra passes over memory.

A step is memory-bound, so what it costs is how many full-size arrays it
reads and writes. These tests read the compiled HLO of one step (never its
timing) and check that, on the machine's backend:

- no full-size temporary is materialized: every full-size array the step
  computes is one of its outputs (new parameters, new velocities);
- each gradient is read by one kernel, and by one more with norm clipping
  (its reduction);
- the step launches no more full-size kernels than the same update written
  by hand;
- no fused computation grows with the number of tensors (which would make
  compile time grow faster than the square of that number).

They check XLA's step, the native kernel turned off; test_native.py checks
the kernel's.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import optax
import pytest
from helpers import KernelPath

import optax_keras_sgd as oks

# Large enough for the backend's big-array code paths: below 4,096 elements
# XLA:CPU stores `g * g` for any sum of squares, this package's included.
N = 1 << 20
SIZES = (N, N, 3 * N // 2)  # shapes shared and not, as in real models

_INSTRUCTION = re.compile(
  r"^\s*(?:ROOT )?%(\S+) = (\w+)\[([\d,]*)\]\S* (\S+?)\((.*?)\)"
)


@pytest.fixture(autouse=True)
def _xla_step(monkeypatch):
  KernelPath("xla", monkeypatch)


def _entry_text(compiled) -> str:
  text = compiled.as_text()
  return text[text.index("\nENTRY") :]


def _entry(compiled) -> list[tuple[str, int, str, list[str]]]:
  """(name, elements, opcode, operands) of each array instruction of the
  entry computation."""
  out = []
  for line in _entry_text(compiled).splitlines()[1:]:
    m = _INSTRUCTION.match(line)
    if m:
      name, _, dims, opcode, operands = m.groups()
      elements = 1
      for d in filter(None, dims.split(",")):
        elements *= int(d)
      out.append(
        (name, elements, opcode, re.findall(r"%(\S+?)(?:[,)]|$)", operands + ")"))
      )
  return out


def _root_operands(compiled) -> set[str]:
  root = next(line for line in _entry_text(compiled).splitlines() if "ROOT" in line)
  operands = re.findall(r"%([\w.\-]+)", root.split("tuple(", 1)[-1])
  return set(operands)


def _compile(step, args):
  return jax.jit(step, donate_argnums=(0, 2)).lower(*args).compile()


def _traffic(compiled, num_params):
  """Full-size kernels, temporaries, and kernels reading each gradient."""
  instructions = _entry(compiled)
  index = {
    m.group(1): int(m.group(2))
    for m in re.finditer(r"%(\S+) = \S+ parameter\((\d+)\)", _entry_text(compiled))
  }
  aliases = {}  # bitcasts and get-tuple-elements are views, not passes
  kernels, reads = [], {i: 0 for i in range(num_params, 2 * num_params)}
  for name, elements, opcode, operands in instructions:
    if opcode in ("parameter", "constant"):
      continue
    sources = {aliases.get(o, o) for o in operands}
    if opcode in ("bitcast", "get-tuple-element") and len(sources) == 1:
      aliases[name] = sources.pop()
      continue
    big_inputs = [o for o in sources if o in index and index[o] in reads]
    for o in big_inputs:
      reads[index[o]] += 1
    if elements >= N:
      kernels.append(name)
  outputs = {aliases.get(o, o) for o in _root_operands(compiled)}
  temporaries = [k for k in kernels if k not in outputs]
  return kernels, temporaries, list(reads.values())


def _tree(fill):
  return [jnp.full((s,), fill, jnp.float32) for s in SIZES]


def _ours(**config):
  tx = oks.sgd(0.01, **config)

  def step(params, grads, state):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step, (_tree(0.0), _tree(0.01), tx.init(_tree(0.0)))


def _by_hand(momentum, nesterov=False):
  """The update written directly, for comparison (no clipping)."""

  def step(params, grads, velocity):
    if not momentum:
      return [p - 0.01 * g for p, g in zip(params, grads)], velocity
    velocity = [momentum * v - 0.01 * g for v, g in zip(velocity, grads)]
    if nesterov:
      return [
        p + momentum * v - 0.01 * g for p, v, g in zip(params, velocity, grads)
      ], velocity
    return [p + v for p, v in zip(params, velocity)], velocity

  return step, (_tree(0.0), _tree(0.01), _tree(0.0) if momentum else [])


CONFIGS = {
  "plain": dict(),
  "momentum": dict(momentum=0.9),
  "nesterov": dict(momentum=0.9, nesterov=True),
  "clipvalue+decay": dict(momentum=0.9, clipvalue=0.5, decay=0.01),
  "clipvalue+clipnorm": dict(momentum=0.9, clipvalue=0.5, clipnorm=1.0),
  "nesterov+clipnorm": dict(momentum=0.9, nesterov=True, clipnorm=1.0),
  "clipnorm": dict(momentum=0.9, clipnorm=1.0),
  "global_clipnorm": dict(momentum=0.9, global_clipnorm=1.0),
  "nesterov+clipvalue+clipnorm+decay": dict(
    momentum=0.9, nesterov=True, clipvalue=0.5, clipnorm=1.0, decay=0.01
  ),
}


# Measured: XLA:CPU in jaxlib 0.7.1 to 0.10.1 hands a norm's reduction to a
# library call that stores the gradient it reduces; 0.10.2 fuses it.
_FUSES_NORMS = jax.default_backend() != "cpu" or tuple(
  int(x) for x in jax.lib.__version__.split(".")[:3]
) >= (0, 10, 2)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_no_full_size_temporaries_and_no_extra_gradient_reads(name):
  if "norm" in name and not _FUSES_NORMS:
    pytest.skip(
      f"XLA:CPU in jaxlib {jax.lib.__version__} stores the gradient "
      "a norm reduces (fused from 0.10.2 on)"
    )
  config = CONFIGS[name]
  kernels, temporaries, reads = _traffic(_compile(*_ours(**config)), len(SIZES))
  assert kernels, "no full-size kernel found: the parser is out of date"
  # The one exception: XLA:CPU hands the norm's reduction to a library
  # kernel (YNNPACK) that cannot take a clamp inside it, so with `clipvalue`
  # and norm clipping together the clamped gradient is stored once.
  clamped = "clipvalue" in config and (
    "clipnorm" in config or "global_clipnorm" in config
  )
  allowed = len(SIZES) if clamped and jax.default_backend() == "cpu" else 0
  assert len(temporaries) <= allowed, f"{name}: materialized {temporaries}"
  # As many reads as the update written by hand (Nesterov's update reads g
  # again where the backend cannot fuse both outputs into one loop), plus
  # one for the norm's reduction when clipping by norm.
  _, _, by_hand = _traffic(
    _compile(*_by_hand(config.get("momentum", 0.0), config.get("nesterov", False))),
    len(SIZES),
  )
  norm_clipping = "clipnorm" in config or "global_clipnorm" in config
  expected = [r + norm_clipping for r in by_hand]
  assert reads == expected, f"{name}: gradient reads {reads}, expected {expected}"


@pytest.mark.parametrize(
  "name, momentum, nesterov",
  [("plain", 0.0, False), ("momentum", 0.9, False), ("nesterov", 0.9, True)],
)
def test_as_many_full_size_kernels_as_the_update_written_by_hand(
  name, momentum, nesterov
):
  ours, _, _ = _traffic(_compile(*_ours(**CONFIGS[name])), len(SIZES))
  by_hand, _, _ = _traffic(_compile(*_by_hand(momentum, nesterov)), len(SIZES))
  assert len(ours) == len(by_hand), (ours, by_hand)


def test_the_traffic_check_sees_a_materialized_temporary():
  """The checker itself: a step that stores a full-size intermediate it does
  not return (a sort cannot fuse into its consumer) is reported."""

  def step(params, grads, velocity):
    return [p - 0.01 * jnp.sort(g) for p, g in zip(params, grads)], velocity

  _, temporaries, reads = _traffic(
    _compile(step, (_tree(0.0), _tree(0.01), [])), len(SIZES)
  )
  assert len(temporaries) == len(SIZES)
  assert reads == [1] * len(SIZES)


def _largest_computation(compiled) -> int:
  """Instructions in the largest non-entry computation (fusions included)."""
  sizes, current = [0], None
  for line in compiled.as_text().splitlines():
    if re.match(r"^%\S+ \(", line):
      current = 0
    elif line.startswith("}") and current is not None:
      sizes.append(current)
      current = None
    elif current is not None and line.strip():
      current += 1
  return max(sizes)


@pytest.mark.parametrize(
  "make",
  [
    lambda: oks.sgd(0.1, momentum=0.9, global_clipnorm=1.0),
    lambda: oks.skip_non_finite(oks.sgd(0.1, momentum=0.9)),
  ],
  ids=["global_clipnorm", "skip_non_finite"],
)
def test_per_tensor_scalars_do_not_grow_one_fusion_with_the_tensor_count(make):
  # Left to itself, XLA chains the per-tensor norms (or finiteness flags) into
  # one fusion with an instruction per tensor, which its fusion pass builds
  # one tensor at a time: compile time then grows faster than the square of
  # the tensor count. Reduced as one vector, no fusion grows with it.
  def largest(count):
    tx = make()
    params = [jnp.zeros((8,)) for _ in range(count)]

    def step(p, g, s):
      u, s = tx.update(g, s, p)
      return optax.apply_updates(p, u), s

    return _largest_computation(
      jax.jit(step).lower(params, params, tx.init(params)).compile()
    )

  assert largest(100) == largest(50)
