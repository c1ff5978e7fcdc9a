"""What synthetic scenes contain: the config dataclasses, their defaults and the named presets.

:class:`SceneConfig` gathers the crop types and other covers (:class:`VegetationSpec`), the
regions (:class:`RegionSpec`), built-up areas (:class:`UrbanSpec`), water
(:class:`WaterSpec`) and the soil-carbon law (:class:`SocModel`). Configs are plain frozen
dataclasses: :meth:`SceneConfig.validate` checks their values explicitly, and
:mod:`hyperkd.synth.serial` reads and writes them as plain dicts / YAML. The ``kd-*``
presets (:meth:`SceneConfig.preset`) live here too; :func:`hyperkd.synth.presets.kd_stores`
writes their stores.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from hyperkd.core.errors import DataError
from hyperkd.data.store import LabelSpec
from hyperkd.synth.serial import from_plain, to_plain
from hyperkd.synth.spectral_library import SpectralLibrary

LANDCOVER_CLASSES: tuple[str, ...] = ("water", "developed", "cropland", "grassland", "forest", "barren")
"""Land-cover class ids of the ``landcover`` label (roads and urban green count as developed,
as in NLCD's developed classes)."""

NON_CROP = "non-crop"
"""Class 0 of the ``croptype`` label."""

PARCEL_COVERS: tuple[str, ...] = ("cropland", "grassland", "forest", "barren")
"""Land covers a field parcel can take (water and developed come from their own layers)."""

Range = tuple[float, float]


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

    RANGES: ClassVar[tuple[str, ...]] = ("lai", "chl", "lma", "n", "cover", "residue", "brightness")
    """Fields that are (low, high) ranges (checked by :meth:`SceneConfig.validate`)."""


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

    RANGES: ClassVar[tuple[str, ...]] = ("block_px", "street_px", "roof_fraction", "brightness", "radius")


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

    RANGES: ClassVar[tuple[str, ...]] = ("chl", "tsm", "cdom_440", "surface", "lake_radius", "river_px")


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

    RANGES: ClassVar[tuple[str, ...]] = ("clip",)


DEFAULT_CROPS: tuple[VegetationSpec, ...] = (
    VegetationSpec(
        "maize",
        lai=(3.5, 7.0),
        chl=(40.0, 60.0),
        lma=(0.005, 0.012),
        n=(1.3, 1.9),
        cover=(0.85, 1.0),
        residue=(0.0, 0.1),
        weight=1.2,
    ),
    VegetationSpec(
        "soybean",
        lai=(2.5, 5.0),
        chl=(25.0, 45.0),
        lma=(0.005, 0.013),
        n=(1.6, 2.2),
        cover=(0.7, 0.95),
        residue=(0.0, 0.15),
        weight=1.0,
    ),
    VegetationSpec(
        "wheat",
        lai=(1.5, 4.0),
        chl=(10.0, 30.0),
        lma=(0.012, 0.025),
        n=(1.8, 2.5),
        cover=(0.6, 0.9),
        residue=(0.2, 0.5),
        weight=1.0,
    ),
    VegetationSpec(
        "alfalfa",
        lai=(2.5, 6.0),
        chl=(40.0, 60.0),
        lma=(0.005, 0.010),
        n=(1.8, 2.5),
        cover=(0.85, 1.0),
        residue=(0.0, 0.1),
        weight=0.6,
    ),
    VegetationSpec(
        "cotton",
        lai=(1.0, 3.0),
        chl=(30.0, 50.0),
        lma=(0.008, 0.016),
        n=(1.4, 2.0),
        cover=(0.4, 0.75),
        residue=(0.0, 0.15),
        weight=0.6,
    ),
    VegetationSpec(
        "fallow",
        lai=(0.5, 1.5),
        chl=(10.0, 25.0),
        cover=(0.05, 0.3),
        residue=(0.2, 0.6),
        variability=0.1,
        weight=0.6,
    ),
)
"""Crop types: canopy-parameter boxes loosely after published ranges for each crop at mid-season."""

DEFAULT_GRASSLAND = VegetationSpec(
    "grassland",
    lai=(0.5, 2.5),
    chl=(15.0, 40.0),
    cover=(0.4, 0.85),
    residue=(0.3, 0.7),
    variability=0.12,
    texture=0.03,
)
DEFAULT_FOREST = VegetationSpec(
    "forest",
    lai=(4.0, 11.0),
    chl=(30.0, 60.0),
    lma=(0.012, 0.025),
    n=(1.8, 2.5),
    cover=(0.85, 1.0),
    residue=(0.3, 0.7),
    brightness=(0.6, 0.85),
    variability=0.05,
    texture=0.12,
)
DEFAULT_BARREN = VegetationSpec(
    "barren",
    lai=(0.5, 1.5),
    chl=(10.0, 30.0),
    cover=(0.0, 0.08),
    residue=(0.0, 0.2),
    variability=0.04,
)

DEFAULT_REGIONS: tuple[RegionSpec, ...] = (
    RegionSpec(
        "americas", soil_boxes=((-60.0, 72.0, -170.0, -30.0),), crop_weights={"maize": 2.0, "soybean": 2.0}
    ),
    RegionSpec("europe", soil_boxes=((35.0, 72.0, -25.0, 60.0),), crop_weights={"wheat": 2.0, "cotton": 0.2}),
    RegionSpec(
        "africa",
        soil_boxes=((-36.0, 35.0, -20.0, 55.0),),
        crop_weights={"maize": 1.5, "alfalfa": 0.5},
        cover_weights={"barren": 2.0},
    ),
    RegionSpec("asia", soil_boxes=((-11.0, 60.0, 60.0, 150.0),), crop_weights={"cotton": 2.0, "wheat": 1.5}),
    RegionSpec(
        "oceania",
        soil_boxes=((-50.0, -10.0, 110.0, 180.0),),
        crop_weights={"wheat": 2.0, "fallow": 2.0},
        weight=0.5,
    ),
)
"""Regions by the sampling sites of the ICRAF-ISRIC soils (continents, roughly)."""

_TWIN = {
    "lai": (2.0, 5.0),
    "chl": (25.0, 50.0),
    "lma": (0.006, 0.016),
    "n": (1.5, 2.2),
    "cover": (0.3, 1.0),
    "residue": (0.05, 0.3),
    "variability": 0.03,
}
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

    RANGES: ClassVar[tuple[str, ...]] = ("roads", "parcel_px", "soil_field_factor")
    """Fields that are (low, high) ranges (checked by :meth:`validate`)."""

    # -- derived ------------------------------------------------------------------------------
    @property
    def crop_classes(self) -> tuple[str, ...]:
        """Class names of the ``croptype`` label: ``non-crop`` then the crops in order."""
        return (NON_CROP, *(c.name for c in self.crops))

    def label_specs(self) -> dict[str, LabelSpec]:
        """The label layers every chip carries."""
        return {
            "landcover": LabelSpec(
                kind="class",
                classes=LANDCOVER_CLASSES,
                description="synthetic land cover: class of the unit covering most of the pixel",
            ),
            "croptype": LabelSpec(
                kind="class",
                classes=self.crop_classes,
                description="synthetic crop type of the majority parcel; non-crop elsewhere",
            ),
            "soc": LabelSpec(
                kind="continuous",
                unit="g/kg",
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
            if (
                not any(self.crop_weights_in(reg).values())
                and self.cover_weights_in(reg).get("cropland", 0) > 0
            ):
                raise DataError(
                    f"scene config: region {reg.name!r} has cropland but every crop weight is 0; "
                    "give a crop a weight or set its cropland cover weight to 0"
                )
            if not any(self.cover_weights_in(reg).values()):
                raise DataError(f"scene config: region {reg.name!r} gives every parcel cover weight 0")
        if sum(r.weight for r in self.regions) <= 0:
            raise DataError("scene config: region weights sum to 0")
        for label, p in (
            ("p_water", self.p_water),
            ("p_urban", self.p_urban),
            ("sand_barren", self.sand_barren),
        ):
            if not 0.0 <= p <= 1.0:
                raise DataError(f"scene config: {label} must be within [0, 1], got {p}")
        if not (1 <= self.supersample <= 8):
            raise DataError(f"scene config: supersample must be 1..8, got {self.supersample}")
        if self.roads[0] < 0 or self.roads[1] < self.roads[0]:
            raise DataError(f"scene config: roads must be (min, max) with 0 <= min <= max, got {self.roads}")
        if self.parcel_px[0] < 1.0:
            raise DataError(f"scene config: parcel_px must be >= 1 px, got {self.parcel_px}")
        for where, spec, names in self._ranges():
            for name in names:
                lo, hi = getattr(spec, name)
                if lo > hi:
                    raise DataError(f"{where}.{name}: range {[lo, hi]} must be (low, high) with low <= high")
        for spec in (*self.crops, self.grassland, self.forest, self.barren):
            if not 0.0 <= spec.patchiness <= 1.0:
                raise DataError(
                    f"scene config: {spec.name!r} patchiness must be within [0, 1], got {spec.patchiness}"
                )
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

    def _ranges(self) -> Iterator[tuple[str, Any, tuple[str, ...]]]:
        """(where, spec, its (low, high) fields) for every spec of the config, in field order."""
        for i, crop in enumerate(self.crops):
            yield f"scene config.crops[{i}]", crop, VegetationSpec.RANGES
        for cover in ("grassland", "forest", "barren"):
            yield f"scene config.{cover}", getattr(self, cover), VegetationSpec.RANGES
        yield "scene config.urban", self.urban, UrbanSpec.RANGES
        yield "scene config.water", self.water, WaterSpec.RANGES
        yield "scene config.soc", self.soc, SocModel.RANGES
        yield "scene config", self, SceneConfig.RANGES

    def crop_weights_in(self, region: RegionSpec) -> dict[str, float]:
        """Crop weights in ``region``: each crop's weight times the region's multiplier."""
        return {c.name: c.weight * float(region.crop_weights.get(c.name, 1.0)) for c in self.crops}

    def cover_weights_in(self, region: RegionSpec) -> dict[str, float]:
        """Parcel land-cover weights in ``region`` (every parcel cover, 0 where absent)."""
        return {
            k: float(self.cover_weights.get(k, 0.0)) * float(region.cover_weights.get(k, 1.0))
            for k in PARCEL_COVERS
        }

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
        for key, known, what in (
            (crops, known_crops, "crop"),
            (regions, known_regions, "region"),
            (covers, set(PARCEL_COVERS), "cover"),
        ):
            for k in key or {}:
                if k not in known:
                    raise DataError(f"with_weights: unknown {what} {k!r}; known: {', '.join(sorted(known))}")
        new_crops = tuple(replace(c, weight=float((crops or {}).get(c.name, c.weight))) for c in self.crops)
        new_regions = tuple(
            replace(r, weight=float((regions or {}).get(r.name, r.weight))) for r in self.regions
        )
        new_covers = dict(self.cover_weights)
        new_covers.update({k: float(v) for k, v in (covers or {}).items()})
        cfg = replace(
            self, crops=new_crops, regions=new_regions, cover_weights=new_covers, name=name or self.name
        )
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
        return to_plain(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], base: SceneConfig | None = None) -> SceneConfig:
        """Build a config from a (possibly partial) dict: missing fields keep their defaults
        (or ``base``'s values, e.g. a :meth:`preset`'s)."""
        cfg = from_plain(cls, d, "scene config", base=base)
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
        crops=dict.fromkeys(absent["crops"], 0.0),
        regions=dict.fromkeys(absent["regions"], 0.0),
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
