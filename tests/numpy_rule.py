"""The update rule of Keras 2's legacy SGD, stated in NumPy.

This is the rule from the reference's documentation and source, written
independently of the package: each operation rounds to the working dtype (NumPy
does not fuse multiply-adds), hyperparameters pass through float32 first, and
clipping thresholds are converted straight to the gradient dtype.

A row-sparse gradient is a tuple `(values, indices, dense_shape)`: clipping
sees its raw values; without momentum each row is added in the slices'
order, duplicates included; with momentum the duplicates are summed first
(from zero, in order) and only the rows present change (lazy momentum).
"""

from __future__ import annotations

import numpy as np


def _hyper(x, dtype):
  return np.asarray(np.float32(x)).astype(dtype)


def clip_value(g, c):
  c = np.asarray(c, g.dtype)
  return np.maximum(np.minimum(g, c), -c)


def clip_norm(g, c):
  c = np.asarray(c, g.dtype)
  l2sum = np.sum(g * g, dtype=g.dtype)
  n = np.sqrt(l2sum) if l2sum > 0 else l2sum
  with np.errstate(invalid="ignore", divide="ignore"):
    return (g * c) / np.maximum(n, c)


def clip_global_norm(gs, c):
  dtype = gs[0].dtype
  total = np.asarray(0, dtype)
  for g in gs:
    total = total + np.sum(g * g, dtype=dtype)
  norm = np.sqrt(total)
  c = np.asarray(c, dtype)
  with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
    scale = c * np.minimum(1 / norm, 1 / c) + (norm - norm)
  return [g * scale.astype(g.dtype) for g in gs]


def _sparse(g):
  return isinstance(g, tuple)


def _on_values(fn, g):
  if _sparse(g):
    values, indices, shape = g
    return (fn(np.array(values)), np.asarray(indices), shape)
  return fn(g)


def velocity(v, g, lr, m):
  """Keras's momentum velocity, each product rounded: `m * v - lr * g` (the
  Nesterov update has the same form, from the new velocity)."""
  return m * v - lr * g


def _sparse_step(w, v, g, lr, m, nesterov):
  values, indices, _ = g
  if m is None:
    for x, r in zip(values, indices):
      w[r] = w[r] - lr * x
    return
  summed = {}
  for x, r in zip(values, indices):
    summed[r] = summed.get(r, np.zeros_like(x)) + x
  for r, x in summed.items():
    v[r] = velocity(v[r], x, lr, m)
    w[r] = w[r] + (velocity(v[r], x, lr, m) if nesterov else v[r])


def run(
  params,
  grad_steps,
  *,
  learning_rate=0.01,
  momentum=0.0,
  nesterov=False,
  clipvalue=None,
  clipnorm=None,
  global_clipnorm=None,
  decay=0.0,
):
  """Returns the params after each step. `learning_rate` may be a function of
  the (float) step."""
  ws = [np.array(p) for p in params]
  vs = [np.zeros_like(p) for p in params]
  out = []
  for t, grads in enumerate(grad_steps):
    gs = [g if _sparse(g) else np.array(g) for g in grads]
    if clipvalue is not None:
      gs = [_on_values(lambda x: clip_value(x, clipvalue), g) for g in gs]
    if clipnorm is not None:
      gs = [_on_values(lambda x: clip_norm(x, clipnorm), g) for g in gs]
    if global_clipnorm is not None:
      values = clip_global_norm(
        [g[0] if _sparse(g) else g for g in gs], global_clipnorm
      )
      gs = [(x, *g[1:]) if _sparse(g) else x for x, g in zip(values, gs)]
    for i, (w, g) in enumerate(zip(ws, gs)):
      dtype = w.dtype
      step = np.asarray(t).astype(dtype)
      lr = learning_rate(step) if callable(learning_rate) else learning_rate
      lr = _hyper(lr, dtype)
      if decay > 0:
        lr = lr / (np.asarray(1, dtype) + _hyper(decay, dtype) * step)
      if _sparse(g):
        m = None if momentum == 0 else _hyper(momentum, dtype)
        _sparse_step(ws[i], vs[i], g, lr, m, nesterov)
      elif momentum == 0:
        ws[i] = w - lr * g
      else:
        m = _hyper(momentum, dtype)
        vs[i] = velocity(vs[i], g, lr, m)
        ws[i] = w + (velocity(vs[i], g, lr, m) if nesterov else vs[i])
    out.append([w.copy() for w in ws])
  return out
