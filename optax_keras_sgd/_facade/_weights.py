"""The Keras weights surface of the facade: `iterations`, slots, weight lists.

`SGD` inherits these methods; each delegates to the optimizer's `SlotStore`
(`self._store`), which keeps `iterations` first and the slots in creation
order, as Keras lists them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from optax_keras_sgd._facade import _inputs
from optax_keras_sgd._facade._slots import SlotStore
from optax_keras_sgd._variable import Variable


class KerasWeights:
  """`iterations`, `add_slot`/`get_slot`, `variables`, `get/set_weights`."""

  _store: SlotStore
  _name: str

  @property
  def iterations(self) -> Variable:
    """The number of steps taken (a `Variable`; Keras's is int64)."""
    return self._store.iterations

  @iterations.setter
  def iterations(self, value: Any) -> None:
    """A `Variable` becomes the optimizer's counter (it advances it), as in
    Keras, if no weights exist yet; a number sets the count."""
    if isinstance(value, Variable):
      self._store.set_counter(value)
    else:
      self._store.iterations.assign(_inputs.as_count(value, "iterations"))

  def add_slot(
    self, var: Any, slot_name: str, initializer: Any = "zeros", shape: Any = None
  ) -> Variable:
    """Adds (or returns the existing) slot `slot_name` for `var`."""
    return self._store.slot(
      id(var), var, getattr(var, "name", "var"), slot_name, initializer, shape
    )

  def get_slot(self, var: Any, slot_name: str) -> Variable:
    return self._store.get(id(var), slot_name, getattr(var, "name", var))

  def get_slot_names(self) -> list[str]:
    return self._store.slot_names

  def variables(self) -> list[Variable]:
    """The optimizer's variables: iterations, then slots in creation order."""
    return self._store.weights

  @property
  def weights(self) -> list[Variable]:
    return self._store.weights

  def get_weights(self) -> list[np.ndarray]:
    """`[iterations (int64), slot, slot, ...]`, as the reference returns."""
    return self._store.get_weights()

  def set_weights(self, weights: list[Any]) -> None:
    """Loads a list from `get_weights` (ours or the reference's). The length
    and every shape must match (the reference's messages); the dtypes must
    convert without loss. Nothing is changed unless all match."""
    self._store.set_weights(weights, self._name)
