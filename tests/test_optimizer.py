"""The facade's own behaviour: compilation, failure safety, pytrees, errors."""

from __future__ import annotations

import functools
import gc
import json
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import numpy_rule
import pytest

from optax_keras_sgd import SGD, Variable, _fused, schedules
from optax_keras_sgd._facade import _packing


def test_seed_examples():
  opt = SGD(learning_rate=0.1)
  var = Variable(1.0)
  loss = lambda: (var**2) / 2.0  # noqa: E731
  assert opt.minimize(loss, [var]).numpy() == 1
  assert var.numpy() == np.float32(0.9)

  opt = SGD(learning_rate=0.1, momentum=0.9)
  var = Variable(1.0)
  val0 = var.value()
  opt.minimize(loss, [var])
  val1 = var.value()
  assert (val0 - val1) == np.float32(0.100000024)
  opt.minimize(loss, [var])
  val2 = var.value()
  assert np.float32(val1 - val2) == np.float32(0.18)


def test_one_compile_for_changing_hyperparameters_and_callables():
  w = [Variable(jnp.ones(8)), Variable(jnp.ones((2, 3)))]
  values = iter([0.1, 0.2, 0.3, 0.4, 0.5])
  opt = SGD(learning_rate=lambda: next(values), momentum=0.9)
  for i in range(5):
    opt.apply_gradients([(jnp.ones(8), w[0]), (jnp.ones((2, 3)), w[1])])
    opt.momentum = 0.5 + i / 10
  assert opt.compiled_count() == 1
  opt.learning_rate = 0.01
  opt.apply_gradients([(jnp.ones(8), w[0]), (jnp.ones((2, 3)), w[1])])
  assert opt.compiled_count() == 1


def _eager_calls(step) -> list[str]:
  """The eager JAX operations `step()` runs (an array made, a dtype cast),
  counted as calls of JAX's eager path, `dispatch.apply_primitive`; each is
  a dispatch that costs as much as a small model's whole compiled step."""
  from jax._src import dispatch

  eager = dispatch.apply_primitive.__code__
  calls: list[str] = []

  def profile(frame, event, arg):
    if event == "call" and frame.f_code is eager:
      calls.append(frame.f_back.f_code.co_name)

  before = sys.getprofile()
  sys.setprofile(profile)
  try:
    step()
  finally:
    sys.setprofile(before)
  return calls


STEADY = [
  lambda: SGD(0.1),
  lambda: SGD(0.1, momentum=0.9, nesterov=True),
  lambda: SGD(schedules.ExponentialDecay(0.1, 10, 0.5), momentum=0.9, decay=0.01),
]


@pytest.mark.parametrize("make", STEADY, ids=["plain", "nesterov", "schedule"])
def test_a_steady_step_is_one_compiled_call_and_no_eager_operation(make):
  w = [Variable(jnp.ones(8)), Variable(jnp.ones((2, 3)))]
  grads = [jnp.ones(8), jnp.ones((2, 3))]
  opt = make()
  for _ in range(2):  # compiles (with and without donation); makes the slots
    opt.apply_gradients(zip(grads, w))
  compiled = opt.compiled_count()
  assert _eager_calls(lambda: opt.apply_gradients(zip(grads, w))) == []
  assert opt.compiled_count() == compiled
  params = {"a": jnp.ones(8), "b": jnp.ones(3)}
  opt = make()
  held = {"params": opt.update(params, params)}
  for donate in (False, True):

    def step(donate=donate):
      held["params"] = opt.update(held["params"], params, donate=donate)

    step()  # compiles the step with or without donation
    compiled = opt.compiled_count()
    assert _eager_calls(step) == []
    assert opt.compiled_count() == compiled


def test_keeping_the_returned_step_count_keeps_the_velocity_in_place():
  # `step = opt.apply_gradients(...)` holds the counter's array; the
  # velocity is still donated, so each step writes it where it was.
  w = Variable(jnp.ones(1 << 16))
  opt = SGD(0.1, momentum=0.9)
  buffers = []
  for _ in range(4):
    step = opt.apply_gradients([(jnp.ones(1 << 16), w)])
    buffers.append(opt.get_slot(w, "momentum").value().unsafe_buffer_pointer())
  assert int(step) == 4
  assert len(set(buffers)) == 1
  assert opt.compiled_count() == 1


def test_a_step_over_many_variables_starts_no_garbage_collection():
  # Each step makes a new array per Variable and frees the old one; the
  # collector is held off until then, so it never starts during a step
  # (unheld, 1,000 new arrays start one or two collections a step).
  w = [Variable(jnp.ones(4)) for _ in range(1000)]
  grads = [jnp.ones(4)] * 1000
  opt = SGD(0.1, momentum=0.9)
  opt.apply_gradients(zip(grads, w))  # compiles
  starts = []
  record = lambda phase, info: starts.append(info) if phase == "start" else None  # noqa: E731
  gc.callbacks.append(record)
  try:
    for _ in range(5):
      opt.apply_gradients(zip(grads, w))
  finally:
    gc.callbacks.remove(record)
  assert starts == []
  assert gc.isenabled()


@pytest.mark.parametrize("enabled", [True, False])
def test_a_step_leaves_the_collector_as_it_found_it(enabled):
  seen = []

  def aggregate(pairs):  # runs inside the step
    seen.append(gc.isenabled())
    return pairs

  opt = SGD(0.1, gradient_aggregator=aggregate)
  w = Variable(jnp.ones(3))
  was = gc.isenabled()
  (gc.enable if enabled else gc.disable)()
  try:
    opt.apply_gradients([(jnp.ones(3), w)])
    assert gc.isenabled() is enabled
    with pytest.raises(ValueError, match="shape"):  # a step that fails
      opt.apply_gradients([(jnp.ones(2), w)])
    assert gc.isenabled() is enabled
  finally:
    (gc.enable if was else gc.disable)()
  assert seen == [False, False]
  np.testing.assert_allclose(w.value(), 0.9)  # the failed step changed nothing


def test_arrays_the_user_holds_are_never_donated():
  w = Variable(jnp.ones(16))
  opt = SGD(0.1, momentum=0.9)
  held = w.value()
  opt.apply_gradients([(jnp.ones(16), w)])
  slot_value = opt.get_slot(w, "momentum").value()
  opt.apply_gradients([(jnp.ones(16), w)])
  assert not held.is_deleted() and not slot_value.is_deleted()
  np.testing.assert_array_equal(held, np.ones(16))
  np.testing.assert_allclose(slot_value, np.full(16, -0.1), rtol=1e-6)


def test_a_large_step_that_cannot_donate_says_why_once():
  big = Variable(jnp.ones(1 << 20), name="kernel")
  small = Variable(jnp.ones(16), name="bias")
  opt = SGD(0.1, momentum=0.9)
  grads = [jnp.ones(1 << 20), jnp.ones(16)]
  held = small.value()  # too small to matter: no warning
  opt.apply_gradients(zip(grads, [big, small]))
  held = [big.value(), small.value()]  # `params = [v.value() ...]`
  with pytest.warns(
    UserWarning,
    match=r"2 of 2 Variables in place \(1,048,592 elements; the first is 'kernel'\)",
  ):
    opt.apply_gradients(zip(grads, [big, small]))
  np.testing.assert_array_equal(held[0], np.float32(1) - np.float32(0.1))  # intact
  opt.apply_gradients(zip(grads, [big, small]))  # once (warnings are errors)
  del held
  np.testing.assert_allclose(big.numpy()[:2], 1 - 0.1 * (1 + 1.9 + 2.71), rtol=1e-6)


def test_buffers_owned_by_the_optimizer_are_donated():
  w = Variable(jnp.ones(16))
  opt = SGD(0.1, momentum=0.9)
  for _ in range(3):
    opt.apply_gradients([(jnp.ones(16), w)])
  donating = [
    (key, fn) for key, fn in opt._runner._steps._cache.items() if key[2] and key[3]
  ]
  assert donating, "the steady-state step did not use the donating program"
  ((_, fn),) = donating
  lowered = fn.lower(
    [w.value()],
    [jnp.ones(16)],
    [opt.get_slot(w, "momentum").value()],
    opt.iterations.value(),
    jnp.int32(0),
    jnp.float32(0.1),
    jnp.float32(0.9),
  )
  assert "input_output_alias" in lowered.compile().as_text()


# Small tensors (their slots travel packed, see `_facade._packing`) and one
# too large to pack.
PACKED_SHAPES = [(3,), (2, 4), (1,), (5,), (4097,)]


@pytest.fixture
def one_device():
  """A buffer lives on one device, so slots travel packed only on one
  (`_packing.layout`)."""
  if jax.device_count() != 1:
    pytest.skip("slots are packed on one device only")


@pytest.fixture
def pack_small(one_device, monkeypatch):
  """Packs the slots of as few as two small tensors (by default it takes
  `MIN_PACKED` of them), so that small problems exercise the buffer."""
  monkeypatch.setattr(_packing, "MIN_PACKED", 2)


def test_few_small_slots_stay_arrays_of_their_own(one_device, monkeypatch):
  """Fewer than `MIN_PACKED` small slots of a dtype are not packed (4 here,
  to keep the test small); that many are."""
  monkeypatch.setattr(_packing, "MIN_PACKED", 4)
  opt = SGD(0.1, momentum=0.9)
  w = [Variable(np.ones(3, np.float32)) for _ in range(3)]
  w.append(Variable(np.ones(_fused.SMALL_LEAF + 1, np.float32)))  # not small
  opt.apply_gradients([(jnp.ones(v.shape), v) for v in w])
  assert opt._runner._pack is None
  w.append(Variable(np.ones(3, np.float32)))
  opt.apply_gradients([(jnp.ones(v.shape), v) for v in w])
  assert opt._runner._pack.layout.packed == (0, 1, 2, 4)


# Keras's velocity rule at these tests' float32 learning rate and momentum.
_velocity = functools.partial(
  numpy_rule.velocity, lr=np.float32(0.1), m=np.float32(0.9)
)


def _problem(steps, shapes=PACKED_SHAPES, seed=0):
  rng = np.random.default_rng(seed)
  params = [rng.normal(size=s).astype(np.float32) for s in shapes]
  grads = [
    [rng.normal(size=s).astype(np.float32) for s in shapes] for _ in range(steps)
  ]
  return params, grads


def test_small_slots_travel_in_one_buffer(pack_small):
  params, grads = _problem(3)
  w = [Variable(p) for p in params]
  opt = SGD(0.1, momentum=0.9)
  for gs in grads:
    opt.apply_gradients(zip(gs, w))
  ((key, fn),) = [(k, f) for k, f in opt._runner._steps._cache.items() if k[2] and k[3]]
  layout = key[1]
  assert layout.packed == (0, 1, 2, 3) and layout.rest == (4,)
  slots = [opt.get_slot(v, "momentum") for v in w]
  lowered = fn.lower(
    [v.value() for v in w],
    grads[0],
    (opt._runner._pack.buffers, [slots[4].value()]),
    opt.iterations.value(),
    jnp.int32(0),
    jnp.float32(0.1),
    jnp.float32(0.9),
  )
  # the values, one buffer for the four small velocities, the large one,
  # the count and the skipped count
  assert len(jax.tree.leaves(lowered.out_info)) == 5 + 1 + 1 + 2
  # the buffer (argument 10, after 5 values and 5 gradients) is donated to
  # the new buffer (result 5)
  assert "{5}: (10, {}, may-alias)" in lowered.compile().as_text()
  assert opt.compiled_count() == 1
  expected = numpy_rule.run(params, grads, learning_rate=0.1, momentum=0.9)[-1]
  for v, e in zip(w, expected):
    np.testing.assert_array_equal(v.numpy(), e)


def test_packed_slots_read_and_write_as_their_own(pack_small):
  """Reading, assigning and `set_weights` on slots that live in the buffer:
  each slot holds what the NumPy rule says, and a slot assigned between
  steps takes part in the next step with its new value (the others with
  theirs)."""
  params, grads = _problem(4)
  w = [Variable(p) for p in params]
  opt = SGD(0.1, momentum=0.9)
  for gs in grads[:2]:
    opt.apply_gradients(zip(gs, w))
  slots = [opt.get_slot(v, "momentum") for v in w]
  velocity = [s.numpy() for s in slots]
  rule_v = [np.zeros_like(p) for p in params]
  for gs in grads[:2]:
    rule_v = list(map(_velocity, rule_v, gs))
  for a, b in zip(velocity, rule_v):
    np.testing.assert_array_equal(a, b)

  held = slots[1].value()
  slots[1].assign(np.full((2, 4), 0.5, np.float32))
  values = [v.numpy() for v in w]
  opt.apply_gradients(zip(grads[2], w))
  rule_v[1] = np.full((2, 4), 0.5, np.float32)
  rule_v = list(map(_velocity, rule_v, grads[2]))
  for v, s, x, r in zip(w, slots, values, rule_v):
    np.testing.assert_array_equal(s.numpy(), r)
    np.testing.assert_array_equal(v.numpy(), x + r)
  np.testing.assert_array_equal(held, velocity[1])  # not donated, not changed

  weights = opt.get_weights()
  weights[2] = np.arange(2 * 4, dtype=np.float32).reshape(2, 4)
  opt.set_weights(weights)
  for got, want in zip(opt.get_weights(), weights):
    np.testing.assert_array_equal(got, want)
  values = [v.numpy() for v in w]
  opt.apply_gradients(zip(grads[3], w))
  rule_v = list(map(_velocity, weights[1:], grads[3]))
  for v, s, x, r in zip(w, slots, values, rule_v):
    np.testing.assert_array_equal(s.numpy(), r)
    np.testing.assert_array_equal(v.numpy(), x + r)


def test_pytree_slots_travel_packed_and_read_back(pack_small):
  """`update(params, grads)`: the small leaves' slots share one buffer, and
  the parameters and `get_weights` follow the NumPy rule."""
  params, grads = _problem(3)
  tree = {"a": params[:2], "b": {"c": params[2], "d": params[3], "e": params[4]}}
  opt = SGD(0.1, momentum=0.9)
  held = jax.tree.map(jnp.asarray, tree)
  for gs in grads:
    g_tree = {"a": gs[:2], "b": {"c": gs[2], "d": gs[3], "e": gs[4]}}
    held = opt.update(held, jax.tree.map(jnp.asarray, g_tree), donate=True)
  assert opt._runner._pack.layout.packed == (0, 1, 2, 3)
  expected = numpy_rule.run(params, grads, learning_rate=0.1, momentum=0.9)[-1]
  for got, want in zip(jax.tree.leaves(held), expected):
    np.testing.assert_array_equal(got, want)
  rule_v = [np.zeros_like(p) for p in params]
  for gs in grads:
    rule_v = list(map(_velocity, rule_v, gs))
  for got, want in zip(opt.get_weights()[1:], rule_v):
    np.testing.assert_array_equal(got, want)


def test_slots_shared_by_two_variable_lists(pack_small):
  """Alternating lists that share Variables: each list's small slots are
  packed in turn, and every slot keeps its own velocity."""
  params, grads = _problem(4, shapes=[(3,), (2,), (4,)])
  w = [Variable(p) for p in params]
  opt = SGD(0.1, momentum=0.9)
  lists = [[0, 1], [1, 2]]
  rule_v = [np.zeros_like(p) for p in params]
  rule_w = [p.copy() for p in params]
  for step, gs in enumerate(grads):
    idx = lists[step % 2]
    opt.apply_gradients([(gs[i], w[i]) for i in idx])
    for i in idx:
      rule_v[i] = _velocity(rule_v[i], gs[i])
      rule_w[i] = rule_w[i] + rule_v[i]
  for i, v in enumerate(w):
    np.testing.assert_array_equal(opt.get_slot(v, "momentum").numpy(), rule_v[i])
    np.testing.assert_array_equal(v.numpy(), rule_w[i])


def test_exception_in_loss_leaves_everything_unchanged():
  w = Variable(jnp.array([1.0, 2.0]))
  opt = SGD(0.1, momentum=0.9)
  opt.minimize(lambda: jnp.sum(w**2), [w])
  snapshot = [x.copy() for x in opt.get_weights()], w.numpy().copy()

  def bad_loss():
    _ = jnp.sum(w**2)
    raise RuntimeError("boom")

  with pytest.raises(RuntimeError, match="boom"):
    opt.minimize(bad_loss, [w])
  assert not isinstance(w._value, jax.core.Tracer)
  np.testing.assert_array_equal(w.numpy(), snapshot[1])
  for a, b in zip(opt.get_weights(), snapshot[0]):
    np.testing.assert_array_equal(a, b)
  opt.minimize(lambda: jnp.sum(w**2), [w])  # still usable
  assert int(opt.iterations) == 2


def test_shape_error_leaves_state_unchanged():
  w = Variable(jnp.ones(3), name="w")
  opt = SGD(0.1, momentum=0.9)
  opt.apply_gradients([(jnp.ones(3), w)])
  before = opt.get_weights(), w.numpy()
  with pytest.raises(
    ValueError,
    match=re.escape(
      "The gradient for variable 'w' has shape (4,), but the variable has shape (3,)"
    ),
  ):
    opt.apply_gradients([(jnp.ones(4), w)])
  np.testing.assert_array_equal(w.numpy(), before[1])
  assert int(opt.iterations) == 1


def test_loss_reads_current_values_of_other_variables():
  w, scale = Variable(1.0), Variable(1.0)
  opt = SGD(1.0)
  loss = lambda: scale * w  # noqa: E731  d/dw = scale
  opt.minimize(loss, [w])
  assert float(w.numpy()) == 0.0
  scale.assign(3.0)
  opt.minimize(loss, [w])
  assert float(w.numpy()) == -3.0


def test_unused_variable_gets_no_gradient_and_no_slot():
  used, unused = Variable(1.0, name="used"), Variable(1.0, name="unused")
  opt = SGD(0.1, momentum=0.9)
  with pytest.warns(UserWarning, match=r"\['unused'\]"):
    opt.minimize(lambda: used * 2.0, [used, unused])
  assert len(opt.get_weights()) == 2
  with pytest.raises(ValueError, match="No gradients provided for any variable"):
    opt.minimize(lambda: used * 2.0, [unused])


def test_var_list_callable_and_grad_loss():
  w = Variable(jnp.array([1.0, 2.0]))
  opt = SGD(1.0)
  opt.minimize(lambda: w * 1.0, lambda: [w], grad_loss=jnp.array([0.5, 2.0]))
  np.testing.assert_array_equal(w.numpy(), [0.5, 0.0])


def test_tensor_loss_needs_tape():
  with pytest.raises(ValueError, match="`tape` is required when a `Tensor` loss"):
    SGD().minimize(jnp.float32(1.0), [Variable(1.0)])


def test_get_gradients():
  w = Variable(jnp.array([1.0, 2.0]))
  grads = SGD().get_gradients(lambda: jnp.sum(w**2), [w])
  np.testing.assert_array_equal(grads[0], [2.0, 4.0])
  with pytest.raises(ValueError, match="has `None` for gradient"):
    SGD().get_gradients(lambda: jnp.float32(1.0), [w])


def test_pytree_path_matches_numpy_rule():
  rng = np.random.default_rng(0)
  params = {
    "w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
    "b": jnp.asarray(rng.normal(size=2), jnp.float32),
  }
  opt = SGD(0.05, momentum=0.9, nesterov=True, decay=0.01)
  grad_steps = [
    {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for k, v in params.items()}
    for _ in range(10)
  ]
  p = params
  for g in grad_steps:
    p = opt.update(p, g)
  leaves = lambda t: [np.asarray(t["b"]), np.asarray(t["w"])]  # noqa: E731
  expected = numpy_rule.run(
    leaves(params),
    [leaves(g) for g in grad_steps],
    learning_rate=0.05,
    momentum=0.9,
    nesterov=True,
    decay=0.01,
  )[-1]
  for a, b in zip(leaves(p), expected):
    np.testing.assert_array_equal(a, b)
  assert [w.shape for w in opt.get_weights()] == [(), (2,), (3, 2)]
  assert opt.compiled_count() == 1
  with pytest.raises(ValueError, match="tree structure"):
    opt.update({"w": params["w"]}, {"w": params["w"]})
  with pytest.raises(ValueError, match="trains either Variables"):
    opt.apply_gradients([(jnp.ones(2), Variable(jnp.ones(2)))])


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_pytree_path_refuses_variables_and_the_reverse(momentum):
  opt = SGD(0.1, momentum=momentum)
  opt.apply_gradients([(jnp.ones(2), Variable(jnp.ones(2)))])
  with pytest.raises(ValueError, match="trains either Variables"):
    opt.update({"w": jnp.ones(2)}, {"w": jnp.ones(2)})
  with pytest.raises(ValueError, match="trains either Variables"):
    opt.build({"w": jnp.ones(2)})


def test_pytree_build_then_update_then_set_weights():
  # build() with a pytree makes the slots `update` then uses.
  params = {"b": jnp.zeros(2), "w": jnp.ones((2, 2))}
  opt = SGD(0.1, momentum=0.9)
  opt.build(params)
  opt.set_weights(
    [np.int64(3), np.array([1.0, -1.0], np.float32), np.zeros((2, 2), np.float32)]
  )
  p = opt.update(params, {"b": jnp.zeros(2), "w": jnp.zeros((2, 2))})
  np.testing.assert_allclose(p["b"], [0.9, -0.9], rtol=1e-6)  # v = 0.9 * v
  np.testing.assert_array_equal(p["w"], params["w"])
  assert int(opt.iterations) == 4


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_pytree_leaf_of_another_shape_or_dtype_is_named_and_changes_nothing(momentum):
  # Without the check, a (1,) leaf would be broadcast against a (3,) velocity
  # and come back with shape (3,).
  opt = SGD(0.1, momentum=momentum)
  params = opt.update({"w": jnp.ones(3)}, {"w": jnp.ones(3)})
  before = [np.asarray(x) for x in opt.get_weights()]
  with pytest.raises(
    ValueError,
    match=re.escape(
      "`params` at ['w'] has shape (1,), but this optimizer was built for shape (3,)."
    ),
  ):
    opt.update({"w": jnp.ones(1)}, {"w": jnp.ones(1)})
  with pytest.raises(
    TypeError,
    match=re.escape(
      "`params` at ['w'] has dtype float16, but this optimizer was built for "
      "dtype float32."
    ),
  ):
    opt.update({"w": jnp.ones(3, jnp.float16)}, {"w": jnp.ones(3, jnp.float16)})
  with pytest.raises(
    ValueError,
    match=re.escape(
      "The gradient at ['w'] has shape (2,), but the parameter has shape (3,)."
    ),
  ):
    opt.update(params, {"w": jnp.ones(2)})
  for x, y in zip(before, opt.get_weights()):
    np.testing.assert_array_equal(x, y)


def test_pytree_leaves_may_be_numpy_or_python_numbers():
  opt = SGD(0.5)
  p = opt.update(
    {"a": np.ones(2, np.float32), "b": 1.0}, {"a": np.ones(2, np.float32), "b": 1.0}
  )
  np.testing.assert_array_equal(p["a"], [0.5, 0.5])
  np.testing.assert_array_equal(p["b"], 0.5)
  p = opt.update(p, {"a": jnp.ones(2), "b": jnp.float32(1.0)})
  np.testing.assert_array_equal(p["a"], [0.0, 0.0])


def test_set_weights_before_first_step_after_build():
  w = Variable(jnp.zeros(2))
  opt = SGD(0.1, momentum=0.9)
  opt.build([w])
  opt.set_weights([np.int64(7), np.array([0.5, -0.5], np.float32)])
  opt.apply_gradients([(jnp.zeros(2), w)])
  np.testing.assert_allclose(w.numpy(), [0.45, -0.45], rtol=1e-6)
  assert int(opt.iterations) == 8


def test_set_weights_rejects_bad_iterations_without_changing_anything():
  w = Variable(jnp.zeros(2))
  opt = SGD(0.1, momentum=0.9)
  opt.build([w])
  with pytest.raises(ValueError, match="iterations"):
    opt.set_weights([np.float32(1.5), np.ones(2, np.float32)])
  np.testing.assert_array_equal(opt.get_weights()[1], np.zeros(2))


def test_integer_variable_is_named():
  steps = Variable(jnp.ones(2, jnp.int32), name="steps")
  with pytest.raises(TypeError, match="'steps'"):
    SGD(0.1).apply_gradients([(jnp.ones(2, jnp.int32), steps)])


def test_malformed_pairs():
  w = Variable(1.0)
  with pytest.raises(TypeError, match=r"`grads_and_vars\[0\]` must be a"):
    SGD().apply_gradients([w])
  with pytest.raises(
    TypeError,
    match=r"`grads_and_vars\[0\]\[1\]` must be an "
    r"optax_keras_sgd.Variable. Received: str",
  ):
    SGD().apply_gradients([(jnp.ones(()), "w")])


def test_unknown_kwarg_lists_allowed():
  with pytest.raises(
    TypeError,
    match="Unexpected keyword argument passed to optimizer: foo. Allowed kwargs are",
  ):
    SGD(foo=1)


@pytest.mark.parametrize(
  "key", ["clipnorm", "clipvalue", "global_clipnorm", "decay", "lr"]
)
def test_negative_kwargs(key):
  with pytest.raises(ValueError, match=f"Expected {key} >= 0, received: -1"):
    SGD(**{key: -1})


def test_lr_alias_warns_and_is_the_learning_rate():
  with pytest.warns(UserWarning, match="`lr` argument is deprecated"):
    opt = SGD(lr=0.5)
  assert float(opt.learning_rate) == 0.5 and opt.lr is opt.learning_rate


def test_config_roundtrip_through_json_with_schedule():
  opt = SGD(schedules.ExponentialDecay(0.1, 10, 0.5), momentum=0.9, clipnorm=1.0)
  config = json.loads(json.dumps(opt.get_config()))
  again = SGD.from_config(config)
  assert again.get_config() == opt.get_config()
  assert isinstance(again.learning_rate, schedules.ExponentialDecay)


def test_unserializable_schedule_is_a_clear_error():
  opt = SGD(lambda step: 0.1 / (1 + step))
  with pytest.raises(ValueError, match="Cannot serialize the schedule"):
    opt.get_config()


def test_callable_hyperparameter_serialised_as_current_value():
  assert SGD(lambda: 0.3, momentum=lambda: 0.5).get_config()["learning_rate"] == 0.3


def test_from_config_rejects_unknown_keys():
  with pytest.raises(ValueError, match=r"Unknown keys in SGD config: \['foo'\]"):
    SGD.from_config({"name": "SGD", "learning_rate": 0.1, "foo": 1})


def test_variable_behaves_like_an_array():
  v = Variable(jnp.array([1.0, 2.0]), name="v")
  assert v.shape == (2,) and v.dtype == jnp.float32 and v.name == "v"
  np.testing.assert_array_equal(jnp.sin(v), jnp.sin(v.value()))
  np.testing.assert_array_equal(2.0 * v + v @ v, 2.0 * v.value() + 5.0)
  np.testing.assert_array_equal(np.asarray(v), [1.0, 2.0])
  v.assign_add(jnp.ones(2))
  np.testing.assert_array_equal(v.numpy(), [2.0, 3.0])
  with pytest.raises(ValueError, match="Cannot assign a value of shape"):
    v.assign(jnp.ones(3))
  assert jax.grad(lambda x: jnp.sum(x**2))(v).shape == (2,)


def test_array_clip_thresholds_and_setters():
  w = Variable(jnp.array([3.0, 4.0]))
  opt = SGD(1.0, clipnorm=jnp.float32(1.0))
  opt.apply_gradients([(jnp.array([3.0, 4.0]), w)])
  np.testing.assert_allclose(w.numpy(), [2.4, 3.2], rtol=1e-6)
  opt.clipnorm = None
  opt.clipvalue = np.float64(0.5)
  opt.apply_gradients([(jnp.array([3.0, 4.0]), w)])
  np.testing.assert_allclose(w.numpy(), [1.9, 2.7], rtol=1e-6)
  with pytest.raises(ValueError, match="Expected global_clipnorm >= 0"):
    opt.global_clipnorm = -1.0


def test_pytree_update_with_donation_reuses_params_buffers():
  rng = np.random.default_rng(1)
  params = {
    "w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
    "b": jnp.asarray(rng.normal(size=3), jnp.float32),
  }
  grads = {
    k: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for k, v in params.items()
  }
  expected = SGD(0.1, momentum=0.9).update(params, grads)
  opt = SGD(0.1, momentum=0.9)
  donated = {k: v + 0 for k, v in params.items()}
  result = opt.update(donated, grads, donate=True)
  assert all(x.is_deleted() for x in donated.values())
  for k in params:
    np.testing.assert_array_equal(result[k], expected[k])
  # One array twice, or a gradient that is a param: not donated, no error.
  same = jnp.ones(3)
  p = SGD(0.5).update(
    {"a": same, "b": same}, {"a": jnp.ones(3), "b": jnp.ones(3)}, donate=True
  )
  assert not same.is_deleted()
  np.testing.assert_array_equal(p["a"], [0.5, 0.5, 0.5])
  x = jnp.ones(2)
  p = SGD(0.5).update({"x": x}, {"x": x}, donate=True)
  assert not x.is_deleted()
  np.testing.assert_array_equal(p["x"], [0.5, 0.5])
  with pytest.raises(TypeError, match="`donate` must be a bool"):
    SGD().update({"x": jnp.ones(2)}, {"x": jnp.ones(2)}, donate="yes")


def test_gradient_aggregator_must_be_callable():
  with pytest.raises(
    TypeError,
    match="`gradient_aggregator` must be a callable on "
    r"\(gradient, Variable\) pairs. Received: int.",
  ):
    SGD(gradient_aggregator=3)
