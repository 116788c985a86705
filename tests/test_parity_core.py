"""Parity of the functional `sgd` with the real `tf_keras.optimizers.legacy.SGD`.

The same random gradient sequences go through both. Where no reduction is
involved the trajectories must be bitwise equal; with norm clipping, sums are
accumulated in a different order by TensorFlow and XLA, and trajectories must
agree to a few units of the dtype's rounding.
"""

from __future__ import annotations

import contextlib
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference
from helpers import (
  KernelPath,
  assert_trajectories,
  enable_x64,
  paths_for,
  random_problem,
  run_sgd,
  to_gradient,
  to_numpy,
)

import optax_keras_sgd as oks

pytestmark = pytest.mark.reference

SHAPES = [(3,), (4, 5), (), (64, 7)]
DTYPES = ["float32", "float64", "float16", "bfloat16"]

ELEMENTWISE = {
  "plain": dict(learning_rate=0.1),
  "negative_lr": dict(learning_rate=-0.05),
  "momentum": dict(learning_rate=0.05, momentum=0.9),
  "nesterov": dict(learning_rate=0.05, momentum=0.9, nesterov=True),
  "momentum_one": dict(learning_rate=0.01, momentum=1.0),
  "clipvalue": dict(learning_rate=0.1, clipvalue=0.3),
  "clipvalue_momentum": dict(learning_rate=0.1, momentum=0.5, clipvalue=0.3),
  "decay": dict(learning_rate=0.1, decay=0.1),
  "decay_nesterov": dict(learning_rate=0.1, momentum=0.8, nesterov=True, decay=0.05),
  "nesterov_without_momentum": dict(learning_rate=0.1, nesterov=True),
}
NORM = {
  "clipnorm": dict(learning_rate=0.1, clipnorm=0.7),
  "clipnorm_momentum": dict(learning_rate=0.1, momentum=0.9, clipnorm=0.7),
  "global_clipnorm": dict(learning_rate=0.1, global_clipnorm=0.9),
  "global_clipnorm_nesterov": dict(
    learning_rate=0.1, momentum=0.9, nesterov=True, global_clipnorm=0.9
  ),
  "clipvalue_clipnorm": dict(
    learning_rate=0.1, momentum=0.5, clipvalue=0.2, clipnorm=0.5
  ),
  "everything": dict(
    learning_rate=0.1,
    momentum=0.99,
    nesterov=True,
    clipvalue=0.2,
    global_clipnorm=0.5,
    decay=0.01,
  ),
  "clipnorm_inactive": dict(learning_rate=0.1, momentum=0.9, clipnorm=100.0),
}


def x64(dtype):
  return enable_x64(True) if dtype == "float64" else contextlib.nullcontext()


def _both(config, dtype, name, mode, steps=12, one_call=False):
  """Our run and the reference's on the same gradients, in matching modes:
  jitted against `tf.function`, eager against eager."""
  rng = np.random.default_rng(zlib.crc32(name.encode()))
  params, grads = random_problem(rng, SHAPES, steps)
  graph = mode == "jit"
  with x64(dtype):
    ref, _ = reference.run(params, grads, dtype, graph=graph, **config)
    ours = run_sgd(params, grads, dtype, jit=graph, one_call=one_call, **config)
  return ours, ref


@pytest.mark.parametrize("mode", ["jit", "eager"])
@pytest.mark.parametrize("dtype, path", paths_for(DTYPES))
@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_options_are_bitwise_equal(name, dtype, path, mode, monkeypatch):
  kernel = KernelPath(path, monkeypatch)
  ours, ref = _both(ELEMENTWISE[name], dtype, name, mode)
  assert_trajectories(ours, ref, dtype, exact=True)
  kernel.check(ELEMENTWISE[name], facade=False, shapes=SHAPES)


@pytest.mark.parametrize("mode", ["jit", "eager"])
@pytest.mark.parametrize("dtype, path", paths_for(DTYPES))
@pytest.mark.parametrize("name", sorted(NORM))
def test_norm_clipping_agrees_to_rounding(name, dtype, path, mode, monkeypatch):
  kernel = KernelPath(path, monkeypatch)
  ours, ref = _both(NORM[name], dtype, name, mode)
  assert_trajectories(ours, ref, dtype, exact=False)
  kernel.check(NORM[name], facade=False, shapes=SHAPES)


@pytest.mark.parametrize("mode", ["jit", "eager"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
@pytest.mark.parametrize("name", sorted(ELEMENTWISE) + sorted(NORM))
def test_update_and_apply_matches_the_reference(name, dtype, mode, monkeypatch):
  """`update_and_apply`: for float32 and float64 the kernel's one pass over
  every leaf (XLA's step where a global clip comes first), for bfloat16 XLA's
  step and `apply_updates`; bitwise without norms."""
  kernel = KernelPath("native", monkeypatch) if dtype != "bfloat16" else None
  config = {**ELEMENTWISE, **NORM}[name]
  ours, ref = _both(config, dtype, name, mode, one_call=True)
  assert_trajectories(ours, ref, dtype, exact=name in ELEMENTWISE)
  if kernel is not None:
    kernel.check(config, facade=True, shapes=SHAPES)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("clip", ["clipnorm", "global_clipnorm"])
def test_norm_clipping_one_step_from_the_reference_state(clip, dtype):
  """Each step, started from the reference's own params and velocity, is
  within 2 units of the dtype's rounding of the tensor's scale: what grows
  over a trajectory is these one-step differences, carried by the velocity
  (about 10 float16 ulps after 300 steps at momentum 0.99), not a
  difference in the rule. The same steps without a norm are bitwise equal."""
  config = dict(learning_rate=0.05, momentum=0.99, nesterov=True, **{clip: 1.0})
  rng = np.random.default_rng(5)
  shape, eps = (40, 8), float(jnp.finfo(dtype).eps)
  tx = oks.sgd(**config)
  step = jax.jit(
    lambda p, g, s: (lambda u, s: (oks.apply_updates(p, u), s))(*tx.update(g, s, p))
  )
  with x64(dtype):
    ref_step = reference.stepper(rng.normal(size=shape), dtype, **config)
    for t in range(40):
      if t % 2:  # sparse and dense gradients in turn
        rows = rng.choice(shape[0], 6, replace=False)
        gradient = (3 * rng.normal(size=(6, shape[1])), rows, shape)
      else:
        gradient = 3 * rng.normal(size=shape)
      (p, v), (ref_p, ref_v) = ref_step(gradient)
      state = tx.init(jnp.asarray(p, dtype))
      state = optax.tree.set(
        state, count=jnp.asarray(t, jnp.int32), velocity=jnp.asarray(v, dtype)
      )
      new_p, state = step(jnp.asarray(p, dtype), to_gradient(gradient, dtype), state)
      for ours, ref in [(new_p, ref_p), (oks.velocity(state), ref_v)]:
        error = np.abs(to_numpy(ours).astype(np.float64) - ref).max()
        assert error <= 2 * eps * np.abs(ref).max(), (t, error)


@pytest.mark.parametrize("jit", [True, False])
def test_without_jit_matches_reference(jit):
  config = dict(learning_rate=0.05, momentum=0.9, nesterov=True, decay=0.01)
  rng = np.random.default_rng(7)
  params, grads = random_problem(rng, SHAPES, 10)
  ref, _ = reference.run(params, grads, graph=jit, **config)
  assert_trajectories(run_sgd(params, grads, jit=jit, **config), ref)


def test_step_schedule_with_momentum_matches_reference_not_optax():
  """SPEC section 1.7: the learning rate lives inside the velocity."""
  tf_schedule = reference.schedules().PiecewiseConstantDecay([1], [1.0, 0.1])
  grads = [[np.ones(())] for _ in range(3)]
  ref, _ = reference.run([np.zeros(())], grads, learning_rate=tf_schedule, momentum=0.9)
  # The schedule stated plainly: 1.0 while step <= 1, then 0.1.
  schedule = lambda step: jnp.where(step <= 1, 1.0, 0.1)  # noqa: E731
  ours = run_sgd([np.zeros(())], grads, learning_rate=schedule, momentum=0.9)
  assert_trajectories(ours, ref)
  np.testing.assert_allclose([r[0] for r in ref], [-1.0, -2.9, -4.71], rtol=1e-6)

  # optax.sgd with the same schedule (0.1 from step 2 on) rescales the whole
  # velocity: v = 2.71 at the third step, times 0.1. (SPEC's -1.19, -1.461 are
  # what optax gives when the switch comes one step earlier, `{1: 0.1}`.)
  optax_tx = optax.sgd(optax.piecewise_constant_schedule(1.0, {2: 0.1}), 0.9)
  optax_run = run_sgd([np.zeros(())], grads, tx=optax_tx)
  np.testing.assert_allclose([r[0] for r in optax_run], [-1.0, -2.9, -3.171], rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_exponential_schedule_with_momentum_and_decay(dtype):
  tf_schedule = reference.schedules().ExponentialDecay(0.1, 3, 0.5)
  config = dict(momentum=0.9, decay=0.02)
  rng = np.random.default_rng(3)
  params, grads = random_problem(rng, SHAPES, 12)

  def schedule(step):  # Keras's formula: lr * rate ** (step / decay_steps)
    step = jnp.asarray(step, jnp.float32)
    return jnp.float32(0.1) * jnp.power(jnp.float32(0.5), step / jnp.float32(3))

  with x64(dtype):
    ref, _ = reference.run(params, grads, dtype, learning_rate=tf_schedule, **config)
    ours = run_sgd(params, grads, dtype, learning_rate=schedule, **config)
  # The schedule computes in float32 (as Keras's does), where TensorFlow's and
  # XLA's `pow` may differ in the last bit: agreement is to float32 rounding.
  tolerance_dtype = "float32" if dtype == "float64" else dtype
  assert_trajectories(ours, ref, tolerance_dtype, exact=False, ulps=4)


def test_changing_hyperparameters_with_inject_hyperparams():
  """Keras lets `opt.learning_rate` and `opt.momentum` change between steps."""
  rng = np.random.default_rng(11)
  params, grads = random_problem(rng, SHAPES, 9)
  lrs, ms = [0.1, 0.1, 0.5, 0.5, 0.01, 0.2, 0.2, 0.3, 0.05], [0.9] * 4 + [0.5] * 5

  variables = [reference.tf.Variable(p, dtype=reference.tf.float32) for p in params]
  opt = reference.tf_keras.optimizers.legacy.SGD(learning_rate=0.1, momentum=0.9)
  ref = []
  for lr, m, gs in zip(lrs, ms, grads):
    opt.learning_rate, opt.momentum = lr, m
    opt.apply_gradients(
      zip([reference.tf.constant(g, reference.tf.float32) for g in gs], variables)
    )
    ref.append([v.numpy() for v in variables])

  tx = optax.inject_hyperparams(oks.sgd)(learning_rate=0.1, momentum=0.9)
  p = [jnp.asarray(x, jnp.float32) for x in params]
  state = tx.init(p)
  step = jax.jit(
    lambda p, g, s: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(g, s, p))
  )
  ours = []
  for lr, m, gs in zip(lrs, ms, grads):
    state.hyperparams["learning_rate"] = jnp.asarray(lr)
    state.hyperparams["momentum"] = jnp.asarray(m)
    p, state = step(p, [jnp.asarray(g, jnp.float32) for g in gs], state)
    ours.append([np.asarray(x) for x in p])
  assert_trajectories(ours, ref)
  assert step._cache_size() == 1


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float64_learning_rate_passes_through_float32(dtype):
  """SPEC section 6: float64 variables see float64(float32(0.1))."""
  with x64(dtype):
    ref, _ = reference.run([np.zeros(())], [[np.ones(())]], dtype, learning_rate=0.1)
    ours = run_sgd([np.zeros(())], [[np.ones(())]], dtype, learning_rate=0.1)
  assert float(ours[0][0]) == float(ref[0][0]) == -float(np.float32(0.1))


def test_half_precision_numbers_from_spec():
  """SPEC section 6: float16 w=1, g=1, lr 0.1, m 0.9 gives 0.9; bfloat16 0.898438."""
  for dtype, expected in [("float16", 0.9), ("bfloat16", 0.898438)]:
    ours = run_sgd(
      [np.ones(())], [[np.ones(())]], dtype, learning_rate=0.1, momentum=0.9
    )
    ref, _ = reference.run(
      [np.ones(())], [[np.ones(())]], dtype, learning_rate=0.1, momentum=0.9
    )
    assert float(ours[0][0]) == float(ref[0][0])
    np.testing.assert_allclose(float(ours[0][0]), expected, rtol=1e-3)


@pytest.mark.parametrize("mode", ["jit", "eager"])
@pytest.mark.parametrize("path", ["native", "xla"])
@pytest.mark.parametrize(
  "config",
  [
    dict(clipnorm=1.0),
    dict(clipnorm=0.0, clipvalue=0.5),
    dict(global_clipnorm=1.0),
    dict(clipvalue=1.0),
    {},
  ],
  ids=["clipnorm", "clipnorm_zero_clipvalue", "global_clipnorm", "clipvalue", "none"],
)
def test_non_finite_and_zero_gradients_propagate_like_reference(
  config, path, mode, monkeypatch
):
  """Infinities, NaNs, a zero gradient and a zero threshold, each giving
  TensorFlow's zeros and NaNs, in the kernel (which clips itself) and in
  XLA's step, jitted against `tf.function` and eager against eager."""
  kernel = KernelPath(path, monkeypatch)
  grads = [
    [np.array([1.0, np.inf, 2.0]), np.array([np.nan, 1.0]), np.zeros(4)],
    [np.array([1.0, 1.0, 1.0]), np.array([1.0, 1.0]), np.array([0.0, 3.0, 0, 4])],
  ]
  params = [np.zeros(3), np.zeros(2), np.ones(4)]
  config = dict(learning_rate=0.1, momentum=0.9, **config)
  graph = mode == "jit"
  with np.errstate(invalid="ignore"):
    ref, _ = reference.run(params, grads, graph=graph, **config)
    ours = run_sgd(params, grads, jit=graph, **config)
  assert_trajectories(ours, ref)
  kernel.check(config, facade=False, shapes=[x.shape for x in params])


def test_subnormals_are_flushed_to_zero_like_the_reference():
  """TensorFlow's CPU kernels and XLA both flush subnormals."""
  params = [np.float32(1.3e-43), np.ones(())]
  grads = [[np.zeros(()), np.full((), 1e-39)]]
  ref, _ = reference.run(params, grads, learning_rate=1.0)
  ours = run_sgd(params, grads, learning_rate=1.0)
  assert_trajectories(ours, ref)
  assert float(ref[0][0]) == 0.0
