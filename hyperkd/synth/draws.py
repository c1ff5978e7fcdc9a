"""Random draws every stage shares: keyed generators, smooth random fields, uniform draws.

Every stream is keyed by integers (seed, chip index, purpose ...), so a scene or a band's
noise never depends on what else was drawn before it.
"""

from __future__ import annotations

import math

import numpy as np

from hyperkd.synth.config import Range


def rng_for(*key: int) -> np.random.Generator:
    """A PCG64 generator seeded by the integer ``key``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in key])))


def smooth_field(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """A smooth Gaussian random field (n, n), unit variance, correlation length ~ ``scale`` px.

    Drawn on a periodic grid of at least 4 correlation lengths (and >= n), normalised
    there, then cropped, so its statistics do not depend on the chip size.
    """
    if scale <= 0.3:
        return rng.standard_normal((n, n)).astype(np.float32)
    m = max(n, int(4 * scale) + 1)
    white = rng.standard_normal((m, m))
    fy = np.fft.fftfreq(m)[:, None]
    fx = np.fft.rfftfreq(m)[None, :]
    filt = np.exp(-2.0 * (math.pi * scale) ** 2 * (fx**2 + fy**2))
    out = np.fft.irfft2(np.fft.rfft2(white) * filt, s=(m, m))
    out -= out.mean()
    std = out.std()
    return (out[:n, :n] / (std if std > 0 else 1.0)).astype(np.float32)


def draw_uniform(rng: np.random.Generator, r: Range) -> float:
    """Uniform in ``r``; a degenerate range gives its value without drawing."""
    return float(r[0]) if r[0] == r[1] else float(rng.uniform(r[0], r[1]))


def draw_loguniform(rng: np.random.Generator, r: Range) -> float:
    """Log-uniform in ``r``; a degenerate range gives its low end without drawing."""
    return float(math.exp(rng.uniform(math.log(r[0]), math.log(r[1])))) if r[0] < r[1] else float(r[0])
