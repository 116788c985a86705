"""The Colab notebook runs top to bottom (on 4 simulated CPU devices)."""

import pathlib
import subprocess
import sys

import pytest
from helpers import optional

nbclient = optional("nbclient")
nbformat = optional("nbformat")

pytestmark = pytest.mark.reference

NOTEBOOK = (
  pathlib.Path(__file__).resolve().parent.parent
  / "colab"
  / "optax_keras_sgd_data_parallel.ipynb"
)


def test_notebook_executes(monkeypatch, tmp_path):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(
    notebook,
    timeout=600,
    kernel_name="python3",
    resources={"metadata": {"path": str(tmp_path)}},
  )
  client.execute()
  outputs = "\n".join(
    o.get("text", "")
    for cell in notebook.cells
    if cell.cell_type == "code"
    for o in cell.get("outputs", [])
  )
  assert "4 device(s)" in outputs
  assert "largest difference from tf_keras after 3 steps" in outputs
  assert "skipping the accelerator cell" in outputs


def test_notebook_is_generated_from_make_notebook():
  before = NOTEBOOK.read_text()
  subprocess.run(
    [sys.executable, str(NOTEBOOK.with_name("make_notebook.py"))],
    check=True,
    capture_output=True,
  )
  assert NOTEBOOK.read_text() == before, "run colab/make_notebook.py and commit"


def test_install_cell_installs_an_uploaded_wheel_or_the_given_source():
  """The install cell, run here outside Colab, names what it would install."""
  cell = next(
    c.source
    for c in nbformat.read(NOTEBOOK, as_version=4).cells
    if "def install_command" in c.source
  )
  namespace = {}
  exec(cell, namespace)  # outside Colab it only defines install_command
  install = namespace["install_command"]
  wheels = [
    "optax_keras_sgd-0.1.0-py3-none-any.whl",
    "optax_keras_sgd-0.2.0-py3-none-any.whl",
  ]
  assert install("", wheels)[-3:] == ["-q", wheels[1], "tf-keras"]
  url = "git+https://example.org/optax-keras-sgd.git"
  assert install(url, wheels)[-2:] == [url, "tf-keras"]
  with pytest.raises(RuntimeError, match="No wheel found: upload optax_keras_sgd"):
    install("", [])
