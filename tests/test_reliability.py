"""Catalogued bad inputs not covered in the per-module tests (docs/errors.md)."""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pytest

import optax_keras_sgd as oks


def test_tree_structure_mismatch():
  tx = oks.sgd(0.1)
  params = {"w": jnp.ones(3), "b": jnp.ones(2)}
  with pytest.raises(ValueError, match="different tree structures"):
    tx.update({"w": jnp.ones(3)}, tx.init(params), params)


def test_shape_mismatch_names_the_leaf():
  tx = oks.sgd(0.1, momentum=0.9)
  params = {"w": jnp.ones(3)}
  with pytest.raises(ValueError, match=re.escape(
      "The gradient at ['w'] has shape (4,), but the parameter has shape (3,).")):
    tx.update({"w": jnp.ones(4)}, tx.init(params), params)


def test_dtype_mismatch_names_the_leaf():
  tx = oks.sgd(0.1)
  params = {"w": jnp.ones(3)}
  with pytest.raises(TypeError, match=re.escape(
      "The gradient at ['w'] has dtype float16, but the parameter has dtype float32")):
    tx.update({"w": jnp.ones(3, jnp.float16)}, tx.init(params), params)


def test_duplicate_variable_in_apply_gradients():
  w = oks.Variable(jnp.ones(2), name="w")
  with pytest.raises(ValueError, match="Variable 'w' appears more than once"):
    oks.SGD().apply_gradients([(jnp.ones(2), w), (jnp.ones(2), w)])


def test_set_weights_bad_slot_dtype_changes_nothing():
  w = oks.Variable(jnp.ones(2))
  opt = oks.SGD(0.1, momentum=0.9)
  opt.build([w])
  with pytest.raises(TypeError, match="Cannot load a weight of dtype"):
    opt.set_weights([np.int64(3), np.array(["a", "b"])])
  assert int(opt.iterations) == 0
