"""A Keras file's SGD run as an orbax checkpoint of the functional state, and
back: what `python -m optax_keras_sgd.migrate convert` writes.

The checkpoint directory holds `{"params", "opt_state"}` (and
`"non_trainable"`: variables with no momentum slot, such as batch-norm
statistics, when the optimizer has slots), saved by orbax's
`StandardCheckpointer`, plus `sgd_config.json`: the optimizer's config in
the Keras format, from which `load_converted` rebuilds `sgd(...)`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from optax_keras_sgd import _alias, _config
from optax_keras_sgd._facade import SGD
from optax_keras_sgd.checkpoints import _migrate
from optax_keras_sgd.checkpoints._read import KerasState, read, require

CONFIG_FILE = "sgd_config.json"


def _orbax() -> Any:
  return require("orbax.checkpoint", "orbax-checkpoint")


def convert(
  source: str | os.PathLike | KerasState,
  out: str | os.PathLike,
  overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
  """Writes the run in `source` (a file `read` reads, or what it returned)
  as an orbax checkpoint at `out` (a new directory).

  Args:
    source: the Keras file or checkpoint.
    out: the checkpoint directory to create.
    overrides: `sgd` arguments replacing the file's (a TF checkpoint has no
      config: pass `nesterov`, clipping or a schedule here).

  Returns:
    The optimizer config written to `sgd_config.json`.
  """
  state = source if isinstance(source, KerasState) else read(source)
  out = os.path.abspath(os.fspath(out))
  if os.path.exists(out):
    raise FileExistsError(f"{out} exists: convert writes a new directory.")
  overrides = dict(overrides or {})
  config = SGD(**_migrate.sgd_kwargs(state, overrides)).get_config()
  trainable = list(state.momentum) or list(state.variables)
  params = state.params(trainable)
  _, opt_state = _migrate.to_optax(state, params, **overrides)
  tree = {"params": params, "opt_state": opt_state}
  rest = [p for p in state.variables if p not in trainable]
  if rest:
    tree["non_trainable"] = state.params(rest)
  ocp = _orbax()
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(out, tree)
  checkpointer.wait_until_finished()
  with open(os.path.join(out, CONFIG_FILE), "w") as f:
    json.dump(config, f, indent=2)
  return config


def load_converted(path: str | os.PathLike) -> tuple[Any, Any, Any, dict[str, Any]]:
  """Reads what `convert` wrote.

  Returns:
    `(tx, params, opt_state, non_trainable)`: `sgd(...)` from the saved
    config, and the saved trees (`non_trainable` is empty when there were
    none), ready to continue the run.

  Raises:
    FileNotFoundError: naming the directory, if `sgd_config.json` is missing.
  """
  path = os.path.abspath(os.fspath(path))
  config_path = os.path.join(path, CONFIG_FILE)
  if not os.path.exists(config_path):
    raise FileNotFoundError(
      f"{path}: no {CONFIG_FILE}; not a directory written by `convert`."
    )
  with open(config_path) as f:
    kwargs = _config.optimizer_kwargs_from_config(json.load(f))
  kwargs.pop("name", None)
  kwargs.pop("skip_non_finite", None)
  tx = _alias.sgd(**kwargs)
  checkpointer = _orbax().StandardCheckpointer()
  raw = checkpointer.restore(path)  # plain containers: gives the params' tree
  target = {"params": raw["params"], "opt_state": tx.init(raw["params"])}
  if "non_trainable" in raw:
    target["non_trainable"] = raw["non_trainable"]
  restored = checkpointer.restore(path, target)
  return (
    tx,
    restored["params"],
    restored["opt_state"],
    restored.get("non_trainable", {}),
  )
