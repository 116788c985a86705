"""Multi-device and multi-process runs, each in subprocesses so the main test
session keeps its single CPU device."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import jax
import multidevice_checks_names
import multiprocess_worker as worker
import numpy as np
import optax
import pytest

import optax_keras_sgd as oks

pytestmark = pytest.mark.multidevice

HERE = pathlib.Path(__file__).resolve().parent


def _env(devices: int | None = None) -> dict[str, str]:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(HERE))
  if devices:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  else:
    env.pop("XLA_FLAGS", None)
  return env


@pytest.mark.parametrize("check", multidevice_checks_names.CHECKS)
def test_eight_simulated_devices(check):
  result = subprocess.run(
    [sys.executable, str(HERE / "multidevice_checks.py"), check],
    env=_env(8),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-4000:]
  assert f"PASSED {check}" in result.stdout


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_with_jax_distributed_match_one_process(tmp_path):
  out = tmp_path / "w.npy"
  port = _free_port()
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        str(HERE / "multiprocess_worker.py"),
        str(i),
        str(port),
        str(out),
      ],
      env=_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  try:
    logs = [p.communicate(timeout=180)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-4000:]

  x, y, w0 = worker.data()
  tx = oks.sgd(**worker.CONFIG)
  w, state = w0, tx.init(w0)
  for _ in range(worker.STEPS):
    u, state = tx.update(jax.grad(worker.loss)(w, x, y), state, w)
    w = optax.apply_updates(w, u)
  # The loss gradient is summed over two processes, in another order than one
  # process sums it (the model's arithmetic, not ours): after the steps the
  # weights (of order 0.1 to 1) agree to about 1e-6 (jaxlib 0.7.1 measured
  # 2.5e-7 absolute).
  np.testing.assert_allclose(np.load(out), np.asarray(w), rtol=1e-5, atol=1e-6)
