"""The demo command: runs, prints its table, saves its plot, checks its options."""

from __future__ import annotations

import subprocess
import sys

import pytest

from optax_keras_sgd import demo

# The package's commands, end to end.
pytestmark = pytest.mark.integrations


def test_demo_runs_and_contrasts_with_optax(tmp_path, capsys):
  plot = tmp_path / "loss.png"
  assert demo.main(["--steps", "90", "--output", str(plot)]) == 0
  out = capsys.readouterr().out
  assert "| optax_keras_sgd.SGD |" in out and "| optax.sgd |" in out
  assert "largest parameter difference 0.00e+00" in out  # facade == functional
  assert f"Loss plot saved to {plot}" in out
  assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # Around the drop (after step 30), Keras's update stays large, optax's shrinks.
  rows = [line.split("|") for line in out.splitlines() if line.startswith("| 33 |")]
  keras_norm, optax_norm = float(rows[0][2]), float(rows[0][3])
  assert optax_norm < keras_norm / 3


def test_help_lists_options():
  result = subprocess.run(
    [sys.executable, "-m", "optax_keras_sgd.demo", "--help"],
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 0
  for option in ("--steps", "--seed", "--output", "--batch-size", "--no-plot"):
    assert option in result.stdout


@pytest.mark.parametrize(
  "argv, message",
  [(["--steps", "1"], "--steps must be"), (["--batch-size", "0"], "--batch-size")],
)
def test_bad_options_are_reported(argv, message, capsys):
  with pytest.raises(SystemExit):
    demo.main(argv)
  assert message in capsys.readouterr().err
