"""Where a Keras 2 SGD's state lives in each file format, by Keras variable
path (`dense/kernel`): what both reading and writing back need.

A TensorFlow checkpoint names its tensors by object path
(`model/layer_with_weights-0/kernel/...`); its object graph gives each
variable's Keras path (`full_name`) and the optimizer's slots. A Keras H5
file names optimizer weights `[scopes/]SGD/dense/kernel/momentum:0` and model
weights by layer and weight name.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from optax_keras_sgd.checkpoints import _bundle, _protos

GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


@dataclasses.dataclass
class Layout:
  """Keys (checkpoint keys or HDF5 dataset paths) of a file's SGD state."""

  config: dict[str, Any] | None
  iterations: str
  momentum: dict[str, str]  # Keras variable path -> key
  variables: dict[str, str]  # Keras variable path -> key
  hyperparameters: dict[str, str] = dataclasses.field(default_factory=dict)
  loss_scale: dict[str, str] = dataclasses.field(default_factory=dict)


def bundle_layout(bundle: _bundle.TensorBundle) -> Layout:
  """The layout of a TensorFlow checkpoint, from its object graph.

  Raises:
    ValueError: naming the checkpoint, if it has no object graph or not
      exactly one SGD-like optimizer (an object with `iter` and only
      `momentum` slots).
  """
  prefix = bundle.prefix
  if GRAPH_KEY not in bundle:
    raise ValueError(
      f"{prefix}.index has no {GRAPH_KEY}: a name-based (TF1) "
      "checkpoint, which has no optimizer object to read."
    )
  nodes = _protos.TrackableObjectGraph.FromString(bundle.read(GRAPH_KEY).item()).nodes

  def children(i: int) -> dict[str, int]:
    return {c.local_name: c.node_id for c in nodes[i].children}

  def saved(i: int):
    return [a for a in nodes[i].attributes if a.name == "VARIABLE_VALUE"]

  def key(i: int) -> str:
    if not saved(i):
      raise ValueError(f"{prefix}: object graph node {i} has no saved value.")
    return saved(i)[0].checkpoint_key

  def full_name(i: int) -> str:
    return saved(i)[0].full_name.split(":")[0] if saved(i) else f"node_{i}"

  optimizers = [
    i
    for i, node in enumerate(nodes)
    if "iter" in children(i) and (node.slot_variables or "learning_rate" in children(i))
  ]
  if len(optimizers) != 1:
    raise ValueError(
      f"{prefix}: expected one Keras optimizer (an object with "
      f"`iter`) in the checkpoint, found {len(optimizers)}."
    )
  optimizer = optimizers[0]
  slots = nodes[optimizer].slot_variables
  unknown = sorted({s.slot_name for s in slots} - {"momentum"})
  if unknown:
    raise ValueError(
      f"{prefix}: the optimizer has slots {unknown}; an SGD has only `momentum`."
    )
  # The model's variables: every saved variable outside the optimizer (its
  # counter, hyperparameters, loss scale and slots) and the save counter.
  owned = {s.slot_variable_node_id for s in slots}
  pending = [optimizer]
  while pending:
    node = pending.pop()
    owned.add(node)
    pending += [c for c in children(node).values() if c not in owned]
  if "save_counter" in children(0):
    owned.add(children(0)["save_counter"])
  kids = children(optimizer)
  loss_scale = {}
  for i in owned:
    scale = children(i)
    if {"current_loss_scale", "good_steps"} <= set(scale):
      loss_scale = {k: key(scale[k]) for k in ("current_loss_scale", "good_steps")}
  return Layout(
    config=None,
    iterations=key(kids["iter"]),
    momentum={
      full_name(s.original_variable_node_id): key(s.slot_variable_node_id)
      for s in slots
    },
    variables={
      full_name(i): key(i) for i in range(len(nodes)) if i not in owned and saved(i)
    },
    hyperparameters={
      k: key(kids[k])
      for k in ("learning_rate", "momentum", "decay")
      if k in kids and saved(kids[k])
    },
    loss_scale=loss_scale,
  )


def names(attrs, name: str) -> list[str]:
  """An HDF5 name-list attribute, also in Keras's split form (`name0`,
  `name1`, ...) used when the list is too large for one attribute."""
  if name in attrs:
    values = list(attrs[name])
  else:
    values, i = [], 0
    while f"{name}{i}" in attrs:
      values += list(attrs[f"{name}{i}"])
      i += 1
  return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def h5_layout(f, path: str) -> Layout:
  """The layout of an open Keras H5 model file (`h5py.File`).

  Raises:
    ValueError: naming the file and the key, if it holds no SGD state.
  """
  if "optimizer" in f and "vars" in f["optimizer"]:
    raise ValueError(
      f"{path}: a Keras 3 weights file (`optimizer/vars/...`), whose "
      "variables are listed by index: only the model tells which is which. "
      "Build the model and `model.optimizer.build(model.trainable_variables)` "
      "in Keras 3, `model.load_weights(path)`, then call "
      "`checkpoints.from_keras3(model)`."
    )
  if "training_config" not in f.attrs:
    raise ValueError(
      f"{path}: no `training_config` attribute: the model was "
      "saved without an optimizer (include_optimizer=False?)."
    )
  training = json.loads(_text(f.attrs["training_config"]))
  config = _sgd_config(training.get("optimizer_config"), path)
  if "optimizer_weights" not in f:
    raise ValueError(
      f"{path}: no `optimizer_weights` group (the optimizer "
      "had not taken a step when the model was saved)."
    )
  group = f["optimizer_weights"]
  opt_name = config.get("name", "SGD")
  iterations, momentum = None, {}
  for name in names(group.attrs, "weight_names"):
    if name not in group:
      raise ValueError(
        f"{path}: optimizer weight {name!r} is listed in "
        "`optimizer_weights/weight_names` but not stored."
      )
    parts = name.split(":")[0].split("/")
    local = "/".join(parts[parts.index(opt_name) + 1 :] if opt_name in parts else parts)
    if local == "iter":
      iterations = f"optimizer_weights/{name}"
    elif local.endswith("/momentum"):
      momentum[local[: -len("/momentum")]] = f"optimizer_weights/{name}"
    else:
      raise ValueError(
        f"{path}: optimizer weight {name!r} is not an SGD weight "
        "(`iter` or a `momentum` slot)."
      )
  if iterations is None:
    raise ValueError(f"{path}: `optimizer_weights` has no `iter`.")
  weights = "model_weights" if "model_weights" in f else ""
  root = f[weights] if weights else f
  variables = {}
  for layer in names(root.attrs, "layer_names"):
    for name in names(root[layer].attrs, "weight_names"):
      variables[name.split(":")[0]] = "/".join(x for x in (weights, layer, name) if x)
  return Layout(
    config=config, iterations=iterations, momentum=momentum, variables=variables
  )


def _text(value: Any) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def _sgd_config(optimizer_config: Any, path: str) -> dict[str, Any]:
  """The SGD config inside a training config (unwrapping a
  LossScaleOptimizer's `inner_optimizer`)."""
  if not isinstance(optimizer_config, dict):
    raise ValueError(f"{path}: `training_config` has no `optimizer_config`.")
  if optimizer_config.get("class_name") == "LossScaleOptimizer":
    optimizer_config = optimizer_config["config"]["inner_optimizer"]
  name = str(optimizer_config.get("class_name", ""))
  if name.rsplit(">", 1)[-1] != "SGD":
    raise ValueError(f"{path}: the optimizer is {name!r}, not SGD.")
  return dict(optimizer_config["config"])
