"""Keras files from the command line: `python -m optax_keras_sgd.migrate`.

    python -m optax_keras_sgd.migrate inspect FILE [--json]
    python -m optax_keras_sgd.migrate convert FILE OUT [--set KEY=VALUE ...]

`inspect` prints what a Keras H5 file, Keras 3 archive or TensorFlow
checkpoint holds of an SGD run: the optimizer config, the step count, each
momentum slot's shape and dtype, the model's variables, and a mixed-precision
loss scale. `convert` writes the run as an orbax checkpoint of the
functional state (`checkpoints.load_converted` reads it back); `--set`
overrides the file's config (values in JSON: `--set nesterov=true`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from optax_keras_sgd import checkpoints


def describe(state: checkpoints.KerasState) -> dict[str, Any]:
  """What `inspect` prints, as plain data."""

  def arrays(tensors: dict[str, np.ndarray]) -> dict[str, list[Any]]:
    return {k: [list(v.shape), str(v.dtype)] for k, v in tensors.items()}

  return {
    "source": state.source,
    "config": state.config,
    "hyperparameters": {k: float(v) for k, v in state.hyperparameters.items()},
    "iterations": state.iterations,
    "momentum": arrays(state.momentum),
    "variables": arrays(state.variables),
    "loss_scale": {k: float(v) for k, v in state.loss_scale.items()},
  }


def _text(info: dict[str, Any]) -> str:
  lines = [f"file: {info['source']}"]
  if info["config"] is not None:
    lines.append(f"optimizer config: {json.dumps(info['config'])}")
  else:
    lines.append("optimizer config: none in the file (a TensorFlow checkpoint)")
  if info["hyperparameters"]:
    values = ", ".join(f"{k}={v:g}" for k, v in info["hyperparameters"].items())
    lines.append(f"hyperparameters: {values}")
  lines.append(f"iterations: {info['iterations']}")
  for title, key in (("momentum slots", "momentum"), ("variables", "variables")):
    lines.append(f"{title}: {len(info[key])}")
    for path, (shape, dtype) in info[key].items():
      lines.append(f"  {path}  {tuple(shape)}  {dtype}")
  if info["loss_scale"]:
    values = ", ".join(f"{k}={v:g}" for k, v in info["loss_scale"].items())
    lines.append(f"loss scale: {values}")
  return "\n".join(lines)


def _override(text: str) -> tuple[str, Any]:
  key, sep, value = text.partition("=")
  if not sep or not key:
    raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
  try:
    return key, json.loads(value)
  except json.JSONDecodeError:
    raise argparse.ArgumentTypeError(
      f"--set {key}: the value must be JSON (true, 0.9, ...); got {value!r}"
    ) from None


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m optax_keras_sgd.migrate", description=__doc__.split("\n\n")[0]
  )
  commands = parser.add_subparsers(dest="command", required=True)
  show = commands.add_parser("inspect", help="print what the file holds")
  show.add_argument("file")
  show.add_argument("--json", action="store_true", help="print JSON")
  write = commands.add_parser("convert", help="write an orbax checkpoint")
  write.add_argument("file")
  write.add_argument("out", help="the checkpoint directory to create")
  write.add_argument(
    "--set",
    dest="overrides",
    type=_override,
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="an sgd argument replacing the file's",
  )
  args = parser.parse_args(argv)
  try:
    state = checkpoints.read(args.file)
    if args.command == "inspect":
      info = describe(state)
      print(json.dumps(info, indent=2) if args.json else _text(info))
    else:
      config = checkpoints.convert(state, args.out, dict(args.overrides))
      print(
        f"wrote {args.out}: iterations {state.iterations}, "
        f"{len(state.momentum)} momentum slots, config {json.dumps(config)}"
      )
  except (OSError, ValueError, TypeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
