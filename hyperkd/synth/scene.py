"""One synthetic scene before any sensor sees it: :func:`generate_scene` and :class:`Scene`.

A scene is a set of units (:mod:`~hyperkd.synth.layout`) made of endmembers
(:mod:`~hyperkd.synth.units`); every pixel is a linear mixture of at most
``_UNITS_PER_PIXEL * _SLOTS_PER_UNIT`` (unit, component) slots, whose weights vary smoothly
inside each unit. Labels (land cover, crop type, soil organic carbon) come from the same units.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hyperkd.core.errors import DataError
from hyperkd.synth.config import SceneConfig
from hyperkd.synth.draws import rng_for, smooth_field
from hyperkd.synth.layout import draw_layout, pixel_units
from hyperkd.synth.spectral_library import SpectralLibrary, earthlib_library
from hyperkd.synth.units import Materials, Unit, make_unit

SYNTH_VERSION = 1
"""Bumped whenever the same seed and config would give different scenes."""

_SLOTS_PER_UNIT = 4
_UNITS_PER_PIXEL = 3


@dataclass
class Scene:
    """One synthetic scene before any sensor sees it.

    Pixel ``x`` has reflectance ``sum_q slot_weight[q, x] * endmembers[slot_index[q, x]]``
    on the grid ``wavelengths_nm`` (the library's 10 nm grid). ``labels`` holds the label
    layers (see :meth:`SceneConfig.label_specs`). ``units`` describes each unit (kind, land
    cover, crop, soil albedo, SOC ...) and ``unit_map`` / ``unit_fraction`` say which units
    cover each pixel and how much, so new labels can be derived without regenerating.
    """

    seed: int
    index: int
    size: int
    wavelengths_nm: np.ndarray
    endmembers: np.ndarray
    slot_index: np.ndarray
    slot_weight: np.ndarray
    labels: dict[str, np.ndarray]
    units: list[dict[str, Any]]
    unit_map: np.ndarray
    unit_fraction: np.ndarray
    meta: dict[str, Any]
    gsd_m: float | None = None
    """Ground size of one scene pixel (m); ``None``: every sensor renders the scene pixel for pixel
    (its own GSD ignored). With a value, :func:`~hyperkd.synth.render.render` aggregates the scene
    over each coarser sensor pixel's footprint (:mod:`hyperkd.core.ground`)."""

    def spectra(self) -> np.ndarray:
        """The noise-free, unblurred reflectance cube (L, S, S) at library resolution."""
        cube = mix_slots(self.endmembers.T.astype(np.float32), self.slot_index, self.slot_weight)
        return cube.reshape(-1, self.size, self.size)


def mix_slots(table: np.ndarray, index: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``out[:, p] = sum_q table[:, index[q, p]] * weight[q, p]``: a (C, K) table -> (C, P).

    Gathers whole endmember rows (contiguous in the transposed table) per slot and skips
    pixels whose slot weight is zero, so the cost is ~ (used slots) x C x P whatever K is.
    """
    q = index.shape[0]
    idx = index.reshape(q, -1)
    w = weight.reshape(q, -1)
    rows = np.ascontiguousarray(table.T, dtype=np.float32)  # (K, C)
    out = np.zeros((idx.shape[1], rows.shape[1]), dtype=np.float32)
    for s in range(q):
        ws = w[s]
        nz = np.flatnonzero(ws)
        if nz.size == 0:
            continue
        if nz.size > 0.9 * ws.size:
            out += rows[idx[s]] * ws[:, None]
        else:
            out[nz] += rows[idx[s, nz]] * ws[nz, None]
    return np.ascontiguousarray(out.T)


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF, vectorised (Abramowitz & Stegun 7.1.26 erf; abs. error < 1.5e-7)."""
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-z * z)
    return 0.5 * (1.0 + np.sign(x) * erf)


def _patch_fields(units: Sequence[Unit], size: int, seed: int, index: int) -> np.ndarray | None:
    """Per-unit unit-variance random fields (U, S*S) for patchy units; None if there are none.

    Drawn from a stream of their own, so scenes without patchy vegetation (the default
    config) are bit-for-bit what they were before ``patchiness`` existed. Each distinct
    ``patch_px`` gets two shared fields; a unit mixes them with its own angle, which keeps
    unit variance and makes neighbouring parcels' patterns independent-looking.
    """
    patchy = [u.patchiness > 0 for u in units]
    if not any(patchy):
        return None
    prng = rng_for(seed, index, SYNTH_VERSION, 0x9A7C)
    angles = prng.uniform(0.0, 2.0 * math.pi, len(units))
    shared = {
        s: (smooth_field(prng, size, s).ravel(), smooth_field(prng, size, s).ravel())
        for s in sorted({u.patch_px for u, on in zip(units, patchy, strict=True) if on})
    }
    out = np.zeros((len(units), size * size), dtype=np.float32)
    for i, (u, on) in enumerate(zip(units, patchy, strict=True)):
        if on:
            h1, h2 = shared[u.patch_px]
            out[i] = math.cos(angles[i]) * h1 + math.sin(angles[i]) * h2
    return out


def generate_scene(
    config: SceneConfig | None = None,
    size: int = 64,
    seed: int = 0,
    index: int = 0,
    library: SpectralLibrary | None = None,
    gsd_m: float | None = None,
) -> Scene:
    """Make scene ``index`` of the set ``seed``: geometry, materials, mixing weights, labels.

    Deterministic in ``(config, size, seed, index)``; ``gsd_m`` only says how large a scene
    pixel is on the ground (:attr:`Scene.gsd_m`), the scene itself is the same. See :mod:`hyperkd.synth`.
    """
    cfg = config or SceneConfig()
    lib = library or earthlib_library()
    if size < 8:
        raise DataError(f"size must be >= 8 px, got {size}")
    rng = rng_for(seed, index, SYNTH_VERSION)
    rw = np.array([r.weight for r in cfg.regions], dtype=np.float64)
    region = cfg.regions[int(rng.choice(len(cfg.regions), p=rw / rw.sum()))]
    lay = draw_layout(rng, cfg, region, size)

    key = lay.kind.astype(np.int64) * (1 << 40) + lay.inst
    top_keys, frac = pixel_units(key, size, cfg.supersample, _UNITS_PER_PIXEL)
    uniq, inverse = np.unique(top_keys, return_inverse=True)
    ids = inverse.reshape(top_keys.shape)

    # smooth fields shared by all units (each unit mixes them with its own angles)
    g1, g2, g3 = (smooth_field(rng, size, float(rng.uniform(3.0, 8.0))).ravel() for _ in range(3))
    gfine = smooth_field(rng, size, 0.7).ravel()
    gbright = smooth_field(rng, size, 12.0).ravel()
    gsoil = smooth_field(rng, size, float(rng.uniform(2.0, 5.0))).ravel()
    c1 = (np.arange(size, dtype=np.float64) + 0.5) - size / 2.0
    px, py = np.meshgrid(c1, c1)
    upix = (px * math.cos(lay.theta) + py * math.sin(lay.theta)).ravel()

    mats = Materials(lib)
    units = [make_unit(rng, cfg, region, lay, lib, mats, int(k)) for k in uniq.tolist()]
    patch = _patch_fields(units, size, seed, index)

    # per-pixel weights of every (unit slot, component) pair
    n_pix = size * size
    q = _UNITS_PER_PIXEL * _SLOTS_PER_UNIT

    def col(name: str) -> np.ndarray:
        return np.array([getattr(u, name) for u in units], dtype=np.float64)

    prm = {
        f.name: col(f.name)
        for f in dataclasses.fields(Unit)
        if f.name not in ("info", "comps", "landcover", "crop")
    }
    comps = np.array([u.comps for u in units], dtype=np.int64)
    lc = np.array([u.landcover for u in units], dtype=np.int16)
    crop = np.array([u.crop for u in units], dtype=np.int16)
    slot_index = np.zeros((q, n_pix), dtype=np.int32)
    slot_weight = np.zeros((q, n_pix), dtype=np.float32)
    soc_num = np.zeros(n_pix)
    soc_den = np.zeros(n_pix)
    for m in range(_UNITS_PER_PIXEL):
        uid = ids[m]
        fr = frac[m].astype(np.float64)
        p = {k: v[uid] for k, v in prm.items()}
        f_cover = np.cos(p["angle_cover"]) * g1 + np.sin(p["angle_cover"]) * g2
        f_mix = np.cos(p["angle_mix"]) * g2 + np.sin(p["angle_mix"]) * g3
        base = p["cover"]
        if patch is not None:
            pz = p["patchiness"]
            quantile = _normal_cdf(
                np.sqrt(1.0 - pz) * p["cover_z"] + np.sqrt(pz) * patch[uid, np.arange(n_pix)]
            )
            base = np.where(pz > 0, p["cover_lo"] + (p["cover_hi"] - p["cover_lo"]) * quantile, base)
        cover = np.clip(base + p["variability"] * f_cover + 0.5 * p["texture"] * gfine, 0.0, 1.0)
        striped = p["strip_period"] > 0
        if striped.any():
            phase = np.sin(
                2 * math.pi * upix[striped] / p["strip_period"][striped] + p["strip_phase"][striped]
            )
            cover[striped] *= np.where(phase > 0, 1.0, 0.1)
        mix = np.clip(p["mix"] + p["mix_amp"] * f_mix, 0.0, 1.0)
        bright = p["brightness"] * np.exp(p["bright_amp"] * gbright + p["texture"] * gfine)
        soil = np.exp(p["soil_amp"] * gsoil)
        weights = (
            bright * cover * mix,
            bright * cover * (1.0 - mix),
            bright * (1.0 - cover) * (1.0 - p["residue"]) * p["soil_factor"] * soil,
            bright * (1.0 - cover) * p["residue"],
        )
        for j, w in enumerate(weights):
            cj = comps[uid, j]
            used = cj >= 0
            slot_index[m * _SLOTS_PER_UNIT + j] = np.where(used, cj, 0)
            slot_weight[m * _SLOTS_PER_UNIT + j] = np.where(used, fr * w, 0.0)
        # SOC follows the local soil albedo (albedo * soil) through the SocModel law
        has_soil = np.isfinite(p["soc"]) & (fr > 0)
        local = np.nan_to_num(p["soc"] * np.exp(-cfg.soc.slope * np.nan_to_num(p["albedo"]) * (soil - 1.0)))
        soc_num += np.where(has_soil, fr * local, 0.0)
        soc_den += np.where(has_soil, fr, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        soc = np.where(soc_den >= 0.5, soc_num / soc_den, np.nan)
    soc = np.clip(soc, *cfg.soc.clip)

    top = ids[0]
    labels = {
        "landcover": lc[top].reshape(size, size),
        "croptype": crop[top].reshape(size, size),
        "soc": soc.reshape(size, size).astype(np.float32),
    }
    meta = {
        "scene": int(index),
        "seed": int(seed),
        "region": region.name,
        "config": cfg.name,
        "water": lay.has_water,
        "urban": lay.has_urban,
        "roads": lay.n_roads,
        "units": len(units),
        "angle_deg": round(math.degrees(lay.theta), 3),
    }
    return Scene(
        seed=int(seed),
        index=int(index),
        size=size,
        wavelengths_nm=lib.wavelengths_nm,
        endmembers=mats.table(),
        slot_index=slot_index.reshape(q, size, size),
        slot_weight=slot_weight.reshape(q, size, size),
        labels=labels,
        units=[u.info for u in units],
        unit_map=top.reshape(size, size).astype(np.int32),
        unit_fraction=frac.reshape(_UNITS_PER_PIXEL, size, size),
        meta=meta,
        gsd_m=gsd_m,
    )
