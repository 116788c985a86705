"""Project hygiene: lint and types clean, CI configuration valid."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import yaml

import optax_keras_sgd

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_ruff_is_clean():
  result = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)],
                          capture_output=True, text=True, cwd=ROOT)
  assert result.returncode == 0, result.stdout[-4000:]


def test_mypy_is_clean():
  result = subprocess.run([sys.executable, "-m", "mypy"], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)
  assert result.returncode == 0, result.stdout[-4000:]


def test_workflow_is_valid_and_pinned():
  workflow = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
  jobs = workflow["jobs"]
  assert {"test", "lint", "demo"} <= set(jobs)
  assert jobs["test"]["strategy"]["matrix"]["python-version"] == ["3.10", "3.11",
                                                                 "3.12"]
  uses = [step["uses"] for job in jobs.values() for step in job["steps"]
          if "uses" in step]
  assert uses and all(re.fullmatch(r"[\w-]+/[\w-]+@v\d+\.\d+\.\d+", u) for u in uses)
  runs = " ".join(step.get("run", "") for step in jobs["test"]["steps"])
  assert "bash .ci/run" in runs


def test_version_is_in_one_place():
  pyproject = (ROOT / "pyproject.toml").read_text()
  assert 'dynamic = ["version"]' in pyproject
  assert 'version = { attr = "optax_keras_sgd.__version__" }' in pyproject
  assert f"## {optax_keras_sgd.__version__}" in (ROOT / "CHANGELOG.md").read_text()


def test_package_is_typed():
  assert (ROOT / "optax_keras_sgd" / "py.typed").exists()
