"""Ground footprints: resampling between pixel grids of different ground sampling distance (GSD).

Two grids that cover the *same ground* (a chip of ``n`` pixels at ``g`` metres and one of ``m``
pixels at ``h`` metres with ``n * g == m * h``, both starting at the chip's top-left corner) are
related by **footprint weights**: output pixel ``j`` covers ``[j h, (j + 1) h)`` metres, input
pixel ``i`` covers ``[i g, (i + 1) g)``, and ``w[j, i]`` is the length of their overlap divided by
``h``. Rows sum to 1, so

- to a *coarser* grid, each output pixel is the area-weighted mean of the finer pixels inside its
  footprint (what a coarser detector integrates); a finer pixel that straddles two coarser
  footprints (a non-integer ratio such as 30 m -> 45 m) is split between them by area;
- to a *finer* grid, each output pixel takes the coarser pixel it lies in, or the area-weighted
  mix of the two it straddles: no detail is invented.

In 2-D the weights are separable (rows and columns have their own), so ``out = Wh @ x @ Ww.T``.
Used by synthetic rendering (each sensor at its own GSD), by the teacher input of a
cross-resolution distillation and by the matching of teacher and student token grids
(``docs/any-sensor.md``, "Teacher and student at different resolutions").
"""

from __future__ import annotations

import numpy as np

from hyperkd.core.errors import HyperKDError

_TOL = 1e-6


def pixels_on(n: int, gsd_m: float, to_gsd_m: float, what: str = "ground matching") -> int:
    """The number of ``to_gsd_m`` pixels covering the ground of ``n`` pixels at ``gsd_m``.

    Refuses, in one line naming ``what``, when that ground is not a whole number of pixels
    (a 33 px chip at 45 m is 49.5 px at 30 m): the footprints could then not be matched.
    """
    if not (gsd_m > 0 and to_gsd_m > 0):
        raise HyperKDError(f"{what}: ground sampling distances must be > 0 m, got {gsd_m:g} and {to_gsd_m:g}")
    exact = n * gsd_m / to_gsd_m
    m = round(exact)
    if m < 1 or abs(exact - m) > _TOL * max(1.0, exact):
        raise HyperKDError(
            f"{what}: {n} px at {gsd_m:g} m cover {n * gsd_m:g} m, which is {exact:.4g} px at {to_gsd_m:g} m, "
            "not a whole number, so the two grids cannot cover the same ground; use a chip size whose "
            f"ground extent is a multiple of both pixel sizes ({gsd_m:g} m and {to_gsd_m:g} m)"
        )
    return int(m)


def footprint_weights(
    n_in: int, gsd_in: float, n_out: int, gsd_out: float, what: str = "ground matching"
) -> np.ndarray:
    """``(n_out, n_in)`` footprint weights between two 1-D grids over the same ground (module doc).

    ``n_in * gsd_in`` must equal ``n_out * gsd_out``; otherwise one line says so, naming ``what``.
    """
    extent_in, extent_out = n_in * gsd_in, n_out * gsd_out
    if n_in < 1 or n_out < 1 or abs(extent_in - extent_out) > _TOL * max(extent_in, extent_out):
        raise HyperKDError(
            f"{what}: {n_in} px at {gsd_in:g} m ({extent_in:g} m) and {n_out} px at {gsd_out:g} m "
            f"({extent_out:g} m) do not cover the same ground; their footprints cannot be matched"
        )
    # in units of the output pixel, so a grid of 1 m pixels and one of 1e4 m pixels round alike
    lo_in = np.arange(n_in, dtype=np.float64)[None, :] * (gsd_in / gsd_out)
    hi_in = lo_in + gsd_in / gsd_out
    lo_out = np.arange(n_out, dtype=np.float64)[:, None]
    w = np.clip(np.minimum(hi_in, lo_out + 1.0) - np.maximum(lo_in, lo_out), 0.0, None)
    w[w < _TOL] = 0.0
    return w / w.sum(axis=1, keepdims=True)


def resample_footprints(image: np.ndarray, weights_h: np.ndarray, weights_w: np.ndarray) -> np.ndarray:
    """``(..., H, W) -> (..., H', W')`` with separable footprint weights ``(H', H)`` and ``(W', W)``."""
    out = np.einsum("jh,...hw->...jw", weights_h.astype(image.dtype, copy=False), image)
    return np.einsum("...jw,kw->...jk", out, weights_w.astype(image.dtype, copy=False))


def square_weights(n_in: int, gsd_in: float, gsd_out: float, what: str = "ground matching") -> np.ndarray:
    """Footprint weights from an ``n_in``-pixel grid at ``gsd_in`` to the ``gsd_out`` grid over the same ground."""
    return footprint_weights(n_in, gsd_in, pixels_on(n_in, gsd_in, gsd_out, what), gsd_out, what)
