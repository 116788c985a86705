"""The demo: `python -m optax_keras_sgd.demo --help`.

Trains a small MLP on two interleaved spirals generated here (no downloads)
three ways, with the same step schedule and momentum:

1. the functional API, `optax_keras_sgd.sgd`, in a jitted step;
2. the Keras-style facade, `optax_keras_sgd.SGD`, over `Variable`s;
3. `optax.sgd` with the same schedule, for contrast.

Runs 1 and 2 are Keras 2's legacy SGD and give the same numbers. Run 3 differs
once the learning rate drops, because optax scales the whole momentum
velocity by the new rate while Keras only scales new gradients. The demo
prints a results table, and with matplotlib installed it also saves a plot of
the three loss curves.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from optax_keras_sgd import schedules
from optax_keras_sgd._alias import sgd
from optax_keras_sgd._facade import SGD
from optax_keras_sgd._variable import Variable

Params = list[dict[str, Any]]


def spirals(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """`n` points of two interleaved spirals, labels 0 and 1."""
  rng = np.random.default_rng(seed)
  t = np.sqrt(rng.uniform(0.05, 1, n)) * 3 * np.pi
  label = rng.integers(0, 2, n)
  r = t * (1 - 2 * label)
  x = np.stack([r * np.cos(t), r * np.sin(t)], 1) / 10
  return (x + rng.normal(0, 0.04, x.shape)).astype(np.float32), label.astype(np.int32)


def init_params(seed: int, sizes=(2, 32, 32, 2)) -> Params:
  rng = np.random.default_rng(seed + 1)
  return [
    {
      "w": (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32),
      "b": np.zeros(b, np.float32),
    }
    for a, b in zip(sizes, sizes[1:])
  ]


def forward(params: Any, x: jax.typing.ArrayLike) -> jax.Array:
  for layer in params[:-1]:
    x = jnp.tanh(x @ layer["w"] + layer["b"])
  return x @ params[-1]["w"] + params[-1]["b"]


def loss_fn(params: Any, x: jax.typing.ArrayLike, y: Any) -> jax.Array:
  logp = jax.nn.log_softmax(forward(params, x))
  return -jnp.mean(jnp.take_along_axis(logp, y[:, None], 1))


def accuracy(params: Any, x: np.ndarray, y: np.ndarray) -> float:
  return float(jnp.mean(jnp.argmax(forward(params, x), -1) == y))


def progress(label: str, total: int) -> Iterator[int]:
  """A progress bar on stderr; yields 0 .. total-1."""
  width, start = 30, time.perf_counter()
  live = sys.stderr.isatty()  # redraw in place on a terminal, else one line
  for i in range(total):
    yield i
    if i + 1 == total or (live and (i + 1) % max(1, total // 50) == 0):
      done = (i + 1) * width // total
      print(
        f"\r{label:<24} [{'#' * done}{'.' * (width - done)}] {i + 1}/{total}"
        f" {time.perf_counter() - start:5.1f}s",
        end="",
        file=sys.stderr,
        flush=True,
      )
  print(file=sys.stderr)


def batches(
  x: np.ndarray, y: np.ndarray, batch_size: int, steps: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  rng = np.random.default_rng(seed + 2)
  for _ in range(steps):
    idx = rng.integers(0, len(x), batch_size)
    yield x[idx], y[idx]


def train_functional(
  tx: optax.GradientTransformation, label: str, data, args, show: bool = True
) -> tuple[Params, list[float], list[float]]:
  """Returns the final params, the losses and the norm of each update."""
  params = jax.tree.map(jnp.asarray, init_params(args.seed))
  state = tx.init(params)

  @jax.jit
  def step(params, state, xb, yb):
    loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss, optax.tree.norm(updates)

  losses, norms = [], []
  stream = batches(data[0], data[1], args.batch_size, args.steps, args.seed)
  for _ in progress(label, args.steps) if show else range(args.steps):
    xb, yb = next(stream)
    params, state, loss, norm = step(params, state, xb, yb)
    losses.append(float(loss))
    norms.append(float(norm))
  return params, losses, norms


def train_facade(opt: SGD, label: str, data, args) -> tuple[Params, list[float]]:
  variables = jax.tree.map(Variable, init_params(args.seed))
  flat = jax.tree.leaves(variables, is_leaf=lambda v: isinstance(v, Variable))
  grad = jax.jit(jax.value_and_grad(loss_fn))
  losses = []
  stream = batches(data[0], data[1], args.batch_size, args.steps, args.seed)
  for _ in progress(label, args.steps):
    xb, yb = next(stream)
    loss, grads = grad(
      jax.tree.map(
        lambda v: v.value(), variables, is_leaf=lambda v: isinstance(v, Variable)
      ),
      xb,
      yb,
    )
    opt.apply_gradients(zip(jax.tree.leaves(grads), flat))
    losses.append(float(loss))
  params = jax.tree.map(
    lambda v: v.value(), variables, is_leaf=lambda v: isinstance(v, Variable)
  )
  return params, losses


def largest_difference(a: Any, b: Any) -> float:
  return max(
    float(jnp.max(jnp.abs(x - y)))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


def plot(curves: dict[str, list[float]], switch: int, path: str) -> str | None:
  try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    return None
  fig, ax = plt.subplots(figsize=(8, 4.5))
  for (label, losses), style in zip(curves.items(), ["-", "--", ":"]):
    smooth = np.convolve(losses, np.ones(10) / 10, mode="valid")
    ax.plot(np.arange(len(smooth)) + 10, smooth, style, label=label, linewidth=1.8)
  ax.axvline(switch, color="grey", linewidth=0.8)
  ax.text(switch, ax.get_ylim()[1], " learning rate drops", va="top", color="grey")
  ax.set_xlabel("step")
  ax.set_ylabel("training loss (10-step mean)")
  ax.set_yscale("log")
  ax.set_title("Keras-exact SGD vs optax.sgd, same schedule and momentum")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m optax_keras_sgd.demo",
    description="Train an MLP with Keras-exact SGD (functional and facade) "
    "and contrast it with optax.sgd.",
  )
  parser.add_argument(
    "--steps",
    type=int,
    default=1500,
    help="training steps (1500); the rate drops after a third",
  )
  parser.add_argument("--seed", type=int, default=0, help="data and init seed (0)")
  parser.add_argument("--batch-size", type=int, default=128, help="batch size (128)")
  parser.add_argument(
    "--output",
    default="optax_keras_sgd_demo.png",
    help="where to save the loss plot (needs matplotlib)",
  )
  parser.add_argument("--no-plot", action="store_true", help="do not save a plot")
  args = parser.parse_args(argv)
  if args.steps < 2:
    parser.error(f"--steps must be at least 2, got {args.steps}")
  if args.batch_size < 1:
    parser.error(f"--batch-size must be positive, got {args.batch_size}")

  train = spirals(4096, args.seed)
  test = spirals(1024, args.seed + 100)
  switch = args.steps // 3
  rates = [0.2, 0.02]
  print(
    f"Two spirals, {len(train[0])} training points; MLP 2-32-32-2; "
    f"{args.steps} steps of {args.batch_size}; momentum 0.9; learning rate "
    f"{rates[0]} then {rates[1]} after step {switch}.\n"
  )

  keras_schedule = schedules.PiecewiseConstantDecay([switch], rates)
  functional, f_losses, f_norms = train_functional(
    sgd(keras_schedule, momentum=0.9), "optax_keras_sgd.sgd", train, args
  )
  facade, k_losses = train_facade(
    SGD(schedules.PiecewiseConstantDecay([switch], rates), momentum=0.9),
    "optax_keras_sgd.SGD",
    train,
    args,
  )
  # optax's boundary means "from this count on"; Keras's "after this step".
  optax_schedule = optax.piecewise_constant_schedule(
    rates[0], {switch + 1: rates[1] / rates[0]}
  )
  plain, o_losses, o_norms = train_functional(
    optax.sgd(optax_schedule, momentum=0.9), "optax.sgd", train, args
  )

  rows = [
    ("optax_keras_sgd.sgd", functional, f_losses),
    ("optax_keras_sgd.SGD", facade, k_losses),
    ("optax.sgd", plain, o_losses),
  ]
  print(
    "\n| run | final loss (last 20 steps) | train accuracy | test accuracy |\n"
    "|---|---|---|---|"
  )
  for label, params, losses in rows:
    print(
      f"| {label} | {np.mean(losses[-20:]):.4f} | "
      f"{accuracy(params, *train):.3f} | {accuracy(params, *test):.3f} |"
    )

  same = largest_difference(functional, facade)
  print(
    f"\nFunctional vs facade: largest parameter difference {same:.2e} "
    f"(the same optimizer, bitwise)."
  )
  prefix = argparse.Namespace(**{**vars(args), "steps": switch})
  at_drop = largest_difference(
    train_functional(sgd(keras_schedule, momentum=0.9), "", train, prefix, show=False)[
      0
    ],
    train_functional(
      optax.sgd(optax_schedule, momentum=0.9), "", train, prefix, show=False
    )[0],
  )
  print(
    f"Keras-exact vs optax.sgd, largest parameter difference: {at_drop:.2e} "
    f"at the drop (step {switch}, rounding only), "
    f"{largest_difference(functional, plain):.2e} at the end."
  )
  print(
    f"\nSize of the update (global norm) around the learning-rate drop "
    f"after step {switch}:\n\n| step | Keras-exact | optax.sgd |\n|---|---|---|"
  )
  for t in range(switch - 1, min(switch + 4, args.steps)):
    print(f"| {t + 1} | {f_norms[t]:.4f} | {o_norms[t]:.4f} |")
  print(
    "\nKeras keeps the velocity built at the old rate and lets momentum decay "
    "it; optax.sgd multiplies the whole velocity by the new rate at once, "
    "so the trajectories part at the drop."
  )

  if not args.no_plot:
    saved = plot({r[0]: r[2] for r in rows}, switch, args.output)
    print(
      f"\nLoss plot saved to {saved}"
      if saved
      else "\nInstall matplotlib to get a loss plot."
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
