"""Load time of a 100M-parameter Keras run's SGD state, without TensorFlow.

    python benchmarks/checkpoint_load.py [--params 100_000_000]

tf_keras builds a model of four square Dense layers (`--params` in all),
takes one legacy SGD step with momentum, and saves it as a TF checkpoint
(`tf.train.Checkpoint.write`) and as an H5 model file. Each is then read by
`optax_keras_sgd.checkpoints.read` in a fresh process where importing
TensorFlow fails (every checkpoint tensor checksum-verified), and for
comparison by TensorFlow's own `tf.train.load_checkpoint` reading every
tensor. Prints file sizes and the median of three reads (imports not
counted). A record for
docs/migration.md, never a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

READ = """
import sys, time
sys.modules["tensorflow"] = None
from optax_keras_sgd import checkpoints
t = time.perf_counter()
s = checkpoints.read(sys.argv[1])
n = sum(v.size for v in s.momentum.values())
print(time.perf_counter() - t, n)
"""

READ_TF = """
import sys, time
import numpy as np
import tensorflow as tf
t = time.perf_counter()  # after the imports, as for ours
r = tf.train.load_checkpoint(sys.argv[1])
n = sum(np.size(r.get_tensor(k)) for k in r.get_variable_to_shape_map())
print(time.perf_counter() - t, n)
"""


def _save(root: str, params: int) -> tuple[str, str]:
  import numpy as np
  import tensorflow as tf
  import tf_keras as keras

  width = int(round((params / 4) ** 0.5))
  inputs = keras.Input((width,))
  x = inputs
  for i in range(4):
    x = keras.layers.Dense(width, use_bias=False, name=f"dense_{i}")(x)
  model = keras.Model(inputs, x)
  opt = keras.optimizers.legacy.SGD(0.1, momentum=0.9)
  grads = [tf.ones_like(v) * 1e-3 for v in model.trainable_weights]
  opt.apply_gradients(zip(grads, model.trainable_weights))
  prefix = os.path.join(root, "ckpt")
  tf.train.Checkpoint(model=model, optimizer=opt).write(prefix)
  model.compile(opt, "mse")
  h5 = os.path.join(root, "model.h5")
  model.save(h5)
  print(
    f"model: {sum(int(np.prod(v.shape)) for v in model.trainable_weights):,} params"
  )
  return prefix, h5


def _time(code: str, path: str, rounds: int = 3) -> tuple[float, int]:
  times, count = [], 0
  for _ in range(rounds):
    out = subprocess.run(
      [sys.executable, "-c", code, path], capture_output=True, text=True, check=True
    ).stdout.split()
    times.append(float(out[0]))
    count = int(out[1])
  return statistics.median(times), count


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--params", type=lambda s: int(s.replace("_", "")), default=10**8)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as root:
    prefix, h5 = _save(root, args.params)
    sizes = {
      "TF checkpoint": sum(
        os.path.getsize(os.path.join(root, f))
        for f in os.listdir(root)
        if f.startswith("ckpt")
      ),
      "H5 model file": os.path.getsize(h5),
    }
    print("| file | size | read (ours, no TensorFlow) | tf.train.load_checkpoint |")
    print("|---|---|---|---|")
    for label, path in (("TF checkpoint", prefix), ("H5 model file", h5)):
      ours, _ = _time(READ, path)
      theirs = f"{_time(READ_TF, prefix)[0]:.2f} s" if path == prefix else "n/a"
      print(
        f"| {label} | {sizes[label] / 1e6:,.0f} MB | {ours:.2f} s | {theirs} |",
        flush=True,
      )


if __name__ == "__main__":
  main()
