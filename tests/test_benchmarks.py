"""The benchmark suite runs: every contender builds and steps on tiny shapes.

Timings are never asserted here; this only keeps `benchmarks/` working.
"""

from __future__ import annotations

import os
import pathlib
import sys
import types

import jax
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import peers  # noqa: E402
import run  # noqa: E402
import sparse_embedding  # noqa: E402
import timing  # noqa: E402

# The package's commands, end to end.
pytestmark = pytest.mark.integrations


@pytest.mark.parametrize("variant", list(peers.VARIANTS))
def test_every_contender_steps_and_is_timed(variant):
  shapes = [(8,), (4, 4), (4, 4)]
  runs = {name: build(shapes, variant) for name, build in peers.PEERS.items()}
  runs = {name: r for name, r in runs.items() if r is not None}
  assert {
    "fused kernel",
    "ours (sgd)",
    "ours (update_and_apply)",
    "ours (SGD facade)",
    "ours (sgd, FlatParams)",
    "tf_keras legacy",
  } <= set(runs)
  times = timing.interleaved_ms(runs, rounds=2, steps=2, warmup=1, pause=0)
  assert set(times) == set(runs)
  assert all(len(t) == 2 and all(ms > 0 for ms in t) for t in times.values())


def test_bytes_that_must_move():
  assert peers.bytes_per_param("plain") == 12  # read p, g; write p
  assert peers.bytes_per_param("momentum") == 20  # and read, write v
  assert peers.bytes_per_param("clipnorm") == 24  # and read g for its norm


def test_peers_run_where_jax_runs_or_are_left_out(monkeypatch):
  fake_torch = types.SimpleNamespace(
    cuda=types.SimpleNamespace(is_available=lambda: False)
  )
  monkeypatch.setitem(sys.modules, "torch", fake_torch)
  assert peers.accelerator() is None
  assert peers.torch_device() == "cpu"
  assert peers.tf_device() == "/CPU:0"

  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert peers.accelerator() == "gpu"
  assert peers.torch_device() is None  # a CPU torch is no peer for a GPU
  assert peers.tf_device() is None  # nor is this TensorFlow, which sees no GPU
  assert peers.tf_keras_legacy([(4,)], "momentum") is None
  fake_torch.cuda.is_available = lambda: True
  assert peers.torch_device() == "cuda"

  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  assert peers.torch_device() is None


def test_compile_table_has_one_time_per_column():
  (row,) = run.compile_times(counts=(2,))
  assert row[0] == 2 and len(row) == 1 + len(run.COMPILE_COLUMNS)
  assert all(0 < seconds < 60 for seconds in row[1:])


def test_sparse_table_times_both_ways_against_dense():
  text = sparse_embedding.table(rows=64, dim=4, touched=8, rounds=1)
  for name in (
    "sparse",
    "dense",
    "sparse, update_and_apply",
    "dense, update_and_apply",
  ):
    assert f"\n| {name} | " in text
  assert text.count("Sparse speed-up over dense") == 2


def test_write_outputs_fills_the_readme_table_and_results(tmp_path):
  (tmp_path / "benchmarks").mkdir()
  readme = "intro\n<!-- performance-table -->\nold\n<!-- /performance-table -->\nend\n"
  (tmp_path / "README.md").write_text(readme)
  rows = [
    ("32M tensor", "momentum", "ours (sgd)", 15.84, 42.0, 1.0, 1.0),
    ("32M tensor", "momentum", "torch fused", 12.04, 55.0, 0.8, 0.76),
    ("small MLP", "momentum", "torch fused", 0.0414, 49.0, 0.3, 0.2),
  ]
  run.write_outputs("## the report\n", rows, root=str(tmp_path))
  text = (tmp_path / "README.md").read_text()
  assert text.startswith("intro\n<!-- performance-table -->\n| workload |")
  assert (
    "| 32M tensor | momentum | 15.8 | n/a | n/a | n/a | n/a | n/a | n/a | 12.0 |"
    in text
  )
  assert "| ResNet-50-like | momentum | n/a |" in text and "old" not in text
  assert text.count("| 0.041 |") == 1  # sub-millisecond steps keep their digits
  assert text.endswith("<!-- /performance-table -->\nend\n")
  results = (tmp_path / "benchmarks" / "RESULTS.md").read_text()
  assert results.startswith("# Benchmark results") and "## the report" in results
  # The real README has the block the command rewrites.
  real = (pathlib.Path(run.ROOT) / "README.md").read_text()
  assert run.replace_between(real, "performance-table", "x\n").count("x\n") >= 1


def test_each_contender_runs_in_a_process_of_its_own(monkeypatch):
  """The contenders are built and stepped in processes of their own (here a
  contender could not be built at all), and each answers every round."""
  contenders = ["fused kernel", "ours (sgd)", "optax.sgd"]

  def not_here(shapes, variant):
    raise AssertionError("a contender was built in the coordinating process")

  monkeypatch.setattr(peers, "PEERS", dict.fromkeys(contenders, not_here))
  times = run.workload_times(
    "small MLP", ["momentum", "clipnorm"], rounds=2, seed=0, contenders=contenders
  )
  assert list(times) == ["momentum", "clipnorm"]
  assert sorted(times["momentum"]) == sorted(contenders)
  # optax has no per-tensor clip: its process answers `none` and is left out.
  assert sorted(times["clipnorm"]) == ["fused kernel", "ours (sgd)"]
  for per_round in (*times["momentum"].values(), *times["clipnorm"].values()):
    assert len(per_round) == 2 and all(t > 0 for t in per_round)


def test_a_contender_whose_process_fails_is_named():
  with pytest.raises(RuntimeError, match="'no such contender'"):
    run.workload_times("small MLP", ["momentum"], 1, 0, ["no such contender"])


def test_rounds_of_all_processes_are_pooled_before_the_medians():
  processes = [
    {
      "momentum": {
        "fused kernel": [10, 20],
        "ours (sgd)": [12, 20],
        "torch fused": [5, 30],
      }
    },
    {"momentum": {"torch fused": [10], "ours (sgd)": [11], "fused kernel": [10]}},
  ]
  rows = run.pooled_rows("small MLP", processes)
  assert [r[:3] for r in rows] == [
    ("small MLP", "momentum", peer)
    for peer in ("fused kernel", "ours (sgd)", "torch fused")
  ]
  by_peer = {r[2]: r[3:] for r in rows}
  # ms: the median of the pooled rounds; ratios: the median of within-round
  # ratios (torch fused / fused kernel: 0.5, 1.5, 1.0; / ours: 5/12, 1.5, 10/11).
  assert by_peer["fused kernel"][0] == 10 and by_peer["ours (sgd)"][0] == 12
  assert by_peer["torch fused"][0] == 10
  assert by_peer["torch fused"][2] == pytest.approx(1.0)
  assert by_peer["torch fused"][3] == pytest.approx(10 / 11)
  assert by_peer["ours (sgd)"][2] == pytest.approx(1.1)
  params = 784 * 128 + 128 + 128 * 10 + 10
  assert by_peer["fused kernel"][1] == pytest.approx(params * 20 / 1e9 / 0.010)
