"""Our state (an optax state or a facade `SGD`) back into the files Keras
reads: an H5 model file or a TensorFlow checkpoint, written from a template
file that Keras saved for the same model, so every other entry is kept.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import h5py
import jax
import numpy as np

from optax_keras_sgd import _state
from optax_keras_sgd._facade import SGD
from optax_keras_sgd.checkpoints import _bundle, _layout
from optax_keras_sgd.checkpoints._migrate import Names, match, targets
from optax_keras_sgd.checkpoints._read import checkpoint_prefix


def our_state(params: Any, opt_state: Any) -> tuple[list[Any], int, list[Any] | None]:
  """Our run's parameter values, step count and velocities (None without
  momentum), in the order of `params`."""
  _, leaves, treedef = targets(params)
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
  values, count, velocities = our_state(params, opt_state)
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
