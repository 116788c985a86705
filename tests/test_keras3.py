"""`optax_keras_sgd.keras3.SGD` inside the real Keras 3 (JAX backend), against
the real `tf_keras` legacy SGD.

`model.fit` comparisons use a model whose gradients are exact in both
frameworks (one-hot inputs, a bias-free Dense layer, mean squared error over
power-of-two sizes, each input row once per batch), so the two runs see the
same gradients bit for bit and any difference is the optimizer's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import jax
import numpy as np
import pytest
import reference
from helpers import assert_trajectories, optional, random_problem

from optax_keras_sgd import checkpoints, schedules

pytestmark = pytest.mark.reference

keras = optional("keras")
keras3 = optional("optax_keras_sgd.keras3")
tf_keras = reference.tf_keras

N_IN, N_OUT, BATCH, EPOCHS = 16, 4, 8, 3
_rng = np.random.default_rng(20)
# Four epochs' worth of rows; every batch holds each one-hot row at most once.
X = np.eye(N_IN, dtype=np.float32)[
  np.concatenate([_rng.permutation(N_IN) for _ in range(4)])
]
Y = _rng.normal(size=(len(X), N_OUT)).astype(np.float32)
W0 = _rng.normal(size=(N_IN, N_OUT)).astype(np.float32)


def _keras3_model(optimizer, run_eagerly=False, name="model"):
  model = keras.Sequential(
    [keras.Input((N_IN,)), keras.layers.Dense(N_OUT, use_bias=False, name="dense")],
    name=name,
  )
  model.set_weights([W0])
  model.compile(optimizer=optimizer, loss="mse", run_eagerly=run_eagerly)
  return model


def _tf_keras_model(optimizer, run_eagerly=False):
  model = tf_keras.Sequential(
    [
      tf_keras.Input((N_IN,)),
      tf_keras.layers.Dense(N_OUT, use_bias=False, name="dense"),
    ]
  )
  model.set_weights([W0])
  model.compile(optimizer=optimizer, loss="mse", run_eagerly=run_eagerly)
  return model


def _fit(model, epochs=EPOCHS, initial_epoch=0):
  model.fit(
    X,
    Y,
    batch_size=BATCH,
    epochs=epochs,
    initial_epoch=initial_epoch,
    shuffle=False,
    verbose=0,
  )
  return model


def _state(model):
  """The kernel, then the optimizer's step count and velocity."""
  opt = model.optimizer
  if isinstance(opt, keras.optimizers.Optimizer):
    count = int(np.asarray(opt.iterations))
    slots = [np.asarray(m) for m in getattr(opt, "momentums", [])]
  else:
    weights = opt.get_weights()
    count, slots = int(weights[0]), weights[1:]
  return [model.get_weights()[0], *slots], count


def _schedule(flavour):
  args = (0.2, 3, 0.7)
  return {
    "ours": schedules.ExponentialDecay(*args),
    "keras3": keras.optimizers.schedules.ExponentialDecay(*args),
    "tf_keras": tf_keras.optimizers.schedules.ExponentialDecay(*args),
  }[flavour]


# Each case: our optimizer's arguments, the reference's, and whether norms are
# involved (then within a bound, else bitwise).
FIT_CASES = {
  "plain": (dict(learning_rate=0.1), dict(learning_rate=0.1), True),
  "momentum": (dict(learning_rate=0.1, momentum=0.9),) * 2 + (True,),
  "nesterov_decay": (dict(learning_rate=0.1, momentum=0.9, nesterov=True, decay=0.01),)
  * 2
  + (True,),
  "clipvalue": (dict(learning_rate=0.3, momentum=0.5, clipvalue=0.05),) * 2 + (True,),
  "our_schedule": (
    dict(learning_rate=_schedule("ours"), momentum=0.9),
    dict(learning_rate=_schedule("tf_keras"), momentum=0.9),
    True,
  ),
  "keras3_schedule": (
    dict(learning_rate=_schedule("keras3"), momentum=0.9, decay=0.05),
    dict(learning_rate=_schedule("tf_keras"), momentum=0.9, decay=0.05),
    True,
  ),
  "momentum_callable": (
    dict(learning_rate=0.1, momentum=lambda: 0.8),
    dict(learning_rate=0.1, momentum=lambda: 0.8),
    True,
  ),
  "clipnorm_and_clipvalue": (
    dict(learning_rate=0.3, momentum=0.9, clipnorm=0.1, clipvalue=0.05),
  )
  * 2
  + (False,),
  "global_clipnorm": (dict(learning_rate=0.3, momentum=0.9, global_clipnorm=0.1),) * 2
  + (False,),
}


@pytest.mark.parametrize("run_eagerly", [False, True], ids=["jit", "eager"])
@pytest.mark.parametrize("case", FIT_CASES)
def test_fit_matches_tf_keras_legacy_sgd(case, run_eagerly):
  """Compiled `fit` against tf_keras's `fit` (graph mode), eager against eager."""
  ours_kwargs, ref_kwargs, exact = FIT_CASES[case]
  ours = _fit(_keras3_model(keras3.SGD(**ours_kwargs), run_eagerly))
  ref = _fit(_tf_keras_model(tf_keras.optimizers.legacy.SGD(**ref_kwargs), run_eagerly))
  (ours_values, ours_count), (ref_values, ref_count) = _state(ours), _state(ref)
  assert ours_count == ref_count == EPOCHS * len(X) // BATCH
  # Norm clipping sums in different orders; measured: within 2 ulps.
  assert_trajectories([ours_values], [ref_values], exact=exact, ulps=4)


def _apply_each(opt, variables, grad_steps, dtype="float32"):
  """`opt.apply` on each step's gradients, jitted through `stateless_apply`
  as Keras 3's trainer runs it; returns the variables after every call."""
  opt.build(variables)
  apply = jax.jit(opt.stateless_apply)
  train_values = [v.value for v in variables]
  opt_values = [v.value for v in opt.variables]
  out = []
  for grads in grad_steps:
    grads = [jax.numpy.asarray(g, dtype) for g in grads]
    train_values, opt_values = apply(opt_values, grads, train_values)
    out.append([np.asarray(v) for v in train_values])
  return out


def test_stateless_apply_matches_the_reference_in_each_dtype():
  """The call Keras 3's JAX trainer makes, jitted, on random gradients."""
  rng = np.random.default_rng(3)
  params, grad_steps = random_problem(rng, [(5, 3), (7,)], steps=6)
  kwargs = dict(learning_rate=0.05, momentum=0.9, nesterov=True, decay=0.02)
  for dtype in ("float32", "float16", "bfloat16"):
    variables = [keras.Variable(p, dtype=dtype) for p in params]
    ours = _apply_each(keras3.SGD(**kwargs), variables, grad_steps, dtype)
    ref, _ = reference.run(params, grad_steps, dtype=dtype, **kwargs)
    assert_trajectories(ours, ref, dtype=dtype)


def test_keras_file_round_trip_continues_bitwise(tmp_path):
  """Save after two epochs, load with `keras.models.load_model`, train the
  third: the same as three epochs without a break."""
  config = dict(learning_rate=_schedule("ours"), momentum=0.9, decay=0.01)
  whole = _fit(_keras3_model(keras3.SGD(**config)))
  first = _fit(_keras3_model(keras3.SGD(**config)), epochs=2)
  path = os.fspath(tmp_path / "m.keras")
  first.save(path)
  loaded = keras.models.load_model(path)
  assert isinstance(loaded.optimizer, keras3.SGD)
  assert loaded.optimizer.get_config() == first.optimizer.get_config()
  resumed = _fit(loaded, epochs=EPOCHS, initial_epoch=2)
  (a, a_count), (b, b_count) = _state(resumed), _state(whole)
  assert a_count == b_count
  assert_trajectories([a], [b])


def test_keras3_sgd_state_loads_into_ours(tmp_path):
  """A run begun with Keras 3's own SGD continues with ours: the variables
  are the same (`iteration`, `learning_rate`, one `momentum` each)."""
  theirs = _fit(_keras3_model(keras.optimizers.SGD(0.1, momentum=0.9)), epochs=1)
  path = os.fspath(tmp_path / "m.weights.h5")
  theirs.save_weights(path)
  ours = _keras3_model(keras3.SGD(0.1, momentum=0.9))
  ours.optimizer.build(ours.trainable_variables)
  ours.load_weights(path)
  assert [v.name for v in ours.optimizer.variables] == [
    v.name for v in theirs.optimizer.variables
  ]
  for a, b in zip(ours.optimizer.variables, theirs.optimizer.variables):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_legacy_h5_run_continues_in_keras3(tmp_path):
  """tf_keras trains two epochs and saves an H5 model; Keras 3 loads its
  weights, its optimizer config and (through this project) its step count
  and velocities, and the third epoch equals tf_keras's."""
  config = dict(learning_rate=0.1, momentum=0.9, nesterov=True, decay=0.01)
  ref = _fit(_tf_keras_model(tf_keras.optimizers.legacy.SGD(**config)), epochs=2)
  path = os.fspath(tmp_path / "legacy.h5")
  ref.save(path)
  state = checkpoints.read(path)
  opt = keras3.SGD.from_config(state.config)
  model = _keras3_model(opt, name="sequential")
  model.set_weights([state.variables["dense/kernel"]])
  keras3.restore_legacy_state(opt, model, state)
  _fit(model, epochs=EPOCHS, initial_epoch=2)
  _fit(ref, epochs=EPOCHS, initial_epoch=2)
  (a, a_count), (b, b_count) = _state(model), _state(ref)
  assert a_count == b_count == EPOCHS * len(X) // BATCH
  assert_trajectories([a], [b])


def test_restore_legacy_state_names_unmatched_variables(tmp_path):
  ref = _fit(
    _tf_keras_model(tf_keras.optimizers.legacy.SGD(0.1, momentum=0.9)), epochs=1
  )
  path = os.fspath(tmp_path / "legacy.h5")
  ref.save(path)
  model = _keras3_model(keras3.SGD(0.1, momentum=0.9))
  model.layers[0].kernel.assign(W0)
  renamed = keras.Sequential(
    [keras.Input((N_IN,)), keras.layers.Dense(N_OUT, use_bias=False, name="other")]
  )
  opt = keras3.SGD(0.1, momentum=0.9)
  with pytest.raises(ValueError, match=r"other/kernel.*dense/kernel"):
    keras3.restore_legacy_state(opt, renamed, path)
  assert int(np.asarray(opt.iterations)) == 0  # nothing half-loaded
  keras3.restore_legacy_state(
    opt, renamed, path, names={"dense/kernel": "other/kernel"}
  )
  assert int(np.asarray(opt.iterations)) == len(X) // BATCH


def test_config_is_the_legacy_config():
  """Our `get_config` is tf_keras's legacy SGD's, and reads it back."""
  for kwargs in (
    dict(learning_rate=0.1, momentum=0.9, nesterov=True, decay=0.01, clipnorm=1.0),
    dict(learning_rate=_schedule("tf_keras"), clipvalue=0.5, global_clipnorm=2.0),
  ):
    legacy = tf_keras.optimizers.legacy.SGD(**kwargs).get_config()
    ours = keras3.SGD.from_config(legacy)
    assert ours.get_config() == legacy


def test_keras_sgd_config_converts_what_keras3_can_express():
  config = keras3.keras_sgd_config(
    tf_keras.optimizers.legacy.SGD(0.1, momentum=0.9, decay=0.01).get_config()
  )
  opt = keras.optimizers.SGD.from_config(config)
  schedule = opt._learning_rate
  assert isinstance(schedule, keras.optimizers.schedules.InverseTimeDecay)
  # The same formula, op for op: equal eagerly. (Jitted, XLA may fuse its
  # multiply-add, which the legacy graph does not: arithmetic Keras 3 owns,
  # measured by benchmarks/keras3_differences.py, not asserted here.)
  steps = np.arange(0, 5000, 7)
  legacy = reference.decayed_lr(0.1, steps, decay=0.01, graph=False)
  converted = np.array([np.asarray(schedule(step)) for step in steps], np.float64)
  np.testing.assert_array_equal(converted, legacy)
  assert keras3.keras_sgd_config({"learning_rate": 0.1, "clipnorm": 1.0}) == {
    "learning_rate": 0.1,
    "clipnorm": 1.0,
  }
  with pytest.raises(ValueError, match=r"one clipping argument.*clipnorm"):
    keras3.keras_sgd_config({"clipnorm": 1.0, "clipvalue": 0.5})
  with pytest.raises(ValueError, match="decay"):
    keras3.keras_sgd_config(
      {"learning_rate": schedules.serialize(_schedule("ours")), "decay": 0.1}
    )


class _Halving(keras.optimizers.schedules.LearningRateSchedule):
  def __call__(self, step):
    return 0.1 * 0.5**step


@pytest.mark.parametrize(
  ("kwargs", "error", "match"),
  [
    (dict(weight_decay=0.1), TypeError, "weight_decay"),
    (dict(clipnorm=1.0, global_clipnorm=1.0), ValueError, "clipnorm"),
    (dict(momentum=1.5), ValueError, "momentum"),
    (dict(decay=-1.0), ValueError, "decay"),
    (dict(learning_rate=keras.optimizers.schedules.CosineDecay(0.1, 10)), None, None),
    (dict(learning_rate=_Halving()), ValueError, "_Halving is not one of the six"),
  ],
)
def test_arguments_are_checked(kwargs, error, match):
  if error is None:
    assert isinstance(keras3.SGD(**kwargs).get_config()["learning_rate"], dict)
    return
  with pytest.raises(error, match=match):
    keras3.SGD(**kwargs)


def _keras3_bn_model(optimizer):
  """Keras 3: Dense, BatchNormalization (two non-trainable variables among
  its four), Dense, named `net`."""
  keras.utils.set_random_seed(0)
  inputs = keras.Input((3,))
  hidden = keras.layers.Dense(4, name="hidden")(inputs)
  hidden = keras.layers.BatchNormalization(name="bn")(hidden)
  model = keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden), name="net")
  model.compile(optimizer=optimizer, loss="mse")
  rng = np.random.default_rng(1)
  x = rng.normal(size=(16, 3)).astype(np.float32)
  model.fit(x, rng.normal(size=(16, 2)).astype(np.float32), batch_size=8, verbose=0)
  return model


@pytest.mark.parametrize("flavour", ["keras3", "ours"])
def test_keras_archive_is_read_and_continues_exactly(tmp_path, flavour):
  """A `.keras` archive's SGD state, read and continued in JAX, equals
  tf_keras's legacy SGD continued from the same state on the same gradients."""
  make = keras.optimizers.SGD if flavour == "keras3" else keras3.SGD
  model = _keras3_bn_model(make(0.1, momentum=0.9, nesterov=True))
  path = tmp_path / "m.keras"
  model.save(path)
  state = checkpoints.read(path)
  assert state.iterations == 2
  assert state.config["nesterov"] is True and state.config["momentum"] == 0.9
  # Each momentum is the one Keras 3 made for that variable: Keras names it
  # after the variable's path.
  by_keras_name = {
    m.name.removeprefix("net_").removesuffix("_momentum"): np.asarray(m)
    for m in model.optimizer.momentums
  }
  assert sorted(state.momentum) == sorted(
    v.path.removeprefix("net/") for v in model.trainable_variables
  )
  for path_, value in state.momentum.items():
    np.testing.assert_array_equal(value, by_keras_name[path_.replace("/", "_")])
  assert "bn/moving_mean" in state.variables and "bn/moving_mean" not in state.momentum

  trainable = sorted(state.momentum)
  params = {p: jax.numpy.asarray(state.variables[p]) for p in trainable}
  tx, opt_state = checkpoints.to_optax(state, params)
  rng = np.random.default_rng(2)
  grad_steps = [
    {p: rng.normal(size=params[p].shape).astype(np.float32) for p in trainable}
    for _ in range(3)
  ]
  for grads in grad_steps:
    updates, opt_state = jax.jit(tx.update)(grads, opt_state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)

  tf = reference.tf
  variables = [tf.Variable(state.variables[p], name=p) for p in trainable]
  ref = tf_keras.optimizers.legacy.SGD(**state.config)
  checkpoints.build_keras_slots(ref, variables)
  ref.set_weights([np.int64(state.iterations), *(state.momentum[p] for p in trainable)])
  step = tf.function(lambda g: ref.apply_gradients(zip(g, variables)) and None)
  for grads in grad_steps:
    step([tf.constant(grads[p]) for p in trainable])
  assert_trajectories(
    [[params[p] for p in trainable]], [[v.numpy() for v in variables]]
  )


def test_keras3_weights_file_is_read_through_the_model(tmp_path):
  model = _keras3_bn_model(keras.optimizers.SGD(0.1, momentum=0.9))
  path = os.fspath(tmp_path / "m.weights.h5")
  model.save_weights(path)
  with pytest.raises(
    ValueError, match=r"m.weights.h5: a Keras 3 weights file.*from_keras3"
  ):
    checkpoints.read(path)
  fresh = _keras3_bn_model(keras.optimizers.SGD(0.1, momentum=0.9))
  fresh.load_weights(path)
  state = checkpoints.from_keras3(fresh, source=path)
  assert state.iterations == 2
  for v, m in zip(model.trainable_variables, model.optimizer.momentums):
    np.testing.assert_array_equal(state.momentum[v.path.removeprefix("net/")], m)


@pytest.mark.parametrize(
  ("optimizer", "match"),
  [
    (lambda: keras.optimizers.Adam(0.1), "Adam, not an SGD"),
    (lambda: keras.optimizers.SGD(0.1, weight_decay=0.01), "weight_decay"),
  ],
)
def test_keras3_states_with_no_legacy_meaning_are_refused(tmp_path, optimizer, match):
  model = _keras3_bn_model(optimizer())
  model.save(tmp_path / "m.keras")
  with pytest.raises(ValueError, match=rf"m.keras: .*{match}"):
    checkpoints.read(tmp_path / "m.keras")


def test_keras_archive_is_read_without_tensorflow(tmp_path):
  """With KERAS_BACKEND=jax, in a process where importing TensorFlow fails."""
  model = _keras3_bn_model(keras3.SGD(0.1, momentum=0.9))
  model.save(tmp_path / "m.keras")
  code = (
    "import sys; sys.modules['tensorflow'] = None; sys.modules['tf_keras'] = None\n"
    "from optax_keras_sgd import checkpoints\n"
    f"s = checkpoints.read({os.fspath(tmp_path / 'm.keras')!r})\n"
    "print(s.iterations, sorted(s.momentum)[0], s.config['momentum'])\n"
  )
  env = dict(os.environ, KERAS_BACKEND="jax")
  out = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
  ).stdout.split()
  assert out == ["2", "bn/beta", "0.9"]


def test_a_broken_keras_archive_names_the_file(tmp_path):
  with zipfile.ZipFile(tmp_path / "m.keras", "w") as z:
    z.writestr("config.json", "{not json")
  with pytest.raises(ValueError, match="m.keras: Keras 3 cannot load this archive"):
    checkpoints.read(tmp_path / "m.keras")


def test_gradient_accumulation_applies_legacy_steps_to_the_mean():
  """Keras 3 averages every two gradients; the legacy step then runs on the
  average with the step count of whole steps (for `decay`)."""
  rng = np.random.default_rng(4)
  params, micro = random_problem(rng, [(5, 3), (7,)], steps=8)
  kwargs = dict(learning_rate=0.05, momentum=0.9, nesterov=True, decay=0.1)
  ours = _apply_each(
    keras3.SGD(**kwargs, gradient_accumulation_steps=2),
    [keras.Variable(p, dtype="float32") for p in params],
    micro,
  )
  f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
  # Keras 3's accumulation, stated in NumPy: (g2 + g1) / 2 in float32.
  mean = [
    [(f32(b) + f32(a)) / np.float32(2) for a, b in zip(micro[i], micro[i + 1])]
    for i in range(0, len(micro), 2)
  ]
  ref, _ = reference.run(params, mean, **kwargs)
  assert_trajectories(ours[1::2], ref)
  assert_trajectories(ours[0::2], [[f32(p) for p in params], *ref[:-1]])


def test_loss_scale_factor_is_undone_before_the_legacy_step():
  rng = np.random.default_rng(5)
  params, grad_steps = random_problem(rng, [(4, 4)], steps=4)
  kwargs = dict(learning_rate=0.1, momentum=0.5, clipvalue=0.3)
  scaled = [
    [np.float32(1024) * np.asarray(g, np.float32) for g in s] for s in grad_steps
  ]
  ours = _apply_each(
    keras3.SGD(**kwargs, loss_scale_factor=1024.0),
    [keras.Variable(p, dtype="float32") for p in params],
    scaled,
  )
  ref, _ = reference.run(params, grad_steps, **kwargs)
  assert_trajectories(ours, ref)


def test_ema_leaves_the_trained_variables_as_the_reference():
  rng = np.random.default_rng(6)
  params, grad_steps = random_problem(rng, [(3, 2)], steps=4)
  opt = keras3.SGD(0.1, momentum=0.9, use_ema=True, ema_momentum=0.5)
  ours = _apply_each(
    opt, [keras.Variable(p, dtype="float32") for p in params], grad_steps
  )
  ref, _ = reference.run(params, grad_steps, learning_rate=0.1, momentum=0.9)
  assert_trajectories(ours, ref)
  assert opt.get_config()["use_ema"] is True and opt.get_config()["ema_momentum"] == 0.5


def test_a_new_learning_rate_takes_effect_at_the_next_step():
  """`opt.learning_rate = x` (as Keras callbacks such as ReduceLROnPlateau
  do) between jitted steps, against tf_keras doing the same."""
  rng = np.random.default_rng(7)
  params, grad_steps = random_problem(rng, [(6,)], steps=4)
  opt = keras3.SGD(0.1, momentum=0.9)
  variables = [keras.Variable(params[0], dtype="float32")]
  opt.build(variables)
  apply = jax.jit(opt.stateless_apply)
  train_values = [v.value for v in variables]
  ours = []
  for i, grads in enumerate(grad_steps):
    if i == 2:
      opt.learning_rate = 0.05
    opt_values = [v.value for v in opt.variables]
    train_values, opt_values = apply(
      opt_values, [jax.numpy.asarray(grads[0], "float32")], train_values
    )
    for var, value in zip(opt.variables, opt_values):
      var.assign(value)
    ours.append([np.asarray(train_values[0])])
  assert apply._cache_size() == 1  # no retracing for the new value

  tf = reference.tf
  ref_var = tf.Variable(np.asarray(params[0], np.float32))
  ref_opt = tf_keras.optimizers.legacy.SGD(0.1, momentum=0.9)
  step = tf.function(lambda g: ref_opt.apply_gradients([(g, ref_var)]) and None)
  ref = []
  for i, grads in enumerate(grad_steps):
    if i == 2:
      ref_opt.learning_rate = 0.05
    step(tf.constant(np.asarray(grads[0], np.float32)))
    ref.append([ref_var.numpy()])
  assert_trajectories(ours, ref)
