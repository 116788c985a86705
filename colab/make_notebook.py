"""Writes optax_keras_sgd_data_parallel.ipynb (run: python colab/make_notebook.py).

The notebook's cells are kept here, as code, so they are reviewed as code.
"""

import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
  new_markdown_cell("""# Keras-exact SGD on every device: optax-keras-sgd

This notebook trains a small MLP **data-parallel over all devices** (a Colab
TPU's 8 cores, a GPU, or the CPU), with the functional API (`sgd` inside
`shard_map`) and with the Keras-style `SGD` facade, then checks the numbers
against Keras 2's own `tf_keras.optimizers.legacy.SGD`.

Runtime > Change runtime type > TPU (or GPU) to use an accelerator; on CPU it
runs the same way."""),
  new_markdown_cell("""## Install
optax-keras-sgd is not on PyPI yet. Either upload the wheel built from a
clone (`python -m pip wheel --no-deps -w dist .`, then drag
`dist/optax_keras_sgd-*.whl` into Colab's Files pane), or set `SOURCE` below
to the repository's pip URL (`git+https://...`). pip keeps Colab's JAX when it
meets the package's floor (jax 0.7.1) and upgrades it otherwise."""),
  new_code_cell("""import glob, subprocess, sys

SOURCE = ""  # a pip URL of the repository, or "" to use an uploaded wheel

def install_command(source, wheels):
    \"\"\"The pip command that installs the package and the Keras reference.\"\"\"
    source = source or (sorted(wheels)[-1] if wheels else None)
    if source is None:
        raise RuntimeError(
            "No wheel found: upload optax_keras_sgd-<version>-py3-none-any.whl "
            "(built in a clone with `python -m pip wheel --no-deps -w dist .`) "
            "to the working directory, or set SOURCE to the repository's pip URL.")
    return [sys.executable, "-m", "pip", "install", "-q", source, "tf-keras"]

if "google.colab" in sys.modules:
    subprocess.run(install_command(SOURCE, glob.glob("optax_keras_sgd-*.whl")),
                   check=True)"""),
  new_code_cell("""import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

import optax_keras_sgd as oks

backend = jax.default_backend()   # 'tpu', 'gpu' or 'cpu'
devices = jax.devices()
print(f"backend: {backend}, {len(devices)} device(s): {devices[0].device_kind}")
mesh = jax.make_mesh((len(devices),), ("data",))"""),
  new_markdown_cell("""## Data and model
A deterministic two-class problem (two interleaved spirals), made here: no
downloads. The batch is split across the devices."""),
  new_code_cell("""def spirals(n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(0.05, 1, n)) * 3 * np.pi
    label = rng.integers(0, 2, n)
    r = t * (1 - 2 * label)
    x = np.stack([r * np.cos(t), r * np.sin(t)], 1) / 10
    return (x + rng.normal(0, 0.05, x.shape)).astype(np.float32), label

BATCH = 64 * len(devices)
x_np, y_np = spirals(BATCH * 8)

def init_params(seed=0):
    rng = np.random.default_rng(seed)
    sizes = [2, 64, 64, 2]
    return [{"w": (rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32),
             "b": np.zeros(b, np.float32)} for a, b in zip(sizes, sizes[1:])]

def forward(params, x):
    for layer in params[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]

def loss_sum(params, x, y):   # summed: replicas' sums add up to the batch's
    logp = jax.nn.log_softmax(forward(params, x))
    return -jnp.sum(jnp.take_along_axis(logp, y[:, None], 1)) / BATCH

def batches():
    for i in range(0, len(x_np), BATCH):
        yield x_np[i:i + BATCH], y_np[i:i + BATCH]

data_sharding = NamedSharding(mesh, P("data"))
replicated = NamedSharding(mesh, P())"""),
  new_markdown_cell("""## Functional API: `sgd` inside `shard_map`
Each device computes the gradient of its part of the batch; `axis_name="data"`
sums the replicas' gradients **before clipping**, as Keras does with a
distribution strategy. Keras's semantics: the step schedule's learning rate
sits inside the momentum velocity."""),
  new_code_cell("""schedule = oks.schedules.PiecewiseConstantDecay([20], [0.5, 0.05])
tx = oks.sgd(schedule, momentum=0.9, nesterov=True, clipnorm=1.0, axis_name="data")

def local_step(params, state, x, y):
    loss, grads = jax.value_and_grad(loss_sum)(params, x, y)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, jax.lax.psum(loss, "data")

step = jax.jit(jax.shard_map(local_step, mesh=mesh,
                             in_specs=(P(), P(), P("data"), P("data")),
                             out_specs=(P(), P(), P())))

params = jax.device_put(init_params(), replicated)
state = jax.device_put(tx.init(params), replicated)
for epoch in range(5):
    for xb, yb in batches():
        params, state, loss = step(params, state, jax.device_put(xb, data_sharding),
                                   jax.device_put(yb, data_sharding))
    print(f"epoch {epoch}: loss {float(loss):.4f}")
functional_params = params
print("steps:", int(oks.iterations(state)))"""),
  new_markdown_cell("""## The Keras-style facade on sharded arrays
`Variable`s hold global arrays (here replicated, the batch sharded); the loss
over the whole batch already sums over devices, and each step is one compiled
call. Same optimizer, Keras's API."""),
  new_code_cell("""with jax.set_mesh(mesh):
    variables = jax.tree.map(lambda a: oks.Variable(jax.device_put(a, replicated)),
                             init_params())
    is_var = lambda v: isinstance(v, oks.Variable)
    flat_vars = jax.tree.leaves(variables, is_leaf=is_var)
    opt = oks.SGD(oks.schedules.PiecewiseConstantDecay([20], [0.5, 0.05]),
                  momentum=0.9, nesterov=True, clipnorm=1.0)
    for epoch in range(5):
        for xb, yb in batches():
            xs = jax.device_put(xb, data_sharding)
            ys = jax.device_put(yb, data_sharding)
            opt.minimize(lambda: loss_sum(variables, xs, ys), flat_vars)
        print(f"epoch {epoch}: loss {float(loss_sum(variables, xs, ys)):.4f}")
print("facade steps:", int(opt.iterations), "compiled programs:", opt.compiled_count())
gap = max(float(jnp.max(jnp.abs(v.value() - p)))
          for v, p in zip(flat_vars, jax.tree.leaves(functional_params)))
print(f"largest difference between the two APIs: {gap:.2e}")
assert gap < 1e-4"""),
  new_markdown_cell("""## The Keras parity check
The same first steps with Keras 2's own optimizer (TensorFlow on the CPU), on
one batch without sharding."""),
  new_code_cell("""try:
    import tensorflow as tf
    import tf_keras
except ImportError:
    tf_keras = None
    print("tf-keras is not installed: skipping the parity check")

if tf_keras is not None:
    tf.config.set_visible_devices([], "GPU")
    xb, yb = next(batches())
    tf_vars = [tf.Variable(a) for a in jax.tree.leaves(init_params())]
    keras_opt = tf_keras.optimizers.legacy.SGD(
        tf_keras.optimizers.schedules.PiecewiseConstantDecay([20], [0.5, 0.05]),
        momentum=0.9, nesterov=True, clipnorm=1.0)
    treedef = jax.tree.structure(init_params())
    ours, ours_state = init_params(), oks.sgd(schedule, momentum=0.9, nesterov=True,
                                               clipnorm=1.0).init(init_params())
    ours_tx = oks.sgd(schedule, momentum=0.9, nesterov=True, clipnorm=1.0)
    for _ in range(3):
        grads = jax.grad(loss_sum)(ours, xb, yb)
        updates, ours_state = ours_tx.update(grads, ours_state, ours)
        # Keras gets the very same gradients.
        keras_opt.apply_gradients(zip([tf.constant(np.asarray(g))
                                       for g in jax.tree.leaves(grads)], tf_vars))
        ours = optax.apply_updates(ours, updates)
    gap = max(float(np.max(np.abs(np.asarray(a) - b.numpy())))
              for a, b in zip(jax.tree.leaves(ours), tf_vars))
    print(f"largest difference from tf_keras after 3 steps: {gap:.2e}")
    assert gap < 1e-6"""),
  new_markdown_cell("""## On an accelerator: a bigger step
Runs only on a TPU or GPU: one SGD step on a 32M-parameter tensor."""),
  new_code_cell("""if backend != "cpu":
    import time
    big = jax.device_put(jnp.zeros(32 * 2**20), replicated)
    big_tx = oks.sgd(0.1, momentum=0.9)
    big_state = big_tx.init(big)
    big_step = jax.jit(lambda p, g, s: (lambda u, s: (optax.apply_updates(p, u), s))(
        *big_tx.update(g, s, p)), donate_argnums=(0, 2))
    g = jnp.ones_like(big)
    big, big_state = big_step(big, g, big_state)
    jax.block_until_ready(big)
    start = time.perf_counter()
    for _ in range(20):
        big, big_state = big_step(big, g, big_state)
    jax.block_until_ready(big)
    ms = (time.perf_counter() - start) / 20 * 1e3
    print(f"{ms:.3f} ms/step, {20 * 32 * 2**20 / ms / 1e6:.0f} GB/s")
else:
    print("CPU runtime: skipping the accelerator cell")"""),
]

for number, cell in enumerate(cells):
  cell.id = f"cell-{number}"  # stable ids: regenerating changes nothing

notebook = new_notebook(
  cells=cells,
  metadata={
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"},
    "accelerator": "TPU",
    "colab": {"provenance": []},
  },
)
path = pathlib.Path(__file__).with_name("optax_keras_sgd_data_parallel.ipynb")
nbformat.write(notebook, path)
print("wrote", path)
