"""Small helpers shared by the tests: running our `sgd` and comparing runs."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import chex
import jax
import jax.numpy as jnp
import numpy as np

import optax_keras_sgd as oks

# `.ci/run` sets this: there a missing optional package fails the run
# instead of skipping the tests that need it.
REQUIRE_EXTRAS = os.environ.get("OPTAX_KERAS_SGD_REQUIRE_EXTRAS") == "1"


def enable_x64(enabled: bool = True):
  """`jax.enable_x64`, a context manager (`jax.experimental.enable_x64`
  before jax 0.8)."""
  if hasattr(jax, "enable_x64"):
    return jax.enable_x64(enabled)
  from jax.experimental import enable_x64 as legacy

  return legacy(enabled)


def optional(name: str) -> ModuleType:
  """Imports an optional test dependency (an extra such as tf-keras or
  flax): the importing test module is skipped where it is not installed,
  unless REQUIRE_EXTRAS."""
  if REQUIRE_EXTRAS:
    return importlib.import_module(name)
  import pytest

  return pytest.importorskip(name)


def to_numpy(x):
  x = jnp.asarray(x)
  if x.dtype == jnp.bfloat16:
    x = x.astype(jnp.float32)
  return np.asarray(x)


def run_sgd(
  params, grad_steps, dtype="float32", jit=True, tx=None, one_call=False, **kwargs
):
  """Our functional `sgd`, step by step; returns the params after each step.
  With `one_call`, each step is `update_and_apply`, jitted with the params
  and state donated."""
  tx = tx if tx is not None else oks.sgd(**kwargs)
  p = [jnp.asarray(np.asarray(x, np.float64), dtype) for x in params]
  state = tx.init(p)

  def step(p, g, state):
    if one_call:
      return oks.update_and_apply(tx, g, state, p)
    updates, state = tx.update(g, state, p)
    return oks.apply_updates(p, updates), state

  if jit:
    step = jax.jit(step, donate_argnums=(0, 2) if one_call else ())
  out = []
  for grads in grad_steps:
    g = [to_gradient(x, dtype) for x in grads]
    p, state = step(p, g, state)
    out.append([to_numpy(x) for x in p])
  return out


def to_gradient(x, dtype="float32"):
  """A dense gradient, or `(values, indices, dense_shape)` for IndexedSlices."""
  if isinstance(x, tuple):
    values, indices, dense_shape = x
    return oks.IndexedSlices(
      jnp.asarray(np.asarray(values, np.float64), dtype),
      jnp.asarray(indices, jnp.int32),
      dense_shape,
    )
  return jnp.asarray(np.asarray(x, np.float64), dtype)


def assert_trajectories(ours, ref, dtype="float32", exact=True, ulps=8):
  """Bitwise equal, or within `ulps` units of `dtype`'s rounding relative to
  each tensor's scale (for norm clipping, whose sums TensorFlow and XLA
  accumulate in different orders)."""
  assert len(ours) == len(ref)
  eps = float(jnp.finfo(dtype).eps)
  for step, (a_list, b_list) in enumerate(zip(ours, ref)):
    assert len(a_list) == len(b_list)
    for i, (a, b) in enumerate(zip(a_list, b_list)):
      a = np.asarray(a, np.float64)
      b = np.asarray(b, np.float64)
      msg = f"step {step}, tensor {i}"
      if exact:
        try:
          chex.assert_trees_all_equal(a, b, strict=True)
        except AssertionError as e:
          raise AssertionError(f"{msg}: {e}") from None
      else:
        scale = max(float(np.max(np.abs(b))), 1.0) if b.size else 1.0
        np.testing.assert_allclose(
          a, b, rtol=ulps * eps, atol=ulps * eps * scale, err_msg=msg
        )


def random_problem(rng, shapes, steps, scale=1.0):
  params = [rng.normal(size=s) for s in shapes]
  grads = [[scale * rng.normal(size=s) for s in shapes] for _ in range(steps)]
  return params, grads


NATIVE_DTYPES = ("float32", "float64")


class KernelPath:
  """Runs the step on one path: "native" (the kernels of `_native`, which
  must then run: `calls` counts their calls, `sizes` the sizes of the dense
  leaves `_native.step` took) or "xla" (the kernels turned off)."""

  def __init__(self, name: str, monkeypatch):
    from optax_keras_sgd import _native

    self.name, self.calls, self.sizes = name, 0, set()
    if name == "xla":
      monkeypatch.setattr(_native, "usable", lambda *trees: False)
      return
    import jax
    import pytest

    status = _native.native_status()
    if not status.available:
      message = f"the native kernel is not available: {status.detail}"
      pytest.fail(message) if REQUIRE_EXTRAS else pytest.skip(message)
    if not _native.usable():  # loaded, but its rule wants one CPU device
      pytest.skip(
        f"the native kernel runs on one CPU device; this process has "
        f"{jax.device_count()} {jax.default_backend()} device(s)"
      )
    for kernel in _KERNELS:
      monkeypatch.setattr(_native, kernel, self._counted(getattr(_native, kernel)))

  def check(self, config: dict, facade: bool, shapes) -> None:
    """`_native.step` took exactly the dense leaves (of `shapes`) it should:
    in the facade every leaf and in `sgd` every leaf with a velocity, but a
    leaf of more than `_fused.SMALL_LEAF` elements in `sgd` only with no
    Nesterov update to write out and no global norm clip (XLA's step is the
    faster there)."""
    from optax_keras_sgd import _fused

    velocity = bool(config.get("momentum"))
    plain = not config.get("nesterov") and config.get("global_clipnorm") is None
    large = facade or (velocity and plain)
    expected = {
      n
      for n in (int(np.prod(s)) for s in shapes)
      if self.name == "native"
      and (facade or velocity)
      and (large or n <= _fused.SMALL_LEAF)
    }
    assert self.sizes == expected, (self.name, self.sizes, config, facade)

  def _counted(self, real):
    def counted(*args, **kwargs):
      self.calls += 1
      if real.__name__ == "step":  # step(mode, clip, reference, scalars, grads, ...)
        self.sizes.update(int(np.size(g)) for g in args[4])
      return real(*args, **kwargs)

    return counted


# The functions of `_native` that call a kernel.
_KERNELS = ("step", "sparse_step", "sum_duplicates", "scatter_add")


def paths_for(dtypes) -> list[tuple[str, str]]:
  """(dtype, path) pairs: both paths where the kernel takes the dtype."""
  both, xla = ("native", "xla"), ("xla",)
  return [(d, p) for d in dtypes for p in (both if d in NATIVE_DTYPES else xla)]
