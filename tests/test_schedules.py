"""Each schedule against the real `tf_keras` schedule, eager and under jit."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference

from optax_keras_sgd import schedules

pytestmark = pytest.mark.reference

TFS = reference.schedules()

CASES = {
  "exponential": (
    "ExponentialDecay",
    dict(initial_learning_rate=0.1, decay_steps=10, decay_rate=0.5),
  ),
  "exponential_staircase": (
    "ExponentialDecay",
    dict(initial_learning_rate=0.3, decay_steps=7, decay_rate=0.9, staircase=True),
  ),
  "piecewise": (
    "PiecewiseConstantDecay",
    dict(boundaries=[1, 3, 50], values=[1.0, 0.5, 0.1, 0.01]),
  ),
  "polynomial": (
    "PolynomialDecay",
    dict(initial_learning_rate=0.1, decay_steps=10, end_learning_rate=0.01, power=2.0),
  ),
  "polynomial_cycle": (
    "PolynomialDecay",
    dict(
      initial_learning_rate=0.1,
      decay_steps=10,
      end_learning_rate=0.01,
      power=2.0,
      cycle=True,
    ),
  ),
  "inverse_time": (
    "InverseTimeDecay",
    dict(initial_learning_rate=0.1, decay_steps=5, decay_rate=0.5),
  ),
  "inverse_time_staircase": (
    "InverseTimeDecay",
    dict(initial_learning_rate=0.1, decay_steps=5, decay_rate=0.5, staircase=True),
  ),
  "cosine": ("CosineDecay", dict(initial_learning_rate=0.1, decay_steps=50, alpha=0.1)),
  "cosine_warmup": (
    "CosineDecay",
    dict(
      initial_learning_rate=0.1,
      decay_steps=10,
      alpha=0.1,
      warmup_target=0.2,
      warmup_steps=3,
    ),
  ),
  "restarts": (
    "CosineDecayRestarts",
    dict(
      initial_learning_rate=0.1, first_decay_steps=4, t_mul=2.0, m_mul=0.5, alpha=0.01
    ),
  ),
  "restarts_equal_periods": (
    "CosineDecayRestarts",
    dict(initial_learning_rate=0.1, first_decay_steps=7, t_mul=1.0, m_mul=0.8),
  ),
}

STEPS = np.arange(0, 201, dtype=np.float32)


def _tf_values(cls, kwargs):
  schedule = getattr(TFS, cls)(**kwargs)
  return np.array([schedule(reference.tf.constant(s)).numpy() for s in STEPS])


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("jit", [False, True])
def test_schedule_matches_reference_over_200_steps(name, jit):
  cls, kwargs = CASES[name]
  ours = getattr(schedules, cls)(**kwargs)
  fn = jax.jit(ours) if jit else ours
  values = np.array([fn(jnp.float32(s)) for s in STEPS])
  expected = _tf_values(cls, kwargs)
  assert values.dtype == np.float32
  if not jit:
    np.testing.assert_array_equal(values, expected)
    return
  # Fused under jit, XLA simplifies constant arithmetic and its pow/cos/log may
  # differ from TensorFlow's in the last bits: at most 4 float32 ulps of the
  # schedule's scale.
  scale = np.spacing(np.max(np.abs(expected)))
  worst = np.max(np.abs(values - expected)) / scale
  assert worst <= 4, f"{worst} ulps of the scale"


SPEC_VALUES = {  # SPEC section 4: steps 0, 1, 2, 3, 5, 11, 20
  "ExponentialDecay(0.1, 10, 0.5)": (
    schedules.ExponentialDecay(0.1, 10, 0.5),
    [0.1, 0.093303, 0.087055, 0.081225, 0.070711, 0.046652, 0.025],
  ),
  "PiecewiseConstantDecay": (
    schedules.PiecewiseConstantDecay([1, 3], [1.0, 0.5, 0.1]),
    [1.0, 1.0, 0.5, 0.5, 0.1, 0.1, 0.1],
  ),
  "PolynomialDecay": (
    schedules.PolynomialDecay(0.1, 10, 0.01, power=2.0, cycle=True),
    [0.1, 0.0829, 0.0676, 0.0541, 0.0325, 0.028225, 0.01],
  ),
  "InverseTimeDecay": (
    schedules.InverseTimeDecay(0.1, 5, 0.5, staircase=True),
    [0.1, 0.1, 0.1, 0.1, 0.066667, 0.05, 0.033333],
  ),
  "CosineDecay": (
    schedules.CosineDecay(0.1, 10, alpha=0.1, warmup_target=0.2, warmup_steps=3),
    [0.1, 0.133333, 0.166667, 0.2, 0.182812, 0.037188, 0.02],
  ),
  "CosineDecayRestarts": (
    schedules.CosineDecayRestarts(0.1, 4, t_mul=2.0, m_mul=0.5, alpha=0.01),
    [0.1, 0.085502, 0.0505, 0.015498, 0.048616, 0.002884, 0.013375],
  ),
}


@pytest.mark.parametrize("name", sorted(SPEC_VALUES))
def test_spec_values(name):
  schedule, expected = SPEC_VALUES[name]
  got = [float(schedule(s)) for s in [0, 1, 2, 3, 5, 11, 20]]
  np.testing.assert_allclose(got, expected, atol=1.5e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_serialize_roundtrip_both_ways(name):
  cls, kwargs = CASES[name]
  ours = getattr(schedules, cls)(**kwargs)
  tf_schedule = getattr(TFS, cls)(**kwargs)
  ours_dict = json.loads(json.dumps(schedules.serialize(ours)))
  assert ours_dict == TFS.serialize(tf_schedule)
  assert schedules.deserialize(ours_dict) == ours
  assert schedules.deserialize(TFS.serialize(tf_schedule)) == ours
  back = TFS.deserialize(ours_dict)
  assert type(back).__name__ == cls and back.get_config() == tf_schedule.get_config()


class Halving(schedules.LearningRateSchedule):
  def __init__(self, initial):
    self.initial = initial

  def __call__(self, step):
    return self.initial * 0.5 ** jnp.floor(jnp.asarray(step, jnp.float32) / 10)

  def get_config(self):
    return {"initial": self.initial}


def test_user_schedule_serializes_like_an_unregistered_keras_class():
  config = schedules.serialize(Halving(1.0))
  assert config == {
    "module": None,
    "class_name": "Halving",
    "config": {"initial": 1.0},
    "registered_name": "Halving",
  }
  with pytest.raises(ValueError, match="Unknown schedule: 'Halving'"):
    schedules.deserialize(config)
  restored = schedules.deserialize(config, custom_objects={"Halving": Halving})
  assert float(restored(25)) == 0.25


@pytest.mark.parametrize(
  "cls, kwargs, match",
  [
    (
      "ExponentialDecay",
      dict(initial_learning_rate=0.1, decay_steps=0, decay_rate=0.5),
      "`decay_steps` must be > 0",
    ),
    (
      "InverseTimeDecay",
      dict(initial_learning_rate=0.1, decay_steps=-1, decay_rate=0.5),
      "`decay_steps` must be > 0",
    ),
    (
      "PolynomialDecay",
      dict(initial_learning_rate=0.1, decay_steps=0),
      "`decay_steps` must be > 0",
    ),
    (
      "CosineDecay",
      dict(initial_learning_rate=0.1, decay_steps=0),
      "`decay_steps` must be > 0",
    ),
    (
      "CosineDecayRestarts",
      dict(initial_learning_rate=0.1, first_decay_steps=0),
      "`first_decay_steps` must be > 0",
    ),
    (
      "PiecewiseConstantDecay",
      dict(boundaries=[1, 2], values=[1.0]),
      "The length of boundaries should be 1 less",
    ),
    (
      "PiecewiseConstantDecay",
      dict(boundaries=[3, 2], values=[1.0, 0.5, 0.1]),
      "`boundaries` must be increasing",
    ),
  ],
)
def test_invalid_arguments(cls, kwargs, match):
  with pytest.raises(ValueError, match=match):
    getattr(schedules, cls)(**kwargs)


def test_wrong_type_argument():
  with pytest.raises(
    TypeError,
    match=r"`decay_rate` must be a number. "
    r"Received: decay_rate='0.5'",
  ):
    schedules.ExponentialDecay(0.1, 10, "0.5")


def test_deserialize_rejects_malformed_dict():
  with pytest.raises(ValueError, match="`class_name` and `config`"):
    schedules.deserialize({"config": {}})
