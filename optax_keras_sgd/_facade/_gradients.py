"""Gradients of a Keras-style loss closure over `Variable`s.

Keras's `minimize(loss, var_list)` takes a zero-argument closure that reads
variables. Here the closure is traced once, with each variable of `var_list`
temporarily bound to a tracer; every other variable it reads is a constant of
this trace, so it always sees current values (nothing is cached across
calls). The variables are restored in a `finally`, so an exception in the
loss leaves them as they were and no tracer escapes. A variable the loss does
not use gets `None`, as a `tf.GradientTape` gives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core
import jax.numpy as jnp

from optax_keras_sgd._variable import Variable


def _bound(loss: Callable[[], Any], variables: list[Variable]):
  def fn(*values):
    saved = [v._value for v in variables]
    try:
      for v, x in zip(variables, values):
        v._value = x
      out = loss()
      return out.value() if isinstance(out, Variable) else jnp.asarray(out)
    finally:
      for v, x in zip(variables, saved):
        v._value = x

  return fn


def _used_inputs(closed: jax.extend.core.ClosedJaxpr) -> list[bool]:
  jaxpr = closed.jaxpr
  used: set[int] = set()
  for eqn in jaxpr.eqns:
    used.update(id(x) for x in eqn.invars)
  used.update(id(x) for x in jaxpr.outvars)
  return [id(x) in used for x in jaxpr.invars]


def gradients_of_closure(
  loss: Callable[[], Any], variables: list[Variable], grad_loss: Any = None
) -> list[Any]:
  """`d loss / d v` for each variable (None where the loss does not use it).

  A non-scalar loss is differentiated as its sum, or against `grad_loss`.
  """
  values = [v.value() for v in variables]
  fn = _bound(loss, variables)
  closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*values)
  if not jnp.issubdtype(out_shape.dtype, jnp.inexact):
    raise TypeError(
      f"The loss must be a floating-point value. Received dtype {out_shape.dtype}."
    )
  _, vjp = jax.vjp(jax.extend.core.jaxpr_as_fun(closed), *values)
  cotangent = (
    jnp.ones(out_shape.shape, out_shape.dtype)
    if grad_loss is None
    else jnp.asarray(grad_loss, out_shape.dtype).reshape(out_shape.shape)
  )
  grads = vjp([cotangent])
  return [g if used else None for g, used in zip(grads, _used_inputs(closed))]


def compute_gradients(
  loss: Callable[[], Any], var_list: Any, grad_loss: Any = None, tape: Any = None
) -> list[tuple[Any, Variable]]:
  """Keras's `_compute_gradients`: `(gradient, Variable)` pairs of the
  zero-argument `loss` over `var_list` (a list, or a callable returning one,
  called after the loss so that the loss may build its variables).

  Raises:
    ValueError: for a loss value without a tape (the reference's message).
    TypeError: for a loss value with a tape (JAX cannot differentiate a
      value), or a `var_list` item that is not a Variable.
  """
  if not callable(loss):
    if tape is None:
      raise ValueError("`tape` is required when a `Tensor` loss is passed.")
    raise TypeError(
      "JAX cannot differentiate a loss value after it was computed: pass "
      f"`loss` as a zero-argument callable. Received: {type(loss).__name__}."
    )
  if callable(var_list):
    loss()  # Keras evaluates the loss first, so it may build its variables.
    var_list = var_list()
  variables = list(var_list)
  for i, v in enumerate(variables):
    if not isinstance(v, Variable):
      raise TypeError(
        f"`var_list[{i}]` must be an optax_keras_sgd.Variable. "
        f"Received: {type(v).__name__}."
      )
  return list(zip(gradients_of_closure(loss, variables, grad_loss), variables))


def require_all(grads_and_vars: list[tuple[Any, Variable]]) -> list[Any]:
  """The gradients, all of them present (Keras's `get_gradients`).

  Raises:
    ValueError: naming the first variable the loss does not use.
  """
  for g, v in grads_and_vars:
    if g is None:
      raise ValueError(
        f"Variable {v.name} has `None` for gradient. Please make sure "
        "that all of your ops have a gradient defined (i.e. are "
        "differentiable)."
      )
  return [g for g, _ in grads_and_vars]
