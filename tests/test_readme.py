"""The README's Python examples run as written (the table made smaller)."""

import pathlib
import re

import jax.numpy as jnp
import pytest

pytestmark = pytest.mark.reference

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path, monkeypatch):
  import reference  # noqa: F401  (quiet TensorFlow before a block imports it)

  monkeypatch.chdir(tmp_path)  # blocks that write files write them here
  namespace = {}
  exec(BLOCKS[index].replace("1_000_000", "10_000"), namespace)
  if "embedding_gradient" in BLOCKS[index]:
    table, _, loss = namespace["step"](namespace["table"], namespace["state"],
                                       jnp.array([1, 5, 5]), jnp.ones(3))
    assert table.shape == (10_000, 64) and float(loss) == 1.0


def test_readme_has_examples():
  assert len(BLOCKS) >= 4
