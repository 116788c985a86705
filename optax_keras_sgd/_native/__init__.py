"""The step's last pass as one native CPU kernel, with XLA as the fallback.

XLA:CPU compiles the momentum step into two loops per tensor (the velocity,
then the parameter that reads it back), launches them tensor by tensor, and
compiles a kernel per tensor. `keras_sgd.cc` does the learning-rate scale,
the velocity and (for the facade) the parameter in one pass, one call per
dtype and up to `LEAVES_PER_CALL` tensors, with TensorFlow's arithmetic: each
product rounded, no fused multiply-add (`-ffp-contract=off`), IEEE semantics
(no fast-math).

It is compiled on first use with the machine's C++ compiler against the XLA
FFI headers that jaxlib ships, for the host CPU (as XLA compiles its own
kernels), and cached under `$OPTAX_KERAS_SGD_CACHE_DIR` (default
`~/.cache/optax_keras_sgd`), keyed by the source, jaxlib, the compiler and the
CPU. Without a compiler, on another backend, with more than one device, or
with `OPTAX_KERAS_SGD_NATIVE=0`, the step is XLA's, bitwise the same.

Row-sparse gradients (`IndexedSlices`) have kernels of their own: summing
duplicate rows, the momentum step on the rows present, and adding rows into
a table, each in place and in the slices' order, as TensorFlow's. `split`
copies the facade's packed velocities apart, one call per `LEAVES_PER_CALL`.

This module holds the mechanics only (building, loading, calling); the
arithmetic each call stands for is its caller's, passed in as `reference`
for differentiation.
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
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

_SOURCE = pathlib.Path(__file__).with_name("keras_sgd.cc")
# XLA custom-call targets and the library's symbols for them.
_STEP = "optax_keras_sgd_step"
_SUM_DUPLICATES = "optax_keras_sgd_sum_duplicates"
_SPARSE_STEP = "optax_keras_sgd_sparse_step"
_SCATTER_ADD = "optax_keras_sgd_scatter_add"
_SPLIT = "optax_keras_sgd_split"
_SYMBOLS = {
  _STEP: "OptaxKerasSgdStep",
  _SUM_DUPLICATES: "OptaxKerasSgdSumDuplicates",
  _SPARSE_STEP: "OptaxKerasSgdSparseStep",
  _SCATTER_ADD: "OptaxKerasSgdScatterAdd",
  _SPLIT: "OptaxKerasSgdSplit",
}
_FLAGS = ["-std=c++17", "-O3", "-ffp-contract=off", "-fno-fast-math", "-fPIC"]
_FLAGS += ["-shared", "-w"]
# Tried in order until one builds: for the host CPU, as XLA builds its own
# kernels, with 512-bit vectors where the CPU has them (compilers default to
# 256 there; the velocity pass over 32M floats took 0.99x XLA's loop with
# them, 1.09x without, on a 2-core AVX-512 VM), then plainer for compilers
# without those options.
_ARCHES: tuple[list[str], ...] = (
  ["-march=native", "-mprefer-vector-width=512"],
  ["-march=native"],
  [],
)
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Modes of the kernel (keras_sgd.cc).
VELOCITY, NESTEROV_UPDATE, APPLY, APPLY_NESTEROV, APPLY_NO_VELOCITY = range(5)
# What it does to the gradients first: bits of its `clip` attribute.
CLIP_VALUE, CLIP_NORM, CLIP_SCALE = 1, 2, 4

# Leaves per kernel call. XLA's compile time grows faster than the square of
# one instruction's operand count: a momentum step over 2,000 leaves in one
# call compiled in 27 s, in calls of 64 leaves in 1.8 s (16 to 64 are alike).
LEAVES_PER_CALL = 64

# The arithmetic a kernel call stands for, in XLA: `reference(mode, *args)`
# returns what the call returns; calls are differentiated through it.
Reference = Callable[..., tuple[Any, Any]]


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
  for arch in _ARCHES:
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
  flags = " ".join([*_FLAGS, *(" ".join(arch) for arch in _ARCHES)])
  for part in (_SOURCE.read_bytes(), flags.encode(), compiler.encode()):
    key.update(part)
  key.update(f"{jax.__version__} {jax.lib.__version__} {_cpu_id()}".encode())
  library = _cache_dir() / f"keras_sgd-{key.hexdigest()[:20]}.so"
  try:
    if not library.exists():
      error = _compile(compiler, library)
      if error is not None:
        return NativeStatus(False, f"compiling the kernel failed: {error}")
    loaded = ctypes.cdll.LoadLibrary(str(library))
    for target, symbol in _SYMBOLS.items():
      handler = jax.ffi.pycapsule(getattr(loaded, symbol))
      jax.ffi.register_ffi_target(target, handler, platform="cpu")
  except (OSError, AttributeError, subprocess.SubprocessError) as e:
    return NativeStatus(False, f"loading {library} failed: {e}")
  return NativeStatus(True, f"loaded {library}")


def usable(*trees: Any) -> bool:
  """Whether the kernel can run this step: the kernel is loaded, the program
  runs on the one CPU device, and every leaf is a float32 or float64 array
  (pass the values of an `IndexedSlices`, not the slices)."""
  if jax.default_backend() != "cpu" or jax.device_count() != 1:
    return False
  for tree in trees:
    for x in jax.tree.leaves(tree):
      if not isinstance(x, jax.Array) or x.dtype not in DTYPES:
        return False
  return _load().available


def step(
  mode: int,
  clip: int,
  reference: Reference,
  scalars: dict[Any, tuple[jax.Array, ...]],
  grads: list[jax.Array],
  velocities: list[jax.Array] | None,
  params: list[jax.Array] | None,
) -> tuple[list[jax.Array] | None, list[jax.Array] | None]:
  """The kernel over lists of leaves, one call per dtype and up to
  `LEAVES_PER_CALL` leaves: returns the new velocities (None in
  `APPLY_NO_VELOCITY`) and the new parameters or the Nesterov update (None in
  `VELOCITY`). `scalars` holds each dtype's `(lr, m, clipvalue, clipnorm)`,
  with `global_clipnorm`'s scale in place of `clipnorm` under `CLIP_SCALE`;
  `clip` (bits `CLIP_VALUE`, then `CLIP_NORM` or `CLIP_SCALE`) says which
  clips apply to each gradient first. `reference(mode, clip, scalars,
  grads, velocities, params)` is the same arithmetic in XLA, for
  differentiation."""
  new_v: list[Any] = [None] * len(grads)
  out: list[Any] = [None] * len(grads)
  groups = []
  for dtype in dict.fromkeys(g.dtype for g in grads):
    same = [i for i, g in enumerate(grads) if g.dtype == dtype]
    chunks = range(0, len(same), LEAVES_PER_CALL)
    groups += [(dtype, same[k : k + LEAVES_PER_CALL]) for k in chunks]
  for dtype, idx in groups:
    pick = lambda xs, idx=idx: None if xs is None else tuple(xs[i] for i in idx)  # noqa: E731
    vs, os_ = _call(
      mode, clip, reference, scalars[dtype], pick(grads), pick(velocities), pick(params)
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


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _call(mode, clip, reference, scalars, grads, velocities, params):
  """One kernel call over leaves of one dtype. Under `vmap` the scalars get
  a batch dimension like every argument (`broadcast_all`), and the kernel
  splits each leaf into one block per batch element; differentiation goes
  through `reference`."""
  del reference
  velocities = velocities or ()
  params = params or ()
  args = (*scalars, *grads, *velocities, *params)
  first, n = len(scalars), len(grads)
  results: list[Any] = []
  aliases = {}
  if mode != APPLY_NO_VELOCITY:
    aliases.update({first + n + i: i for i in range(n)})
    results += [jax.ShapeDtypeStruct(v.shape, v.dtype) for v in velocities]
  if mode in (APPLY, APPLY_NESTEROV, APPLY_NO_VELOCITY):
    start = first + n + len(velocities)
    aliases.update({start + i: len(results) + i for i in range(n)})
    results += [jax.ShapeDtypeStruct(p.shape, p.dtype) for p in params]
  elif mode == NESTEROV_UPDATE:
    results += [jax.ShapeDtypeStruct(g.shape, g.dtype) for g in grads]
  call = jax.ffi.ffi_call(
    _STEP, results, input_output_aliases=aliases, vmap_method="broadcast_all"
  )
  outs = call(*args, mode=np.int64(mode), clip=np.int64(clip))
  if mode == APPLY_NO_VELOCITY:
    return None, tuple(outs)
  vs = tuple(outs[:n])
  return vs, (tuple(outs[n:]) if mode != VELOCITY else None)


@_call.defjvp
def _call_jvp(mode, clip, reference, primals, tangents):
  return jax.jvp(functools.partial(reference, mode, clip), primals, tangents)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 3))
def sum_duplicates(
  reference: Reference, values: jax.Array, indices: jax.Array, rows: int
):
  """`(summed, unique)`: the unique `indices` (int32) in ascending order, then
  `rows` as padding; each one's values summed in the slices' order, from
  zero, as `jax.ops.segment_sum` and TensorFlow's `unsorted_segment_sum`
  sum them; zeros in the padding. `reference(values, indices, rows)` is the
  same in XLA."""
  del reference
  call = jax.ffi.ffi_call(
    _SUM_DUPLICATES,
    (
      jax.ShapeDtypeStruct(values.shape, values.dtype),
      jax.ShapeDtypeStruct(indices.shape, np.int32),
    ),
    vmap_method="sequential",
  )
  return tuple(call(values, indices, rows=np.int64(rows)))


@sum_duplicates.defjvp
def _sum_duplicates_jvp(reference, rows, primals, tangents):
  return jax.jvp(lambda v, i: reference(v, i, rows), primals, tangents)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def sparse_step(
  mode: int,
  reference: Reference,
  lr: jax.Array,
  m: jax.Array,
  values: jax.Array,
  indices: jax.Array,
  velocity: jax.Array | None,
  param: jax.Array | None,
) -> tuple[jax.Array | None, jax.Array]:
  """The step on the rows `indices` (int32, unique unless the mode keeps no
  velocity) of one table: returns the new velocity (None in
  `APPLY_NO_VELOCITY`) and the new parameter, or in `VELOCITY` and
  `NESTEROV_UPDATE` the update's rows. `reference(mode, lr, m, values,
  indices, velocity, param)` is the same arithmetic in XLA."""
  del reference
  tables = [t for t in (velocity, param) if t is not None]
  results = [jax.ShapeDtypeStruct(t.shape, t.dtype) for t in tables]
  aliases = {4 + i: i for i in range(len(tables))}
  if mode in (VELOCITY, NESTEROV_UPDATE):
    # The update's rows overwrite the values': one row-sized buffer a step.
    aliases[2] = len(results)
    results.append(jax.ShapeDtypeStruct(values.shape, values.dtype))
  call = jax.ffi.ffi_call(
    _SPARSE_STEP, results, input_output_aliases=aliases, vmap_method="sequential"
  )
  outs = call(lr, m, values, indices, *tables, mode=np.int64(mode))
  if mode == APPLY_NO_VELOCITY:
    return None, outs[0]
  return outs[0], outs[1]


@sparse_step.defjvp
def _sparse_step_jvp(mode, reference, primals, tangents):
  return jax.jvp(functools.partial(reference, mode), primals, tangents)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 4))
def scatter_add(
  reference: Reference,
  table: jax.Array,
  indices: jax.Array,
  values: jax.Array,
  unique: bool = False,
) -> jax.Array:
  """`table` with `values[i]` added to row `indices[i]` (int32) in order, in
  place when `table` is donated; rows outside the table are dropped.
  `unique` promises that no two indices inside the table are equal, which
  lets the rows be split between threads. `reference(table, indices,
  values)` is the same in XLA."""
  del reference
  call = jax.ffi.ffi_call(
    _SCATTER_ADD,
    jax.ShapeDtypeStruct(table.shape, table.dtype),
    input_output_aliases={2: 0},
    vmap_method="sequential",
  )
  return call(values, indices, table, unique=unique)


@scatter_add.defjvp
def _scatter_add_jvp(reference, unique, primals, tangents):
  del unique
  return jax.jvp(reference, primals, tangents)


def split(buffer: jax.Array, shapes: list[tuple[int, ...]]) -> list[jax.Array]:
  """`buffer` (1-D) cut into consecutive pieces of `shapes` (which cover it),
  as `jnp.split` and `reshape` cut it: one kernel call per `LEAVES_PER_CALL`
  pieces, where XLA makes each slice a task of its own (the facade's step
  over 1,000 velocities of 64 floats: 2.8 ms with XLA's slices, 1.9 to 2.0
  with this, docs/performance.md)."""
  sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
  starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
  pieces: list[jax.Array] = []
  for k in range(0, len(shapes), LEAVES_PER_CALL):
    chunk = shapes[k : k + LEAVES_PER_CALL]
    call = jax.ffi.ffi_call(
      _SPLIT,
      [jax.ShapeDtypeStruct(s, buffer.dtype) for s in chunk],
      vmap_method="sequential",
    )
    start = np.int64(starts[k] * buffer.dtype.itemsize)
    pieces += call(buffer, start=start)
  return pieces
