"""One SGD step per contender, over the same shapes, each ready to time.

Each builder takes `(shapes, variant)` and returns a zero-argument function
that runs one optimizer step and waits for it, or None where the contender
has no such variant or cannot run on the device JAX runs on. Gradients are
fixed arrays made once; parameters and optimizer state live where each
library keeps them (donated in JAX), on that same device: on a GPU, torch
runs on CUDA and TensorFlow on its GPU, or they are left out.
"""

from __future__ import annotations

import importlib.util
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_keras_sgd as oks
from optax_keras_sgd import _native

LR, MOMENTUM, CLIP = 0.01, 0.9, 1.0

VARIANTS = {
  "plain": dict(learning_rate=LR),
  "momentum": dict(learning_rate=LR, momentum=MOMENTUM),
  "nesterov": dict(learning_rate=LR, momentum=MOMENTUM, nesterov=True),
  "clipnorm": dict(learning_rate=LR, momentum=MOMENTUM, clipnorm=CLIP),
  "global_clipnorm": dict(learning_rate=LR, momentum=MOMENTUM, global_clipnorm=CLIP),
}


def bytes_per_param(variant: str) -> int:
  """Bytes that must move per float32 parameter: read p, g (and v); write p
  (and v); norm clipping needs one more read of g."""
  momentum = VARIANTS[variant].get("momentum", 0) > 0
  return (20 if momentum else 12) + (4 if "clip" in variant else 0)


def accelerator() -> str | None:
  """The accelerator JAX runs on ("gpu", "tpu"), or None on the CPU."""
  backend = jax.default_backend()
  return None if backend == "cpu" else backend


def torch_device() -> str | None:
  """Where torch runs beside JAX: "cpu", "cuda", or None (no fair place)."""
  import torch

  if accelerator() is None:
    return "cpu"
  if accelerator() == "gpu" and torch.cuda.is_available():
    return "cuda"
  return None


def tf_device() -> str | None:
  """Where TensorFlow runs beside JAX: "/CPU:0", "/GPU:0", or None."""
  import tensorflow as tf

  if accelerator() is None:
    return "/CPU:0"
  gpus = tf.config.list_physical_devices("GPU")
  if accelerator() != "gpu" or not gpus:
    return None
  for gpu in gpus:  # share the GPU with JAX instead of taking all its memory
    try:
      tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:  # TensorFlow already holds the GPU: nothing to set
      pass
  return "/GPU:0"


def _arrays(shapes, seed):
  rng = np.random.default_rng(seed)
  return [rng.standard_normal(s, dtype=np.float32) * 0.01 for s in shapes]


def _jax_loop(step_fn, params, state, grads):
  carry = {"p": params, "s": state}

  def run():
    carry["p"], carry["s"] = step_fn(carry["p"], grads, carry["s"])
    jax.block_until_ready(carry["p"])

  return run


def fused_kernel(shapes, variant):
  """The bandwidth reference: the update written by hand in one jitted
  function, buffers donated; nothing else."""
  cfg = VARIANTS[variant]
  lr, m = cfg["learning_rate"], cfg.get("momentum", 0.0)

  def step(params, grads, velocity):
    if "clipnorm" in cfg:
      grads = [g * (CLIP / jnp.maximum(jnp.sqrt(jnp.sum(g * g)), CLIP)) for g in grads]
    if "global_clipnorm" in cfg:
      norm = jnp.sqrt(sum(jnp.sum(g * g) for g in grads))
      grads = [g * (CLIP / jnp.maximum(norm, CLIP)) for g in grads]
    if not m:
      return [p - lr * g for p, g in zip(params, grads)], velocity
    velocity = [m * v - lr * g for v, g in zip(velocity, grads)]
    if cfg.get("nesterov"):
      return [p + m * v - lr * g for p, v, g in zip(params, velocity, grads)], velocity
    return [p + v for p, v in zip(params, velocity)], velocity

  params = [jnp.asarray(a) for a in _arrays(shapes, 0)]
  velocity = [jnp.zeros_like(p) for p in params] if m else []
  grads = [jnp.asarray(a) for a in _arrays(shapes, 1)]
  return _jax_loop(jax.jit(step, donate_argnums=(0, 2)), params, velocity, grads)


def dispatch_floor(shapes, variant):
  """What JAX itself costs per step: a jitted call that takes the same
  parameters, gradients and velocities, donated, and returns them unchanged
  (no arithmetic, no copy). Per-array dispatch on many leaves."""
  del variant

  def step(params, grads, velocity):
    return params, velocity

  params = [jnp.asarray(a) for a in _arrays(shapes, 0)]
  velocity = [jnp.zeros_like(p) for p in params]
  grads = [jnp.asarray(a) for a in _arrays(shapes, 1)]
  return _jax_loop(jax.jit(step, donate_argnums=(0, 2)), params, velocity, grads)


def _optax_loop(tx, shapes, one_call=False):
  """`tx`'s update and `optax.apply_updates` in a jitted step, parameters and
  state donated; with `one_call`, `optax_keras_sgd.update_and_apply`."""

  def step(params, grads, state):
    if one_call:
      return oks.update_and_apply(tx, grads, state, params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params = [jnp.asarray(a) for a in _arrays(shapes, 0)]
  grads = [jnp.asarray(a) for a in _arrays(shapes, 1)]
  return _jax_loop(jax.jit(step, donate_argnums=(0, 2)), params, tx.init(params), grads)


def ours_functional(shapes, variant):
  return _optax_loop(oks.sgd(**VARIANTS[variant]), shapes)


def ours_update_and_apply(shapes, variant):
  """`sgd` through `update_and_apply`: the update and the parameters' in one
  pass."""
  return _optax_loop(oks.sgd(**VARIANTS[variant]), shapes, one_call=True)


def ours_functional_xla(shapes, variant):
  """Ours with the native kernel turned off: XLA's step, as on accelerators
  and machines without a C++ compiler."""
  run = ours_functional(shapes, variant)
  with mock.patch.object(_native, "usable", lambda *trees: False):
    run()  # traces and compiles XLA's step, which later calls reuse
  return run


def ours_flat(shapes, variant):
  """Ours with the parameters kept in one buffer (`optax_keras_sgd.flatten`)."""
  tx = oks.sgd(**VARIANTS[variant])

  def step(params, grads, state):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params = oks.flatten([jnp.asarray(a) for a in _arrays(shapes, 0)])
  grads = oks.flatten([jnp.asarray(a) for a in _arrays(shapes, 1)])
  return _jax_loop(jax.jit(step, donate_argnums=(0, 2)), params, tx.init(params), grads)


def ours_facade(shapes, variant):
  variables = [oks.Variable(a) for a in _arrays(shapes, 0)]
  grads = [jnp.asarray(a) for a in _arrays(shapes, 1)]
  opt = oks.SGD(**VARIANTS[variant])
  pairs = list(zip(grads, variables))

  def run():
    opt.apply_gradients(pairs)
    jax.block_until_ready(variables[0].value())

  return run


def ours_facade_pytree(shapes, variant):
  """The facade's pytree path: `params = opt.update(params, grads,
  donate=True)`."""
  opt = oks.SGD(**VARIANTS[variant])
  grads = [jnp.asarray(a) for a in _arrays(shapes, 1)]
  held = {"params": [jnp.asarray(a) for a in _arrays(shapes, 0)]}

  def run():
    held["params"] = opt.update(held["params"], grads, donate=True)
    jax.block_until_ready(held["params"][0])

  return run


def optax_sgd(shapes, variant):
  cfg = VARIANTS[variant]
  if "clipnorm" in cfg:
    return None  # optax has no per-tensor L2 clip (clip_by_block_rms is RMS)
  tx = optax.sgd(
    cfg["learning_rate"], cfg.get("momentum") or None, cfg.get("nesterov", False)
  )
  if "global_clipnorm" in cfg:
    tx = optax.chain(optax.clip_by_global_norm(CLIP), tx)
  return _optax_loop(tx, shapes)


def tf_keras_legacy(shapes, variant):
  if importlib.util.find_spec("tf_keras") is None:
    return None
  import tensorflow as tf
  import tf_keras

  device = tf_device()
  if device is None:
    return None
  with tf.device(device):
    variables = [tf.Variable(a) for a in _arrays(shapes, 0)]
    grads = [tf.constant(a) for a in _arrays(shapes, 1)]
    opt = tf_keras.optimizers.legacy.SGD(**VARIANTS[variant])

  @tf.function
  def step():
    with tf.device(device):
      opt.apply_gradients(zip(grads, variables))

  def run():
    step()
    variables[0][:1].numpy()  # wait for the step

  return run


def _torch(shapes, variant, **impl):
  if importlib.util.find_spec("torch") is None:
    return None
  import torch

  device = torch_device()
  if device is None:
    return None
  cfg = VARIANTS[variant]
  params = [
    torch.nn.Parameter(torch.from_numpy(a).to(device)) for a in _arrays(shapes, 0)
  ]
  for p, g in zip(params, _arrays(shapes, 1)):
    p.grad = torch.from_numpy(g).to(device)
  opt = torch.optim.SGD(
    params,
    lr=cfg["learning_rate"],
    momentum=cfg.get("momentum", 0.0),
    nesterov=cfg.get("nesterov", False),
    **impl,
  )

  def run():
    if "clipnorm" in cfg:
      for p in params:  # torch has no per-tensor clip: one call per tensor
        torch.nn.utils.clip_grad_norm_([p], CLIP, foreach=True)
    if "global_clipnorm" in cfg:
      torch.nn.utils.clip_grad_norm_(params, CLIP, foreach=True)
    opt.step()
    if device == "cuda":
      torch.cuda.synchronize()

  return run


def torch_foreach(shapes, variant):
  return _torch(shapes, variant, foreach=True)


def torch_fused(shapes, variant):
  return _torch(shapes, variant, fused=True)


PEERS = {
  "fused kernel": fused_kernel,
  # The same contender again, with buffers of its own: its "/ fused kernel"
  # ratio is what identical code measures on this machine (A/A).
  "fused kernel, again": fused_kernel,
  "JAX dispatch floor": dispatch_floor,
  "ours (sgd)": ours_functional,
  "ours (sgd, XLA step)": ours_functional_xla,
  "ours (update_and_apply)": ours_update_and_apply,
  "ours (SGD facade)": ours_facade,
  "ours (SGD.update, donated)": ours_facade_pytree,
  "ours (sgd, FlatParams)": ours_flat,
  "optax.sgd": optax_sgd,
  "tf_keras legacy": tf_keras_legacy,
  "torch foreach": torch_foreach,
  "torch fused": torch_fused,
}
