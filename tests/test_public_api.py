"""The public surface: nothing leaks, nothing vanishes."""

import pytest

import optax_keras_sgd as oks

EXPECTED = {
  "FlatParams",
  "IndexedSlices",
  "SGD",
  "SkipNonFiniteState",
  "skip_non_finite",
  "skipped_steps",
  "Variable",
  "aggregate_gradients",
  "apply_updates",
  "embedding_gradient",
  "flatten",
  "schedules",
  "KerasLearningRateState",
  "KerasMomentumState",
  "NativeStatus",
  "native_status",
  "clip_by_global_norm",
  "clip_by_norm",
  "clip_by_value",
  "global_norm",
  "iterations",
  "scale_by_keras_learning_rate",
  "sgd",
  "keras_momentum",
  "update_and_apply",
  "velocity",
}


def test_all_is_sorted_and_complete():
  assert list(oks.__all__) == sorted(oks.__all__)
  assert set(oks.__all__) == EXPECTED
  for name in oks.__all__:
    assert getattr(oks, name) is not None


def test_no_other_public_names():
  public = {n for n in dir(oks) if not n.startswith("_")}
  # Commands (`demo`, `migrate`) and the modules that need an extra
  # (`checkpoints`, `keras3`) are imported by name, not by
  # `import optax_keras_sgd`.
  submodules = {"demo", "migrate", "checkpoints", "keras3"}
  assert public - submodules == set(oks.__all__)


def test_schedules_surface():
  assert list(oks.schedules.__all__) == sorted(oks.schedules.__all__)
  assert set(oks.schedules.__all__) == {
    "CosineDecay",
    "CosineDecayRestarts",
    "ExponentialDecay",
    "InverseTimeDecay",
    "LearningRateSchedule",
    "PiecewiseConstantDecay",
    "PolynomialDecay",
    "deserialize",
    "serialize",
  }


def test_checkpoints_surface():
  from optax_keras_sgd import checkpoints

  assert list(checkpoints.__all__) == sorted(checkpoints.__all__)
  assert set(checkpoints.__all__) == {
    "CheckpointError",
    "convert",
    "from_keras3",
    "load_converted",
    "KerasState",
    "build_keras_slots",
    "keras_weights",
    "read",
    "to_optax",
    "to_sgd",
    "write_checkpoint",
    "write_h5",
  }


def test_version():
  assert isinstance(oks.__version__, str) and oks.__version__.count(".") == 2


@pytest.mark.parametrize(
  "old, new",
  [
    ("trace", "keras_momentum"),
    ("TraceState", "KerasMomentumState"),
    ("scale_by_learning_rate", "scale_by_keras_learning_rate"),
    ("ScaleByLearningRateState", "KerasLearningRateState"),
  ],
)
def test_renamed_names_still_work_with_a_deprecation_warning(old, new):
  with pytest.warns(DeprecationWarning, match=f"use {new}"):
    assert getattr(oks, old) is getattr(oks, new)


def test_keras3_surface():
  pytest.importorskip("keras")
  from optax_keras_sgd import keras3

  assert keras3.__all__ == ("SGD", "keras_sgd_config", "restore_legacy_state")
