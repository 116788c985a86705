"""Project hygiene: CI and release configuration, version, typing marker.

Lint and type checks are not tests: `.ci/run` and the `lint` job run them.
"""

from __future__ import annotations

import importlib.resources
import pathlib
import re

import pytest
import yaml

import optax_keras_sgd

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _workflow(name):
  return yaml.safe_load((ROOT / ".github/workflows" / name).read_text())


@pytest.mark.parametrize("name", ["ci.yml", "release.yml"])
def test_workflow_actions_are_pinned(name):
  uses = [
    step["uses"]
    for job in _workflow(name)["jobs"].values()
    for step in job["steps"]
    if "uses" in step
  ]
  assert uses and all(re.fullmatch(r"[\w-]+/[\w-]+@v\d+\.\d+\.\d+", u) for u in uses)


def test_ci_runs_the_readme_command_lint_floors_newest_and_another_isa():
  jobs = _workflow("ci.yml")["jobs"]
  assert {
    "test",
    "lint",
    "minimum-versions",
    "newest-versions",
    "xla-isa",
    "demo",
  } <= set(jobs)
  assert jobs["test"]["strategy"]["matrix"]["python-version"] == [
    "3.10",
    "3.11",
    "3.12",
  ]
  runs = lambda job: " ".join(step.get("run", "") for step in jobs[job]["steps"])
  assert "bash .ci/run" in runs("test")
  assert "-c .ci/minimum-versions.txt" in runs("minimum-versions")
  assert jobs["xla-isa"]["strategy"]["matrix"]["isa"] == ["AVX", "AVX2"]
  assert "ruff check" in runs("lint") and "mypy" in runs("lint")


def test_minimum_versions_are_the_declared_floors():
  """The constraints file pins exactly the floors pyproject declares."""
  pins = dict(
    line.split("==")
    for line in (ROOT / ".ci/minimum-versions.txt").read_text().split("\n")
    if line and not line.startswith("#")
  )
  pyproject = (ROOT / "pyproject.toml").read_text()
  dependencies = re.search(r"\ndependencies = \[(.*?)\]", pyproject, re.S)[1]
  declared = dict(re.findall(r'"([a-z]+)>=([\d.]+)"', dependencies))
  assert pins == declared


def test_release_builds_tests_the_wheel_and_publishes_on_tags():
  jobs = _workflow("release.yml")["jobs"]
  assert list(jobs) == ["build", "test-wheel", "publish"]
  build = " ".join(step.get("run", "") for step in jobs["build"]["steps"])
  assert "python -m build" in build and "twine check" in build
  assert "bash .ci/test-wheel" in " ".join(
    step.get("run", "") for step in jobs["test-wheel"]["steps"]
  )
  publish = jobs["publish"]
  assert publish["needs"] == "test-wheel"
  assert publish["permissions"] == {"id-token": "write"}
  assert publish["if"] == "startsWith(github.ref, 'refs/tags/v')"


def test_version_is_in_one_place():
  pyproject = (ROOT / "pyproject.toml").read_text()
  assert 'dynamic = ["version"]' in pyproject
  assert 'version = { attr = "optax_keras_sgd.__version__" }' in pyproject
  assert f"## {optax_keras_sgd.__version__}" in (ROOT / "CHANGELOG.md").read_text()


def test_package_is_typed():
  """Checked where the package is imported from (a clone or a wheel)."""
  assert (importlib.resources.files("optax_keras_sgd") / "py.typed").is_file()
