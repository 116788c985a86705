"""The public surface: nothing leaks, nothing vanishes."""

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
    "ScaleByLearningRateState",
    "TraceState",
    "clip_by_global_norm",
    "clip_by_norm",
    "clip_by_value",
    "global_norm",
    "iterations",
    "scale_by_learning_rate",
    "sgd",
    "trace",
    "velocity",
}


def test_all_is_sorted_and_complete():
  assert list(oks.__all__) == sorted(oks.__all__)
  assert set(oks.__all__) == EXPECTED
  for name in oks.__all__:
    assert getattr(oks, name) is not None


def test_no_other_public_names():
  public = {n for n in dir(oks) if not n.startswith("_")}
  assert public - {"demo"} == set(oks.__all__)  # `demo` is a command module


def test_schedules_surface():
  assert list(oks.schedules.__all__) == sorted(oks.schedules.__all__)
  assert set(oks.schedules.__all__) == {
      "CosineDecay", "CosineDecayRestarts", "ExponentialDecay",
      "InverseTimeDecay", "LearningRateSchedule", "PiecewiseConstantDecay",
      "PolynomialDecay", "deserialize", "serialize"}


def test_version():
  assert isinstance(oks.__version__, str) and oks.__version__.count(".") == 2
