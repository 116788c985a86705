"""Keras files from the real tf_keras, read without TensorFlow, continued in
JAX, and written back for tf_keras to load and continue."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import jax
import numpy as np
import optax
import pytest
import reference
from helpers import optional

import optax_keras_sgd as oks
from optax_keras_sgd import checkpoints

pytestmark = pytest.mark.reference

tf, keras = reference.tf, reference.tf_keras
CONFIG = dict(learning_rate=0.1, momentum=0.9, nesterov=True, decay=0.01)
STEPS = 3


def _gradients(seed, steps):
  """Fixed gradients for the model's variables, in `model.trainable_weights`
  order: dense/kernel, dense/bias, head/kernel, head/bias."""
  rng = np.random.default_rng(seed)
  shapes = [(3, 4), (4,), (4, 2), (2,)]
  return [[rng.normal(size=s).astype(np.float32) for s in shapes] for _ in range(steps)]


def _model(config=CONFIG, loss_scale=False):
  """A tf_keras model with an SGD that has taken STEPS steps."""
  keras.utils.set_random_seed(0)
  inputs = keras.Input((3,))
  hidden = keras.layers.Dense(4, name="dense")(inputs)
  model = keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden))
  opt = keras.optimizers.legacy.SGD(**config)
  if loss_scale:
    opt = keras.mixed_precision.LossScaleOptimizer(opt)
  model.compile(opt, "mse")
  _train(model, _gradients(0, STEPS))
  return model


def _train(model, gradients):
  """tf_keras steps inside tf.function, as model.fit runs them."""
  step = tf.function(
    lambda grads: (
      model.optimizer.apply_gradients(zip(grads, model.trainable_weights)) and None
    )
  )
  for grads in gradients:
    step([tf.constant(g) for g in grads])


def _continue(params, tx, opt_state, gradients):
  """Our jitted steps with the same gradients (a dict tree like params)."""
  step = jax.jit(
    lambda p, g, s: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(g, s, p))
  )
  for dk, db, hk, hb in gradients:
    grads = {"dense": {"bias": db, "kernel": dk}, "head": {"bias": hb, "kernel": hk}}
    params, opt_state = step(params, grads, opt_state)
  return params, opt_state


def _by_path(model):
  """tf_keras's variables and momentum slots by Keras path."""
  opt = getattr(model.optimizer, "inner_optimizer", model.optimizer)
  variables = {v.name.split(":")[0]: v.numpy() for v in model.trainable_weights}
  slots = {
    v.name.split(":")[0]: opt.get_slot(v, "momentum").numpy()
    for v in model.trainable_weights
  }
  return variables, slots, int(opt.iterations.numpy())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("keras")
  model = _model()
  model.save(root / "model.h5")
  tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(str(root / "ckpt"))
  model.save_weights(str(root / "weights" / "w"))
  model.save(str(root / "saved"), save_format="tf")  # a SavedModel directory
  # `save` (not `write`) numbers the prefix and keeps a save counter.
  tf.train.Checkpoint(model=model, optimizer=model.optimizer).save(
    str(root / "numbered" / "ckpt")
  )
  scaled = _model(loss_scale=True)
  tf.train.Checkpoint(model=scaled, optimizer=scaled.optimizer).write(
    str(root / "scaled")
  )
  scaled.save(root / "scaled.h5")
  return root, model, scaled


@pytest.mark.parametrize(
  "name", ["model.h5", "ckpt", "weights", "saved", "numbered", "scaled", "scaled.h5"]
)
def test_read_matches_the_live_optimizer_bitwise(files, name):
  root, model, scaled = files
  state = checkpoints.read(root / name)
  variables, slots, iterations = _by_path(scaled if "scaled" in name else model)
  assert state.iterations == iterations == STEPS
  assert sorted(state.momentum) == sorted(slots)
  # A SavedModel also holds the compiled loss's metric variables.
  extra = {"count", "total"} if name == "saved" else set()
  assert set(state.variables) == set(slots) | extra
  for path in slots:
    np.testing.assert_array_equal(state.momentum[path], slots[path])
    np.testing.assert_array_equal(state.variables[path], variables[path])
  if name.endswith(".h5"):
    # (a LossScaleOptimizer's config is unwrapped to its SGD's)
    assert (state.config["nesterov"], state.config["decay"]) == (True, 0.01)
  else:
    assert float(state.hyperparameters["learning_rate"]) == np.float32(0.1)
  if name == "scaled":
    assert set(state.loss_scale) == {"current_loss_scale", "good_steps"}
    assert float(state.loss_scale["good_steps"]) == STEPS


def test_read_needs_no_tensorflow(files):
  """In a process where importing TensorFlow fails, reading still works."""
  root, model, _ = files
  variables, slots, _ = _by_path(model)
  code = (
    "import sys; sys.modules['tensorflow'] = None; sys.modules['tf_keras'] = None\n"
    "import numpy as np\n"
    "from optax_keras_sgd import checkpoints\n"
    f"for name in ['model.h5', 'ckpt']:\n"
    f"  s = checkpoints.read({str(root)!r} + '/' + name)\n"
    "  print(name, s.iterations, float(sum(np.sum(v.astype(np.float64)) "
    "for v in s.momentum.values())))\n"
  )
  out = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, check=True
  ).stdout.split()
  total = float(sum(np.sum(v.astype(np.float64)) for v in slots.values()))
  assert out == ["model.h5", str(STEPS), repr(total), "ckpt", str(STEPS), repr(total)]


@pytest.mark.parametrize("name", ["model.h5", "ckpt"])
def test_continue_in_jax_equals_continuing_in_keras(files, name):
  root, model, _ = files
  state = checkpoints.read(root / name)
  # A TF checkpoint has no config: its float32 hyperparameters are read, the
  # rest is given.
  overrides = {} if name.endswith(".h5") else dict(nesterov=True, decay=0.01)
  tx, opt_state = checkpoints.to_optax(state, state.params(), **overrides)
  more = _gradients(1, 4)
  params, opt_state = _continue(state.params(), tx, opt_state, more)

  keras_model = keras.models.load_model(root / "model.h5")
  _train(keras_model, more)
  variables, slots, iterations = _by_path(keras_model)
  assert int(oks.iterations(opt_state)) == iterations == STEPS + 4
  velocity = oks.velocity(opt_state)
  for path in variables:
    layer, var = path.split("/")
    np.testing.assert_array_equal(np.asarray(params[layer][var]), variables[path])
    np.testing.assert_array_equal(np.asarray(velocity[layer][var]), slots[path])


def test_facade_from_a_file_continues_like_keras(files):
  root, _, _ = files
  state = checkpoints.read(root / "model.h5")
  variables = [
    oks.Variable(state.variables[p], name=p)
    for p in ("dense/kernel", "dense/bias", "head/kernel", "head/bias")
  ]
  opt = checkpoints.to_sgd(state, variables)
  assert int(opt.iterations) == STEPS
  more = _gradients(2, 3)
  for grads in more:
    opt.apply_gradients([(g, v) for g, v in zip(grads, variables)])
  keras_model = keras.models.load_model(root / "model.h5")
  _train(keras_model, more)
  expected, _, _ = _by_path(keras_model)
  for v in variables:
    np.testing.assert_array_equal(v.numpy(), expected[v.name])


@pytest.mark.parametrize("how", ["h5", "checkpoint"])
def test_written_files_load_in_keras_and_continue_bitwise(files, tmp_path, how):
  root, _, _ = files
  state = checkpoints.read(root / "model.h5")
  tx, opt_state = checkpoints.to_optax(state, state.params())
  params, opt_state = _continue(state.params(), tx, opt_state, _gradients(3, 2))

  if how == "h5":
    checkpoints.write_h5(tmp_path / "out.h5", root / "model.h5", params, opt_state)
    loaded = keras.models.load_model(tmp_path / "out.h5")
  else:
    checkpoints.write_checkpoint(tmp_path / "out", root / "ckpt", params, opt_state)
    loaded = _model()  # the same architecture, trained differently
    # (the template was written with `write`, which keeps no save counter;
    # the values compared below show what was restored)
    tf.train.Checkpoint(model=loaded, optimizer=loaded.optimizer).restore(
      str(tmp_path / "out")
    ).assert_nontrivial_match()
  variables, slots, iterations = _by_path(loaded)
  assert iterations == STEPS + 2
  velocity = oks.velocity(opt_state)
  for path in variables:
    layer, var = path.split("/")
    np.testing.assert_array_equal(variables[path], np.asarray(params[layer][var]))
    np.testing.assert_array_equal(slots[path], np.asarray(velocity[layer][var]))
  # ... and both continue alike.
  more = _gradients(4, 2)
  _train(loaded, more)
  params, opt_state = _continue(params, tx, opt_state, more)
  variables, _, _ = _by_path(loaded)
  for path in variables:
    layer, var = path.split("/")
    np.testing.assert_array_equal(variables[path], np.asarray(params[layer][var]))


def test_handing_our_state_to_a_live_keras_optimizer(files):
  root, _, _ = files
  state = checkpoints.read(root / "model.h5")
  tx, opt_state = checkpoints.to_optax(state, state.params())
  params, opt_state = _continue(state.params(), tx, opt_state, _gradients(5, 1))
  fresh = _model()  # another run, whose optimizer takes our state
  before = [v.numpy() for v in fresh.trainable_weights]
  opt = keras.optimizers.legacy.SGD(**CONFIG)
  checkpoints.build_keras_slots(opt, fresh.trainable_weights)
  for v, value in zip(fresh.trainable_weights, before):  # left as they were
    np.testing.assert_array_equal(v.numpy(), value)
  opt.set_weights(checkpoints.keras_weights(params, opt_state, fresh.trainable_weights))
  assert opt.get_weights()[0] == STEPS + 1
  velocity = oks.velocity(opt_state)
  for v in fresh.trainable_weights:
    layer, var = v.name.split(":")[0].split("/")
    np.testing.assert_array_equal(
      opt.get_slot(v, "momentum").numpy(), np.asarray(velocity[layer][var])
    )


def test_renamed_layers_need_names_and_errors_list_both_sides(files):
  root, _, _ = files
  state = checkpoints.read(root / "model.h5")
  params = state.params()
  renamed = {"encoder": params["dense"], "head": params["head"]}
  with pytest.raises(
    ValueError,
    match=r"Parameters with no Keras variable: "
    r"\['encoder/bias', 'encoder/kernel'\]; Keras variables with "
    r"no parameter: \['dense/bias', 'dense/kernel'\]",
  ):
    checkpoints.to_optax(state, renamed)
  names = {"dense/kernel": "encoder/kernel", "dense/bias": "encoder/bias"}
  _, opt_state = checkpoints.to_optax(state, renamed, names=names)
  np.testing.assert_array_equal(
    oks.velocity(opt_state)["encoder"]["kernel"], state.momentum["dense/kernel"]
  )


def test_a_corrupted_tensor_names_the_file_and_key(files, tmp_path):
  root, _, _ = files
  for suffix in (".index", ".data-00000-of-00001"):
    (tmp_path / f"ckpt{suffix}").write_bytes((root / f"ckpt{suffix}").read_bytes())
  data = tmp_path / "ckpt.data-00000-of-00001"
  raw = bytearray(data.read_bytes())
  bundle = checkpoints._bundle.TensorBundle(str(tmp_path / "ckpt"))
  key = "optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE"
  entry = bundle._entry(key)
  raw[entry.offset] ^= 0xFF
  data.write_bytes(bytes(raw))
  with pytest.raises(
    checkpoints.CheckpointError,
    match=f"ckpt.data-00000-of-00001: checksum mismatch for '{key}'",
  ):
    checkpoints.read(tmp_path / "ckpt")


def test_a_truncated_index_and_missing_files_are_named(files, tmp_path):
  root, _, _ = files
  index = (root / "ckpt.index").read_bytes()
  (tmp_path / "ckpt.index").write_bytes(index[:-60] + index[-48:])
  with pytest.raises(checkpoints.CheckpointError, match="ckpt.index"):
    checkpoints.read(tmp_path / "ckpt")
  (tmp_path / "ok.index").write_bytes(index)
  with pytest.raises(FileNotFoundError, match="ok.data-00000-of-00001"):
    checkpoints.read(tmp_path / "ok")
  with pytest.raises(FileNotFoundError, match="nothing.index does not exist"):
    checkpoints.read(tmp_path / "nothing")


def test_h5_without_optimizer_and_split_weight_names(files, tmp_path):
  root, model, _ = files
  model.save(tmp_path / "bare.h5", include_optimizer=False)
  with pytest.raises(ValueError, match="bare.h5: no `training_config`"):
    checkpoints.read(tmp_path / "bare.h5")
  # Keras splits a long name list over `weight_names0`, `weight_names1`, ...
  split = tmp_path / "split.h5"
  split.write_bytes((root / "model.h5").read_bytes())
  with h5py.File(split, "r+") as f:
    group = f["optimizer_weights"]
    names = list(group.attrs["weight_names"])
    del group.attrs["weight_names"]
    group.attrs["weight_names0"], group.attrs["weight_names1"] = names[:2], names[2:]
  state, whole = checkpoints.read(split), checkpoints.read(root / "model.h5")
  assert state.momentum.keys() == whole.momentum.keys()


def test_writing_refuses_wrong_shapes_and_leaves_nothing(files, tmp_path):
  root, _, _ = files
  state = checkpoints.read(root / "model.h5")
  tx, opt_state = checkpoints.to_optax(state, state.params())
  params = state.params()
  params["head"]["bias"] = np.zeros(3, np.float32)
  opt_state = tx.init(params)
  with pytest.raises(
    ValueError,
    match=r"'model_weights/head/head/bias:0' has shape "
    r"\(2,\); the value to write has shape \(3,\)",
  ):
    checkpoints.write_h5(tmp_path / "out.h5", root / "model.h5", params, opt_state)
  assert not os.listdir(tmp_path)


def test_written_bundle_is_read_by_tensorflow_itself(tmp_path):
  """Our table and bundle writer against TensorFlow's own reader."""
  tensors = {
    "a": np.arange(6, dtype=np.float32).reshape(2, 3),
    "b/c": np.array(7, np.int64),
    "d": np.array([1.5, -2.0], dtype=np.float16),
    "e": np.array([0.5, 3.0], dtype=jax.numpy.bfloat16),
  }
  checkpoints._bundle.write_bundle(str(tmp_path / "x"), tensors)
  reader = tf.train.load_checkpoint(str(tmp_path / "x"))
  ours = checkpoints._bundle.TensorBundle(str(tmp_path / "x"))
  for key, value in tensors.items():
    got = reader.get_tensor(key)
    assert got.dtype == value.dtype
    np.testing.assert_array_equal(got, value)
    # Our reader too: each tensor read into its own writable array.
    mine = ours.read(key)
    assert mine.dtype == value.dtype and mine.flags.writeable
    np.testing.assert_array_equal(mine, value)


def _migrate(*args):
  return subprocess.run(
    [sys.executable, "-m", "optax_keras_sgd.migrate", *map(str, args)],
    capture_output=True,
    text=True,
  )


def test_migrate_inspect_prints_what_the_file_holds(files):
  root, model, scaled = files
  variables, slots, _ = _by_path(model)
  done = _migrate("inspect", root / "model.h5", "--json")
  assert done.returncode == 0, done.stderr
  info = json.loads(done.stdout)
  assert info["iterations"] == STEPS
  assert info["config"]["nesterov"] is True
  assert info["momentum"] == {p: [list(v.shape), "float32"] for p, v in slots.items()}
  text = _migrate("inspect", root / "scaled").stdout
  assert "optimizer config: none in the file" in text
  assert f"iterations: {STEPS}" in text and "  dense/kernel  (3, 4)  float32" in text
  assert "loss scale: current_loss_scale=" in text
  missing = _migrate("inspect", root / "nothing.h5")
  assert missing.returncode == 1 and "error:" in missing.stderr
  assert "nothing" in missing.stderr


@pytest.mark.parametrize("name", ["model.h5", "ckpt"])
def test_migrate_convert_writes_an_orbax_run_that_continues_exactly(
  files, name, tmp_path
):
  optional("orbax.checkpoint")
  root, _, _ = files
  flags = (
    [] if name.endswith(".h5") else ["--set", "nesterov=true", "--set", "decay=0.01"]
  )
  done = _migrate("convert", root / name, tmp_path / "run", *flags)
  assert done.returncode == 0, done.stderr
  tx, params, opt_state, rest = checkpoints.load_converted(tmp_path / "run")
  assert rest == {} and int(oks.iterations(opt_state)) == STEPS
  more = _gradients(1, 4)
  params, opt_state = _continue(params, tx, opt_state, more)
  keras_model = keras.models.load_model(root / "model.h5")
  _train(keras_model, more)
  variables, slots, _ = _by_path(keras_model)
  velocity = oks.velocity(opt_state)
  for path in variables:
    layer, var = path.split("/")
    np.testing.assert_array_equal(np.asarray(params[layer][var]), variables[path])
    np.testing.assert_array_equal(np.asarray(velocity[layer][var]), slots[path])
  again = _migrate("convert", root / name, tmp_path / "run")
  assert again.returncode == 1 and "exists" in again.stderr
  bad = _migrate("convert", root / name, tmp_path / "other", "--set", "nesterov")
  assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr
