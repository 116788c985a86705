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
  with pytest.raises(
    ValueError,
    match=re.escape(
      "The gradient at ['w'] has shape (4,), but the parameter has shape (3,)."
    ),
  ):
    tx.update({"w": jnp.ones(4)}, tx.init(params), params)


def test_dtype_mismatch_names_the_leaf():
  tx = oks.sgd(0.1)
  params = {"w": jnp.ones(3)}
  with pytest.raises(
    TypeError,
    match=re.escape(
      "The gradient at ['w'] has dtype float16, but the parameter has dtype float32"
    ),
  ):
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


def test_bad_gradient_on_a_known_variable_list_is_named_and_changes_nothing():
  # The second step with the same Variables takes the fast path of the
  # checks; a bad gradient there must be caught as on the first step.
  a = oks.Variable(jnp.ones(2), name="a")
  b = oks.Variable(jnp.ones(3), name="b")
  opt = oks.SGD(0.1, momentum=0.9)
  opt.apply_gradients([(jnp.ones(2), a), (jnp.ones(3), b)])
  before = [np.asarray(x) for x in opt.get_weights()] + [a.numpy(), b.numpy()]
  with pytest.raises(
    ValueError,
    match=re.escape(
      "The gradient for variable 'b' has shape (2,), but the variable has shape (3,)."
    ),
  ):
    opt.apply_gradients([(jnp.ones(2), a), (jnp.ones(2), b)])
  with pytest.raises(TypeError, match="for variable 'a' has dtype float16"):
    opt.apply_gradients([(jnp.ones(2, jnp.float16), a), (jnp.ones(3), b)])
  with pytest.raises(ValueError, match="for variable 'a' has shape"):
    opt.apply_gradients([([1.0, 2.0, 3.0], a), (jnp.ones(3), b)])
  after = [np.asarray(x) for x in opt.get_weights()] + [a.numpy(), b.numpy()]
  for x, y in zip(before, after):
    np.testing.assert_array_equal(x, y)


def test_bad_gradient_on_the_first_step_creates_no_slot():
  w = oks.Variable(jnp.ones(2), name="w")
  opt = oks.SGD(0.1, momentum=0.9)
  with pytest.raises(ValueError, match="for variable 'w' has shape"):
    opt.apply_gradients([(jnp.ones(3), w)])
  assert opt.variables() == []


def test_pairs_may_be_lists_and_variables_subclassed():
  class Named(oks.Variable):
    pass

  a, b = oks.Variable(jnp.ones(2)), Named(jnp.ones(2))
  oks.SGD(0.5).apply_gradients(iter([[jnp.ones(2), a], (jnp.ones(2), b)]))
  np.testing.assert_array_equal(a.numpy(), [0.5, 0.5])
  np.testing.assert_array_equal(b.numpy(), [0.5, 0.5])


def test_a_pair_of_three_is_named():
  w = oks.Variable(jnp.ones(2))
  with pytest.raises(
    TypeError,
    match=r"`grads_and_vars\[1\]` must be a \(gradient, "
    r"Variable\) pair",
  ):
    oks.SGD().apply_gradients([(jnp.ones(2), w), (jnp.ones(2), w, 0)])
