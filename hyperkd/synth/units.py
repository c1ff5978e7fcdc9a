"""What each unit is made of: its endmember spectra and how their weights vary in space.

:class:`Materials` is a scene's endmember table (library spectra and modelled water,
deduplicated); :func:`make_unit` draws one unit's materials and mixing recipe
(:class:`Unit`): two canopies, soil and litter for a parcel; roof and pavement for a lot;
clear and turbid water for a water body. Soil carbon is set here from the soil's albedo
(:class:`~hyperkd.synth.config.SocModel`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np

from hyperkd.synth.config import LANDCOVER_CLASSES, PARCEL_COVERS, RegionSpec, SceneConfig, VegetationSpec
from hyperkd.synth.draws import draw_loguniform, draw_uniform
from hyperkd.synth.layout import KIND_NAMES, LOT, PARCEL, ROAD, STREET, Layout
from hyperkd.synth.spectral_library import SpectralLibrary, water_reflectance

_NORMAL = statistics.NormalDist()


class Materials:
    """The endmember table of one scene: library spectra and modelled water, deduplicated."""

    def __init__(self, library: SpectralLibrary) -> None:
        self.library = library
        self.rows: list[np.ndarray] = []
        self._by_lib: dict[int, int] = {}
        self._pools: dict[tuple[Any, ...], np.ndarray] = {}

    def lib(self, i: int) -> int:
        """Row of library spectrum ``i`` in the table (added on first use)."""
        i = int(i)
        if i not in self._by_lib:
            self._by_lib[i] = len(self.rows)
            self.rows.append(self.library.spectra[i])
        return self._by_lib[i]

    def canopies(self, spec: VegetationSpec) -> np.ndarray:
        """Library indices of the canopy spectra ``spec`` selects (cached per scene)."""
        key = ("canopy", spec.lai, spec.chl, spec.lma, spec.n)
        if key not in self._pools:
            self._pools[key] = self.library.canopies(spec.lai, spec.chl, spec.lma, spec.n)
        return self._pools[key]

    def materials(self, names: tuple[str, ...]) -> np.ndarray:
        """Library indices of the given materials (cached per scene)."""
        key = ("material", *names)
        if key not in self._pools:
            self._pools[key] = self.library.indices(names)
        return self._pools[key]

    def soils(self, region: RegionSpec) -> np.ndarray:
        """Library indices of the region's soils (cached per scene)."""
        key = ("soil", region.soil_boxes)
        if key not in self._pools:
            self._pools[key] = self.library.soils(region.soil_boxes)
        return self._pools[key]

    def add(self, spectrum: np.ndarray) -> int:
        """Add a modelled spectrum (water) as a new row; return its row."""
        self.rows.append(np.asarray(spectrum, dtype=np.float32))
        return len(self.rows) - 1

    def table(self) -> np.ndarray:
        """The endmember table (K, L) float32."""
        return np.stack(self.rows).astype(np.float32)


def _soil_albedo(library: SpectralLibrary, i: int) -> float:
    return float(library.spectra[i][~library.filled].mean())


@dataclass
class Unit:
    """Mixing recipe of one unit: up to four endmembers and how their weights vary in space.

    Per pixel: ``cover = clip(cover + variability * F_cover + texture/2 * F_fine)`` (times
    a strip pattern when ``strip_period`` > 0; with ``patchiness`` p > 0 the base ``cover``
    is ``cover_lo + (cover_hi - cover_lo) * Phi(sqrt(1-p) cover_z + sqrt(p) F_patch)``
    instead), ``mix = clip(mix + mix_amp * F_mix)``,
    ``bright = brightness * exp(bright_amp * F_bright + texture * F_fine)``,
    ``soil = exp(soil_amp * F_soil)``; weights: canopy A ``bright*cover*mix``, canopy B
    ``bright*cover*(1-mix)``, ground ``bright*(1-cover)*(1-residue)*soil_factor*soil``,
    residue ``bright*(1-cover)*residue``. Built surfaces and water use cover = 1, so only
    A and B (roof/pavement, clear/turbid water) count.
    """

    landcover: int
    info: dict[str, Any]
    comps: tuple[int, int, int, int] = (-1, -1, -1, -1)
    crop: int = 0
    cover: float = 1.0
    variability: float = 0.0
    mix: float = 0.5
    mix_amp: float = 0.0
    residue: float = 0.0
    brightness: float = 1.0
    bright_amp: float = 0.0
    texture: float = 0.0
    strip_period: float = 0.0
    strip_phase: float = 0.0
    patchiness: float = 0.0
    patch_px: float = 0.0
    cover_lo: float = 0.0
    cover_hi: float = 0.0
    cover_z: float = 0.0
    angle_cover: float = 0.0
    angle_mix: float = 0.0
    soil_amp: float = 0.0
    soil_factor: float = 1.0
    albedo: float = math.nan
    soc: float = math.nan

    @property
    def has_soil(self) -> bool:
        """Whether the unit shows soil (and so carries a SOC value)."""
        return math.isfinite(self.soc)


def make_unit(
    rng: np.random.Generator,
    cfg: SceneConfig,
    region: RegionSpec,
    lay: Layout,
    lib: SpectralLibrary,
    mats: Materials,
    key: int,
) -> Unit:
    """Draw the materials and mixing recipe of the unit with layout key ``key``."""
    kind, inst = key >> 40, key & ((1 << 40) - 1)
    info: dict[str, Any] = {"kind": KIND_NAMES[kind]}
    angles = rng.uniform(0, 2 * math.pi, 2)
    common = {"angle_cover": float(angles[0]), "angle_mix": float(angles[1]), "info": info}
    if kind == PARCEL:
        cover = PARCEL_COVERS[int(lay.parcel_class[inst])]
        crop = int(lay.parcel_crop[inst]) if cover == "cropland" else 0
        spec = cfg.crops[crop - 1] if crop else getattr(cfg, cover)
        pool = mats.canopies(spec)
        a, b = rng.choice(pool, 2)
        if cover == "barren" and rng.random() < cfg.sand_barren:
            ground = int(rng.choice(mats.materials(("sand", "gravel", "dirt"))))
        else:
            ground = int(rng.choice(mats.soils(region)))
        litter = int(rng.choice(mats.materials(("litter", "npv"))))
        albedo = _soil_albedo(lib, ground)
        soc = (
            cfg.soc.reference_gkg
            * math.exp(-cfg.soc.slope * (albedo - cfg.soc.reference_albedo))
            * float(cfg.soc.cover_factor.get(cover, 1.0))
            * math.exp(rng.normal(0.0, cfg.soc.unit_sigma))
        )
        info.update(
            landcover=cover,
            soil=lib.names[ground],
            soil_albedo=round(albedo, 5),
            soc_gkg=round(soc, 4),
            canopy=[lib.names[a], lib.names[b]],
        )
        if crop:
            info["crop"] = spec.name
        cover_level = draw_uniform(rng, spec.cover)
        lo, hi = spec.cover
        quantile = (cover_level - lo) / (hi - lo) if hi > lo else 0.5
        return Unit(
            landcover=LANDCOVER_CLASSES.index(cover),
            crop=crop,
            comps=(mats.lib(a), mats.lib(b), mats.lib(ground), mats.lib(litter)),
            cover=cover_level,
            patchiness=spec.patchiness,
            patch_px=spec.patch_px,
            cover_lo=float(lo),
            cover_hi=float(hi),
            cover_z=_NORMAL.inv_cdf(min(max(quantile, 1e-6), 1.0 - 1e-6)),
            variability=spec.variability,
            mix=0.5,
            mix_amp=0.4,
            residue=draw_uniform(rng, spec.residue),
            brightness=draw_uniform(rng, spec.brightness),
            bright_amp=0.04,
            texture=spec.texture,
            strip_period=spec.strip_period_px,
            strip_phase=float(rng.uniform(0, 2 * math.pi)),
            soil_amp=cfg.soc.soil_variation,
            soil_factor=draw_uniform(rng, cfg.soil_field_factor),
            albedo=albedo,
            soc=soc,
            **common,
        )
    developed = LANDCOVER_CLASSES.index("developed")
    if kind == LOT:
        us = cfg.urban
        info["landcover"] = "developed"
        if rng.random() < us.green_lots:
            spec = cfg.grassland
            a, b = rng.choice(mats.canopies(spec), 2)
            ground = int(rng.choice(mats.soils(region)))
            litter = int(rng.choice(mats.materials(("litter", "npv"))))
            info["material"] = "lawn"
            return Unit(
                landcover=developed,
                comps=(mats.lib(a), mats.lib(b), mats.lib(ground), mats.lib(litter)),
                cover=draw_uniform(rng, (0.6, 0.95)),
                variability=0.08,
                mix_amp=0.4,
                residue=0.1,
                brightness=draw_uniform(rng, us.brightness),
                bright_amp=0.05,
                texture=0.05,
                soil_factor=draw_uniform(rng, cfg.soil_field_factor),
                **common,
            )
        roof = int(rng.choice(mats.materials(us.roofs)))
        pave = int(rng.choice(mats.materials(us.pavements)))
        info["material"] = [lib.names[roof], lib.names[pave]]
        return Unit(
            landcover=developed,
            comps=(mats.lib(roof), mats.lib(pave), -1, -1),
            mix=draw_uniform(rng, us.roof_fraction),
            mix_amp=0.15,
            brightness=draw_uniform(rng, us.brightness),
            bright_amp=0.05,
            texture=0.05,
            **common,
        )
    if kind in (STREET, ROAD):
        a, b = rng.choice(mats.materials(cfg.urban.streets), 2)
        info.update(landcover="developed", material=[lib.names[a], lib.names[b]])
        return Unit(
            landcover=developed,
            comps=(mats.lib(a), mats.lib(b), -1, -1),
            mix_amp=0.3,
            brightness=draw_uniform(rng, (0.85, 1.1)),
            bright_amp=0.03,
            **common,
        )
    # water: one body per scene, mixing a clear and a turbid end with a smooth field (plumes)
    ws = cfg.water
    surface = draw_loguniform(rng, ws.surface)
    clear = {
        "chl": draw_loguniform(rng, (ws.chl[0], math.sqrt(ws.chl[0] * ws.chl[1]))),
        "tsm": draw_loguniform(rng, (ws.tsm[0], math.sqrt(ws.tsm[0] * ws.tsm[1]))),
        "cdom_440": draw_loguniform(rng, ws.cdom_440),
    }
    turbid = {
        "chl": draw_loguniform(rng, ws.chl),
        "tsm": draw_loguniform(rng, ws.tsm),
        "cdom_440": clear["cdom_440"],
    }
    wl = lib.wavelengths_nm
    comps = (
        mats.add(water_reflectance(wl, surface=surface, **clear)),
        mats.add(water_reflectance(wl, surface=surface, **turbid)),
        -1,
        -1,
    )
    info.update(landcover="water", clear=clear, turbid=turbid, surface=surface)
    return Unit(landcover=LANDCOVER_CLASSES.index("water"), comps=comps, mix=0.6, mix_amp=0.4, **common)
