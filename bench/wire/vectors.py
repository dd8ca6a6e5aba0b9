"""The vectors of `strata bench search` (`crates/strata/src/bench.rs`, `vector`), in numpy, so
that every server of the side-by-side run holds the same data and answers the same queries."""

from __future__ import annotations

import numpy as np

DIM = 384
_MUL = np.uint64(0x9E3779B97F4A7C15)


def vectors(seeds: np.ndarray) -> np.ndarray:
    """One 384-dimensional vector per seed: a xorshift64 stream scaled to [-0.5, 0.5)."""
    with np.errstate(over="ignore"):
        x = seeds.astype(np.uint64) * _MUL | np.uint64(1)
    out = np.empty((len(seeds), DIM), dtype=np.float32)
    for d in range(DIM):
        x ^= x << np.uint64(13)
        x ^= x >> np.uint64(7)
        x ^= x << np.uint64(17)
        out[:, d] = (x >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24) - np.float32(0.5)
    return out


def literal(v: np.ndarray) -> str:
    """A pgvector literal, `[a,b,…]`, with the floats' shortest round-trip text."""
    return "[" + ",".join(repr(float(f)) for f in v) + "]"
