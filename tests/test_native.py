"""The native kernel (`optax_keras_sgd._native`): the rule's numbers on every
path JAX takes through it, one pass over memory, and the fallback.

The parity modules run the reference's configurations on both paths (the
kernel and XLA's step); here are what those do not reach: leaves large enough
for the kernel's threads, odd sizes, the norm clip over many blocks, which
tensors the kernel takes, float32 and float64 in one tree, `vmap`,
differentiation, the compiled program's structure, and a machine without the
kernel; and the same for row-sparse (`IndexedSlices`) gradients: many
duplicate rows, padding, rows added in order, a sparse and a dense leaf in
one step.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import numpy_rule
import optax
import pytest
from helpers import KernelPath, assert_trajectories, enable_x64, run_sgd

import optax_keras_sgd as oks
from optax_keras_sgd import _fused, _native, _sparse

CONFIGS = {
  "momentum": dict(learning_rate=0.05, momentum=0.9),
  "nesterov": dict(learning_rate=0.05, momentum=0.9, nesterov=True),
  "decay_nesterov": dict(learning_rate=0.1, momentum=0.8, nesterov=True, decay=0.05),
  "clipvalue": dict(learning_rate=0.1, momentum=0.5, clipvalue=0.3),
}
# One leaf of several blocks of 65,536 elements (the kernel's threads take
# them), odd sizes, a scalar and an empty leaf.
SHAPES = [(5 * 65536 + 3,), (7,), (), (0,), (300, 7)]


def _problem(seed, shapes, steps, dtype="float32"):
  rng = np.random.default_rng(seed)
  params = [rng.normal(size=s).astype(dtype) for s in shapes]
  grads = [[rng.normal(size=s).astype(dtype) for s in shapes] for _ in range(steps)]
  return params, grads


@pytest.fixture
def native(monkeypatch):
  return KernelPath("native", monkeypatch)


def _run_facade(params, grads, hold=False, **config):
  """The facade's trajectory; a gradient `(values, indices, shape)` is an
  `IndexedSlices`. With `hold`, the caller keeps each Variable's array
  through the step, so it cannot be donated."""
  variables = [oks.Variable(p) for p in params]
  opt = oks.SGD(**config)
  out = []
  for step in grads:
    g = [
      oks.IndexedSlices(x[0], jnp.asarray(x[1], jnp.int32), x[2])
      if isinstance(x, tuple)
      else x
      for x in step
    ]
    held = [v.value() for v in variables] if hold else None
    opt.apply_gradients(zip(g, variables))
    del held
    out.append([v.numpy() for v in variables])
  return out


def _trajectory(way, params, grads, **config):
  if way.startswith("facade"):
    return _run_facade(params, grads, hold=way == "facade, values held", **config)
  return run_sgd(params, grads, jit=way == "jit", **config)


@pytest.mark.parametrize("way", ["jit", "eager", "facade", "facade, values held"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_large_and_odd_leaves_match_the_rule(name, way, native):
  """Where the kernel takes the large leaf (the facade's one pass; `sgd`
  with momentum alone) and where it leaves it to XLA (Nesterov's update in
  `sgd`, clipping), and the small leaves, which it takes wherever it runs:
  the rule's numbers either way. A facade step whose values cannot be
  donated runs as `sgd` does, then adds the update."""
  params, grads = _problem(0, SHAPES, 3)
  ours = _trajectory(way, params, grads, **CONFIGS[name])
  assert_trajectories(ours, numpy_rule.run(params, grads, **CONFIGS[name]))
  native.check(CONFIGS[name], facade=way == "facade", shapes=SHAPES)


@pytest.mark.parametrize("way", ["jit", "eager", "facade"])
@pytest.mark.parametrize("nesterov", [False, True])
def test_norm_clip_in_the_kernel_matches_the_rule(nesterov, way, native):
  """`clipvalue` then `clipnorm` inside the kernel, on a tensor of several
  blocks (its norm summed over the kernel's threads), odd sizes, a scalar,
  an empty tensor and one under the threshold; within the rule's rounding
  (the sums are added in another order)."""
  config = dict(learning_rate=0.1, momentum=0.9, nesterov=nesterov)
  config.update(clipvalue=2.0, clipnorm=40.0)
  params, grads = _problem(6, SHAPES, 3)
  for step in grads:
    step[1] = step[1] * 1e-3  # within the threshold: kept as it is
  ours = _trajectory(way, params, grads, **config)
  assert_trajectories(ours, numpy_rule.run(params, grads, **config), exact=False)
  native.check(config, facade=way == "facade", shapes=SHAPES)


def _kernel_norm(g: np.ndarray) -> np.float32:
  """The kernel's norm, as its source states it: in each 65,536-element
  block, element i squared and added to running sum i % 16 (in order), the
  16 sums added 8 apart, then 4, 2, 1; the blocks' sums added in order."""
  sq = (g * g).astype(np.float32)
  total = np.float32(0)
  for lo in range(0, g.size, 65536):
    block = sq[lo : lo + 65536]
    acc = np.array(
      [np.cumsum(block[lane::16], dtype=np.float32)[-1] for lane in range(16)],
      np.float32,
    )
    for w in (8, 4, 2, 1):
      acc[:w] = acc[:w] + acc[w : 2 * w]
    total = np.float32(total + acc[0])
  return np.float32(np.sqrt(total))


def test_the_norm_is_summed_in_the_stated_order(native):
  """Bitwise: the kernel's clipped gradient is `(g * c) / norm` with the norm
  summed in the order its source states, on a tensor of several blocks (the
  blocks' sums taken on XLA's threads, then added in order)."""
  rng = np.random.default_rng(7)
  g = rng.normal(size=3 * 65536 + 37).astype(np.float32)
  c = np.float32(2.5)
  tx = oks.sgd(1.0, momentum=0.5, clipnorm=float(c))  # zero velocity: u = -g'
  p = jnp.zeros(g.size)
  updates, _ = jax.jit(tx.update)(jnp.asarray(g), tx.init(p), p)
  expected = -((g * c) / _kernel_norm(g))
  np.testing.assert_array_equal(np.asarray(updates), expected)
  assert native.sizes == {g.size}


@pytest.mark.parametrize("way", ["jit", "facade"])
@pytest.mark.parametrize(
  "config",
  [CONFIGS["nesterov"], dict(CONFIGS["nesterov"], global_clipnorm=2.0)],
  ids=["nesterov", "nesterov_global_clipnorm"],
)
def test_small_leaves_take_the_kernel_up_to_a_total(config, way, native, monkeypatch):
  """Where a large leaf would be XLA's (`sgd`'s Nesterov update), small
  ones take the kernel, in tree order, while their total stays within
  `SMALL_TOTAL` elements; a leaf that would pass it, and every leaf over
  `SMALL_LEAF`, is XLA's. The facade's pass, in place, takes every leaf."""
  monkeypatch.setattr(_fused, "SMALL_TOTAL", 20)
  shapes = [(7,), (9,), (6,), (3,), (_fused.SMALL_LEAF + 1,)]
  params, grads = _problem(4, shapes, 3)
  ours = _trajectory(way, params, grads, **config)
  exact = "global_clipnorm" not in config
  assert_trajectories(ours, numpy_rule.run(params, grads, **config), exact=exact)
  if way == "facade":
    assert native.sizes == {7, 9, 6, 3, _fused.SMALL_LEAF + 1}
  else:
    assert native.sizes == {7, 9, 3}  # 6 would make 22


def test_float32_and_float64_leaves_in_one_tree(native):
  with enable_x64():
    params, grads = _problem(1, [(4, 3), (9,)], 4)
    params[1], grads = (
      params[1].astype(np.float64),
      [[g[0], g[1].astype(np.float64)] for g in grads],
    )
    tx = oks.sgd(0.1, momentum=0.9)
    p = [jnp.asarray(x) for x in params]
    state = tx.init(p)
    step = jax.jit(lambda p, g, s: tx.update(g, s, p))
    ours = []
    for g in grads:
      u, state = step(p, [jnp.asarray(x) for x in g], state)
      p = optax.apply_updates(p, u)
      ours.append([np.asarray(x) for x in p])
    assert [x.dtype for x in p] == [jnp.float32, jnp.float64]
    lowered = step.lower(p, [jnp.asarray(x) for x in grads[0]], state).as_text()
    assert lowered.count("stablehlo.custom_call @optax_keras_sgd_step") == 2
  rule = numpy_rule.run(params, grads, learning_rate=0.1, momentum=0.9)
  assert_trajectories(ours, rule)
  assert native.calls > 0


def _stepper(way, lr, nesterov, **clip):
  """`(init, step)`: `sgd`'s update and `apply_updates`, or the facade's
  one pass (`update_and_apply`); `step(params, grads, state)`."""
  tx = oks.sgd(lr, momentum=0.9, nesterov=nesterov, **clip)
  if way == "functional":

    def step(params, grads, state):
      u, state = tx.update(grads, state, params)
      return optax.apply_updates(params, u), state

    return tx.init, step
  return tx.init, lambda p, g, s: oks.update_and_apply(tx, g, s, p)


# Where the kernel runs: `sgd`'s update (with Nesterov, on tensors of at most
# `_fused.SMALL_LEAF` elements, as here, writing the update too), the facade's
# pass.
KERNEL_WAYS = [("functional", False), ("functional", True), ("facade", True)]


@pytest.mark.parametrize(
  "clip",
  [{}, dict(clipnorm=1.5), dict(global_clipnorm=2.0)],
  ids=["", "clipnorm", "global_clipnorm"],
)
@pytest.mark.parametrize("way, nesterov", KERNEL_WAYS)
def test_vmap_over_models_and_learning_rates(way, nesterov, clip, native):
  """Under `vmap` every argument of the kernel, the scalars included, gets the
  batch dimension, and each model takes its own learning rate (and its
  tensors their own norms, or its own global norm)."""
  rates = np.array([0.1, -0.05, 0.3], np.float32)
  batch = [_problem(seed, [(6,), (2, 5)], 3) for seed in range(3)]

  def run(lr, params, grads):
    init, step = _stepper(way, lr, nesterov, **clip)
    state = init(params)
    out = []
    for g in grads:
      params, state = step(params, g, state)
      out.append(params)
    return out

  stack = lambda i: [  # noqa: E731
    jnp.asarray(np.stack([b[i][k] for b in batch])) for k in range(2)
  ]
  params = stack(0)
  grads = [
    [jnp.asarray(np.stack([b[1][t][k] for b in batch])) for k in range(2)]
    for t in range(3)
  ]
  ours = jax.jit(jax.vmap(run))(jnp.asarray(rates), params, grads)
  for j, (p0, gs) in enumerate(batch):
    rule = numpy_rule.run(
      p0, gs, learning_rate=float(rates[j]), momentum=0.9, nesterov=nesterov, **clip
    )
    ours_j = [[np.asarray(x[j]) for x in step] for step in ours]
    assert_trajectories(ours_j, rule, exact=not clip)
  assert native.calls > 0


@pytest.mark.parametrize("way, nesterov", KERNEL_WAYS)
def test_differentiating_through_the_update(way, nesterov, native):
  """d(new params)/dg is -lr, and with Nesterov -(m * lr) - lr (by hand)."""
  lr, m = np.float32(0.1), np.float32(0.9)
  init, step = _stepper(way, 0.1, nesterov)
  w = jnp.arange(5.0)

  def total(g):
    return jnp.sum(step(w, g, init(w))[0])

  expected = -(m * lr) - lr if nesterov else -lr
  for fn in (jax.grad(total), jax.jit(jax.grad(total))):
    np.testing.assert_allclose(fn(jnp.ones(5)), np.full(5, expected), rtol=1e-6)
  assert native.calls > 0


@pytest.mark.parametrize("kind", ["clipnorm", "global_clipnorm"])
@pytest.mark.parametrize("way, nesterov", KERNEL_WAYS)
def test_differentiating_through_the_norm_clip(way, nesterov, kind, native):
  """With g clipped to c g / |g|, d(sum of new params)/dg_k is
  k_lr * (c / |g|) * (1 - g_k * sum(g) / |g|^2), k_lr = -lr (Nesterov
  -(m * lr) - lr), by hand; below the threshold the clip is the identity.
  With one tensor the global norm is its norm."""
  lr, m, c = 0.1, 0.9, 2.0
  init, step = _stepper(way, lr, nesterov, **{kind: c})
  w = jnp.arange(5.0)

  def total(g):
    return jnp.sum(step(w, g, init(w))[0])

  k_lr = -(m * lr) - lr if nesterov else -lr
  g = np.array([1.0, -2.0, 3.0, 0.5, 4.0])
  n = np.sqrt(np.sum(g * g))
  expected = k_lr * (c / n) * (1 - g * np.sum(g) / n**2)
  for fn in (jax.grad(total), jax.jit(jax.grad(total))):
    np.testing.assert_allclose(fn(jnp.asarray(g, jnp.float32)), expected, rtol=1e-5)
    small = jnp.asarray(g / (2 * n), jnp.float32)  # norm 0.5: not clipped
    np.testing.assert_allclose(fn(small), np.full(5, k_lr), rtol=1e-6)
  assert native.calls > 0


def _full_size_ops(compiled, dims):
  """Opcodes of the entry computation's instructions that produce an array
  of shape `[dims]` (alone or in a tuple); views and parameters left out."""
  text = compiled.as_text()
  entry = text[text.index("\nENTRY") :].splitlines()[1:]
  ops = []
  for line in entry:
    m = re.match(r"\s*(?:ROOT )?%\S+ = (\(.*?\)|\S+) ([\w-]+)\(", line)
    if m and f"[{dims}]" in m.group(1):
      ops.append(m.group(2))
  views = ("parameter", "bitcast", "get-tuple-element", "tuple")
  return [op for op in ops if op not in views]


@pytest.mark.parametrize("nesterov", [False, True])
def test_update_and_apply_is_one_pass_over_memory(nesterov, native):
  """`update_and_apply` (the facade's step): one kernel call reads each
  parameter, gradient and velocity once and writes the parameter and
  velocity in place, 20 bytes per float32 parameter; XLA adds no full-size
  copy or loop."""
  n, leaves = 1 << 20, 3
  tx = oks.sgd(0.1, 0.9, nesterov)
  params = [jnp.ones(n) for _ in range(leaves)]
  state = tx.init(params)
  step = jax.jit(
    lambda p, g, s: oks.update_and_apply(tx, g, s, p), donate_argnums=(0, 2)
  )
  grads = [jnp.ones(n) for _ in range(leaves)]
  compiled = step.lower(params, grads, state).compile()
  assert _full_size_ops(compiled, n) == ["custom-call"]


def test_many_leaves_are_split_into_calls_of_bounded_size(native):
  """XLA's compile time grows faster than the square of one instruction's
  operand count, so 200 leaves go in calls of at most `LEAVES_PER_CALL`."""
  tx = oks.sgd(0.1, momentum=0.9)
  params = [jnp.ones(3) for _ in range(200)]
  step = jax.jit(lambda p, g, s: tx.update(g, s, p))
  text = step.lower(params, params, tx.init(params)).as_text()
  calls = -(-200 // _native.LEAVES_PER_CALL)
  assert _native.LEAVES_PER_CALL <= 64
  assert text.count("stablehlo.custom_call @optax_keras_sgd_step") == calls


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_split_cuts_a_buffer_into_its_pieces(dtype, native):
  """`_native.split` (the facade's packed velocities apart): each piece is
  its run of the buffer, bit for bit, over more pieces than one call takes,
  with a scalar and an empty piece among them."""
  with enable_x64(dtype == "float64"):
    shapes = [(3,), (), (0,), (2, 5)] * 40  # 160 pieces
    sizes = [int(np.prod(s)) for s in shapes]
    data = np.random.default_rng(0).normal(size=sum(sizes)).astype(dtype)
    pieces = jax.jit(lambda b: _native.split(b, shapes))(jnp.asarray(data))
    starts = np.cumsum([0, *sizes])
    for piece, shape, lo, hi in zip(pieces, shapes, starts, starts[1:]):
      assert piece.shape == shape and piece.dtype == dtype
      np.testing.assert_array_equal(piece, data[lo:hi].reshape(shape))


def test_packed_slots_are_unpacked_in_few_calls(native):
  """A packed layout's unpacking is one kernel call per `LEAVES_PER_CALL`
  slots, with no slice of its own per slot (XLA runs each as a task)."""
  from optax_keras_sgd._facade import _packing

  shapes = ((64,),) * 300
  layout = _packing.Layout((("float32", tuple(range(300)), shapes),), 300, ())
  unpack = jax.jit(lambda b: layout.unpack((b,), []))
  text = unpack.lower(jnp.ones(300 * 64)).as_text()
  calls = -(-300 // _native.LEAVES_PER_CALL)
  assert text.count("stablehlo.custom_call @optax_keras_sgd_split") == calls
  assert "stablehlo.slice" not in text


def test_the_functional_step_launches_one_kernel_and_the_adds(native):
  """`sgd`'s update: one kernel call for all velocities; what is left per leaf
  is the caller's `apply_updates`, one add each."""
  n, leaves = 1 << 20, 3
  tx = oks.sgd(0.1, 0.9)
  params = [jnp.ones(n) for _ in range(leaves)]
  grads = [jnp.ones(n) for _ in range(leaves)]

  def step(p, g, s):
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  compiled = (
    jax.jit(step, donate_argnums=(0, 2)).lower(params, grads, tx.init(params)).compile()
  )
  ops = _full_size_ops(compiled, n)
  # One add per leaf: a bare add, a fusion, or (older XLA) a call of one.
  assert set(ops) - {"custom-call"} in ({"add"}, {"fusion"}, {"call"}), ops
  assert ops.count("custom-call") == 1 and len(ops) == 1 + leaves


@pytest.mark.parametrize("facade", [False, True], ids=["sgd", "facade"])
@pytest.mark.parametrize(
  "config",
  [
    dict(nesterov=True),
    dict(clipvalue=0.5),
    dict(clipnorm=1.0),
    dict(global_clipnorm=1.0),
    dict(global_clipnorm=1.0, nesterov=True),
  ],
  ids=str,
)
def test_no_full_size_temporary_beyond_xla(config, facade, native, monkeypatch):
  """Where the kernel would need an update written out for it (`sgd`'s
  Nesterov update), the step is XLA's, fused; where it runs (the facade's
  Nesterov; `clipvalue`, `clipnorm` and `global_clipnorm`'s scale, which it
  applies itself, the global norm a reduction in XLA), it writes in place.
  Either way the
  compiled program's temporaries are no larger than XLA's own step's: a
  full-size one is a fresh allocation each step, whose page faults made
  such steps 3x slower."""
  n = 1 << 20
  tx = oks.sgd(0.1, momentum=0.9, **config)
  params, grads = [jnp.ones(n)], [jnp.ones(n)]

  def step(p, g, s):
    if facade:
      return oks.update_and_apply(tx, g, s, p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  def temporaries():
    lowered = jax.jit(step, donate_argnums=(0, 2)).lower(params, grads, tx.init(params))
    return lowered.compile().memory_analysis().temp_size_in_bytes

  ours = temporaries()
  native.check(dict(momentum=0.9, **config), facade=facade, shapes=[(n,)])
  monkeypatch.setattr(_native, "usable", lambda *trees: False)
  assert ours <= max(temporaries(), 1024), ours


# Row-sparse gradients: a 50,000-row table, slices drawn from 40 rows (many
# duplicates, so padding after summing) and from the whole table; enough of
# them (3,000 slices of 6) that the kernels split the unique rows between
# threads.
TABLE = (50_000, 6)
SPARSE_CONFIGS = {
  **CONFIGS,
  "plain": dict(learning_rate=0.1),  # no velocity: rows added in order
  "decay_clipnorm": dict(learning_rate=0.2, momentum=0.9, decay=0.1, clipnorm=2.0),
}


def _sparse_problem(seed, steps, dtype="float32"):
  rng = np.random.default_rng(seed)
  params = [rng.normal(size=TABLE).astype(dtype), rng.normal(size=(9,)).astype(dtype)]
  grads = []
  for _ in range(steps):
    idx = np.concatenate([rng.integers(0, 40, 300), rng.integers(0, TABLE[0], 2700)])
    values = rng.normal(size=(idx.size, TABLE[1])).astype(dtype)
    grads.append([(values, idx, TABLE), rng.normal(size=(9,)).astype(dtype)])
  return params, grads


@pytest.mark.parametrize("way", ["jit", "eager", "facade"])
@pytest.mark.parametrize("name", sorted(SPARSE_CONFIGS))
def test_sparse_rows_match_the_rule(name, way, native):
  """Bitwise, except with `clipnorm` (a norm: within 8 ulps)."""
  config = SPARSE_CONFIGS[name]
  params, grads = _sparse_problem(2, 3)
  ours = _trajectory(way, params, grads, **config)
  exact = "clipnorm" not in config
  assert_trajectories(ours, numpy_rule.run(params, grads, **config), exact=exact)
  assert native.calls > 0


def test_sum_duplicates_has_the_xla_layout(native, monkeypatch):
  """Unique rows ascending, then padding (row `rows`, zeros): the layout of
  the XLA path, so either path's update is the same `IndexedSlices`."""
  rng = np.random.default_rng(3)
  idx = jnp.asarray(rng.integers(0, 30, 500), jnp.int32)
  g = oks.IndexedSlices(
    jnp.asarray(rng.normal(size=(500, 4)), jnp.float32), idx, (30, 4)
  )
  native_rows = _sparse.sum_duplicates(g)
  assert native.calls == 1
  monkeypatch.setattr(_sparse._native, "usable", lambda *trees: False)
  xla_rows = _sparse.sum_duplicates(g)
  np.testing.assert_array_equal(native_rows.indices, xla_rows.indices)
  np.testing.assert_array_equal(native_rows.values, xla_rows.values)
  assert int(native_rows.indices[-1]) == 30


def test_sparse_step_is_three_kernels_on_the_rows(native):
  """The compiled sparse step: summing duplicates, the momentum on the rows
  and the scatter into the table, each a kernel call; the table and the
  velocity are updated in place (no full-size instruction but the calls
  that write them)."""
  tx = oks.sgd(0.1, momentum=0.9)
  table = jnp.zeros(TABLE)
  g = oks.IndexedSlices(jnp.ones((64, 6)), jnp.arange(64) % 7, TABLE)

  def step(table, g, state):
    u, state = tx.update(g, state, table)
    return oks.apply_updates(table, u), state

  compiled = jax.jit(step, donate_argnums=(0, 2)).lower(table, g, tx.init(table))
  compiled = compiled.compile()
  text = compiled.as_text()
  for target in ("sum_duplicates", "sparse_step", "scatter_add"):
    assert text.count(f'custom_call_target="optax_keras_sgd_{target}"') == 1
  full = _full_size_ops(compiled, f"{TABLE[0]},{TABLE[1]}")
  assert full == ["custom-call", "custom-call"], full


def test_sparse_vmap_over_models(native):
  """`vmap` runs the row kernels once per model (sequentially)."""
  rates = np.array([0.1, 0.3], np.float32)
  problems = [_sparse_problem(seed, 2) for seed in (4, 5)]

  def run(lr, table, values):
    tx = oks.sgd(lr, momentum=0.9)
    state = tx.init(table)
    for t in range(2):
      g = oks.IndexedSlices(values[t], jnp.asarray(problems[0][1][t][0][1]), TABLE)
      u, state = tx.update(g, state, table)
      table = oks.apply_updates(table, u)
    return table

  tables = jnp.asarray(np.stack([p[0][0] for p in problems]))
  values = jnp.asarray(np.stack([[p[1][t][0][0] for t in range(2)] for p in problems]))
  ours = jax.jit(jax.vmap(run))(jnp.asarray(rates), tables, values)
  for j, (params, grads) in enumerate(problems):
    idx = problems[0][1]
    steps = [[(grads[t][0][0], idx[t][0][1], TABLE)] for t in range(2)]
    rule = numpy_rule.run(
      [params[0]], steps, learning_rate=float(rates[j]), momentum=0.9
    )
    np.testing.assert_array_equal(np.asarray(ours[j]), rule[-1][0])
  assert native.calls > 0


@pytest.mark.parametrize("nesterov", [False, True])
def test_differentiating_through_a_sparse_update(nesterov, native):
  """d(sum of the update's rows)/d(values) is -lr per row, -(m * lr) - lr with
  Nesterov (by hand); duplicates share their row's derivative."""
  lr, m = np.float32(0.1), np.float32(0.9)
  tx = oks.sgd(0.1, momentum=0.9, nesterov=nesterov)
  table = jnp.zeros((10, 2))
  idx = jnp.asarray([3, 1, 3], jnp.int32)

  def total(values):
    g = oks.IndexedSlices(values, idx, (10, 2))
    u, _ = tx.update(g, tx.init(table), table)
    return jnp.sum(oks.apply_updates(table, u))

  expected = -(m * lr) - lr if nesterov else -lr
  for fn in (jax.grad(total), jax.jit(jax.grad(total))):
    np.testing.assert_allclose(
      fn(jnp.ones((3, 2))), np.full((3, 2), expected), rtol=1e-6
    )
  assert native.calls > 0


_CHECK = """
import json, numpy as np, jax.numpy as jnp, optax, optax_keras_sgd as oks
tx = oks.sgd(0.05, momentum=0.9, nesterov=True)
w = jnp.arange(6.0); s = tx.init(w)
for g in (np.linspace(-1, 1, 6), np.linspace(2, 0, 6)):
  u, s = tx.update(jnp.asarray(g, jnp.float32), s, w); w = optax.apply_updates(w, u)
print(json.dumps([oks.native_status().available, oks.native_status().detail,
                  np.asarray(w).tolist()]))
"""


def _assert_checked_steps(w):
  """`_CHECK`'s parameters are the NumPy rule's, bitwise."""
  grads = [
    [np.linspace(-1, 1, 6, dtype=np.float32)],
    [np.float32(np.linspace(2, 0, 6))],
  ]
  rule = numpy_rule.run(
    [np.arange(6.0, dtype=np.float32)],
    grads,
    learning_rate=0.05,
    momentum=0.9,
    nesterov=True,
  )
  np.testing.assert_array_equal(np.float32(w), rule[-1][0])


def _run_without(env_update, tmp_path):
  """`_CHECK` in a fresh process with `env_update`; the kernel is on unless
  `env_update` turns it off, whatever the caller's environment says."""
  env = {k: v for k, v in os.environ.items() if k != "OPTAX_KERAS_SGD_NATIVE"}
  env.update({"OPTAX_KERAS_SGD_CACHE_DIR": str(tmp_path), **env_update})
  out = subprocess.run(
    [sys.executable, "-c", _CHECK], env=env, capture_output=True, text=True, check=True
  )
  import json

  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
  "env, detail",
  [
    ({"OPTAX_KERAS_SGD_NATIVE": "0"}, "disabled by OPTAX_KERAS_SGD_NATIVE=0"),
    ({"CXX": "/bin/false"}, "compiling the kernel failed"),
  ],
  ids=["disabled", "no-compiler"],
)
def test_without_the_kernel_the_step_is_xla_and_the_same(env, detail, tmp_path):
  available, message, w = _run_without(env, tmp_path)
  assert not available and detail in message
  _assert_checked_steps(w)


@pytest.mark.integrations  # a build from source, end to end: 10 s, out of the fast tier
def test_a_compiler_without_the_host_cpu_options_still_builds_the_kernel(
  tmp_path, native
):
  # A compiler that rejects -march=native and -mprefer-vector-width (as
  # some do) gets the plainest build, and the step still runs on the kernel.
  calls = tmp_path / "calls"
  compiler = tmp_path / "c++"
  compiler.write_text(
    "#!/bin/sh\n"
    f'echo "$*" >> {calls}\n'
    'case "$*" in *-march=*|*-mprefer-vector-width=*) exit 1;; esac\n'
    f'exec {shutil.which("c++") or shutil.which("g++")} "$@"\n'
  )
  compiler.chmod(0o755)
  cache = tmp_path / "cache"
  available, message, w = _run_without({"CXX": str(compiler)}, cache)
  assert available, message
  assert [
    ("-march=native" in c, "-mprefer-vector-width=512" in c)
    for c in calls.read_text().splitlines()
  ] == [(True, True), (True, False), (False, False)]
  _assert_checked_steps(w)


@pytest.mark.integrations  # a build from source, end to end: 10 s, out of the fast tier
def test_the_kernel_is_compiled_once_per_machine(tmp_path, native):
  first = _run_without({}, tmp_path)
  built = sorted(p.name for p in tmp_path.iterdir())
  second = _run_without({}, tmp_path)
  assert first[0] and second[0] and first[1] == second[1]
  assert len(built) == 1 and built[0].endswith(".so")
  assert sorted(p.name for p in tmp_path.iterdir()) == built
  assert first[2] == second[2]
