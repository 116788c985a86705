"""Every argument error: the reference's type and a message naming the value."""

from __future__ import annotations

import re

import jax.numpy as jnp
import pytest

import optax_keras_sgd as oks


@pytest.mark.parametrize("momentum", [-0.1, 1.5])
def test_momentum_out_of_range(momentum):
  with pytest.raises(
    ValueError,
    match=re.escape(
      f"`momentum` must be between [0, 1]. Received: momentum={momentum}"
    ),
  ):
    oks.sgd(0.1, momentum=momentum)


@pytest.mark.parametrize("name", ["clipvalue", "clipnorm", "global_clipnorm", "decay"])
def test_negative_thresholds(name):
  with pytest.raises(ValueError, match=f"Expected {name} >= 0, received: -1"):
    oks.sgd(0.1, **{name: -1})


def test_both_norm_clips():
  with pytest.raises(
    ValueError,
    match="Cannot accept both `clipnorm` and "
    "`global_clipnorm`. Received: `clipnorm`=1.0, "
    "`global_clipnorm`=2.0",
  ):
    oks.sgd(0.1, clipnorm=1.0, global_clipnorm=2.0)


def test_negative_learning_rate_is_accepted():
  oks.sgd(-0.1)


@pytest.mark.parametrize(
  "kwargs, name",
  [
    (dict(learning_rate="0.1"), "learning_rate"),
    (dict(momentum="0.9"), "momentum"),
    (dict(clipnorm="1"), "clipnorm"),
    (dict(clipvalue=True), "clipvalue"),
    (dict(decay=None), "decay"),
  ],
)
def test_wrong_types_name_the_argument(kwargs, name):
  with pytest.raises(TypeError, match=f"`{name}` must be a real number"):
    oks.sgd(**kwargs)


def test_non_scalar_hyperparameter():
  with pytest.raises(
    ValueError,
    match=r"`momentum` must be a scalar. Received: "
    r"momentum with shape \(2,\)",
  ):
    oks.sgd(0.1, momentum=jnp.array([0.1, 0.2]))


def test_nesterov_must_be_bool():
  with pytest.raises(
    TypeError, match="`nesterov` must be a bool. Received: nesterov='yes'"
  ):
    oks.sgd(0.1, momentum=0.9, nesterov="yes")


def test_integer_params_are_rejected_by_name():
  tx = oks.sgd(0.1)
  params = {"w": jnp.ones(2), "steps": jnp.ones(2, jnp.int32)}
  with pytest.raises(TypeError, match=r"\['steps'\] has dtype int32"):
    tx.update(params, tx.init(params), params)
