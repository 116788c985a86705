"""The clipping transforms, on hand-derived numbers and TF's edge cases."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax_keras_sgd as oks


def _apply(tx, grads):
  return tx.update(grads, tx.init(grads))[0]


def test_clip_by_value_bounds_and_keeps_nan():
  out = _apply(oks.clip_by_value(1.0), jnp.array([-3.0, 0.5, 2.0, jnp.nan]))
  np.testing.assert_array_equal(out, [-1.0, 0.5, 1.0, np.nan])


def test_clip_by_norm_is_per_tensor_l2():
  grads = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([[0.6], [0.8]])}
  out = _apply(oks.clip_by_norm(1.0), grads)
  np.testing.assert_allclose(out["a"], [0.6, 0.8], rtol=1e-7)
  np.testing.assert_array_equal(out["b"], grads["b"] * 1.0 / 1.0)


def test_clip_by_norm_of_zero_is_zero():
  out = _apply(oks.clip_by_norm(1.0), jnp.zeros(3))
  np.testing.assert_array_equal(out, np.zeros(3))
  assert np.all(
    np.isfinite(
      jax.grad(lambda g: _apply(oks.clip_by_norm(1.0), g).sum())(jnp.zeros(3))
    )
  )


def test_clip_by_norm_with_inf_gives_nan_there_and_zero_elsewhere():
  out = _apply(oks.clip_by_norm(1.0), jnp.array([1.0, jnp.inf, -2.0]))
  assert np.isnan(out[1]) and out[0] == 0 and out[2] == 0


def test_clip_by_norm_zero_threshold_on_zero_gradient_is_nan_like_tf():
  assert np.all(np.isnan(_apply(oks.clip_by_norm(0.0), jnp.zeros(2))))


def test_clip_by_global_norm_scales_all_tensors_together():
  grads = [jnp.array([3.0]), jnp.array([4.0])]
  out = _apply(oks.clip_by_global_norm(2.5), grads)
  np.testing.assert_allclose([out[0][0], out[1][0]], [1.5, 2.0], rtol=1e-7)
  np.testing.assert_allclose(oks.global_norm(grads), 5.0)


def test_clip_by_global_norm_below_threshold_is_identity():
  grads = [jnp.array([0.3]), jnp.array([0.4])]
  out = _apply(oks.clip_by_global_norm(1.0), grads)
  np.testing.assert_array_equal(out[0], grads[0])


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_clip_by_global_norm_non_finite_norm_makes_all_nan(bad):
  grads = [jnp.array([bad, 1.0]), jnp.array([2.0])]
  out = _apply(oks.clip_by_global_norm(1.0), grads)
  assert all(np.all(np.isnan(g)) for g in out)


def test_clip_by_global_norm_zero_threshold_zero_gradients_is_nan():
  out = _apply(oks.clip_by_global_norm(0.0), [jnp.zeros(2)])
  assert np.all(np.isnan(out[0]))


def test_clip_by_global_norm_on_empty_tree():
  assert _apply(oks.clip_by_global_norm(1.0), {}) == {}
