"""The step's last pass as one native CPU kernel, with XLA as the fallback.

XLA:CPU compiles the momentum step into two loops per tensor (the velocity,
then the parameter that reads it back), launches them tensor by tensor, and
compiles a kernel per tensor. `keras_sgd.cc` does the learning-rate scale,
the velocity and (for the facade) the parameter in one pass over all tensors
of a dtype, with TensorFlow's arithmetic: each product rounded, no fused
multiply-add (`-ffp-contract=off`), IEEE semantics (no fast-math).

It is compiled on first use with the machine's C++ compiler against the XLA
FFI headers that jaxlib ships, for the host CPU (as XLA compiles its own
kernels), and cached under `$OPTAX_KERAS_SGD_CACHE_DIR` (default
`~/.cache/optax_keras_sgd`), keyed by the source, jaxlib, the compiler and the
CPU. Without a compiler, on another backend, with more than one device, or
with `OPTAX_KERAS_SGD_NATIVE=0`, the step is XLA's, bitwise the same.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optax_keras_sgd import _learning_rate, _momentum

_SOURCE = pathlib.Path(__file__).with_name("keras_sgd.cc")
_SYMBOL = "OptaxKerasSgdStep"
_TARGET = "optax_keras_sgd_step"
_FLAGS = ["-std=c++17", "-O3", "-ffp-contract=off", "-fno-fast-math", "-fPIC"]
_FLAGS += ["-shared", "-w"]
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Modes of the kernel (keras_sgd.cc).
VELOCITY, NESTEROV_UPDATE, APPLY, APPLY_NESTEROV, APPLY_NO_VELOCITY = range(5)


class NativeStatus(NamedTuple):
  """Whether the native kernel is in use, and why (or why not)."""

  available: bool
  detail: str


def native_status() -> NativeStatus:
  """Loads the native kernel if it is not loaded yet, and says whether it is.

  Examples:
    >>> from optax_keras_sgd import native_status
    >>> native_status().available in (True, False)
    True
  """
  return _load()


def _cache_dir() -> pathlib.Path:
  configured = os.environ.get("OPTAX_KERAS_SGD_CACHE_DIR")
  if configured:
    return pathlib.Path(configured)
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base) / "optax_keras_sgd"


def _cpu_id() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      lines = [ln for ln in f.read().splitlines()[:40] if ":" in ln]
    return "\n".join(ln for ln in lines if ln.split(":")[0].strip() in _CPU_KEYS)
  except OSError:
    return platform.processor()


_CPU_KEYS = {"model name", "flags", "Features", "CPU part"}


def _compile(compiler: str, out: pathlib.Path) -> str | None:
  """Builds the library at `out`; returns an error message, or None."""
  include = f"-I{jax.ffi.include_dir()}"
  out.parent.mkdir(parents=True, exist_ok=True)
  errors = []
  for arch in (["-march=native"], []):  # some compilers lack -march=native
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".so", delete=False) as t:
      tmp = t.name
    cmd = [compiler, *_FLAGS, *arch, include, str(_SOURCE), "-o", tmp]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode == 0:
      os.replace(tmp, out)  # atomic: a concurrent process sees all or nothing
      return None
    os.unlink(tmp)
    errors.append(f"{' '.join(cmd)}: {result.stderr.strip()[-500:]}")
  return "\n".join(errors)


@functools.cache
def _load() -> NativeStatus:
  if os.environ.get("OPTAX_KERAS_SGD_NATIVE", "1") == "0":
    return NativeStatus(False, "disabled by OPTAX_KERAS_SGD_NATIVE=0")
  compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
  if compiler is None:
    return NativeStatus(False, "no C++ compiler found (set CXX)")
  key = hashlib.sha256()
  for part in (_SOURCE.read_bytes(), " ".join(_FLAGS).encode(), compiler.encode()):
    key.update(part)
  key.update(f"{jax.__version__} {jax.lib.__version__} {_cpu_id()}".encode())
  library = _cache_dir() / f"keras_sgd-{key.hexdigest()[:20]}.so"
  try:
    if not library.exists():
      error = _compile(compiler, library)
      if error is not None:
        return NativeStatus(False, f"compiling the kernel failed: {error}")
    handler = getattr(ctypes.cdll.LoadLibrary(str(library)), _SYMBOL)
    jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(handler), platform="cpu")
  except (OSError, AttributeError, subprocess.SubprocessError) as e:
    return NativeStatus(False, f"loading {library} failed: {e}")
  return NativeStatus(True, f"loaded {library}")


def usable(*trees: Any) -> bool:
  """Whether the kernel can run this step: the kernel is loaded, the program
  runs on the one CPU device, and every leaf is a float32 or float64 array
  (not `IndexedSlices`, not another dtype)."""
  if jax.default_backend() != "cpu" or jax.device_count() != 1:
    return False
  for tree in trees:
    for x in jax.tree.leaves(tree):
      if not isinstance(x, jax.Array) or x.dtype not in DTYPES:
        return False
  return _load().available


def step(
  mode: int,
  rates: dict[Any, jax.Array],
  momenta: dict[Any, jax.Array],
  grads: list[jax.Array],
  velocities: list[jax.Array] | None,
  params: list[jax.Array] | None,
) -> tuple[list[jax.Array] | None, list[jax.Array] | None]:
  """The kernel over lists of leaves, one call per dtype: returns the new
  velocities (None in `APPLY_NO_VELOCITY`) and the new parameters or the
  Nesterov update (None in `VELOCITY`). `rates` and `momenta` hold each
  dtype's scalar."""
  new_v: list[Any] = [None] * len(grads)
  out: list[Any] = [None] * len(grads)
  for dtype in dict.fromkeys(g.dtype for g in grads):
    idx = [i for i, g in enumerate(grads) if g.dtype == dtype]
    pick = lambda xs, idx=idx: None if xs is None else tuple(xs[i] for i in idx)  # noqa: E731
    vs, os_ = _call(
      mode, rates[dtype], momenta[dtype], pick(grads), pick(velocities), pick(params)
    )
    for j, i in enumerate(idx):
      if vs is not None:
        new_v[i] = vs[j]
      if os_ is not None:
        out[i] = os_[j]
  return (
    None if mode == APPLY_NO_VELOCITY else new_v,
    None if mode == VELOCITY else out,
  )


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _call(mode, lr, m, grads, velocities, params):
  """One dtype's kernel call. Under `vmap` the scalars get a batch dimension
  like every argument (`broadcast_all`), and the kernel splits each leaf into
  one block per batch element; differentiation goes through `reference`."""
  velocities = velocities or ()
  params = params or ()
  args = (lr, m, *grads, *velocities, *params)
  n = len(grads)
  results: list[Any] = []
  aliases = {}
  if mode != APPLY_NO_VELOCITY:
    aliases.update({2 + n + i: i for i in range(n)})
    results += [jax.ShapeDtypeStruct(v.shape, v.dtype) for v in velocities]
  if mode in (APPLY, APPLY_NESTEROV, APPLY_NO_VELOCITY):
    first = 2 + n + len(velocities)
    aliases.update({first + i: len(results) + i for i in range(n)})
    results += [jax.ShapeDtypeStruct(p.shape, p.dtype) for p in params]
  elif mode == NESTEROV_UPDATE:
    results += [jax.ShapeDtypeStruct(g.shape, g.dtype) for g in grads]
  call = jax.ffi.ffi_call(
    _TARGET, results, input_output_aliases=aliases, vmap_method="broadcast_all"
  )
  outs = call(*args, mode=np.int64(mode))
  if mode == APPLY_NO_VELOCITY:
    return None, tuple(outs)
  vs = tuple(outs[:n])
  return vs, (tuple(outs[n:]) if mode != VELOCITY else None)


@_call.defjvp
def _call_jvp(mode, primals, tangents):
  return jax.jvp(functools.partial(reference, mode), primals, tangents)


def reference(mode, lr, m, grads, velocities, params):
  """`_call`'s arithmetic in XLA, for differentiation."""
  nesterov = mode in (NESTEROV_UPDATE, APPLY_NESTEROV)
  us = [_learning_rate.scaled(lr, g) for g in grads]
  if mode == APPLY_NO_VELOCITY:
    return None, tuple(jnp.add(p, u) for p, u in zip(params, us))
  vs = tuple(_momentum.velocity_step(m, v, u) for v, u in zip(velocities, us))
  ups = [_momentum.update_from(m, v, u, nesterov) for v, u in zip(vs, us)]
  if mode == VELOCITY:
    return vs, None
  if mode == NESTEROV_UPDATE:
    return vs, tuple(ups)
  return vs, tuple(jnp.add(p, u) for p, u in zip(params, ups))
