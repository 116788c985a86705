"""The `SGD` facade against the real `tf_keras.optimizers.legacy.SGD`."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
import reference
from helpers import KernelPath, enable_x64

from optax_keras_sgd import SGD, Variable
from optax_keras_sgd._facade import _packing

pytestmark = pytest.mark.reference

tf = reference.tf
keras_sgd = reference.tf_keras.optimizers.legacy.SGD


SEQ_SHAPES = [(4,), (2, 3), ()]


def _seq(seed=0):
  """Gradients for 3 variables over 8 steps, some None, one variable late."""
  rng = np.random.default_rng(seed)
  params = [rng.normal(size=s).astype(np.float32) for s in SEQ_SHAPES]
  steps = []
  for t in range(8):
    grads = [rng.normal(size=s).astype(np.float32) for s in SEQ_SHAPES]
    if t < 3:
      grads[2] = None  # appears late: its slot is created at step 3
    if t == 5:
      grads[0] = None
    steps.append(grads)
  return params, steps


def _run_both(config, params, steps):
  tf_vars = [tf.Variable(p, name=f"w{i}") for i, p in enumerate(params)]
  our_vars = [Variable(p, name=f"w{i}") for i, p in enumerate(params)]
  tf_opt, our_opt = keras_sgd(**config), SGD(**config)
  for grads in steps:
    present = [i for i, g in enumerate(grads) if g is not None]
    tf_opt.apply_gradients([(tf.constant(grads[i]), tf_vars[i]) for i in present])
    with pytest.warns(UserWarning) if len(present) < 3 else _nothing():
      our_opt.apply_gradients(
        [(None if g is None else jnp.asarray(g), v) for g, v in zip(grads, our_vars)]
      )
    for a, b in zip(tf_vars, our_vars):
      np.testing.assert_array_equal(a.numpy(), b.numpy())
  return tf_opt, our_opt, tf_vars, our_vars


class _nothing:
  def __enter__(self):
    return self

  def __exit__(self, *args):
    return False


CONFIGS = [
  dict(learning_rate=0.1),
  dict(learning_rate=0.05, momentum=0.9),
  dict(learning_rate=0.05, momentum=0.9, nesterov=True, decay=0.01),
  dict(learning_rate=0.1, momentum=0.5, clipvalue=0.3),
]


@pytest.mark.parametrize("packed", [False, True], ids=["slots", "packed-slots"])
@pytest.mark.parametrize("path", ["native", "xla"])
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_trajectories_weights_slots_and_config(config, path, packed, monkeypatch):
  """Also with the small slots in one buffer (`_facade._packing`; these
  three variables are fewer than it takes by default): the variables come
  and go between steps, so the buffer is packed, read and released."""
  if packed:
    monkeypatch.setattr(_packing, "MIN_PACKED", 2)
  kernel = KernelPath(path, monkeypatch)
  params, steps = _seq()
  tf_opt, our_opt, _, _ = _run_both(config, params, steps)
  kernel.check(config, facade=True, shapes=SEQ_SHAPES)
  tf_w, our_w = tf_opt.get_weights(), our_opt.get_weights()
  assert len(tf_w) == len(our_w)
  for a, b in zip(tf_w, our_w):
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)
  assert our_opt.get_slot_names() == tf_opt.get_slot_names()
  assert_same_config(our_opt.get_config(), tf_opt.get_config())
  json.dumps(our_opt.get_config())


def assert_same_config(ours, theirs):
  """Same keys and values; numbers compared as the float32 both hold."""
  assert list(ours) == list(theirs)
  for key, value in theirs.items():
    if isinstance(value, (float, np.floating)) and not isinstance(value, bool):
      assert np.float32(ours[key]) == np.float32(value), key
    else:
      assert ours[key] == value, key


@pytest.mark.parametrize(
  "config",
  [
    dict(learning_rate=0.1, momentum=0.9),
    dict(learning_rate=0.1, momentum=0.9, nesterov=True, clipnorm=1.0),
  ],
  ids=str,
)
def test_norm_clipping_facade_agrees_to_rounding(config):
  rng = np.random.default_rng(3)
  params = [rng.normal(size=(5, 3)).astype(np.float32)]
  tf_vars, our_vars = [tf.Variable(params[0])], [Variable(params[0])]
  tf_opt, our_opt = keras_sgd(**config), SGD(**config)
  for _ in range(6):
    g = rng.normal(size=(5, 3)).astype(np.float32)
    tf_opt.apply_gradients([(tf.constant(g), tf_vars[0])])
    our_opt.apply_gradients([(jnp.asarray(g), our_vars[0])])
  np.testing.assert_allclose(
    our_vars[0].numpy(), tf_vars[0].numpy(), rtol=1e-6, atol=1e-6
  )


def test_loading_reference_weights_continues_like_reference():
  params, steps = _seq(1)
  config = dict(learning_rate=0.05, momentum=0.9, nesterov=True)
  tf_opt, _, tf_vars, _ = _run_both(config, params, steps[:5])
  # A fresh facade that is given the reference's weights and variable values.
  our_vars = [Variable(v.numpy(), name=v.name.split(":")[0]) for v in tf_vars]
  our_opt = SGD(**config)
  our_opt.build(our_vars[:2] + [our_vars[2]])  # slot order as the reference's
  assert [w.shape for w in our_opt.get_weights()] == [
    w.shape for w in tf_opt.get_weights()
  ]
  our_opt.set_weights(tf_opt.get_weights())
  assert int(our_opt.iterations) == 5
  rng = np.random.default_rng(9)
  for _ in range(4):
    grads = [rng.normal(size=v.shape).astype(np.float32) for v in tf_vars]
    tf_opt.apply_gradients([(tf.constant(g), v) for g, v in zip(grads, tf_vars)])
    our_opt.apply_gradients([(jnp.asarray(g), v) for g, v in zip(grads, our_vars)])
  for a, b in zip(tf_vars, our_vars):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("momentum, expected", [(0.9, 3), (0.0, 1)])
def test_dense_layer_weight_count(momentum, expected):
  """SPEC section 2: Dense(10) on 20 inputs: 3 weights with momentum, 1 without."""
  kernel, bias = Variable(jnp.ones((20, 10))), Variable(jnp.zeros(10))
  x = jnp.arange(100.0).reshape(5, 20) / 100
  opt = SGD(0.01, momentum=momentum)
  opt.minimize(lambda: jnp.mean((x @ kernel + bias) ** 2), [kernel, bias])
  weights = opt.get_weights()
  assert len(weights) == expected
  assert [w.shape for w in weights] == [(), (20, 10), (10,)][:expected]
  assert weights[0].dtype == np.int64


def test_set_weights_errors_match_reference_messages():
  v = Variable(jnp.ones(2))
  opt = SGD(0.1, momentum=0.9)
  opt.apply_gradients([(jnp.ones(2), v)])
  tf_v = tf.Variable(np.ones(2, np.float32))
  tf_opt = keras_sgd(0.1, momentum=0.9)
  tf_opt.apply_gradients([(tf.ones(2), tf_v)])
  for bad in ([np.array(1)], [np.array(1), np.ones(3)]):
    with pytest.raises(ValueError) as ours:
      opt.set_weights(bad)
    with pytest.raises(ValueError) as theirs:
      tf_opt.set_weights(bad)
    assert str(ours.value) == str(theirs.value)


def test_schedule_learning_rate_in_facade_matches_reference():
  from optax_keras_sgd import schedules

  tf_s = reference.schedules().PiecewiseConstantDecay([1], [1.0, 0.1])
  tf_v, v = tf.Variable(0.0), Variable(0.0)
  tf_opt = keras_sgd(tf_s, momentum=0.9)
  opt = SGD(schedules.PiecewiseConstantDecay([1], [1.0, 0.1]), momentum=0.9)
  out = []
  for _ in range(3):
    tf_opt.apply_gradients([(tf.constant(1.0), tf_v)])
    opt.apply_gradients([(jnp.float32(1.0), v)])
    assert v.numpy() == tf_v.numpy()
    out.append(float(v.numpy()))
  np.testing.assert_allclose(out, [-1.0, -2.9, -4.71], rtol=1e-6)


def test_hyperparameters_set_between_steps_match_reference():
  tf_v, v = tf.Variable([1.0, -2.0]), Variable([1.0, -2.0])
  tf_opt, opt = keras_sgd(0.1, momentum=0.9), SGD(0.1, momentum=0.9)
  for i, (new_lr, new_m) in enumerate(
    [(0.1, 0.9), (0.5, 0.5), (0.02, 0.0), (0.3, 0.95)]
  ):
    tf_opt.learning_rate, tf_opt.momentum = new_lr, new_m
    opt.learning_rate, opt.momentum = new_lr, new_m
    if i == 3:
      opt.lr = 0.3  # the alias
    g = np.float32([0.5, -1.5]) * (i + 1)
    tf_opt.apply_gradients([(tf.constant(g), tf_v)])
    opt.apply_gradients([(jnp.asarray(g), v)])
    np.testing.assert_array_equal(v.numpy(), tf_v.numpy())
  assert opt.compiled_count() <= 2  # at most with and without donation


def test_momentum_schedule_matches_reference_given_the_same_values():
  momenta = lambda step: jnp.where(step < 2, 0.5, 0.9)  # noqa: E731
  tf_v, v = tf.Variable([1.0, -2.0]), Variable([1.0, -2.0])
  tf_opt, opt = keras_sgd(0.1, momentum=0.5), SGD(0.1, momentum=momenta)
  for i in range(5):
    tf_opt.momentum = 0.5 if i < 2 else 0.9
    g = np.float32([0.5, -1.5]) * (i + 1)
    tf_opt.apply_gradients([(tf.constant(g), tf_v)])
    opt.apply_gradients([(jnp.asarray(g), v)])
    np.testing.assert_array_equal(v.numpy(), tf_v.numpy())
  assert opt.compiled_count() <= 2


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
@pytest.mark.parametrize(
  "config",
  [
    dict(learning_rate=0.1, momentum=0.9, nesterov=True),
    dict(learning_rate=0.1, decay=0.01),
    dict(learning_rate=0.05),
  ],
)
def test_complex_variables_match_reference(dtype, config):
  """tf_keras's own optimizer tests train complex variables on CPU."""
  rng = np.random.default_rng(0)
  shape = (5,)
  w0, *grads = [
    (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(dtype)
    for _ in range(7)
  ]
  ref, _ = reference.run([w0], [[g] for g in grads], dtype, **config)
  with enable_x64(dtype == "complex128"):
    var, opt = Variable(jnp.asarray(w0)), SGD(**config)
    for g, expected in zip(grads, ref):
      opt.apply_gradients([(jnp.asarray(g), var)])
      np.testing.assert_array_equal(np.asarray(var.numpy()), expected[0])


def test_empty_lists_gradient_lists_and_variable_gradients_as_in_reference():
  """No pairs is no step; gradients given as Python lists or Variables are
  converted, as tf_keras converts them."""
  tf_var, tf_opt = tf.Variable(np.ones(3, np.float32)), keras_sgd(0.1, momentum=0.9)
  var, opt = Variable(jnp.ones(3)), SGD(0.1, momentum=0.9)
  steps = [
    lambda o, v, V: o.apply_gradients([]),
    lambda o, v, V: o.minimize(lambda: 0.0 * v[0], []),
    lambda o, v, V: o.apply_gradients([([1.0, 2.0, 3.0], v)]),
    lambda o, v, V: o.apply_gradients([(V(np.ones(3, np.float32)), v)]),
  ]
  for step in steps:
    step(tf_opt, tf_var, tf.Variable)
    step(opt, var, Variable)
    assert int(opt.iterations) == int(tf_opt.iterations)
    np.testing.assert_array_equal(np.asarray(var.numpy()), tf_var.numpy())
  assert int(opt.iterations) == 2


def test_iterations_set_to_a_variable_is_advanced_as_in_reference():
  tf_count, count = tf.Variable(5, dtype=tf.int64), Variable(5)
  tf_opt, opt = keras_sgd(0.1, momentum=0.9), SGD(0.1, momentum=0.9)
  tf_opt.iterations, opt.iterations = tf_count, count
  assert opt.iterations is count
  tf_var, var = tf.Variable([1.0, 2.0]), Variable([1.0, 2.0])
  for _ in range(3):
    tf_opt.apply_gradients([(tf.constant([1.0, -1.0]), tf_var)])
    opt.apply_gradients([(jnp.asarray([1.0, -1.0]), var)])
  assert int(count) == int(tf_count) == 8
  assert opt.weights[0] is count
  np.testing.assert_array_equal(opt.get_weights()[1], tf_opt.get_weights()[1])
  # Once the weights exist, both refuse a new counter Variable.
  for o, v in [(tf_opt, tf.Variable(0, dtype=tf.int64)), (opt, Variable(0))]:
    with pytest.raises(RuntimeError, match="Cannot set `iterations` to a new Variable"):
      o.iterations = v
  with pytest.raises(ValueError, match="`iterations` must be a non-negative integer"):
    SGD().iterations = Variable(1.5)


def test_variable_constraint_is_applied_after_each_update_as_in_reference():
  tf_var = tf.Variable(
    [1.0, -2.0, 0.3], constraint=lambda x: tf.clip_by_value(x, 0.0, 0.5)
  )
  var = Variable([1.0, -2.0, 0.3], constraint=lambda x: jnp.clip(x, 0.0, 0.5))
  tf_opt, opt = keras_sgd(0.1, momentum=0.9), SGD(0.1, momentum=0.9)
  rng = np.random.default_rng(2)
  for _ in range(4):
    g = rng.normal(size=3).astype(np.float32) * 5
    tf_opt.apply_gradients([(tf.constant(g), tf_var)])
    opt.apply_gradients([(jnp.asarray(g), var)])
    np.testing.assert_array_equal(np.asarray(var.numpy()), tf_var.numpy())
    # The velocity is the unconstrained update's.
    np.testing.assert_array_equal(opt.get_weights()[1], tf_opt.get_weights()[1])
  with pytest.raises(ValueError, match="`constraint` must be None or a callable"):
    Variable(1.0, constraint=3)


class _Quintupled:
  """A subclass hook, defined once for both libraries."""

  def _aggregate_gradients(self, grads_and_vars):
    return [(5 * g, v) for g, v in grads_and_vars]


@pytest.mark.parametrize("aggregate", [True, False])
@pytest.mark.parametrize("how", ["gradient_aggregator", "subclass"])
def test_gradient_aggregation_hooks_as_in_reference(how, aggregate):
  """`gradient_aggregator=` and an overridden `_aggregate_gradients` see the
  pairs before clipping, and only when `experimental_aggregate_gradients`.
  The clip is `clipvalue` (elementwise, so bitwise equal): it cuts the
  aggregated gradients and not the raw ones."""
  config = dict(learning_rate=0.1, momentum=0.5, clipvalue=1.5)
  if how == "gradient_aggregator":
    config["gradient_aggregator"] = lambda pairs: [(2 * g, v) for g, v in pairs]
    tf_opt, opt = keras_sgd(**config), SGD(**config)
  else:
    tf_opt = type("Q", (_Quintupled, keras_sgd), {})(**config)
    opt = type("Q", (_Quintupled, SGD), {})(**config)
  tf_var, var = tf.Variable([1.0, 2.0]), Variable([1.0, 2.0])
  for g in ([0.5, 0.25], [1.0, -0.5]):
    tf_opt.apply_gradients(
      [(tf.constant(g), tf_var)], experimental_aggregate_gradients=aggregate
    )
    opt.apply_gradients(
      [(jnp.asarray(g), var)], experimental_aggregate_gradients=aggregate
    )
    np.testing.assert_array_equal(np.asarray(var.numpy()), tf_var.numpy())
  plain = SGD(0.1, momentum=0.5, clipvalue=1.5)
  plain_var = Variable([1.0, 2.0])
  for g in ([0.5, 0.25], [1.0, -0.5]):
    plain.apply_gradients([(jnp.asarray(g), plain_var)])
  assert np.array_equal(np.asarray(var.numpy()), plain_var.numpy()) == (not aggregate)


def test_minimize_with_callable_var_list_evaluates_the_loss_first():
  """A model built by its first call can hand over its variables lazily."""
  for opt, make in [(keras_sgd(0.1), tf.Variable), (SGD(0.1), Variable)]:
    calls, built = [], []

    def loss(make=make, calls=calls, built=built):
      calls.append("loss")
      if not built:
        built.append(make([1.0, 2.0]))
      return (built[0] * built[0])[0] + built[0][1]

    def var_list(calls=calls, built=built):
      calls.append("var_list")
      return list(built)

    opt.minimize(loss, var_list)
    assert calls[:2] == ["loss", "var_list"]
    np.testing.assert_allclose(np.asarray(built[0].numpy()), [0.8, 1.9], rtol=1e-6)


@pytest.mark.parametrize("clip", ["clipvalue", "clipnorm", "global_clipnorm"])
def test_clipping_complex_gradients_is_an_error_as_in_reference(clip):
  tf_var = tf.Variable([1 + 1j], dtype=tf.complex64)
  with pytest.raises(tf.errors.InvalidArgumentError):
    keras_sgd(0.1, **{clip: 1.0}).apply_gradients(
      [(tf.constant([3 + 4j], tf.complex64), tf_var)]
    )
  var = Variable(jnp.asarray([1 + 1j], jnp.complex64))
  gradient = jnp.asarray([3 + 4j], jnp.complex64)
  with pytest.raises(TypeError, match=f"`{clip}` cannot clip complex gradients"):
    SGD(0.1, **{clip: 1.0}).apply_gradients([(gradient, var)])
  np.testing.assert_array_equal(np.asarray(var.numpy()), [1 + 1j])


def test_applying_to_an_array_is_not_implemented_as_in_reference():
  with pytest.raises(NotImplementedError, match="Updating a `Tensor` is not"):
    keras_sgd(0.1).apply_gradients([(tf.constant([1.0]), tf.constant([1.0]))])
  for array in [jnp.ones(3), np.ones(3, np.float32)]:
    with pytest.raises(
      NotImplementedError,
      match=r"Updating an array is not "
      r"implemented \(`grads_and_vars\[0\]\[1\]` is a \w+ of shape "
      r"\(3,\)\)",
    ):
      SGD(0.1).apply_gradients([(jnp.ones(3), array)])
