"""`Variable`: a mutable holder of a `jax.Array`, like `tf.Variable`."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_counter = itertools.count()


def _binary(op):
  def method(self, other):
    return op(self._value, _unwrap(other))

  return method


def _reflected(op):
  def method(self, other):
    return op(_unwrap(other), self._value)

  return method


def _unwrap(x: Any) -> Any:
  return x._value if isinstance(x, Variable) else x


@jax.tree_util.register_pytree_node_class
class Variable:
  """A named, mutable array: the JAX counterpart of `tf.Variable`.

  Arithmetic, indexing and `jax.numpy` functions work on it as on its value,
  so Keras-style closures such as `lambda: (var ** 2) / 2.0` carry over. It is
  a pytree with one leaf (its value), so `jax.grad` and `jax.jit` see through
  it. Equality and hashing are by identity, as for `tf.Variable` references.

  Args:
    initial_value: an array-like, or a zero-argument callable returning one.
    name: the variable's name; defaults to `Variable`, `Variable_1`, ...
    trainable: whether optimizers should train it (informational here).
    dtype: cast the initial value to this dtype.
    constraint: as in `tf.Variable`, a callable an optimizer applies after
      each update: the variable's new value becomes `constraint(variable)`
      (a projection such as a max-norm or non-negativity constraint).

  Examples:
    >>> import jax.numpy as jnp
    >>> from optax_keras_sgd import Variable
    >>> v = Variable(1.0, name="w")
    >>> loss = lambda: (v ** 2) / 2.0
    >>> float(loss()), round(float(jnp.sin(v) ** 2 + jnp.cos(v) ** 2), 6)
    (0.5, 1.0)
    >>> v.assign_sub(0.25).numpy()
    array(0.75, dtype=float32)
  """

  __array_priority__ = 100

  def __init__(
    self,
    initial_value: Any,
    name: str | None = None,
    trainable: bool = True,
    dtype: Any = None,
    *,
    constraint: Callable[[Any], Any] | None = None,
  ):
    if constraint is not None and not callable(constraint):
      raise ValueError(
        "`constraint` must be None or a callable. Received: "
        f"{constraint!r} (of type {type(constraint).__name__})."
      )
    if callable(initial_value):
      initial_value = initial_value()
    initial_value = _unwrap(initial_value)
    if (
      dtype is None
      and isinstance(initial_value, (float, int))
      and not isinstance(initial_value, bool)
    ):
      dtype = jnp.float32 if isinstance(initial_value, float) else jnp.int32
    self._value = (
      initial_value  # as `jnp.asarray` would return it, without its dispatch
      if isinstance(initial_value, jax.Array)
      and (dtype is None or initial_value.dtype == dtype)
      else jnp.asarray(initial_value, dtype=dtype)
    )
    number = next(_counter)
    self._name = (
      name
      if name is not None
      else ("Variable" if number == 0 else f"Variable_{number}")
    )
    self._trainable = bool(trainable)
    self._constraint = constraint

  # -- Keras/TF surface ------------------------------------------------------

  @property
  def name(self) -> str:
    return self._name

  @property
  def trainable(self) -> bool:
    return self._trainable

  @property
  def constraint(self) -> Callable[[Any], Any] | None:
    return self._constraint

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self._value.shape)

  @property
  def dtype(self):
    return self._value.dtype

  @property
  def ndim(self) -> int:
    return self._value.ndim

  @property
  def size(self) -> int:
    return int(self._value.size)

  @property
  def sharding(self):
    return self._value.sharding

  def value(self) -> jax.Array:
    """The current value (an immutable `jax.Array` snapshot)."""
    return self._value

  read_value = value

  def numpy(self) -> np.ndarray:
    return np.asarray(self._value)

  def assign(self, value: Any) -> Variable:
    """Replaces the value; the shape must match and the dtype is kept."""
    value = jnp.asarray(_unwrap(value))
    if value.shape != self._value.shape:
      raise ValueError(
        f"Cannot assign a value of shape {value.shape} to variable "
        f"'{self._name}' of shape {self._value.shape}."
      )
    self._value = value.astype(self._value.dtype)
    return self

  def assign_add(self, delta: Any) -> Variable:
    return self.assign(self._value + _unwrap(delta))

  def assign_sub(self, delta: Any) -> Variable:
    return self.assign(self._value - _unwrap(delta))

  # -- array protocol -------------------------------------------------------

  def __jax_array__(self) -> jax.Array:
    return self._value

  def __array__(self, dtype=None, copy=None):
    out = np.asarray(self._value)
    return out.astype(dtype) if dtype is not None else out

  def __float__(self) -> float:
    return float(self._value)

  def __int__(self) -> int:
    return int(self._value)

  def __index__(self) -> int:
    return int(self._value)

  def __bool__(self) -> bool:
    return bool(self._value)

  def __len__(self) -> int:
    return len(self._value)

  def __iter__(self):
    return iter(self._value)

  def __getitem__(self, index):
    return self._value[index]

  def __neg__(self):
    return -self._value

  def __pos__(self):
    return +self._value

  def __abs__(self):
    return abs(self._value)

  def __invert__(self):
    return ~self._value

  @property
  def T(self):  # noqa: N802
    return self._value.T

  def __repr__(self) -> str:
    return (
      f"<Variable '{self._name}' shape={self.shape} dtype={self.dtype}, "
      f"numpy={np.asarray(self._value)!r}>"
    )

  # -- pytree -----------------------------------------------------------------

  def tree_flatten(self):
    return (self._value,), (self._name, self._trainable, self._constraint)

  @classmethod
  def tree_unflatten(cls, aux, children):
    out = object.__new__(cls)
    (out._value,) = children
    out._name, out._trainable, out._constraint = aux
    return out


for _name, _op in {
  "add": jnp.add,
  "sub": jnp.subtract,
  "mul": jnp.multiply,
  "truediv": jnp.true_divide,
  "floordiv": jnp.floor_divide,
  "mod": jnp.mod,
  "pow": jnp.power,
  "matmul": jnp.matmul,
  "and": jnp.bitwise_and,
  "or": jnp.bitwise_or,
  "xor": jnp.bitwise_xor,
}.items():
  setattr(Variable, f"__{_name}__", _binary(_op))
  setattr(Variable, f"__r{_name}__", _reflected(_op))
for _name, _op in {
  "lt": jnp.less,
  "le": jnp.less_equal,
  "gt": jnp.greater,
  "ge": jnp.greater_equal,
}.items():
  setattr(Variable, f"__{_name}__", _binary(_op))
del _name, _op
