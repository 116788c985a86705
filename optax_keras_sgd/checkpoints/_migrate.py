"""A Keras 2 SGD's state (`KerasState`) onto JAX parameters, and back into
the files Keras reads.

Parameters are matched to Keras variables by path: a pytree leaf's path,
its keys joined by "/" (`{"dense": {"kernel": w}}` is `dense/kernel`), or a
`Variable`'s name. `names` renames Keras paths where the two differ.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from typing import Any

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_keras_sgd import _alias, _config, _state
from optax_keras_sgd._facade import SGD
from optax_keras_sgd._variable import Variable
from optax_keras_sgd.checkpoints import _bundle, _layout
from optax_keras_sgd.checkpoints._read import KerasState, checkpoint_prefix

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


def _targets(params: Any) -> tuple[list[str], list[Any], Any]:
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
  paths, _, _ = _targets(params)
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


def _velocities(state: KerasState, params: Any, names: Names) -> list[jax.Array]:
  """The file's velocity for each parameter, checked against it."""
  keras_paths = match(list(state.momentum), params, names, state.source)
  if not state.momentum and state.iterations:
    raise ValueError(
      f"{state.source} has no momentum slots after "
      f"{state.iterations} steps, but the optimizer has momentum."
    )
  out = []
  for path, leaf in zip(keras_paths, _targets(params)[1]):
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
    _, leaves, treedef = _targets(params)
    velocity = jax.tree.unflatten(treedef, _velocities(state, params, names))
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
    weights += [np.asarray(v) for v in _velocities(state, params, names)]
  opt.set_weights(weights)
  return opt


# -- writing back -------------------------------------------------------------


def _our_state(params: Any, opt_state: Any) -> tuple[list[Any], int, list[Any] | None]:
  """Our run's parameter values, step count and velocities (None without
  momentum), in the order of `params`."""
  _, leaves, treedef = _targets(params)
  values = [np.asarray(x) for x in leaves]
  if isinstance(opt_state, SGD):
    weights = opt_state.get_weights()
    if len(weights) == 1:
      return values, int(weights[0]), None
    if treedef is None:  # Variables: their slots, in their order
      return (
        values,
        int(weights[0]),
        [np.asarray(opt_state.get_slot(v, "momentum").numpy()) for v in params],
      )
    return values, int(weights[0]), weights[1:]
  velocity = _state.velocity(opt_state)
  return (
    values,
    int(_state.iterations(opt_state)),
    (None if velocity is None else [np.asarray(v) for v in jax.tree.leaves(velocity)]),
  )


def _replacements(
  layout: _layout.Layout, params: Any, opt_state: Any, names: Names, source: str
) -> dict[str, np.ndarray]:
  """Key -> new value for the parameters, their slots and the step count.
  Every variable with a momentum slot must be among `params`; other model
  variables (such as batch statistics) keep the template's values unless
  `params` has them too."""
  values, count, velocities = _our_state(params, opt_state)
  keras_paths = match(
    list(layout.variables), params, names, source, required=list(layout.momentum)
  )
  out = {layout.variables[k]: v for k, v in zip(keras_paths, values)}
  out[layout.iterations] = np.asarray(count)
  if velocities is None:
    if layout.momentum:
      raise ValueError(
        f"{source} has momentum slots, but the state to write "
        "has no velocity (an SGD without momentum)."
      )
    return out
  for k, v in zip(keras_paths, velocities):
    if k not in layout.momentum:
      raise ValueError(f"{source} has no momentum slot for {k!r} to write.")
    out[layout.momentum[k]] = v
  return out


def _checked(
  key: str, new: np.ndarray, old_shape, old_dtype, target: str
) -> np.ndarray:
  if tuple(new.shape) != tuple(old_shape):
    raise ValueError(
      f"{target}: {key!r} has shape {tuple(old_shape)}; the value "
      f"to write has shape {new.shape}."
    )
  cast = new.astype(old_dtype)
  if not np.array_equal(cast.astype(new.dtype), new, equal_nan=True):
    raise TypeError(
      f"{target}: {key!r} has dtype {old_dtype}; the value to "
      f"write ({new.dtype}) does not convert to it exactly."
    )
  return cast


def write_h5(
  path: str | os.PathLike,
  template: str | os.PathLike,
  params: Any,
  opt_state: Any,
  *,
  names: Names = None,
) -> None:
  """Writes a Keras H5 model file that `tf_keras.models.load_model` loads,
  optimizer state included: `template` (the H5 file the run started from)
  with its variables, step count and momentum slots replaced by ours.

  Args:
    path: the file to write (not `template`).
    template: a Keras H5 model file with this model and an SGD.
    params: our parameters (a pytree or a list of `Variable`s).
    opt_state: our optimizer state (from `sgd`), or an `SGD` built on `params`.
    names: as in `to_optax`.

  Raises:
    ValueError / TypeError: naming the key, if a shape differs or a value
      does not convert exactly to the file's dtype; nothing is written then.
  """
  path, template = os.fspath(path), os.fspath(template)
  with h5py.File(template, "r") as f:
    layout = _layout.h5_layout(f, template)
    replaced = _replacements(layout, params, opt_state, names, template)
    new = {
      k: _checked(k, v, f[k].shape, f[k].dtype, template) for k, v in replaced.items()
    }
  partial = path + ".partial"
  shutil.copyfile(template, partial)
  with h5py.File(partial, "r+") as f:
    for key, value in new.items():
      f[key][...] = value
  os.replace(partial, path)


def write_checkpoint(
  prefix: str | os.PathLike,
  template: str | os.PathLike,
  params: Any,
  opt_state: Any,
  *,
  names: Names = None,
) -> None:
  """Writes a TensorFlow checkpoint that `tf.train.Checkpoint(...).restore`
  (or `model.load_weights`) loads, optimizer state included: `template`'s
  tensors and object graph, with its variables, step count and momentum
  slots replaced by ours. Arguments as in `write_h5`."""
  prefix = os.fspath(prefix)
  bundle = _bundle.TensorBundle(checkpoint_prefix(os.fspath(template)))
  layout = _layout.bundle_layout(bundle)
  replaced = _replacements(layout, params, opt_state, names, bundle.prefix)
  tensors = {}
  for key, value in replaced.items():
    old = bundle.read(key)
    tensors[key] = _checked(key, value, old.shape, old.dtype, bundle.prefix)
  copied = {k: bundle.raw_entry(k) for k in bundle.keys() if k not in tensors}
  _bundle.write_bundle(prefix, tensors, copied)
