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


def gradients_of_closure(loss: Callable[[], Any], variables: list[Variable],
                         grad_loss: Any = None) -> list[Any]:
  """`d loss / d v` for each variable (None where the loss does not use it).

  A non-scalar loss is differentiated as its sum, or against `grad_loss`.
  """
  values = [v.value() for v in variables]
  fn = _bound(loss, variables)
  closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*values)
  if not jnp.issubdtype(out_shape.dtype, jnp.inexact):
    raise TypeError(f"The loss must be a floating-point value. Received dtype "
                    f"{out_shape.dtype}.")
  _, vjp = jax.vjp(jax.extend.core.jaxpr_as_fun(closed), *values)
  cotangent = jnp.ones(out_shape.shape, out_shape.dtype) if grad_loss is None \
      else jnp.asarray(grad_loss, out_shape.dtype).reshape(out_shape.shape)
  grads = vjp([cotangent])
  return [g if used else None for g, used in zip(grads, _used_inputs(closed))]
