"""How far Keras 3's own SGD, and ours inside Keras 3, land from tf_keras's
legacy SGD after the same `model.fit`.

    python benchmarks/keras3_differences.py

Both Keras 3 runs use the JAX backend and a legacy config converted by
`optax_keras_sgd.keras3.keras_sgd_config` (for Keras 3's SGD) or taken as is
(for ours). The model makes the gradients exact in every framework (one-hot
inputs, a bias-free Dense layer, mean squared error over power-of-two sizes),
so every difference is the optimizer's. Prints a Markdown table: for each
configuration, how many of the kernel's 64 values differ from tf_keras's
after 24 steps, and the largest difference in units of float32 rounding
(ulps of the kernel's largest value). This measures arithmetic that XLA and
Keras 3 own; it is a record, not a test.
"""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tf_keras  # noqa: E402

from optax_keras_sgd import keras3  # noqa: E402

N_IN, N_OUT, BATCH, EPOCHS = 16, 4, 8, 3

CONFIGS = {
  "lr 0.1": dict(learning_rate=0.1),
  "momentum 0.9": dict(learning_rate=0.1, momentum=0.9),
  "Nesterov": dict(learning_rate=0.1, momentum=0.9, nesterov=True),
  "decay 0.01": dict(learning_rate=0.1, momentum=0.9, decay=0.01),
  "clipvalue 0.05": dict(learning_rate=0.3, momentum=0.9, clipvalue=0.05),
  "clipnorm 0.1": dict(learning_rate=0.3, momentum=0.9, clipnorm=0.1),
  "global_clipnorm 0.1": dict(learning_rate=0.3, momentum=0.9, global_clipnorm=0.1),
  "clipnorm + clipvalue": dict(
    learning_rate=0.3, momentum=0.9, clipnorm=0.1, clipvalue=0.05
  ),
}


def _data(seed: int = 0):
  rng = np.random.default_rng(seed)
  rows = np.concatenate([rng.permutation(N_IN) for _ in range(4)])
  x = np.eye(N_IN, dtype=np.float32)[rows]
  y = rng.normal(size=(len(x), N_OUT)).astype(np.float32)
  w0 = rng.normal(size=(N_IN, N_OUT)).astype(np.float32)
  return x, y, w0


def _train(framework, optimizer, data) -> np.ndarray:
  x, y, w0 = data
  model = framework.Sequential(
    [framework.Input((N_IN,)), framework.layers.Dense(N_OUT, use_bias=False)]
  )
  model.set_weights([w0])
  model.compile(optimizer=optimizer, loss="mse")
  model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
  return model.get_weights()[0]


def _difference(a: np.ndarray, b: np.ndarray) -> str:
  differ = int(np.sum(a.view(np.int32) != b.view(np.int32)))
  ulp = np.spacing(np.float32(np.max(np.abs(b))))
  return f"{differ}/{a.size}, {float(np.max(np.abs(a - b)) / ulp):.1f} ulp"


def main() -> None:
  data = _data()
  print("| legacy config | Keras 3 `SGD` | `optax_keras_sgd.keras3.SGD` |")
  print("|---|---|---|")
  for label, config in CONFIGS.items():
    ref = _train(tf_keras, tf_keras.optimizers.legacy.SGD(**config), data)
    ours = _difference(_train(keras, keras3.SGD(**config), data), ref)
    try:
      native_config = keras3.keras_sgd_config(config)
    except ValueError:
      theirs = "cannot express"
    else:
      native = keras.optimizers.SGD.from_config(native_config)
      theirs = _difference(_train(keras, native, data), ref)
    print(f"| {label} | {theirs} | {ours} |")


if __name__ == "__main__":
  main()
