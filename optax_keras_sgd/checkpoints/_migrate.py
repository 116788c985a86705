"""A Keras 2 SGD's state (`KerasState`) onto JAX parameters, and back into
the files Keras reads.

Parameters are matched to Keras variables by path: a pytree leaf's path,
its keys joined by "/" (`{"dense": {"kernel": w}}` is `dense/kernel`), or a
`Variable`'s name. `names` renames Keras paths where the two differ.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_keras_sgd import _alias, _config, _state
from optax_keras_sgd._facade import SGD
from optax_keras_sgd._variable import Variable
from optax_keras_sgd.checkpoints._read import KerasState

Names = Mapping[str, str] | Callable[[str], str] | None
_SGD_ARGS = (
  "learning_rate",
  "momentum",
  "nesterov",
  "clipvalue",
  "clipnorm",
  "global_clipnorm",
  "decay",
)


def leaf_path(path: tuple[Any, ...]) -> str:
  """A pytree path as Keras writes variable paths: keys joined by "/"."""
  parts = []
  for key in path:
    for attribute in ("key", "name", "idx"):
      if hasattr(key, attribute):
        parts.append(str(getattr(key, attribute)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def targets(params: Any) -> tuple[list[str], list[Any], Any]:
  """Each parameter's path (a Variable's name), leaf and the tree def."""
  if (
    isinstance(params, (list, tuple))
    and params
    and all(isinstance(v, Variable) for v in params)
  ):
    return [v.name.split(":")[0] for v in params], list(params), None
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  return [leaf_path(p) for p, _ in flat], [x for _, x in flat], treedef


def match(
  keras_paths: list[str],
  params: Any,
  names: Names = None,
  source: str = "the file",
  required: list[str] | None = None,
) -> list[str]:
  """For each parameter of `params` (pytree leaves in order, or Variables),
  the Keras path it corresponds to.

  Every parameter must match one of `keras_paths`, and every path in
  `required` (by default all of them) must be matched.

  Raises:
    ValueError: listing the parameters no Keras path matches and the
      required Keras paths no parameter matches.
  """
  renamed = dict(names) if isinstance(names, Mapping) else {}
  rename: Callable[[str], str] = (
    names if callable(names) else (lambda p: renamed.get(p, p))
  )
  ours = {rename(k): k for k in keras_paths}
  paths, _, _ = targets(params)
  missing = [p for p in paths if p not in ours]
  needed = {rename(k) for k in (keras_paths if required is None else required)}
  unmatched = sorted(needed - set(paths))
  if missing or unmatched:
    raise ValueError(
      f"The parameters do not match the variables of {source}. Parameters "
      f"with no Keras variable: {missing}; Keras variables with no parameter: "
      f"{[ours[u] for u in unmatched]}. Pass `names` (a mapping from Keras "
      "variable path to parameter path) for layers named differently."
    )
  return [ours[p] for p in paths]


def sgd_kwargs(state: KerasState, overrides: Mapping[str, Any]) -> dict[str, Any]:
  """`sgd` arguments: the file's config, or a checkpoint's hyperparameter
  values (float32), then `overrides`."""
  if state.config is not None:
    kwargs = _config.optimizer_kwargs_from_config(
      {k: v for k, v in state.config.items() if k in _config.CONFIG_KEYS}
    )
  else:
    kwargs = {k: np.float32(v) for k, v in state.hyperparameters.items()}
    kwargs["decay"] = float(kwargs.get("decay", 0.0))
  kwargs.update(overrides)
  unknown = sorted(set(kwargs) - set(_SGD_ARGS) - {"name", "skip_non_finite"})
  if unknown:
    raise TypeError(f"Unknown SGD arguments: {unknown}.")
  return kwargs


def velocities(state: KerasState, params: Any, names: Names) -> list[jax.Array]:
  """The file's velocity for each parameter, checked against it."""
  keras_paths = match(list(state.momentum), params, names, state.source)
  if not state.momentum and state.iterations:
    raise ValueError(
      f"{state.source} has no momentum slots after "
      f"{state.iterations} steps, but the optimizer has momentum."
    )
  out = []
  for path, leaf in zip(keras_paths, targets(params)[1]):
    value = state.momentum.get(path)
    dtype = jnp.result_type(leaf)
    if value is None:  # no step taken yet: Keras has not made the slot
      value = np.zeros(np.shape(leaf), dtype)
    if value.shape != tuple(np.shape(leaf)):
      raise ValueError(
        f"{state.source}: the momentum of {path!r} has shape "
        f"{value.shape}, but its parameter has shape {np.shape(leaf)}."
      )
    if value.dtype != dtype:
      raise TypeError(
        f"{state.source}: the momentum of {path!r} has dtype "
        f"{value.dtype}, but its parameter has dtype {dtype}."
      )
    out.append(jnp.asarray(value))
  return out


def to_optax(
  state: KerasState, params: Any, *, names: Names = None, **overrides: Any
) -> tuple[optax.GradientTransformation, Any]:
  """The functional optimizer and its state, continuing the file's run.

  Args:
    state: what `read` returned.
    params: the parameters to train (a pytree), whose leaves' paths match
      the Keras variable paths (after `names`).
    names: a mapping (or function) from Keras variable path to parameter path,
      for layers named differently.
    **overrides: `sgd` arguments replacing the file's (a TF checkpoint has no
      config: pass `nesterov`, clipping and schedules here).

  Returns:
    `(tx, opt_state)`: `sgd(...)` built from the file's config, and its state
    with the file's step count and velocities.
  """
  kwargs = sgd_kwargs(state, overrides)
  kwargs.pop("name", None)
  kwargs.pop("skip_non_finite", None)
  tx = _alias.sgd(**kwargs)
  opt_state = tx.init(params)
  opt_state = optax.tree.set(opt_state, count=jnp.asarray(state.iterations, jnp.int32))
  if _state.velocity(opt_state) is not None:
    _, leaves, treedef = targets(params)
    velocity = jax.tree.unflatten(treedef, velocities(state, params, names))
    opt_state = optax.tree.set(opt_state, velocity=velocity)
  return tx, opt_state


def to_sgd(
  state: KerasState, params: Any, *, names: Names = None, **overrides: Any
) -> SGD:
  """The `SGD` facade, built for `params` (a list of `Variable`s or a pytree)
  and holding the file's step count and velocities. Arguments as in
  `to_optax`."""
  opt = SGD(**sgd_kwargs(state, overrides))
  opt.build(params)
  weights = [np.asarray(state.iterations)]
  if len(opt.weights) > 1:  # it has momentum slots, in the order of `params`
    weights += [np.asarray(v) for v in velocities(state, params, names)]
  opt.set_weights(weights)
  return opt
