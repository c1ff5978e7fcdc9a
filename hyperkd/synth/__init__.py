"""Synthetic scenes for any registered sensor: the embedded default data set.

hyperkd must run its main job with nothing downloaded, so it can *make* data: scenes of
fields, towns, roads and water built from real material spectra (see
:mod:`hyperkd.synth.spectral_library`), rendered for whatever sensor is asked for, with the
labels the downstream tasks need. The data are **synthetic**: every store written here is
marked so in its manifest and in ``hyperkd data info``; nothing learned from them says how a
model does on real imagery.

How a scene is made (details in ``docs/synthetic-data.md``):

1. **Layout** (:func:`generate_scene`). A scene is a set of *units* — field parcels in
   rotated strips, urban lots and streets, rural roads, a lake or river — drawn on a grid
   ``supersample`` times finer than the output pixels. Each output pixel takes the (up to
   three) units covering it with their *areal fractions*: parcel edges, shorelines and
   roads narrower than a pixel give linearly mixed pixels, as in real imagery.
2. **Materials.** Each unit mixes up to four library spectra (canopy A, canopy B,
   ground/soil, residue/litter; or roof and pavement; or clear and turbid water) with
   weights that vary smoothly inside the unit (cover, canopy mix, soil brightness,
   illumination) and with fine texture (tree crowns). Every pixel is therefore a linear
   mixture ``sum_q w_q(x) * spectrum_{k_q}`` over at most 12 (unit, component) slots.
3. **Rendering** (:func:`render`). The mixture is one high-spectral-resolution cube on the
   library's 10 nm grid (:meth:`Scene.spectra`). A sensor sees it through its spectral
   response functions: Gaussians from centre and FWHM, or flat-top over a band's explicit
   range (HLS), evaluated on a 0.5 nm grid. Because convolution is linear, rendering the
   endmembers and mixing afterwards is *exactly* the same as convolving the cube, only
   cheaper, so the EnMAP and HLS renderings of a scene are consistent by construction.
   A Gaussian point-spread function and per-band noise (read noise + signal-dependent shot
   noise, higher in atmospheric absorption bands; pushbroom column striping) follow.
4. **Labels.** ``landcover`` (the majority unit's class), ``croptype`` (the majority unit's
   crop, ``non-crop`` elsewhere) and ``soc`` (soil organic carbon, g/kg, derived from the
   soil spectrum's albedo: darker soils carry more carbon; NaN over water and built-up
   land). See :class:`SocModel`.

Everything is deterministic by ``(seed, chip index)``: chip ``i`` is the same whatever the
number of chips, and a band's noise depends only on the seed, chip, sensor and band name,
so a band selection does not change the values of the bands it keeps.

The knobs live in :class:`SceneConfig` (classes, crops, regions, water, urban, soil carbon)
and :class:`Instrument` (spectral response shape, PSF, noise); both serialise to plain
dicts / YAML so stores record exactly how they were made.

For distillation experiments, :meth:`SceneConfig.preset` names configs (``kd-teacher``,
``kd-student``, ``kd-eval``) with a crop pair that only spatial context separates
(:data:`KD_TWIN_CROPS`, via ``VegetationSpec.patchiness``) and crops / regions that only
the teacher's and the evaluation sets contain; :func:`kd_stores` writes the three stores.
They are built so that a teacher's knowledge *can* matter, which is no evidence that it
does (docs/synthetic-data.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import statistics
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hyperkd.core.errors import DataError, HyperKDError
from hyperkd.core.sensors import FWHM_TO_SIGMA, Band, Sensor, get_sensor
from hyperkd.data.store import ChipStore, ChipStoreWriter, LabelSpec, nbytes_per_chip
from hyperkd.synth.spectral_library import SpectralLibrary, earthlib_library, water_reflectance

SYNTH_VERSION = 1
"""Bumped whenever the same seed and config would give different scenes."""

LANDCOVER_CLASSES: tuple[str, ...] = ("water", "developed", "cropland", "grassland", "forest", "barren")
"""Land-cover class ids of the ``landcover`` label (roads and urban green count as developed,
as in NLCD's developed classes)."""

NON_CROP = "non-crop"
"""Class 0 of the ``croptype`` label."""

PARCEL_COVERS: tuple[str, ...] = ("cropland", "grassland", "forest", "barren")
"""Land covers a field parcel can take (water and developed come from their own layers)."""

Range = tuple[float, float]

# unit kinds
_PARCEL, _LOT, _STREET, _ROAD, _WATER = 0, 1, 2, 3, 4
_KIND_NAMES = ("parcel", "lot", "street", "road", "water")
_SLOTS_PER_UNIT = 4
_UNITS_PER_PIXEL = 3


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VegetationSpec:
    """How one vegetated cover looks: a crop type, grassland, forest, or barren land's weeds.

    The canopy spectra are the PROSAIL canopies of the library whose leaf-area index
    ``lai``, chlorophyll ``chl`` (ug/cm2), leaf mass per area ``lma`` (g/cm2) and leaf
    structure ``n`` fall inside these ranges; each parcel draws two of them and mixes them
    with a smooth within-parcel field. So crops differ by their canopy parameters, as real
    crops do, and overlap where their ranges overlap.

    ``cover`` is the parcel's fractional canopy cover (the rest is ground: soil, with a
    ``residue`` fraction of litter / crop residue). ``brightness`` scales the whole parcel
    (illumination, canopy shading: forests are darker than crops of equal LAI).
    ``variability`` is the amplitude of smooth within-parcel variation of cover, and
    ``texture`` of fine (~1 px) brightness texture such as tree crowns and gaps.
    ``strip_period_px`` > 0 lays alternating crop / fallow strips across the parcel (strip
    cropping, visible at 30 m): a purely spatial cue. ``weight`` is the relative frequency.

    ``patchiness`` in [0, 1] moves the spread of canopy cover from *between* parcels to
    *within* them without changing what a single pixel can show: a parcel's cover quantile
    is ``Phi(sqrt(1 - p) * z_parcel + sqrt(p) * F(x))`` (``z_parcel`` one N(0, 1) draw per
    parcel, ``F`` a unit-variance random field of correlation length ``patch_px``), mapped
    linearly onto ``cover``. Both terms together are N(0, 1), so every pixel's cover is
    uniform over ``cover`` whatever ``p`` is: at 0 each parcel is evenly covered at its
    own level (the default), at 1 every parcel is a patchwork of the whole range. Two crops
    that differ only in ``patchiness`` have identically distributed pixel spectra and are
    told apart only by looking at neighbourhoods (see the ``kd-*`` presets).
    """

    name: str
    lai: Range
    chl: Range
    lma: Range = (0.005, 0.025)
    n: Range = (1.3, 2.5)
    cover: Range = (0.8, 1.0)
    residue: Range = (0.0, 0.1)
    brightness: Range = (0.9, 1.1)
    variability: float = 0.08
    texture: float = 0.0
    strip_period_px: float = 0.0
    patchiness: float = 0.0
    patch_px: float = 1.5
    weight: float = 1.0


@dataclass(frozen=True)
class RegionSpec:
    """A region: which soils its parcels have and how its land use differs.

    ``soil_boxes`` are (lat_min, lat_max, lon_min, lon_max) boxes selecting soils of the
    ICRAF-ISRIC library by sampling site (empty: all soils). ``crop_weights`` and
    ``cover_weights`` multiply the config's crop and land-cover weights (names missing from
    them keep weight x1; 0 removes a crop or cover from the region). ``weight`` is the
    region's relative frequency among scenes.
    """

    name: str
    soil_boxes: tuple[tuple[float, float, float, float], ...] = ()
    crop_weights: Mapping[str, float] = field(default_factory=dict)
    cover_weights: Mapping[str, float] = field(default_factory=dict)
    weight: float = 1.0


@dataclass(frozen=True)
class UrbanSpec:
    """Built-up areas: a street grid whose blocks are split into lots.

    Lots mix a roof material with a pavement material (``roof_fraction`` of the lot is
    roof); ``green_lots`` of them are lawns / parks (grassland canopy, labelled developed).
    Materials are earthlib LEVEL_3 names.
    """

    roofs: tuple[str, ...] = ("comp_shingle", "concrete_tile", "tile", "metal", "wood_shingle")
    pavements: tuple[str, ...] = ("sidewalk", "parking_lot", "driveway", "road")
    streets: tuple[str, ...] = ("road", "asphalt")
    block_px: Range = (5.0, 10.0)
    street_px: Range = (0.4, 0.9)
    roof_fraction: Range = (0.4, 0.9)
    green_lots: float = 0.15
    brightness: Range = (0.7, 1.05)
    radius: Range = (0.25, 0.6)


@dataclass(frozen=True)
class WaterSpec:
    """Lakes and rivers, rendered with :func:`~hyperkd.synth.spectral_library.water_reflectance`.

    Each water body mixes a clear and a turbid end of its constituent ranges with a smooth
    field (plumes): chlorophyll ``chl`` mg/m3, suspended matter ``tsm`` g/m3, CDOM
    absorption ``cdom_440`` 1/m, and a flat ``surface`` glint residual (log-uniform draws).
    """

    chl: Range = (0.5, 30.0)
    tsm: Range = (0.5, 40.0)
    cdom_440: Range = (0.02, 1.0)
    surface: Range = (0.002, 0.008)
    lake: float = 0.6
    lake_radius: Range = (0.12, 0.3)
    river_px: Range = (1.0, 4.0)


@dataclass(frozen=True)
class SocModel:
    """Soil organic carbon (g/kg) from the soil spectrum: darker soils hold more carbon.

    Per soil-bearing unit: ``soc = reference_gkg * exp(-slope * (albedo - reference_albedo))
    * cover_factor[cover] * exp(N(0, unit_sigma))``, where ``albedo`` is the soil spectrum's
    mean reflectance over 400-2450 nm (the library's dried-lab spectrum, before the field
    darkening that hides it from the sensor). Inside a unit, soil brightness varies by
    ``exp(soil_variation * F)`` (F a smooth unit-variance field) and SOC follows the local
    albedo through the same law. Clipped to ``clip``. The defaults put typical topsoils at
    4-60 g/kg (median lab albedo 0.38 -> 12 g/kg); grassland and forest soils carry more
    carbon than cultivated ones (``cover_factor``), so land use matters as it does in
    reality. This relation is a modelling choice, not a measured calibration.
    """

    reference_gkg: float = 12.0
    reference_albedo: float = 0.38
    slope: float = 6.0
    unit_sigma: float = 0.2
    soil_variation: float = 0.1
    cover_factor: Mapping[str, float] = field(
        default_factory=lambda: {"cropland": 1.0, "grassland": 1.3, "forest": 1.6, "barren": 0.6}
    )
    clip: Range = (1.0, 150.0)


DEFAULT_CROPS: tuple[VegetationSpec, ...] = (
    VegetationSpec("maize", lai=(3.5, 7.0), chl=(40.0, 60.0), lma=(0.005, 0.012), n=(1.3, 1.9),
                   cover=(0.85, 1.0), residue=(0.0, 0.1), weight=1.2),
    VegetationSpec("soybean", lai=(2.5, 5.0), chl=(25.0, 45.0), lma=(0.005, 0.013), n=(1.6, 2.2),
                   cover=(0.7, 0.95), residue=(0.0, 0.15), weight=1.0),
    VegetationSpec("wheat", lai=(1.5, 4.0), chl=(10.0, 30.0), lma=(0.012, 0.025), n=(1.8, 2.5),
                   cover=(0.6, 0.9), residue=(0.2, 0.5), weight=1.0),
    VegetationSpec("alfalfa", lai=(2.5, 6.0), chl=(40.0, 60.0), lma=(0.005, 0.010), n=(1.8, 2.5),
                   cover=(0.85, 1.0), residue=(0.0, 0.1), weight=0.6),
    VegetationSpec("cotton", lai=(1.0, 3.0), chl=(30.0, 50.0), lma=(0.008, 0.016), n=(1.4, 2.0),
                   cover=(0.4, 0.75), residue=(0.0, 0.15), weight=0.6),
    VegetationSpec("fallow", lai=(0.5, 1.5), chl=(10.0, 25.0), cover=(0.05, 0.3), residue=(0.2, 0.6),
                   variability=0.1, weight=0.6),
)
"""Crop types: canopy-parameter boxes loosely after published ranges for each crop at mid-season."""

DEFAULT_GRASSLAND = VegetationSpec(
    "grassland", lai=(0.5, 2.5), chl=(15.0, 40.0), cover=(0.4, 0.85), residue=(0.3, 0.7),
    variability=0.12, texture=0.03,
)
DEFAULT_FOREST = VegetationSpec(
    "forest", lai=(4.0, 11.0), chl=(30.0, 60.0), lma=(0.012, 0.025), n=(1.8, 2.5), cover=(0.85, 1.0),
    residue=(0.3, 0.7), brightness=(0.6, 0.85), variability=0.05, texture=0.12,
)
DEFAULT_BARREN = VegetationSpec(
    "barren", lai=(0.5, 1.5), chl=(10.0, 30.0), cover=(0.0, 0.08), residue=(0.0, 0.2), variability=0.04,
)

DEFAULT_REGIONS: tuple[RegionSpec, ...] = (
    RegionSpec("americas", soil_boxes=((-60.0, 72.0, -170.0, -30.0),),
               crop_weights={"maize": 2.0, "soybean": 2.0}),
    RegionSpec("europe", soil_boxes=((35.0, 72.0, -25.0, 60.0),),
               crop_weights={"wheat": 2.0, "cotton": 0.2}),
    RegionSpec("africa", soil_boxes=((-36.0, 35.0, -20.0, 55.0),),
               crop_weights={"maize": 1.5, "alfalfa": 0.5}, cover_weights={"barren": 2.0}),
    RegionSpec("asia", soil_boxes=((-11.0, 60.0, 60.0, 150.0),),
               crop_weights={"cotton": 2.0, "wheat": 1.5}),
    RegionSpec("oceania", soil_boxes=((-50.0, -10.0, 110.0, 180.0),),
               crop_weights={"wheat": 2.0, "fallow": 2.0}, weight=0.5),
)
"""Regions by the sampling sites of the ICRAF-ISRIC soils (continents, roughly)."""

_TWIN = {"lai": (2.0, 5.0), "chl": (25.0, 50.0), "lma": (0.006, 0.016), "n": (1.5, 2.2),
         "cover": (0.3, 1.0), "residue": (0.05, 0.3), "variability": 0.03}
KD_TWIN_CROPS: tuple[VegetationSpec, ...] = (
    VegetationSpec("even-stand", **_TWIN),  # type: ignore[arg-type]
    VegetationSpec("patchy-stand", patchiness=1.0, patch_px=1.5, **_TWIN),  # type: ignore[arg-type]
)
"""The spatial-context crop pair of the ``kd-*`` presets: the same canopy, cover and residue
distributions, so a pixel's spectrum is distributed identically for both; ``even-stand``
parcels are evenly covered (each at its own level), ``patchy-stand`` parcels are patchworks
of ~1.5 px patches spanning the whole cover range (uneven emergence, gaps). Only a
neighbourhood tells them apart."""

KD_STUDENT_ABSENT: dict[str, tuple[str, ...]] = {
    "crops": ("cotton", "patchy-stand"),
    "regions": ("asia", "oceania"),
}
"""What the ``kd-student`` preset leaves out (weight 0) that ``kd-teacher`` and ``kd-eval`` keep."""

KD_STUDENT_SNR_SCALE = 0.25
"""SNR factor of the student's (EnMAP) instrument in :func:`kd_stores`: a quarter of the
EnMAP-like default, so single-pixel spectra are noisy in a way neighbourhoods can average out."""


@dataclass(frozen=True)
class SceneConfig:
    """Everything that decides what synthetic scenes contain. Compose with :meth:`with_weights`.

    The class lists (``landcover``: :data:`LANDCOVER_CLASSES`; ``croptype``: ``non-crop``
    plus ``crops`` in order) are fixed by the config, so two configs that differ only in
    weights (e.g. a teacher set with every crop and a student set without some) share
    label ids. ``cover_weights`` are the land-cover shares among field parcels;
    ``p_water``/``p_urban`` the chance that a scene holds a water body / built-up area;
    ``roads`` the (min, max) number of rural roads; ``parcel_px`` parcel widths in pixels;
    ``soil_field_factor`` darkens dried-lab soil spectra to field conditions (moisture,
    roughness); ``supersample`` sets how finely edges are mixed.
    """

    name: str = "default"
    crops: tuple[VegetationSpec, ...] = DEFAULT_CROPS
    grassland: VegetationSpec = DEFAULT_GRASSLAND
    forest: VegetationSpec = DEFAULT_FOREST
    barren: VegetationSpec = DEFAULT_BARREN
    regions: tuple[RegionSpec, ...] = DEFAULT_REGIONS
    cover_weights: Mapping[str, float] = field(
        default_factory=lambda: {"cropland": 0.6, "grassland": 0.17, "forest": 0.13, "barren": 0.1}
    )
    urban: UrbanSpec = UrbanSpec()
    water: WaterSpec = WaterSpec()
    soc: SocModel = SocModel()
    p_water: float = 0.4
    p_urban: float = 0.35
    roads: tuple[int, int] = (0, 2)
    parcel_px: Range = (6.0, 20.0)
    sand_barren: float = 0.25
    soil_field_factor: Range = (0.55, 0.9)
    supersample: int = 4

    # -- derived ------------------------------------------------------------------------------
    @property
    def crop_classes(self) -> tuple[str, ...]:
        """Class names of the ``croptype`` label: ``non-crop`` then the crops in order."""
        return (NON_CROP, *(c.name for c in self.crops))

    def label_specs(self) -> dict[str, LabelSpec]:
        """The label layers every chip carries."""
        return {
            "landcover": LabelSpec(
                kind="class", classes=LANDCOVER_CLASSES,
                description="synthetic land cover: class of the unit covering most of the pixel",
            ),
            "croptype": LabelSpec(
                kind="class", classes=self.crop_classes,
                description="synthetic crop type of the majority parcel; non-crop elsewhere",
            ),
            "soc": LabelSpec(
                kind="continuous", unit="g/kg",
                description="synthetic soil organic carbon from soil albedo (darker = more carbon); "
                "NaN over water and built-up land",
            ),
        }

    def validate(self, library: SpectralLibrary | None = None) -> None:
        """Raise :class:`DataError` naming the first inconsistent field.

        With a ``library``, also check that every crop, region and material selects spectra.
        """
        names = [c.name for c in self.crops]
        if not names:
            raise DataError("scene config: crops is empty; give at least one crop type")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise DataError(f"scene config: crop names {dup} appear twice; crop names must be unique")
        if NON_CROP in names:
            raise DataError(f"scene config: {NON_CROP!r} is reserved for class 0; rename that crop")
        for key in self.cover_weights:
            if key not in PARCEL_COVERS:
                raise DataError(
                    f"scene config: cover_weights names {key!r}; parcel covers are {', '.join(PARCEL_COVERS)}"
                )
        if not self.regions:
            raise DataError("scene config: regions is empty; give at least one region")
        for reg in self.regions:
            for crop in reg.crop_weights:
                if crop not in names:
                    raise DataError(
                        f"scene config: region {reg.name!r} weights unknown crop {crop!r}; crops are {names}"
                    )
            for box in reg.soil_boxes:
                if not isinstance(box, tuple) or len(box) != 4 or not (box[0] <= box[1] and box[2] <= box[3]):
                    raise DataError(
                        f"scene config: region {reg.name!r} soil box {box!r} must be "
                        "[lat_min, lat_max, lon_min, lon_max]"
                    )
            for key in reg.cover_weights:
                if key not in PARCEL_COVERS:
                    raise DataError(f"scene config: region {reg.name!r} cover_weights names unknown {key!r}")
            if not any(self._crop_weights(reg).values()) and self._cover_weights(reg).get("cropland", 0) > 0:
                raise DataError(
                    f"scene config: region {reg.name!r} has cropland but every crop weight is 0; "
                    "give a crop a weight or set its cropland cover weight to 0"
                )
            if not any(self._cover_weights(reg).values()):
                raise DataError(f"scene config: region {reg.name!r} gives every parcel cover weight 0")
        if sum(r.weight for r in self.regions) <= 0:
            raise DataError("scene config: region weights sum to 0")
        for label, p in (("p_water", self.p_water), ("p_urban", self.p_urban),
                         ("sand_barren", self.sand_barren)):
            if not 0.0 <= p <= 1.0:
                raise DataError(f"scene config: {label} must be within [0, 1], got {p}")
        if not (1 <= self.supersample <= 8):
            raise DataError(f"scene config: supersample must be 1..8, got {self.supersample}")
        if self.roads[0] < 0 or self.roads[1] < self.roads[0]:
            raise DataError(f"scene config: roads must be (min, max) with 0 <= min <= max, got {self.roads}")
        if self.parcel_px[0] < 1.0:
            raise DataError(f"scene config: parcel_px must be >= 1 px, got {self.parcel_px}")
        _check_ranges(self, "scene config")
        for spec in (*self.crops, self.grassland, self.forest, self.barren):
            if not 0.0 <= spec.patchiness <= 1.0:
                raise DataError(f"scene config: {spec.name!r} patchiness must be within [0, 1], got {spec.patchiness}")
            if spec.patch_px < 0:
                raise DataError(f"scene config: {spec.name!r} patch_px must be >= 0, got {spec.patch_px}")
        if library is not None:
            for spec in (*self.crops, self.grassland, self.forest, self.barren):
                if library.canopies(spec.lai, spec.chl, spec.lma, spec.n).size < 2:
                    raise DataError(
                        f"scene config: {spec.name!r} selects fewer than 2 canopy spectra "
                        f"(lai {spec.lai}, chl {spec.chl}, lma {spec.lma}, n {spec.n}); widen its ranges"
                    )
            for reg in self.regions:
                if library.soils(reg.soil_boxes).size < 5:
                    raise DataError(
                        f"scene config: region {reg.name!r} soil_boxes select fewer than 5 soils; widen them"
                    )
            u = self.urban
            for mats in (u.roofs, u.pavements, u.streets):
                library.indices(mats)

    def _crop_weights(self, region: RegionSpec) -> dict[str, float]:
        return {c.name: c.weight * float(region.crop_weights.get(c.name, 1.0)) for c in self.crops}

    def _cover_weights(self, region: RegionSpec) -> dict[str, float]:
        return {k: float(self.cover_weights.get(k, 0.0)) * float(region.cover_weights.get(k, 1.0))
                for k in PARCEL_COVERS}

    # -- composition ---------------------------------------------------------------------------
    def with_weights(
        self,
        *,
        crops: Mapping[str, float] | None = None,
        regions: Mapping[str, float] | None = None,
        covers: Mapping[str, float] | None = None,
        name: str | None = None,
    ) -> SceneConfig:
        """A copy with some crop / region / cover weights replaced; class lists stay the same.

        E.g. a student set that never sees cotton: ``cfg.with_weights(crops={"cotton": 0})``.
        """
        known_crops = {c.name for c in self.crops}
        known_regions = {r.name for r in self.regions}
        for key, known, what in ((crops, known_crops, "crop"), (regions, known_regions, "region"),
                                 (covers, set(PARCEL_COVERS), "cover")):
            for k in key or {}:
                if k not in known:
                    raise DataError(f"with_weights: unknown {what} {k!r}; known: {', '.join(sorted(known))}")
        new_crops = tuple(replace(c, weight=float((crops or {}).get(c.name, c.weight))) for c in self.crops)
        new_regions = tuple(
            replace(r, weight=float((regions or {}).get(r.name, r.weight))) for r in self.regions
        )
        new_covers = dict(self.cover_weights)
        new_covers.update({k: float(v) for k, v in (covers or {}).items()})
        cfg = replace(self, crops=new_crops, regions=new_regions, cover_weights=new_covers,
                      name=name or self.name)
        cfg.validate()
        return cfg

    # -- presets -------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> SceneConfig:
        """A named scene config (:data:`PRESETS`); ``name`` is recorded as the config's name.

        ``default``: the default scenes. ``kd-teacher``: every crop (the defaults plus the
        spatial-context pair :data:`KD_TWIN_CROPS`) and every region, for the large
        multispectral set the teacher learns from. ``kd-student``: the same class lists
        without the crops and regions in :data:`KD_STUDENT_ABSENT` (the small hyperspectral
        set never shows them). ``kd-eval``: everything, with every crop equally frequent,
        for labelled evaluation. The three ``kd-*`` presets share class ids.
        """
        try:
            factory = _PRESET_FACTORIES[name]
        except KeyError:
            raise DataError(f"unknown scene preset {name!r}; presets: {', '.join(PRESETS)}") from None
        return factory()

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-friendly dict; :meth:`from_dict` rebuilds an equal config."""
        return _to_plain(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], base: SceneConfig | None = None) -> SceneConfig:
        """Build a config from a (possibly partial) dict: missing fields keep their defaults
        (or ``base``'s values, e.g. a :meth:`preset`'s)."""
        cfg = _from_plain(cls, d, "scene config", base=base)
        cfg.validate()
        return cfg

    @classmethod
    def from_file(cls, path: str | Path, base: SceneConfig | None = None) -> SceneConfig:
        """Read a scene config from a YAML or JSON file (a partial dict over the defaults or ``base``)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise DataError(f"{path}: cannot read scene config ({exc.strerror})") from None
        try:
            if path.suffix.lower() == ".json":
                d = json.loads(text)
            else:
                import yaml

                d = yaml.safe_load(text)
        except Exception as exc:
            raise DataError(f"{path}: not valid YAML/JSON ({exc})") from None
        if not isinstance(d, Mapping):
            raise DataError(f"{path}: a scene config must be a mapping of fields, got {type(d).__name__}")
        try:
            return cls.from_dict(d, base=base)
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None

    def digest(self) -> str:
        """Short hash of the config: stores made from equal configs and seeds hold equal scenes."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _kd_teacher() -> SceneConfig:
    return SceneConfig(name="kd-teacher", crops=DEFAULT_CROPS + KD_TWIN_CROPS)


def _kd_student() -> SceneConfig:
    absent = KD_STUDENT_ABSENT
    return _kd_teacher().with_weights(
        crops=dict.fromkeys(absent["crops"], 0.0), regions=dict.fromkeys(absent["regions"], 0.0),
        name="kd-student",
    )


def _kd_eval() -> SceneConfig:
    full = _kd_teacher()
    return full.with_weights(crops={c.name: 1.0 for c in full.crops}, name="kd-eval")


_PRESET_FACTORIES: dict[str, Callable[[], SceneConfig]] = {
    "default": SceneConfig,
    "kd-teacher": _kd_teacher,
    "kd-student": _kd_student,
    "kd-eval": _kd_eval,
}
PRESETS: tuple[str, ...] = tuple(_PRESET_FACTORIES)
"""Names :meth:`SceneConfig.preset` accepts (``hyperkd data synth --preset NAME``)."""


DEFAULT_SNR: tuple[tuple[float, float], ...] = (
    (400.0, 150.0), (450.0, 300.0), (550.0, 420.0), (700.0, 380.0), (850.0, 300.0), (950.0, 200.0),
    (1000.0, 170.0), (1250.0, 220.0), (1650.0, 180.0), (2200.0, 120.0), (2450.0, 70.0),
)
"""SNR at 30% reflectance for an 8 nm band outside absorption features, loosely after
EnMAP's requirements (VNIR > 400 near 500 nm, SWIR > 170 near 2200 nm; Guanter et al. 2015)."""

# Coarse atmospheric absorption features (centre nm, depth, width nm): O2-A and water vapour.
_ABSORPTION = ((762.0, 0.6, 4.0), (820.0, 0.15, 12.0), (940.0, 0.55, 22.0), (1135.0, 0.65, 28.0),
               (1380.0, 0.99, 55.0), (1870.0, 0.99, 75.0), (2500.0, 0.6, 90.0))


@dataclass(frozen=True)
class Instrument:
    """How a sensor observes a scene: spectral response shape, optics blur and noise.

    ``srf``: ``"auto"`` uses a flat-top response over a band's explicit range where the
    sensor defines one (HLS's multispectral bands are close to flat-topped), a Gaussian from
    centre and FWHM otherwise; ``"gaussian"`` / ``"range"`` force one shape.
    ``psf_sigma_px``: Gaussian point-spread function (pixels; 0.4 ~ FWHM of one pixel).
    Noise per band, in reflectance: ``sigma = rho_ref / (SNR_b * T_b) * sqrt(read_fraction +
    (1 - read_fraction) * rho * T_b / rho_ref)`` — read noise plus shot noise that grows
    with signal. ``SNR_b`` interpolates ``snr`` at the band centre, scaled by
    ``(fwhm / reference_fwhm_nm) ** bandwidth_exponent`` (wider bands collect more
    photons), capped at ``max_snr``, times ``snr_scale``. ``T_b`` is a coarse atmospheric
    transmittance (O2 and water-vapour features) averaged over the band, so absorption
    bands are noisy as in real L2A products. ``stripe`` is the relative std of per-column
    gain (pushbroom striping). ``noise=False`` renders noise-free.
    """

    srf: str = "auto"
    psf_sigma_px: float = 0.4
    noise: bool = True
    snr: tuple[tuple[float, float], ...] = DEFAULT_SNR
    snr_scale: float = 1.0
    reference_reflectance: float = 0.3
    reference_fwhm_nm: float = 8.0
    bandwidth_exponent: float = 0.5
    max_snr: float = 350.0
    read_fraction: float = 0.25
    atmosphere: bool = True
    stripe: float = 0.002

    def __post_init__(self) -> None:
        if self.srf not in ("auto", "gaussian", "range"):
            raise DataError(f"instrument: srf must be auto, gaussian or range, got {self.srf!r}")
        if self.psf_sigma_px < 0:
            raise DataError(f"instrument: psf_sigma_px must be >= 0, got {self.psf_sigma_px}")
        if not 0.0 <= self.read_fraction <= 1.0:
            raise DataError(f"instrument: read_fraction must be within [0, 1], got {self.read_fraction}")
        if self.snr_scale <= 0 or self.max_snr <= 0:
            raise DataError("instrument: snr_scale and max_snr must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Instrument:
        return _from_plain(cls, d, "instrument")

    def band_snr(self, sensor: Sensor) -> np.ndarray:
        """SNR of each band at the reference reflectance outside absorption (see class doc)."""
        knots = np.asarray(self.snr, dtype=np.float64)
        c = np.asarray(sensor.centers_nm, dtype=np.float64)
        w = np.asarray(sensor.fwhms_nm, dtype=np.float64)
        base = np.interp(c, knots[:, 0], knots[:, 1])
        snr = base * (w / self.reference_fwhm_nm) ** self.bandwidth_exponent
        return np.minimum(snr, self.max_snr) * self.snr_scale


def atmospheric_transmittance(wavelengths_nm: np.ndarray) -> np.ndarray:
    """A coarse two-way transmittance: 1 minus Gaussian O2 / H2O features, floored at 0.02.

    Only used to make absorption bands noisier; not an atmosphere model.
    """
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    t = np.ones_like(wl)
    for c, depth, width in _ABSORPTION:
        t *= 1.0 - depth * np.exp(-(((wl - c) / width) ** 2))
    return np.maximum(t, 0.02)


# ----------------------------------------------------------------------------------------------
# (de)serialisation helpers for the config dataclasses
# ----------------------------------------------------------------------------------------------

def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return [_to_plain(v) for v in obj]
    return obj


def _check_ranges(obj: Any, where: str) -> None:
    """Every (lo, hi) float pair in a config must have lo <= hi."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            _check_ranges(v, f"{where}.{f.name}")
        elif isinstance(v, tuple) and v and all(dataclasses.is_dataclass(x) for x in v):
            for i, x in enumerate(v):
                _check_ranges(x, f"{where}.{f.name}[{i}]")
        elif (isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)
              and v[0] > v[1]):
            raise DataError(f"{where}.{f.name}: range {list(v)} must be (low, high) with low <= high")


def _convert(value: Any, default: Any, where: str) -> Any:
    """Convert a plain value to the type of ``default`` (a field's default)."""
    try:
        if dataclasses.is_dataclass(default):
            if not isinstance(value, Mapping):
                raise DataError(f"{where}: expected a mapping, got {type(value).__name__}")
            return _from_plain(type(default), value, where, base=default)
        if isinstance(default, Mapping):
            if not isinstance(value, Mapping):
                raise DataError(f"{where}: expected a mapping of name: number, got {type(value).__name__}")
            return {str(k): float(v) for k, v in value.items()}
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise DataError(f"{where}: expected true/false, got {value!r}")
            return value
        if isinstance(default, int):
            if isinstance(value, bool) or float(value) != int(value):
                raise DataError(f"{where}: expected an integer, got {value!r}")
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, str):
            return str(value)
        if isinstance(default, tuple):
            if not isinstance(value, (list, tuple)):
                raise DataError(f"{where}: expected a list, got {type(value).__name__}")
            if default and all(dataclasses.is_dataclass(x) for x in default):
                proto = type(default[0])
                return tuple(_from_plain(proto, v, f"{where}[{i}]") for i, v in enumerate(value))
            if default and isinstance(default[0], tuple):
                return tuple(tuple(float(x) for x in v) for v in value)
            if default and isinstance(default[0], str):
                return tuple(str(v) for v in value)
            if len(default) == 2 and all(isinstance(x, (int, float)) for x in default) and len(value) != 2:
                raise DataError(f"{where}: expected [low, high], got {value!r}")
            if default and isinstance(default[0], int) and not isinstance(default[0], bool):
                return tuple(int(v) for v in value)
            return tuple(float(v) if not isinstance(v, (list, tuple)) else tuple(float(x) for x in v)
                         for v in value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: cannot use {value!r} ({exc})") from None
    return value


def _from_plain(cls: type, d: Mapping[str, Any], where: str, base: Any = None) -> Any:
    """Build dataclass ``cls`` from a plain mapping; missing fields come from ``base`` or defaults."""
    if not isinstance(d, Mapping):
        raise DataError(f"{where}: expected a mapping, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in d if k not in fields]
    if unknown:
        raise DataError(f"{where}: unknown field {unknown[0]!r}; known fields: {', '.join(fields)}")
    defaults: dict[str, Any] = {}
    for n, f in fields.items():
        if base is not None:
            defaults[n] = getattr(base, n)
        elif f.default is not dataclasses.MISSING:
            defaults[n] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[n] = f.default_factory()
    missing = [n for n in fields if n not in defaults and n not in d]
    if missing:
        raise DataError(f"{where}: missing field {missing[0]!r}")
    kwargs = dict(defaults)
    for k, v in d.items():
        if k in defaults:
            kwargs[k] = _convert(v, defaults[k], f"{where}.{k}")
        else:
            kwargs[k] = _required_value(str(fields[k].type), v, f"{where}.{k}")
    try:
        return cls(**kwargs)
    except HyperKDError:
        raise
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: {exc}") from None


def _required_value(annotation: str, value: Any, where: str) -> Any:
    """Convert a field without a default (a ``str`` name or a ``Range``)."""
    if annotation == "str":
        return str(value)
    if annotation == "Range":
        return _convert(value, (0.0, 0.0), where)
    raise DataError(f"{where}: cannot use {value!r}")


# ----------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------


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

    def spectra(self) -> np.ndarray:
        """The noise-free, unblurred reflectance cube (L, S, S) at library resolution."""
        cube = _mix(self.endmembers.T.astype(np.float32), self.slot_index, self.slot_weight)
        return cube.reshape(-1, self.size, self.size)


def _mix(table: np.ndarray, index: np.ndarray, weight: np.ndarray) -> np.ndarray:
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


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in key])))


def _field(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
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


def _uniform(rng: np.random.Generator, r: Range) -> float:
    return float(r[0]) if r[0] == r[1] else float(rng.uniform(r[0], r[1]))


def _loguniform(rng: np.random.Generator, r: Range) -> float:
    return float(math.exp(rng.uniform(math.log(r[0]), math.log(r[1])))) if r[0] < r[1] else float(r[0])


class _Materials:
    """The endmember table of one scene: library spectra and modelled water, deduplicated."""

    def __init__(self, library: SpectralLibrary) -> None:
        self.library = library
        self.rows: list[np.ndarray] = []
        self._by_lib: dict[int, int] = {}
        self._pools: dict[tuple[Any, ...], np.ndarray] = {}

    def lib(self, i: int) -> int:
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
        self.rows.append(np.asarray(spectrum, dtype=np.float32))
        return len(self.rows) - 1

    def table(self) -> np.ndarray:
        return np.stack(self.rows).astype(np.float32)


@dataclass
class _Layout:
    kind: np.ndarray  # (N, N) int8
    inst: np.ndarray  # (N, N) int64
    parcel_class: np.ndarray  # cover index per parcel instance
    parcel_crop: np.ndarray  # crop index (1-based) per parcel instance, 0 if none
    theta: float
    has_water: bool
    has_urban: bool
    n_roads: int


def _layout(rng: np.random.Generator, cfg: SceneConfig, region: RegionSpec, size: int) -> _Layout:
    """Draw the scene's geometry on the supersampled grid."""
    f = cfg.supersample
    n = size * f
    c1 = (np.arange(n, dtype=np.float64) + 0.5) / f - size / 2.0
    X, Y = np.meshgrid(c1, c1)
    R = 0.75 * size

    # field parcels: rotated columns, each cut into rows, some split in two
    theta = 0.0 if rng.random() < 0.35 else float(rng.uniform(-math.pi / 4, math.pi / 4))
    ct, st = math.cos(theta), math.sin(theta)
    u = X * ct + Y * st
    v = -X * st + Y * ct
    p0, p1 = cfg.parcel_px
    widths: list[float] = []
    start = -R - float(rng.uniform(0, p1))
    while start + sum(widths) < R:
        widths.append(_uniform(rng, (p0, p1)))
    col_edges = start + np.concatenate([[0.0], np.cumsum(widths)])
    n_cols = len(widths)
    rows: list[np.ndarray] = []
    for _ in range(n_cols):
        aspect = float(rng.uniform(1.0, 2.5))
        lengths: list[float] = []
        rstart = -R - float(rng.uniform(0, p1 * aspect))
        while rstart + sum(lengths) < R:
            lengths.append(_uniform(rng, (p0, p1)) * aspect)
        rows.append(rstart + np.concatenate([[0.0], np.cumsum(lengths)]))
    max_rows = max(len(r) - 1 for r in rows)
    row_edges = np.full((n_cols, max_rows + 1), np.inf)
    for i, r in enumerate(rows):
        row_edges[i, : len(r)] = r
    col = (np.searchsorted(col_edges, u, side="right") - 1).clip(0, n_cols - 1)
    row = np.zeros_like(col)
    for i in range(n_cols):
        m = col == i
        row[m] = (np.searchsorted(rows[i], v[m], side="right") - 1).clip(0, len(rows[i]) - 2)
    n_cells = n_cols * max_rows
    cell = col * max_rows + row
    split = rng.random(n_cells) < 0.2
    split_pos = rng.uniform(0.35, 0.65, n_cells)
    split_u = rng.random(n_cells) < 0.5
    u_rel = (u - col_edges[col]) / (col_edges[col + 1] - col_edges[col])
    lo = row_edges[col, row]
    v_rel = (v - lo) / (row_edges[col, row + 1] - lo)
    side = np.where(split_u[cell], u_rel, v_rel) > split_pos[cell]
    inst = cell + n_cells * (split[cell] & side)
    kind = np.zeros((n, n), dtype=np.int8)

    # land cover and crop of every possible parcel instance (drawn for all, so presence
    # does not shift the random stream)
    covers = cfg._cover_weights(region)
    crops = cfg._crop_weights(region)
    cover_names = [k for k in PARCEL_COVERS if covers[k] > 0]
    cw = np.array([covers[k] for k in cover_names])
    parcel_class = np.array(
        [PARCEL_COVERS.index(cover_names[i]) for i in rng.choice(len(cover_names), 2 * n_cells, p=cw / cw.sum())]
    )
    crop_names = [c.name for c in cfg.crops]
    crop_w = np.array([crops[c] for c in crop_names], dtype=np.float64)
    if crop_w.sum() > 0:
        parcel_crop = 1 + rng.choice(len(crop_names), 2 * n_cells, p=crop_w / crop_w.sum())
    else:
        parcel_crop = np.zeros(2 * n_cells, dtype=np.int64)
    parcel_crop = np.where(parcel_class == PARCEL_COVERS.index("cropland"), parcel_crop, 0)

    # built-up area: a blob with a rotated street grid, blocks split into lots
    has_urban = bool(rng.random() < cfg.p_urban)
    if has_urban:
        us = cfg.urban
        cx, cy = rng.uniform(-size / 2, size / 2, 2)
        radius = _uniform(rng, us.radius) * size
        blob = np.hypot(X - cx, Y - cy) / radius + 0.3 * _upsample_field(rng, size, f, size / 6)
        urban = blob < 1.0
        tu = theta if rng.random() < 0.5 else float(rng.uniform(-math.pi / 2, math.pi / 2))
        pu, pv = _uniform(rng, us.block_px), _uniform(rng, us.block_px)
        sw = _uniform(rng, us.street_px)
        uu = X * math.cos(tu) + Y * math.sin(tu) + rng.uniform(0, pu)
        vv = -X * math.sin(tu) + Y * math.cos(tu) + rng.uniform(0, pv)
        iu, iv = np.floor(uu / pu).astype(np.int64), np.floor(vv / pv).astype(np.int64)
        fu, fv = uu - iu * pu, vv - iv * pv
        iu0, iv0 = math.floor(-1.5 * size / pu) - 1, math.floor(-1.5 * size / pv) - 1
        n_iu, n_iv = int(3 * size / pu) + 4, int(3 * size / pv) + 4
        iu_o, iv_o = (iu - iu0).clip(0, n_iu - 1), (iv - iv0).clip(0, n_iv - 1)
        lots_u = rng.integers(1, 4, (n_iu, n_iv))
        lots_v = rng.integers(1, 4, (n_iu, n_iv))
        su, sv = fu < sw, fv < sw
        nu, nv = lots_u[iu_o, iv_o], lots_v[iu_o, iv_o]
        lu = np.floor((fu - sw) / (pu - sw) * nu).astype(np.int64).clip(0, 2)
        lv = np.floor((fv - sw) / (pv - sw) * nv).astype(np.int64).clip(0, 2)
        lot = ((iu_o * n_iv + iv_o) * 3 + lu) * 3 + lv
        street_id = np.where(su, 2 * iu_o, 2 * iv_o + 1)
        is_street = urban & (su | sv)
        is_lot = urban & ~(su | sv)
        kind[is_street], inst[is_street] = _STREET, street_id[is_street]
        kind[is_lot], inst[is_lot] = _LOT, lot[is_lot]

    # water: a lake (blob) or a meandering river
    has_water = bool(rng.random() < cfg.p_water)
    if has_water:
        ws = cfg.water
        if rng.random() < ws.lake:
            cx, cy = rng.uniform(-size / 2, size / 2, 2)
            radius = _uniform(rng, ws.lake_radius) * size
            water = np.hypot(X - cx, Y - cy) / radius + 0.4 * _upsample_field(rng, size, f, size / 6) < 1.0
        else:
            phi = float(rng.uniform(0, math.pi))
            a = X * math.cos(phi) + Y * math.sin(phi)
            b = -X * math.sin(phi) + Y * math.cos(phi)
            centre = (
                rng.uniform(-size / 4, size / 4)
                + rng.uniform(0, size / 8) * np.sin(2 * math.pi * a / rng.uniform(size / 2, 2 * size)
                                                    + rng.uniform(0, 2 * math.pi))
                + rng.uniform(0, size / 20) * np.sin(2 * math.pi * a / rng.uniform(size / 6, size / 3)
                                                     + rng.uniform(0, 2 * math.pi))
            )
            water = np.abs(b - centre) < _uniform(rng, ws.river_px) / 2
        kind[water], inst[water] = _WATER, 0

    # rural roads: most along parcel boundaries, some at random angles (drawn over all)
    n_roads = int(rng.integers(cfg.roads[0], cfg.roads[1] + 1))
    for i in range(n_roads):
        width = float(rng.uniform(0.3, 1.0))
        if rng.random() < 0.7:
            dist = u - col_edges[int(rng.integers(0, len(col_edges)))]
        else:
            ang = float(rng.uniform(0, math.pi))
            dist = -X * math.sin(ang) + Y * math.cos(ang) - rng.uniform(-size / 2, size / 2)
        road = np.abs(dist) < width / 2
        kind[road], inst[road] = _ROAD, i
    return _Layout(kind, inst, parcel_class, parcel_crop, theta, has_water, has_urban, n_roads)


def _upsample_field(rng: np.random.Generator, size: int, f: int, scale: float) -> np.ndarray:
    """A smooth field drawn at pixel resolution and bilinearly upsampled f times."""
    g = _field(rng, size, scale).astype(np.float64)
    pos = (np.arange(size * f) + 0.5) / f - 0.5
    i0 = np.floor(pos).astype(int).clip(0, size - 1)
    i1 = (i0 + 1).clip(0, size - 1)
    t = (pos - i0).clip(0, 1)
    rows = g[i0] * (1 - t)[:, None] + g[i1] * t[:, None]
    return rows[:, i0] * (1 - t)[None, :] + rows[:, i1] * t[None, :]


def _pixel_units(key: np.ndarray, size: int, f: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` units covering most of each output pixel: keys (m, P) and areal fractions (m, P).

    ``key`` is the (size*f, size*f) supersampled unit map. Fractions are sub-pixel counts
    over f*f, renormalised over the kept units (a fourth unit at a junction is dropped).
    Ties go to the smaller key, so the result is deterministic.
    """
    p, ff = size * size, f * f
    s = np.sort(key.reshape(size, f, size, f).transpose(0, 2, 1, 3).reshape(p, ff), axis=1)
    first = np.ones(s.shape, dtype=bool)
    first[:, 1:] = s[:, 1:] != s[:, :-1]
    starts = np.flatnonzero(first.ravel())
    counts = np.zeros(p * ff, dtype=np.int32)
    counts[starts] = np.diff(np.append(starts, p * ff))  # runs never cross rows: each row starts one
    counts = counts.reshape(p, ff)
    rows = np.arange(p)
    keys = np.empty((m, p), dtype=key.dtype)
    frac = np.zeros((m, p), dtype=np.float32)
    for j in range(m):
        best = counts.argmax(axis=1)
        c = counts[rows, best]
        keys[j] = np.where(c > 0, s[rows, best], keys[0] if j else s[rows, best])
        frac[j] = c
        counts[rows, best] = 0
    frac /= frac.sum(axis=0, keepdims=True)
    return keys, frac


def _soil_albedo(library: SpectralLibrary, i: int) -> float:
    return float(library.spectra[i][~library.filled].mean())


@dataclass
class _Unit:
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
        return math.isfinite(self.soc)


_NORMAL = statistics.NormalDist()


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF, vectorised (Abramowitz & Stegun 7.1.26 erf; abs. error < 1.5e-7)."""
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-z * z)
    return 0.5 * (1.0 + np.sign(x) * erf)


def _patch_fields(units: Sequence[_Unit], size: int, seed: int, index: int) -> np.ndarray | None:
    """Per-unit unit-variance random fields (U, S*S) for patchy units; None if there are none.

    Drawn from a stream of their own, so scenes without patchy vegetation (the default
    config) are bit-for-bit what they were before ``patchiness`` existed. Each distinct
    ``patch_px`` gets two shared fields; a unit mixes them with its own angle, which keeps
    unit variance and makes neighbouring parcels' patterns independent-looking.
    """
    patchy = [u.patchiness > 0 for u in units]
    if not any(patchy):
        return None
    prng = _rng(seed, index, SYNTH_VERSION, 0x9A7C)
    angles = prng.uniform(0.0, 2.0 * math.pi, len(units))
    shared = {s: (_field(prng, size, s).ravel(), _field(prng, size, s).ravel())
              for s in sorted({u.patch_px for u, on in zip(units, patchy, strict=True) if on})}
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
) -> Scene:
    """Make scene ``index`` of the set ``seed``: geometry, materials, mixing weights, labels.

    Deterministic in ``(config, size, seed, index)``. See the module docstring.
    """
    cfg = config or SceneConfig()
    lib = library or earthlib_library()
    if size < 8:
        raise DataError(f"size must be >= 8 px, got {size}")
    rng = _rng(seed, index, SYNTH_VERSION)
    rw = np.array([r.weight for r in cfg.regions], dtype=np.float64)
    region = cfg.regions[int(rng.choice(len(cfg.regions), p=rw / rw.sum()))]
    lay = _layout(rng, cfg, region, size)

    key = lay.kind.astype(np.int64) * (1 << 40) + lay.inst
    top_keys, frac = _pixel_units(key, size, cfg.supersample, _UNITS_PER_PIXEL)
    uniq, inverse = np.unique(top_keys, return_inverse=True)
    ids = inverse.reshape(top_keys.shape)

    # smooth fields shared by all units (each unit mixes them with its own angles)
    g1, g2, g3 = (_field(rng, size, float(rng.uniform(3.0, 8.0))).ravel() for _ in range(3))
    gfine = _field(rng, size, 0.7).ravel()
    gbright = _field(rng, size, 12.0).ravel()
    gsoil = _field(rng, size, float(rng.uniform(2.0, 5.0))).ravel()
    c1 = (np.arange(size, dtype=np.float64) + 0.5) - size / 2.0
    px, py = np.meshgrid(c1, c1)
    upix = (px * math.cos(lay.theta) + py * math.sin(lay.theta)).ravel()

    mats = _Materials(lib)
    units = [_make_unit(rng, cfg, region, lay, lib, mats, int(k)) for k in uniq.tolist()]
    patch = _patch_fields(units, size, seed, index)

    # per-pixel weights of every (unit slot, component) pair
    n_pix = size * size
    q = _UNITS_PER_PIXEL * _SLOTS_PER_UNIT

    def col(name: str) -> np.ndarray:
        return np.array([getattr(u, name) for u in units], dtype=np.float64)

    prm = {f.name: col(f.name) for f in dataclasses.fields(_Unit) if f.name not in ("info", "comps", "landcover", "crop")}
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
            quantile = _normal_cdf(np.sqrt(1.0 - pz) * p["cover_z"] + np.sqrt(pz) * patch[uid, np.arange(n_pix)])
            base = np.where(pz > 0, p["cover_lo"] + (p["cover_hi"] - p["cover_lo"]) * quantile, base)
        cover = np.clip(base + p["variability"] * f_cover + 0.5 * p["texture"] * gfine, 0.0, 1.0)
        striped = p["strip_period"] > 0
        if striped.any():
            phase = np.sin(2 * math.pi * upix[striped] / p["strip_period"][striped] + p["strip_phase"][striped])
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
    )


def _make_unit(
    rng: np.random.Generator,
    cfg: SceneConfig,
    region: RegionSpec,
    lay: _Layout,
    lib: SpectralLibrary,
    mats: _Materials,
    key: int,
) -> _Unit:
    """Draw the materials and mixing recipe of the unit with layout key ``key``."""
    kind, inst = key >> 40, key & ((1 << 40) - 1)
    info: dict[str, Any] = {"kind": _KIND_NAMES[kind]}
    angles = rng.uniform(0, 2 * math.pi, 2)
    common = {"angle_cover": float(angles[0]), "angle_mix": float(angles[1]), "info": info}
    if kind == _PARCEL:
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
        info.update(landcover=cover, soil=lib.names[ground], soil_albedo=round(albedo, 5),
                    soc_gkg=round(soc, 4), canopy=[lib.names[a], lib.names[b]])
        if crop:
            info["crop"] = spec.name
        cover_level = _uniform(rng, spec.cover)
        lo, hi = spec.cover
        quantile = (cover_level - lo) / (hi - lo) if hi > lo else 0.5
        return _Unit(
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
            residue=_uniform(rng, spec.residue),
            brightness=_uniform(rng, spec.brightness),
            bright_amp=0.04,
            texture=spec.texture,
            strip_period=spec.strip_period_px,
            strip_phase=float(rng.uniform(0, 2 * math.pi)),
            soil_amp=cfg.soc.soil_variation,
            soil_factor=_uniform(rng, cfg.soil_field_factor),
            albedo=albedo,
            soc=soc,
            **common,
        )
    developed = LANDCOVER_CLASSES.index("developed")
    if kind == _LOT:
        us = cfg.urban
        info["landcover"] = "developed"
        if rng.random() < us.green_lots:
            spec = cfg.grassland
            a, b = rng.choice(mats.canopies(spec), 2)
            ground = int(rng.choice(mats.soils(region)))
            litter = int(rng.choice(mats.materials(("litter", "npv"))))
            info["material"] = "lawn"
            return _Unit(
                landcover=developed,
                comps=(mats.lib(a), mats.lib(b), mats.lib(ground), mats.lib(litter)),
                cover=_uniform(rng, (0.6, 0.95)), variability=0.08, mix_amp=0.4, residue=0.1,
                brightness=_uniform(rng, us.brightness), bright_amp=0.05, texture=0.05,
                soil_factor=_uniform(rng, cfg.soil_field_factor), **common,
            )
        roof = int(rng.choice(mats.materials(us.roofs)))
        pave = int(rng.choice(mats.materials(us.pavements)))
        info["material"] = [lib.names[roof], lib.names[pave]]
        return _Unit(
            landcover=developed, comps=(mats.lib(roof), mats.lib(pave), -1, -1),
            mix=_uniform(rng, us.roof_fraction), mix_amp=0.15,
            brightness=_uniform(rng, us.brightness), bright_amp=0.05, texture=0.05, **common,
        )
    if kind in (_STREET, _ROAD):
        a, b = rng.choice(mats.materials(cfg.urban.streets), 2)
        info.update(landcover="developed", material=[lib.names[a], lib.names[b]])
        return _Unit(
            landcover=developed, comps=(mats.lib(a), mats.lib(b), -1, -1), mix_amp=0.3,
            brightness=_uniform(rng, (0.85, 1.1)), bright_amp=0.03, **common,
        )
    # water: one body per scene, mixing a clear and a turbid end with a smooth field (plumes)
    ws = cfg.water
    surface = _loguniform(rng, ws.surface)
    clear = {"chl": _loguniform(rng, (ws.chl[0], math.sqrt(ws.chl[0] * ws.chl[1]))),
             "tsm": _loguniform(rng, (ws.tsm[0], math.sqrt(ws.tsm[0] * ws.tsm[1]))),
             "cdom_440": _loguniform(rng, ws.cdom_440)}
    turbid = {"chl": _loguniform(rng, ws.chl), "tsm": _loguniform(rng, ws.tsm), "cdom_440": clear["cdom_440"]}
    wl = lib.wavelengths_nm
    comps = (mats.add(water_reflectance(wl, surface=surface, **clear)),
             mats.add(water_reflectance(wl, surface=surface, **turbid)), -1, -1)
    info.update(landcover="water", clear=clear, turbid=turbid, surface=surface)
    return _Unit(landcover=LANDCOVER_CLASSES.index("water"), comps=comps, mix=0.6, mix_amp=0.4, **common)


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def _explicit_range(band: Any) -> tuple[float, float] | None:
    return None if band.range_nm is None else (float(band.range_nm[0]), float(band.range_nm[1]))


def spectral_response(
    sensor: Sensor, wavelengths_nm: np.ndarray, mode: str = "auto", step_nm: float = 0.5
) -> np.ndarray:
    """Band responses (C, L) that turn spectra on ``wavelengths_nm`` into the sensor's bands.

    Each band's response is evaluated on a fine ``step_nm`` grid — a Gaussian of the band's
    FWHM, or flat-top over its explicit range (``mode="auto"`` picks the range when the band
    has one) — and folded back onto ``wavelengths_nm`` through linear interpolation, so
    ``spectra @ R.T`` equals interpolating the spectra to the fine grid and integrating
    there. Rows sum to 1. Bands centred outside the grid raise :class:`DataError`.
    """
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    out = np.zeros((sensor.num_bands, wl.size), dtype=np.float64)
    for i, band in enumerate(sensor.bands):
        if not wl[0] <= band.center_nm <= wl[-1]:
            raise DataError(
                f"sensor {sensor.name!r} band {band.name!r} is centred at {band.center_nm:g} nm, outside "
                f"the synthetic spectral library ({wl[0]:g}-{wl[-1]:g} nm); choose a band selection "
                "without it"
            )
        rng_ = _explicit_range(band)
        use_range = rng_ is not None and mode in ("auto", "range")
        if mode == "range" and rng_ is None:
            rng_ = band.range
            use_range = True
        if use_range:
            assert rng_ is not None
            lo, hi = rng_
            fine = np.arange(lo + step_nm / 2, hi, step_nm)
            resp = np.ones_like(fine)
        else:
            sigma = band.fwhm_nm * FWHM_TO_SIGMA
            fine = np.arange(band.center_nm - 4 * sigma, band.center_nm + 4 * sigma + step_nm, step_nm)
            resp = np.exp(-0.5 * ((fine - band.center_nm) / sigma) ** 2)
        if fine.size == 0:
            fine, resp = np.array([band.center_nm]), np.array([1.0])
        pos = np.searchsorted(wl, fine).clip(1, wl.size - 1)
        t = ((fine - wl[pos - 1]) / (wl[pos] - wl[pos - 1])).clip(0.0, 1.0)
        np.add.at(out[i], pos - 1, resp * (1.0 - t))
        np.add.at(out[i], pos, resp * t)
        out[i] /= out[i].sum()
    return out


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (C, H, W) float32 with mirrored borders (the PSF)."""
    if sigma <= 0:
        return img
    r = max(1, math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    mode = "reflect" if min(img.shape[1:]) > r else "edge"
    p = np.pad(img, ((0, 0), (r, r), (0, 0)), mode=mode)
    h, w = img.shape[1:]
    acc = k[0] * p[:, 0:h]
    for j in range(1, 2 * r + 1):
        acc += k[j] * p[:, j : j + h]
    p = np.pad(acc, ((0, 0), (0, 0), (r, r)), mode=mode)
    acc = k[0] * p[:, :, 0:w]
    for j in range(1, 2 * r + 1):
        acc += k[j] * p[:, :, j : j + w]
    return acc


@functools.lru_cache(maxsize=32)
def _response_cached(bands: tuple[Band, ...], name: str, grid: bytes, mode: str) -> np.ndarray:
    sensor = Sensor(name=name, bands=bands, gsd_m=1.0)
    return spectral_response(sensor, np.frombuffer(grid, dtype=np.float64), mode)


def _response(sensor: Sensor, wavelengths_nm: np.ndarray, mode: str) -> np.ndarray:
    grid = np.ascontiguousarray(wavelengths_nm, dtype=np.float64).tobytes()
    return _response_cached(tuple(sensor.bands), sensor.name, grid, mode)


def render(scene: Scene, sensor: Sensor, instrument: Instrument | None = None) -> np.ndarray:
    """The scene as ``sensor`` records it: (C, S, S) float32 surface reflectance.

    Spectral response -> PSF -> noise (see :class:`Instrument`). Deterministic: noise for a
    band depends only on the scene's seed and index, the sensor name and the band name.
    """
    ins = instrument or Instrument()
    resp = _response(sensor, scene.wavelengths_nm, ins.srf)
    table = (resp.astype(np.float32) @ scene.endmembers.T).astype(np.float32)  # (C, K)
    s, c = scene.size, sensor.num_bands
    img = _blur(_mix(table, scene.slot_index, scene.slot_weight).reshape(c, s, s), ins.psf_sigma_px)
    if not ins.noise:
        return img
    snr = ins.band_snr(sensor)
    trans = resp @ atmospheric_transmittance(scene.wavelengths_nm) if ins.atmosphere else np.ones(c)
    z = np.empty((c, s, s), dtype=np.float32)
    stripes = np.empty((c, 1, s), dtype=np.float32)
    sensor_key = zlib.crc32(sensor.name.encode())
    for b, band in enumerate(sensor.bands):
        rng = _rng(scene.seed, scene.index, 0x5E, sensor_key, zlib.crc32(band.name.encode()))
        rng.standard_normal(dtype=np.float32, out=stripes[b, 0])
        rng.standard_normal(dtype=np.float32, out=z[b])
    rho = img
    if ins.stripe > 0:
        stripes *= np.float32(ins.stripe)
        stripes += np.float32(1.0)
        rho *= stripes
    ref = ins.reference_reflectance
    t = trans.astype(np.float32)[:, None, None]
    sigma = rho * (t / np.float32(ref))  # signal relative to the reference
    np.maximum(sigma, 0.0, out=sigma)
    sigma *= np.float32(1.0 - ins.read_fraction)
    sigma += np.float32(ins.read_fraction)
    np.sqrt(sigma, out=sigma)
    sigma *= (ref / (snr[:, None, None] * trans[:, None, None])).astype(np.float32)
    sigma *= z
    rho += sigma
    return rho


# ----------------------------------------------------------------------------------------------
# Writing stores
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthTarget:
    """One store to write: the sensor (with its band selection), the folder, the instrument."""

    sensor: Sensor
    out: Path
    instrument: Instrument = Instrument()


def resolve_sensor(spec: str | Sensor, selection: str | Sequence[str] | None = "default") -> Sensor:
    """A sensor from a registered name (``"enmap"``, ``"enmap:all"``) or a :class:`Sensor`.

    A ``NAME:SELECTION`` string overrides ``selection``.
    """
    if isinstance(spec, Sensor):
        return spec.select(selection)
    name, _, sel = str(spec).partition(":")
    return get_sensor(name, selection=sel or selection)


def _targets(
    sensor: str | Sensor,
    out: str | Path,
    selection: str | Sequence[str] | None,
    also: Mapping[str, str | Path] | Sequence[tuple[str | Sensor, str | Path]] | None,
    instrument: Instrument | Mapping[str, Instrument] | None,
) -> list[SynthTarget]:
    pairs: list[tuple[Sensor, Path]] = [(resolve_sensor(sensor, selection), Path(out))]
    items = list(also.items()) if isinstance(also, Mapping) else list(also or [])
    for spec, path in items:
        pairs.append((resolve_sensor(spec, "default"), Path(path)))
    paths = [p.resolve() for _, p in pairs]
    if len(set(paths)) != len(paths):
        raise DataError("synth: every store needs its own output folder; two of them share one")
    targets = []
    for sen, path in pairs:
        if isinstance(instrument, Mapping):
            ins = instrument.get(sen.name, Instrument())
        else:
            ins = instrument or Instrument()
        targets.append(SynthTarget(sen, path, ins))
    return targets


@dataclass(frozen=True)
class _ChipMaker:
    """Makes chip ``i`` for every target: picklable, so worker processes can run it."""

    config: SceneConfig
    size: int
    seed: int
    targets: tuple[SynthTarget, ...]

    def __call__(self, i: int) -> tuple[dict[str, np.ndarray], dict[str, Any], list[np.ndarray]]:
        scene = generate_scene(self.config, self.size, self.seed, i)
        images = [render(scene, t.sensor, t.instrument) for t in self.targets]
        return scene.labels, scene.meta, images


def _preflight(target: SynthTarget, recipe: Mapping[str, Any], resume: bool) -> None:
    """Refuse, before anything is written to any store, an output that cannot be (re)used."""
    manifest = target.out / "manifest.json"
    if not manifest.exists():
        if target.out.exists() and not target.out.is_dir():
            raise DataError(f"{target.out} is a file; --out (and --also) need a folder")
        return
    try:
        old = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{manifest}: cannot read the existing store ({exc}); delete it or pick another folder") from None
    if old.get("complete"):
        raise DataError(f"{target.out} already holds a complete chip store; choose another folder or delete it first")
    if not resume:
        raise DataError(
            f"{target.out} holds an unfinished chip store; pass --resume to continue it or delete the folder"
        )
    synth = (old.get("attrs") or {}).get("synth")
    if synth != dict(recipe):
        what = (f"seed {synth.get('seed')}, chips {synth.get('chips')}, size {synth.get('size')}, "
                f"config {synth.get('config_digest')}") if isinstance(synth, Mapping) else "not by data synth"
        raise DataError(
            f"cannot resume {target.out}: it was started with other synth settings ({what}); use the same "
            "--chips/--size/--seed/--config or delete it"
        )


@contextlib.contextmanager
def _progress_bar(
    progress: bool | Callable[[int, int], None], total: int, sensors: Sequence[Sensor]
) -> Iterator[Callable[[int], None]]:
    """Yield ``tick(n)``: advances a rich bar on stderr, a user callback, or nothing."""
    done = 0
    if callable(progress):

        def tick_cb(n: int) -> None:
            nonlocal done
            done += n
            progress(done, total)

        yield tick_cb
        return
    if not progress or os.environ.get("HYPERKD_DISABLE_PROGRESS", "") not in ("", "0"):
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    what = " + ".join(f"{s.name} ({s.num_bands} bands)" for s in sensors)
    with Progress(
        TextColumn("[bold]synth[/] " + what.replace("[", "\\[")),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chips"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        task = bar.add_task("synth", total=total)
        yield lambda n: bar.advance(task, n)


def synthesize(
    sensor: str | Sensor = "enmap",
    out: str | Path = "synthetic-enmap",
    *,
    chips: int = 32,
    size: int = 64,
    seed: int = 0,
    selection: str | Sequence[str] | None = "default",
    also: Mapping[str, str | Path] | Sequence[tuple[str | Sensor, str | Path]] | None = None,
    config: SceneConfig | None = None,
    instrument: Instrument | Mapping[str, Instrument] | None = None,
    workers: int = 1,
    resume: bool = False,
    shard_size: int | None = None,
    progress: bool | Callable[[int, int], None] = True,
    attrs: Mapping[str, Any] | None = None,
) -> ChipStore:
    """Write ``chips`` synthetic scenes of ``size`` px for ``sensor`` to a chip store at ``out``.

    ``also`` renders the *same* scenes for more sensors into more stores, e.g.
    ``also={"hls": "teacher-store"}`` (keys may be ``NAME:SELECTION``; or give
    ``(Sensor, path)`` pairs). ``instrument`` is one :class:`Instrument` for all sensors or
    a mapping by sensor name. Chips stream to disk shard by shard, so memory stays bounded
    (about one shard, <= 64 MiB by default, per store); ``workers`` > 1 renders chips in
    that many processes (output identical to ``workers=1``); ``progress`` shows a rich
    progress bar on stderr (``True``; off with ``HYPERKD_DISABLE_PROGRESS=1``) or is called
    as ``progress(done, total)`` after each chip; an interrupted run continues with
    ``resume=True``. Returns the
    store at ``out``. Every store is marked synthetic and records its seed, scene config,
    instrument and spectral library in the manifest's ``attrs``.
    """
    if chips < 1:
        raise DataError(f"--chips must be >= 1, got {chips}")
    if size < 8:
        raise DataError(f"--size must be >= 8 px, got {size}")
    if seed < 0:
        raise DataError(f"--seed must be >= 0, got {seed}")
    if workers < 1:
        raise DataError(f"--workers must be >= 1, got {workers}")
    cfg = config or SceneConfig()
    lib = earthlib_library()
    cfg.validate(lib)
    targets = _targets(sensor, out, selection, also, instrument)
    for t in targets:
        _response(t.sensor, lib.wavelengths_nm, t.instrument.srf)  # fail early on bands out of range
    if shard_size is None:
        biggest = max(nbytes_per_chip(t.sensor.num_bands, size) for t in targets)
        shard_size = int(max(1, min(256, (64 << 20) // biggest)))
    recipe = {
        "generator": "hyperkd.synth",
        "version": SYNTH_VERSION,
        "seed": seed,
        "chips": chips,
        "size": size,
        "config_digest": cfg.digest(),
    }
    for t in targets:
        _preflight(t, recipe, resume)
    writers: list[ChipStoreWriter] = []
    for t in targets:
        a = {
            "synthetic": "SYNTHETIC DATA made by hyperkd.synth from earthlib spectra; not real imagery",
            "synth": recipe,
            "scene_config": cfg.to_dict(),
            "instrument": t.instrument.to_dict(),
            "spectral_library": lib.source,
            "paired_stores": {str(o.out): f"{o.sensor.name}:{o.sensor.selection}" for o in targets if o is not t},
            **dict(attrs or {}),
        }
        writers.append(ChipStoreWriter(t.out, t.sensor, size, labels=cfg.label_specs(),
                                       shard_size=shard_size, synthetic=True, attrs=a, resume=resume))
    pool = None
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        with _progress_bar(progress, chips, [t.sensor for t in targets]) as tick:
            for bi in range((chips + shard_size - 1) // shard_size):
                source = f"synth-batch-{bi:05d}"
                indices = range(bi * shard_size, min(chips, (bi + 1) * shard_size))
                todo = [j for j, w in enumerate(writers) if source not in w.sources_done]
                if not todo:
                    tick(len(indices))
                    continue
                maker = _ChipMaker(cfg, size, seed, tuple(targets[j] for j in todo))
                results = (
                    pool.map(maker, indices, chunksize=max(1, len(indices) // (4 * workers)))
                    if pool is not None else map(maker, indices)
                )
                valid = np.ones((size, size), dtype=bool)
                for labels, meta, images in results:
                    for j, img in zip(todo, images, strict=True):
                        writers[j].add(img, valid, labels, source=source, **meta)
                    tick(1)
                for j in todo:
                    writers[j].mark_source_done(source)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    stores = [w.close() for w in writers]
    return stores[0]


# ----------------------------------------------------------------------------------------------
# The distillation experiment's three data sets
# ----------------------------------------------------------------------------------------------

KD_ROLES: dict[str, tuple[str, str, int]] = {
    "teacher": ("hls", "kd-teacher", 0),
    "student": ("enmap", "kd-student", 1),
    "eval": ("enmap", "kd-eval", 2),
}
"""role -> (sensor, preset, seed offset) of :func:`kd_stores`; ``eval`` also gets an HLS view."""


def kd_stores(
    out: str | Path,
    *,
    teacher_chips: int = 256,
    student_chips: int = 48,
    eval_chips: int = 64,
    size: int = 64,
    seed: int = 0,
    student_snr_scale: float = KD_STUDENT_SNR_SCALE,
    workers: int = 1,
    progress: bool | Callable[[int, int], None] = False,
) -> dict[str, ChipStore]:
    """Write the stores of a distillation experiment under ``out`` and return them by role.

    - ``teacher``: ``out/teacher-hls``, ``teacher_chips`` HLS chips of the ``kd-teacher``
      preset (every crop and region) — the large multispectral set a teacher learns from;
    - ``student``: ``out/student-enmap``, ``student_chips`` EnMAP chips of ``kd-student``
      (no cotton, no patchy-stand, no asia/oceania soils) — the small hyperspectral set;
    - ``eval``: ``out/eval-enmap``, ``eval_chips`` labelled EnMAP chips of ``kd-eval``
      (everything, crops equally frequent), and ``eval_hls``: ``out/eval-hls``, the *same*
      scenes seen by HLS (rendered once, through ``synthesize(..., also=...)``), so a
      teacher or a raw-HLS baseline can be scored on exactly the student's evaluation scenes.

    The three sets use different seeds (``3 * seed + 0/1/2``), so no evaluation scene is in
    a training set, and share class ids. Both EnMAP sets use an instrument whose SNR is
    ``student_snr_scale`` times the default (noise that single pixels cannot average out);
    HLS uses the default instrument. Every store records ``attrs.preset`` and
    ``attrs.kd_role``. ``out`` must not hold these stores already. At the defaults this
    takes a few tens of seconds on 2 CPU cores (see docs/synthetic-data.md).
    """
    if student_snr_scale <= 0:
        raise DataError(f"student_snr_scale must be > 0, got {student_snr_scale}")
    out = Path(out)
    student_instrument = Instrument(snr_scale=student_snr_scale)
    chips = {"teacher": teacher_chips, "student": student_chips, "eval": eval_chips}
    paths = {"teacher": out / "teacher-hls", "student": out / "student-enmap", "eval": out / "eval-enmap",
             "eval_hls": out / "eval-hls"}
    for p in paths.values():  # refuse before writing anything
        if (p / "manifest.json").exists():
            raise DataError(f"{p} already holds a chip store; choose another --out or delete it first")
    stores: dict[str, ChipStore] = {}
    for role, (sensor, preset, offset) in KD_ROLES.items():
        also = {"hls": paths["eval_hls"]} if role == "eval" else None
        stores[role] = synthesize(
            sensor, paths[role], chips=chips[role], size=size, seed=3 * seed + offset,
            also=also, config=SceneConfig.preset(preset),
            instrument={"enmap": student_instrument, "hls": Instrument()}, workers=workers, progress=progress,
            attrs={"preset": preset, "kd_role": role},
        )
    stores["eval_hls"] = ChipStore(paths["eval_hls"])
    return stores
