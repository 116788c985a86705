"""The parameter trees the benchmarks train: shapes only, made here."""

from __future__ import annotations

import numpy as np


def single_tensor(n: int = 32 * 2**20) -> list[tuple[int, ...]]:
  """One 32M-parameter tensor."""
  return [(n,)]


def resnet50_like() -> list[tuple[int, ...]]:
  """ResNet-50's 161 trainable tensors (53 convs, 53 batch norms, fc): 25.6M."""
  shapes = [(7, 7, 3, 64), (64,), (64,)]
  channels = 64
  for width, blocks in [(64, 3), (128, 4), (256, 6), (512, 3)]:
    for block in range(blocks):
      convs = [(1, 1, channels, width), (3, 3, width, width), (1, 1, width, 4 * width)]
      if block == 0:
        convs.append((1, 1, channels, 4 * width))
      for conv in convs:
        shapes += [conv, (conv[-1],), (conv[-1],)]
      channels = 4 * width
  shapes += [(2048, 1000), (1000,)]
  return shapes


def transformer_like(layers: int = 83, d: int = 128) -> list[tuple[int, ...]]:
  """About 1,000 tensors of mixed sizes: 12 per layer, plus embeddings."""
  shapes = [(8192, d), (512, d)]
  for _ in range(layers):
    shapes += [
      (d, 3 * d),
      (3 * d,),
      (d, d),
      (d,),
      (d,),
      (d,),
      (d, 4 * d),
      (4 * d,),
      (4 * d, d),
      (d,),
      (d,),
      (d,),
    ]
  shapes += [(d,), (d,)]
  return shapes


def small_mlp() -> list[tuple[int, ...]]:
  """A 784-128-10 perceptron's 4 tensors (102K parameters): what a step
  costs beyond its arithmetic, on the models of tutorials and small
  reinforcement-learning policies."""
  return [(784, 128), (128,), (128, 10), (10,)]


def tiny_leaves(count: int = 1000, size: int = 64) -> list[tuple[int, ...]]:
  """1,000 leaves of 64 floats: dispatch, not bandwidth, dominates."""
  return [(size,)] * count


WORKLOADS = {
  "32M tensor": single_tensor,
  "ResNet-50-like": resnet50_like,
  "transformer-like": transformer_like,
  "1000 tiny leaves": tiny_leaves,
  "small MLP": small_mlp,
}


def size(shapes) -> int:
  return int(sum(np.prod(s) for s in shapes))
