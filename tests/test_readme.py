"""The Python examples of the README and docs/ run as written (the embedding
table made smaller)."""

import pathlib
import re

import jax.numpy as jnp
import pytest

pytestmark = pytest.mark.reference

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
  (page.relative_to(ROOT).as_posix(), block)
  for page in PAGES
  for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
]


@pytest.mark.parametrize(
  "page, block", BLOCKS, ids=[f"{page}-{i}" for i, (page, _) in enumerate(BLOCKS)]
)
def test_block_runs(page, block, tmp_path, monkeypatch):
  import reference  # noqa: F401  (quiet TensorFlow before a block imports it)

  monkeypatch.chdir(tmp_path)  # blocks that write files write them here
  namespace = {}
  exec(block.replace("1_000_000", "10_000"), namespace)
  if "embedding_gradient" in block:
    table, _, loss = namespace["step"](
      namespace["table"], namespace["state"], jnp.array([1, 5, 5]), jnp.ones(3)
    )
    assert table.shape == (10_000, 64) and float(loss) == 1.0


def test_pages_have_examples():
  assert sum(page == "README.md" for page, _ in BLOCKS) >= 3
  assert sum(page == "docs/usage.md" for page, _ in BLOCKS) >= 3
