"""What one `SGD` trains, chosen at its first use and fixed after: Keras
`Variable`s (`apply_gradients`) or one pytree (`update`).

A binding checks each step's inputs against what it was built for, makes
the momentum slots, and says which buffers may be donated. Checks that pass
once are not repeated on later steps with the same inputs.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple, cast

import jax

from optax_keras_sgd import _sparse, _validation
from optax_keras_sgd._facade import _inputs, _runner
from optax_keras_sgd._facade._slots import SlotStore
from optax_keras_sgd._variable import Variable

BOTH = (
  "One SGD instance trains either Variables (`apply_gradients`) or one "
  "pytree (`update`); use a separate instance for the other."
)


class _Checked(NamedTuple):
  """The last list of Variables checked: their ids, themselves (kept so the
  ids cannot be reused), their momentum slots and `(shape, dtype)`s."""

  ids: tuple[int, ...]
  variables: list[Variable]
  slots: list[Variable]
  signature: list[tuple[Any, Any]]


class VariableBinding:
  """Trains Keras-style `Variable`s: each gets its slot when first seen."""

  def __init__(self, store: SlotStore, use_momentum: bool):
    self._store = store
    self._use_momentum = use_momentum
    self._dtypes: dict[int, Any] = {}  # id(Variable) -> the dtype checked
    self._last = _Checked((), [], [], [])
    self._warned = False  # `_warn_not_in_place`, once

  def add(self, v: Variable) -> None:
    """Checks `v` the first time it is seen with its dtype and makes its slot."""
    if self._dtypes.get(id(v)) is v.dtype:
      return
    _validation.check_float_leaves(v.value(), f"Variable '{v.name}'")
    if self._use_momentum:
      self._store.slot(id(v), v, v.name, "momentum")
    self._dtypes[id(v)] = v.dtype

  def slots(self, grads: list[Any], variables: list[Variable]) -> list[Variable]:
    """Checks `grads` against `variables`, then the Variables (making their
    slots only once the gradients pass); returns the momentum slots."""
    ids = tuple(map(id, variables))
    known = self._last.ids == ids
    signature = (
      self._last.signature if known else [(v.shape, v.dtype) for v in variables]
    )
    _inputs.check_gradients(grads, variables, signature)
    if not known:
      for v in variables:
        self.add(v)
      slots = (
        [self._store.get(id(v), "momentum", v.name) for v in variables]
        if self._use_momentum
        else []
      )
      self._last = _Checked(ids, variables, slots, signature)
    return self._last.slots

  def donate(self, variables: list[Variable]) -> bool:
    """Whether the step may donate the Variables' arrays: each is held by
    its Variable alone. The first time a large step cannot, warns why."""
    if _runner.sole_owner(variables):
      return True
    if not self._warned:
      self._warned = _warn_not_in_place(variables)
    return False


# Elements of the Variables a step cannot update in place, from which that
# step warns (once per optimizer): below it, new arrays cost little.
NOT_IN_PLACE_WARNING = 1 << 20


def _warn_not_in_place(variables: list[Variable]) -> bool:
  """Warns if the Variables held elsewhere are large; returns whether it
  did."""
  held = _runner.held_elsewhere(variables)
  size = sum(v.size for v in held)
  if size < NOT_IN_PLACE_WARNING:
    return False
  warnings.warn(
    f"apply_gradients cannot update {len(held)} of {len(variables)} "
    f"Variables in place ({size:,} elements; the first is '{held[0].name}'): "
    "their arrays are also referenced elsewhere, such as `params = "
    "var.value()` kept through the step, and donating them would delete "
    "those arrays. Each step then writes new arrays, several times slower "
    "on large models. Drop such references before the step (`del params`).",
    stacklevel=4,
  )
  return True


class PytreeBinding:
  """Trains one pytree: its structure, leaf shapes and dtypes, and slots
  (one per leaf, in tree order) are fixed by the first `params`."""

  def __init__(self, store: SlotStore, use_momentum: bool, params: Any):
    _validation.check_float_leaves(params, "The parameter")
    leaves, treedef = jax.tree.flatten(params)
    self.treedef: Any = treedef
    leaves = _inputs.as_arrays(leaves)
    self.signature: list[tuple[Any, Any]] = _inputs.signatures(leaves) or []
    self.slots = []
    if use_momentum:
      for (path, _), leaf in zip(
        jax.tree_util.tree_flatten_with_path(params)[0], leaves
      ):
        name = jax.tree_util.keystr(path)
        self.slots.append(
          store.slot(("pytree", name), leaf, name or "param", "momentum")
        )

  @staticmethod
  def flatten(params: Any, grads: Any) -> tuple[Any, list[jax.Array], list[Any]]:
    """`params`' tree structure, leaves and gradient leaves, the gradients
    checked against the params (before anything is built or changed).

    Raises:
      ValueError / TypeError: saying what differs.
    """
    leaves, treedef = cast(Any, jax.tree.flatten(params))
    grad_leaves, grad_def = jax.tree.flatten(grads, is_leaf=_sparse.is_indexed_slices)
    leaves = _inputs.as_arrays(leaves)
    if grad_def != treedef or (
      _inputs.signatures(grad_leaves) != _inputs.signatures(leaves)
    ):
      _validation.check_gradients_match(grads, params)
    return treedef, leaves, grad_leaves

  def check(self, params: Any, treedef: Any, leaves: list[jax.Array]) -> None:
    """Raises naming what differs if `params` is not the pytree this binding
    was built for."""
    if treedef != self.treedef:
      raise ValueError(
        f"`params` has tree structure {treedef}, but this "
        f"optimizer was first used with {self.treedef}."
      )
    if _inputs.signatures(leaves) != self.signature:
      self._explain(params, leaves)

  def _explain(self, params: Any, leaves: list[jax.Array]) -> None:
    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, _), x, (shape, dtype) in zip(paths, leaves, self.signature):
      where = f"`params` at {jax.tree_util.keystr(path) or '<root>'}"
      if x.shape != shape:
        raise ValueError(
          f"{where} has shape {x.shape}, but this optimizer was "
          f"built for shape {shape}."
        )
      if x.dtype != dtype:
        raise TypeError(
          f"{where} has dtype {x.dtype}, but this optimizer was "
          f"built for dtype {dtype}."
        )

  @staticmethod
  def donate(leaves: list[jax.Array], grad_leaves: list[Any]) -> bool:
    """Whether `leaves` may be donated: each array once, and none of them a
    gradient too."""
    ids = set(map(id, leaves))
    return len(ids) == len(leaves) and ids.isdisjoint(map(id, grad_leaves))


def make(
  kind: type, store: SlotStore, use_momentum: bool, params: Any = None
) -> VariableBinding | PytreeBinding:
  """A new binding of `kind` (`VariableBinding` or `PytreeBinding`)."""
  if kind is VariableBinding:
    return VariableBinding(store, use_momentum)
  return PytreeBinding(store, use_momentum, params)
