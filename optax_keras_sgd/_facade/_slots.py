"""The facade's weights: the step count and the slots, in Keras's order.

Keras lists an optimizer's weights as `iterations` first, then each slot in
the order it was created; `get_weights`/`set_weights` use that list, and so
do files and configs that move a run between Keras and JAX.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from optax_keras_sgd._facade import _inputs
from optax_keras_sgd._facade._packing import PackedSlot
from optax_keras_sgd._variable import Variable


class SlotStore:
  """`iterations` and the slot Variables, each slot keyed by what it belongs
  to (a Variable's id, or a pytree leaf's path)."""

  def __init__(self):
    self._iterations: Variable | None = None
    self._weights: list[Variable] = []
    self._names: list[str] = []
    self._slots: dict[Hashable, dict[str, Variable]] = {}
    # Keeps each Variable with slots alive, so its id (the key) stays unique;
    # for a pytree leaf only its shape and dtype, not the user's array.
    self._owners: dict[Hashable, Any] = {}

  @property
  def iterations(self) -> Variable:
    return self.counter()

  def counter(self) -> Variable:
    """The step counter, created (int32, zero) on first use."""
    if self._iterations is None:
      self.set_counter(Variable(jnp.zeros((), jnp.int32), name="iter", trainable=False))
    assert self._iterations is not None
    return self._iterations

  def set_counter(self, variable: Variable) -> None:
    """Makes `variable` the step counter, as Keras allows before any weight
    exists.

    Raises:
      RuntimeError: once the weights exist (the reference's message).
      ValueError: if it does not hold a non-negative integer scalar.
    """
    if self._iterations is not None:
      raise RuntimeError(
        "Cannot set `iterations` to a new Variable after the Optimizer "
        f"weights have been created. Here it is attempting to set "
        f"`iterations` to {variable!r}."
      )
    _inputs.as_count(variable.numpy(), "iterations")
    self._iterations = variable
    self._weights.insert(0, variable)

  def slot(
    self,
    key: Hashable,
    target: Any,
    name: str,
    slot_name: str,
    initializer: Any = "zeros",
    shape: Any = None,
  ) -> Variable:
    """The slot `slot_name` of `target` (a Variable or an array), created on
    first use with `target`'s dtype and shape (or `shape`)."""
    slots = self._slots.setdefault(key, {})
    if slot_name in slots:
      return slots[slot_name]
    if slot_name not in self._names:
      self._names.append(slot_name)
    dtype = jnp.result_type(target.dtype)
    shape = tuple(jnp.shape(target)) if shape is None else tuple(shape)
    if isinstance(initializer, str) and initializer == "zeros":
      value = jnp.zeros(shape, dtype)
    elif callable(initializer):
      value = jnp.asarray(initializer(shape=shape, dtype=dtype))
    else:
      value = jnp.broadcast_to(jnp.asarray(initializer, dtype), shape)
    slots[slot_name] = PackedSlot(value, name=f"{name}/{slot_name}", trainable=False)
    self._owners[key] = (
      target if isinstance(target, Variable) else jax.ShapeDtypeStruct(shape, dtype)
    )
    self.counter()  # the counter comes first in the weights
    self._weights.append(slots[slot_name])
    return slots[slot_name]

  def get(self, key: Hashable, slot_name: str, what: str) -> Variable:
    try:
      return self._slots[key][slot_name]
    except KeyError:
      raise KeyError(
        f"No slot '{slot_name}' for variable '{what}'. Slot names: {self._names}."
      ) from None

  @property
  def slot_names(self) -> list[str]:
    return list(self._names)

  @property
  def weights(self) -> list[Variable]:
    return list(self._weights)

  def get_weights(self) -> list[np.ndarray]:
    """`[iterations (int64), slot, slot, ...]`, as the reference returns."""
    return [
      np.asarray(w.numpy()).astype(np.int64)
      if w is self._iterations
      else np.asarray(w.numpy())
      for w in self._weights
    ]

  def set_weights(self, weights: list[Any], optimizer: str) -> None:
    """Loads a list from `get_weights` (ours or the reference's): the length
    and every shape must match (the reference's messages), the dtypes must
    convert without loss, and nothing changes unless all do."""
    weights = list(weights)
    if len(self._weights) != len(weights):
      raise ValueError(
        f"You called `set_weights(weights)` on optimizer {optimizer} "
        f"with a  weight list of length {len(weights)}, "
        f"but the optimizer was expecting {len(self._weights)} "
        f"weights. Provided weights: {str(weights)[:50]}..."
      )
    staged = []
    for p, w in zip(self._weights, weights):
      w = np.asarray(w)
      if tuple(p.shape) != tuple(w.shape):
        raise ValueError(
          f"Optimizer weight shape {tuple(p.shape)} not "
          f"compatible with provided weight shape {tuple(w.shape)}."
        )
      staged.append(
        _inputs.as_count(w, "weights[0] (iterations)")
        if p is self._iterations
        else _inputs.as_slot_value(w, p)
      )
    for p, w in zip(self._weights, staged):
      p.assign(w)
