"""Reading a Keras 2 SGD's state from the files Keras writes, without
TensorFlow: TensorFlow checkpoints (`tf.train.Checkpoint`, `save_weights` in
TF format, a SavedModel's `variables/`) and Keras H5 model files."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import zipfile
from collections.abc import Iterable
from typing import Any

import h5py
import numpy as np

from optax_keras_sgd.checkpoints import _bundle, _layout


@dataclasses.dataclass(frozen=True)
class KerasState:
  """A Keras 2 SGD's state and its model's variables, as a file holds them.

  Attributes:
    source: the file (or checkpoint prefix) read.
    config: the optimizer's config (H5 files hold it; TF checkpoints do not).
    iterations: the optimizer's step count.
    momentum: each variable's velocity slot, by Keras variable path
      (`"dense/kernel"`); empty for an SGD without momentum.
    variables: the model's variables, by Keras variable path.
    hyperparameters: the optimizer's hyperparameter variables that a TF
      checkpoint holds (`learning_rate`, `momentum`, `decay`, float32).
    loss_scale: a mixed-precision `LossScaleOptimizer`'s
      `current_loss_scale` and `good_steps`, when the file has them.
  """

  source: str
  config: dict[str, Any] | None
  iterations: int
  momentum: dict[str, np.ndarray]
  variables: dict[str, np.ndarray]
  hyperparameters: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  loss_scale: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def params(self, paths: Iterable[str] | None = None) -> dict[str, Any]:
    """The model's variables (or those at `paths`) as nested dicts by path,
    the structure the default name matching expects:
    `{"dense": {"kernel": ..., "bias": ...}}`."""
    out: dict[str, Any] = {}
    for path in self.variables if paths is None else paths:
      value = self.variables[path]
      *parents, leaf = path.split("/")
      node = out
      for name in parents:
        node = node.setdefault(name, {})
      node[leaf] = value
    return out


def read(path: str | os.PathLike) -> KerasState:
  """Reads a Keras 2 SGD's state and its model's variables from `path`,
  without TensorFlow. Every tensor of a checkpoint is checksum-verified.

  Args:
    path: a Keras H5 model file (`model.save("m.h5")`), a Keras 3 `.keras`
      archive (read through Keras 3, the `keras3` extra), a TensorFlow
      checkpoint prefix (`tf.train.Checkpoint(...).write(prefix)`,
      `model.save_weights(prefix)`), a directory with a `checkpoint` file
      (its latest checkpoint) or a SavedModel directory (its variables).

  Raises:
    FileNotFoundError: if there is nothing to read at `path`.
    ValueError: naming the file and the key, if the file holds no SGD state,
      is malformed or fails a checksum.
  """
  path = os.fspath(path)
  if os.path.isfile(path) and h5py.is_hdf5(path):
    with h5py.File(path, "r") as f:
      layout = _layout.h5_layout(f, path)
      fetch = lambda key: np.asarray(f[key])  # noqa: E731
      return _state(path, layout, fetch)
  if os.path.isfile(path) and zipfile.is_zipfile(path):
    from optax_keras_sgd.checkpoints import _keras3  # needs Keras 3

    return _keras3.read_archive(path)
  prefix = checkpoint_prefix(path)
  bundle = _bundle.TensorBundle(prefix)
  return _state(prefix, _layout.bundle_layout(bundle), bundle.read)


def checkpoint_prefix(path: str) -> str:
  """The checkpoint prefix `path` stands for: itself, or in a directory the
  latest checkpoint or a SavedModel's `variables/variables`."""
  if not os.path.isdir(path):
    return path
  saved_model = os.path.join(path, "variables", "variables")
  if os.path.exists(saved_model + ".index"):
    return saved_model
  state = os.path.join(path, "checkpoint")
  if os.path.exists(state):
    with open(state) as f:
      for line in f:
        if line.startswith("model_checkpoint_path:"):
          name = json.loads(line.split(":", 1)[1].strip())
          return name if os.path.isabs(name) else os.path.join(path, name)
  raise FileNotFoundError(
    f"{path} has no TensorFlow checkpoint: no `checkpoint` "
    "file and no `variables/variables.index`."
  )


def _state(source: str, layout: _layout.Layout, fetch) -> KerasState:
  fetch_all = lambda keys: {k: fetch(v) for k, v in keys.items()}  # noqa: E731
  return KerasState(
    source=source,
    config=layout.config,
    iterations=int(fetch(layout.iterations)),
    momentum=fetch_all(layout.momentum),
    variables=fetch_all(layout.variables),
    hyperparameters=fetch_all(layout.hyperparameters),
    loss_scale=fetch_all(layout.loss_scale),
  )


def require(module: str, install: str) -> Any:
  """Imports `module` (an optional dependency), or says what to install."""
  try:
    return importlib.import_module(module)
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(f"This needs {module}: pip install {install!r}.") from e
