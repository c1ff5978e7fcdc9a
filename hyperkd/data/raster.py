"""The ``raster`` product reader: GeoTIFF/COG and ENVI cubes with their own band tables.

Hyperspectral archives are mostly not sensor product folders but plain rasters: EnMAP-Box
exports, ENVI cubes from airborne campaigns (AVIRIS, HyMap, ...), PRISMA/EMIT scenes
converted to GeoTIFF. This reader takes every fact from the file itself, through GDAL:

* band table: per-band ``wavelength``/``fwhm``/``bbl``/``wavelength_units`` tags (how GDAL
  and the EnMAP-Box write GeoTIFFs), else the ``ENVI`` metadata domain (``wavelength = {...}``
  lists of an ENVI ``.hdr``). Units are converted to nm: nanometres and micrometres by name;
  ``Unknown`` (or none) is inferred from the magnitude (centres below 100 are micrometres)
  and said. A missing FWHM is taken as the spacing of neighbouring centres (and said);
* sensor: matched by wavelength to a registered sensor with as many bands (the file's band
  order is kept and recorded; bands take the registered names, so selections still apply),
  else an ad-hoc sensor named ``raster`` made from the file's table. ``sensor=`` forces
  one: every file band must then match one of its bands;
* no-data: the raster's nodata (GDAL maps ENVI's ``data ignore value`` to it), else the
  ``data ignore value`` tag; NaN is no-data in float files;
* reflectance = ``value * gain + offset`` with GDAL's per-band scale/offset when set, else
  ``1 / reflectance scale factor`` (ENVI), else detected from the values (x1, percent or
  x10000). The scale is stated, and values that are not plausible reflectance after
  scaling are refused in one line;
* bad bands: ``bbl = 0`` or no data in any pixel; :attr:`RasterProduct.unusable_bands`
  names them and ``hyperkd data prepare`` drops them by default;
* a file without a CRS is read on its pixel grid, with a warning that maps made from it
  cannot be georeferenced.

``.hdr`` paths stand for their binary (same stem, no suffix or ``.bsq/.bil/.bip/.img/.dat/.raw``).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from hyperkd.core.errors import DataError, HyperKDError
from hyperkd.core.sensors import Band, Sensor, get_sensor, match_bands
from hyperkd.data.products import ProductBase, ProductFormat, ProductWindow

logger = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff")
ENVI_BINARY_SUFFIXES = ("", ".bsq", ".bil", ".bip", ".img", ".dat", ".raw")
NM_PER_UNIT = {
    "nanometers": 1.0,
    "nanometer": 1.0,
    "nanometres": 1.0,
    "nm": 1.0,
    "micrometers": 1000.0,
    "micrometer": 1000.0,
    "micrometres": 1000.0,
    "microns": 1000.0,
    "micron": 1000.0,
    "um": 1000.0,
    "µm": 1000.0,
}
"""``wavelength units`` spellings (lower case) -> nm per unit."""
SCAN_BYTES = 64 << 20
"""Rows read at a time when scanning a file for empty bands and value ranges."""
SAMPLE_VALUES = 200_000
"""Values kept to detect and check the reflectance scale."""
PLAUSIBLE = (-0.5, 2.0)
"""1st/99th percentiles of surface reflectance lie inside this range."""
ADHOC_SENSOR = "raster"


def _envi_list(text: str | None) -> list[str] | None:
    """``"{1, 2, 3}"`` -> ``["1", "2", "3"]``; None for None or an empty list."""
    if text is None:
        return None
    items = [t.strip() for t in text.strip().strip("{}").split(",")]
    items = [t for t in items if t]
    return items or None


def _floats(values: Sequence[str], path: Path, key: str) -> list[float]:
    try:
        return [float(v) for v in values]
    except ValueError as exc:
        raise DataError(f"{path}: the {key!r} metadata is not a list of numbers ({exc})") from None


def band_metadata(src: Any, path: Path) -> dict[str, Any]:
    """The file's own band facts: ``centers``, ``fwhms``, ``bbl`` (lists or None), ``units``,
    ``ignore`` (ENVI data ignore value) and ``scale_factor`` (ENVI reflectance scale factor)."""
    n = src.count
    envi = src.tags(ns="ENVI") if "ENVI" in (src.tag_namespaces() or ()) else {}
    top = {k.lower(): v for k, v in src.tags().items()}
    per_band = [{k.lower(): v for k, v in src.tags(i).items()} for i in range(1, n + 1)]
    out: dict[str, Any] = {}
    for key in ("wavelength", "fwhm", "bbl"):
        if all(key in t for t in per_band):
            values: list[str] | None = [t[key] for t in per_band]
        else:
            values = _envi_list(envi.get(key)) or _envi_list(top.get(key))
        if values is not None and len(values) != n:
            raise DataError(f"{path}: {len(values)} {key!r} values for {n} bands; fix the metadata")
        out[key] = _floats(values, path, key) if values is not None else None
    units = {t.get("wavelength_units") for t in per_band} - {None}
    out["units"] = (
        units.pop() if len(units) == 1 else envi.get("wavelength_units") or top.get("wavelength_units")
    )
    ignore = envi.get("data_ignore_value") or top.get("data_ignore_value")
    out["ignore"] = _floats([ignore], path, "data ignore value")[0] if ignore else None
    factor = envi.get("reflectance_scale_factor") or top.get("reflectance_scale_factor")
    out["scale_factor"] = _floats([factor], path, "reflectance scale factor")[0] if factor else None
    return out


def to_nanometres(centers: Sequence[float], units: str | None, path: Path) -> tuple[float, str | None]:
    """nm per unit of ``centers`` and a note when the unit had to be inferred."""
    key = (units or "unknown").strip().lower()
    if key in NM_PER_UNIT:
        return NM_PER_UNIT[key], None
    if key not in ("unknown", ""):
        raise DataError(
            f"{path}: wavelength units {units!r} are not nanometers or micrometers; convert the "
            "band table to one of them"
        )
    lo, hi = min(centers), max(centers)
    factor = 1000.0 if hi < 100.0 else 1.0
    name = "micrometres" if factor == 1000.0 else "nanometres"
    return factor, f"wavelength units {units or 'missing'!r}: centres {lo:g}-{hi:g} read as {name}"


class RasterProduct(ProductBase):
    """One GeoTIFF/COG or ENVI cube opened as a :class:`~hyperkd.data.products.Product`.

    Opening validates the metadata and scans the pixels once, in row strips (bounded
    memory): bands without any data, and a sample of values to check the reflectance scale.
    ``unusable_bands`` maps band names to why they should not be used (``bbl = 0``,
    ``no data``); ``sensor`` holds every band of the file, in the file's order.

    ``sensor`` forces a registered sensor; ``reflectance_scale_factor`` overrides the scale
    (stored value / factor = reflectance).
    """

    format_name = "raster"

    def __init__(
        self, path: str | Path, *, sensor: str | None = None, reflectance_scale_factor: float | None = None
    ) -> None:
        self.path = Path(path)
        self.name: str = self.path.stem
        self.warnings: list[str] = []
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._src = rasterio.open(self.path)
        except RasterioError as exc:
            raise DataError(
                f"{self.path}: cannot open it as a raster ({str(exc).strip()}); give a GeoTIFF or an ENVI "
                "binary with its .hdr"
            ) from None
        try:
            self._init(sensor, reflectance_scale_factor)
        except BaseException:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------------------
    def _init(self, forced: str | None, factor: float | None) -> None:
        src, path = self._src, self.path
        self.width: int = src.width
        self.height: int = src.height
        self.crs = src.crs
        self.transform = src.transform
        meta = band_metadata(src, path)
        self.nodata: float | None = float(src.nodata) if src.nodata is not None else meta["ignore"]
        self.nodata_source = (
            "raster"
            if src.nodata is not None
            else ("data ignore value" if meta["ignore"] is not None else None)
        )
        if self.crs is None:
            self.warnings.append(
                "no CRS: prepared on its pixel grid; maps made from it cannot be georeferenced"
            )
        self.sensor_band_index: list[int] | None = None
        """1-based band of the matched registered sensor for each file band (None: ad hoc)."""
        self.band_origin = ""
        table = self._band_table(meta, forced)
        gains, offsets, self.scale_note = self._scale(meta, factor)
        self._gains = np.asarray(gains, dtype=np.float64)
        self._offsets = np.asarray(offsets, dtype=np.float64)
        empty, sample = self._scan(table)
        self._check_plausible(sample)
        bad: dict[str, str] = {}
        for i, b in enumerate(table.bands):
            why = []
            if meta["bbl"] is not None and meta["bbl"][i] == 0:
                why.append("bbl = 0")
            if i in empty:
                why.append("no data")
            if why:
                bad[b.name] = ", ".join(why)
        self.unusable_bands: dict[str, str] = bad
        bands = tuple(
            replace(b, gain=float(g), offset=float(o))
            for b, g, o in zip(table.bands, gains, offsets, strict=True)
        )
        self.sensor: Sensor = replace(table, bands=bands, nodata=self.nodata, bad_bands=tuple(bad))

    def _band_table(self, meta: dict[str, Any], forced: str | None) -> Sensor:
        """The file's band table as a sensor: a registered one matched by wavelength, or ad hoc."""
        n, path = self._src.count, self.path
        gsd = abs(float(self.transform.a)) if self.crs is not None else 1.0
        base = get_sensor(forced, selection="all") if forced else None
        if meta["wavelength"] is None:
            if base is None or base.num_bands != n:
                raise DataError(
                    f"{path}: no band wavelengths in its metadata (GDAL/ENVI 'wavelength' tags) for its {n} "
                    "bands; add them, or pass --sensor NAME of a registered sensor with as many bands"
                )
            self.warnings.append(
                f"no wavelengths in the file: bands taken as {base.name}'s {n} bands, in order"
            )
            self.band_origin = f"sensor {base.name} (file has no wavelengths)"
            return replace(base, default_selection=None, gsd_m=gsd if self.crs is not None else base.gsd_m)
        factor, note = to_nanometres(meta["wavelength"], meta["units"], path)
        if note:
            self.warnings.append(note)
        centers = [c * factor for c in meta["wavelength"]]
        if meta["fwhm"] is not None:
            fwhms = [f * factor for f in meta["fwhm"]]
        else:
            fwhms = _spacing(centers)
            self.warnings.append(
                "no FWHM in the file: each band's FWHM taken as the spacing of its neighbours"
            )
        if any(not (math.isfinite(c) and c > 0) for c in centers):
            raise DataError(
                f"{path}: band wavelengths must be positive numbers, got {meta['wavelength'][:5]}..."
            )
        bad_fwhm = next((i for i, f in enumerate(fwhms) if not (math.isfinite(f) and f > 0)), None)
        if bad_fwhm is not None:
            raise DataError(
                f"{path}: band {bad_fwhm + 1} has FWHM {meta['fwhm'][bad_fwhm]!r}; every 'fwhm' value must be a "
                "positive number (fix the metadata, or remove the fwhm tags to use the band spacing)"
            )
        twins = sorted({c for c in centers if centers.count(c) > 1})
        if twins:
            self.warnings.append(
                f"bands share a centre wavelength ({', '.join(f'{c:g}' for c in twins[:5])} nm): "
                "is the band table right?"
            )
        names = [f"B{i + 1}" for i in range(n)]
        adhoc = Sensor(
            name=ADHOC_SENSOR,
            bands=tuple(
                Band(name=nm, center_nm=c, fwhm_nm=f) for nm, c, f in zip(names, centers, fwhms, strict=True)
            ),
            gsd_m=gsd,
            description=f"band table of {path.name}",
            source=f"{path.name} metadata",
        )
        candidates = [base] if base is not None else _registered_with(n)
        for cand in candidates:
            try:
                index = match_bands(adhoc, cand, f"{path} vs sensor {cand.name!r}")
            except HyperKDError:
                if base is not None:
                    raise
                continue
            own = [cand.bands[j] for j in index]
            self.band_origin = f"file metadata, matched to sensor {cand.name}"
            self.sensor_band_index = [j + 1 for j in index]
            return replace(
                cand,
                bands=tuple(
                    replace(b, center_nm=c, fwhm_nm=f, range_nm=None)
                    for b, c, f in zip(own, centers, fwhms, strict=True)
                ),
                default_selection=None,
                selection="all",
                selections={k: v for k, v in cand.selections.items() if set(v) <= {b.name for b in own}},
                gsd_m=gsd if self.crs is not None else cand.gsd_m,
                source=f"{path.name} metadata",
            )
        self.band_origin = "file metadata (no registered sensor has these bands)"
        return adhoc

    def _scale(
        self, meta: dict[str, Any], factor: float | None
    ) -> tuple[list[float], list[float], str | None]:
        """Per-band gain/offset and where they come from (None: to be detected from values)."""
        n = self._src.count
        scales = [1.0 if s is None else float(s) for s in self._src.scales]
        offsets = [0.0 if o is None else float(o) for o in self._src.offsets]
        if factor is not None:
            _check_factor(factor, f"{self.path}: the given reflectance_scale_factor")
            return [1.0 / factor] * n, [0.0] * n, f"reflectance scale factor {factor:g} (given)"
        if any(s != 1.0 for s in scales) or any(o != 0.0 for o in offsets):
            for i, (s, o) in enumerate(zip(scales, offsets, strict=True)):
                if not (math.isfinite(s) and s != 0.0 and math.isfinite(o)):
                    raise DataError(
                        f"{self.path}: band {i + 1} has GDAL scale {s:g}, offset {o:g}; a scale must be a "
                        "finite non-zero number and an offset finite (fix the metadata, or pass "
                        "reflectance_scale_factor)"
                    )
            return scales, offsets, f"GDAL scale {scales[0]:g}, offset {offsets[0]:g}"
        if meta["scale_factor"] is not None:
            f = meta["scale_factor"]
            _check_factor(f, f"{self.path}: its 'reflectance scale factor' metadata")
            return [1.0 / f] * n, [0.0] * n, f"reflectance scale factor {f:g} (metadata)"
        return [1.0] * n, [0.0] * n, None

    def _missing(self, dn: np.ndarray) -> np.ndarray:
        """True where a value is no data (the nodata value, or NaN/inf in float files)."""
        missing: np.ndarray = (
            np.asarray(dn == self.nodata) if self.nodata is not None else np.zeros(dn.shape, dtype=bool)
        )
        if np.issubdtype(dn.dtype, np.floating):
            missing |= ~np.isfinite(dn)
        return missing

    def _scan(self, table: Sensor) -> tuple[set[int], np.ndarray]:
        """Bands (0-based) without any data, and a sample of data values (stored units), in strips."""
        n = self._src.count
        rows = max(1, SCAN_BYTES // max(1, self.width * n * np.dtype(self._src.dtypes[0]).itemsize))
        unknown = list(range(n))
        chunks: list[np.ndarray] = []
        have = 0
        for row in range(0, self.height, rows):
            if not unknown and have >= SAMPLE_VALUES:
                break
            idx = unknown if have >= SAMPLE_VALUES else list(range(n))
            window = Window(0, row, self.width, min(rows, self.height - row))
            dn = self._read([i + 1 for i in idx], window)
            missing = self._missing(dn)
            found = {i for k, i in enumerate(idx) if not missing[k].all()}
            unknown = [i for i in unknown if i not in found]
            if have < SAMPLE_VALUES:
                values = (dn * self._gains[idx, None, None] + self._offsets[idx, None, None])[~missing]
                chunks.append(values[: SAMPLE_VALUES - have].astype(np.float64))
                have += len(chunks[-1])
        sample = np.concatenate(chunks) if chunks else np.zeros(0)
        return set(unknown), sample

    def _check_plausible(self, sample: np.ndarray) -> None:
        """Detect the reflectance scale when no metadata gave it, then refuse implausible values."""
        if sample.size == 0:
            self.scale_note = self.scale_note or "no data values"
            return
        p1, p99 = (float(v) for v in np.percentile(sample, [1, 99]))
        if self.scale_note is None:
            for factor, label in ((1.0, "x1"), (100.0, "percent"), (10000.0, "x10000")):
                if PLAUSIBLE[0] <= p1 / factor and p99 / factor <= PLAUSIBLE[1]:
                    self._gains = self._gains / factor
                    self._offsets = self._offsets / factor
                    self.scale_note = f"reflectance {label} (detected from values)"
                    self.warnings.append(
                        f"no reflectance scale in the metadata: values read as reflectance {label}"
                    )
                    p1, p99 = p1 / factor, p99 / factor
                    break
        lo, hi = PLAUSIBLE
        if not (lo <= p1 and p99 <= hi):
            raise DataError(
                f"{self.path}: after scaling ({self.scale_note or 'no scale found'}) the values run from {p1:g} "
                f"to {p99:g} (1st-99th percentile), not surface reflectance ({lo:g} to {hi:g}); is it radiance "
                "or another scale? Fix its scale metadata or pass reflectance_scale_factor"
            )

    # -- Product protocol ------------------------------------------------------------------
    def check(self) -> None:
        """Nothing more to check: opening already read every pixel once."""

    def read(self, window: Window | None = None, bands: Sequence[str] | None = None) -> ProductWindow:
        """Surface reflectance and no-data mask of ``bands`` (default: all) in ``window`` (default: all)."""
        names = tuple(bands) if bands is not None else tuple(self.sensor.band_names)
        idx = np.asarray([self.sensor.band_index(b) for b in names], dtype=np.int64)
        if window is None:
            window = Window(0, 0, self.width, self.height)
        col, row, w, h = (int(window.col_off), int(window.row_off), int(window.width), int(window.height))
        if col < 0 or row < 0 or w <= 0 or h <= 0 or col + w > self.width or row + h > self.height:
            raise ValueError(f"window {window} lies outside {self.name} ({self.width}x{self.height} px)")
        dn = self._read((idx + 1).tolist(), window)
        missing = self._missing(dn)
        nodata: np.ndarray = np.asarray(missing.any(axis=0))
        image = (dn * self._gains[idx, None, None] + self._offsets[idx, None, None]).astype(np.float32)
        image[missing] = 0.0
        return ProductWindow(
            image=image,
            valid=~nodata,
            nodata=nodata,
            cloud=None,
            window=Window(col, row, w, h),
            transform=rasterio.windows.transform(window, self.transform),
            crs=self.crs,
            bands=names,
        )

    def _read(self, indexes: list[int], window: Window) -> np.ndarray:
        try:
            return self._src.read(indexes, window=window)
        except RasterioError as exc:
            raise DataError(
                f"{self.path}: cannot read pixels at column {int(window.col_off)}, row {int(window.row_off)} "
                f"({str(exc).strip()}); the file is truncated or corrupt"
            ) from None

    def info(self) -> dict[str, Any]:
        """Provenance for manifests: file, driver, band-table origin, scale, nodata, bad bands."""
        return {
            "format": self.format_name,
            "product": self.name,
            "path": str(self.path),
            "image": str(self.path),
            "driver": self._src.driver if self._src is not None else None,
            "dtype": self._src.dtypes[0] if self._src is not None else None,
            "num_bands": self.sensor.num_bands,
            "sensor": self.sensor.name,
            "band_table": self.band_origin,
            "sensor_band_index": self.sensor_band_index,
            "reflectance_scale": self.scale_note,
            "width": self.width,
            "height": self.height,
            "crs": self.crs.to_string() if self.crs else None,
            "nodata": self.nodata,
            "nodata_source": self.nodata_source,
            "unusable_bands": dict(self.unusable_bands),
            "warnings": list(self.warnings),
        }

    def close(self) -> None:
        """Close the file."""
        if self._src is not None:
            self._src.close()


def _check_factor(factor: float, what: str) -> None:
    """DataError unless ``factor`` (stored value / factor = reflectance) is a finite number above 0."""
    if not (math.isfinite(factor) and factor > 0):
        raise DataError(
            f"{what} is {factor:g}; it must be a positive number (stored value / factor = reflectance, "
            "e.g. 10000)"
        )


def _spacing(centers: Sequence[float]) -> list[float]:
    """Each band's distance to its nearest neighbour in wavelength (a stand-in FWHM)."""
    if len(centers) == 1:
        return [10.0]
    order = sorted(range(len(centers)), key=lambda i: centers[i])
    out = [0.0] * len(centers)
    for k, i in enumerate(order):
        gaps = [abs(centers[order[j]] - centers[i]) for j in (k - 1, k + 1) if 0 <= j < len(order)]
        gaps = [g for g in gaps if g > 0]
        out[i] = min(gaps) if gaps else 10.0
    return out


def _registered_with(n: int) -> list[Sensor]:
    """Every registered sensor with ``n`` bands (selection all)."""
    from hyperkd.core.registry import registry

    found = []
    for name in registry("sensor").names():
        try:
            s = get_sensor(name, selection="all")
        except HyperKDError:
            continue
        if s.num_bands == n:
            found.append(s)
    return found


def envi_binary(header: Path) -> Path:
    """The binary file an ENVI ``.hdr`` describes (same stem); DataError naming what was tried."""
    for suffix in ENVI_BINARY_SUFFIXES:
        for cand in (header.with_suffix(suffix), header.with_suffix(suffix.upper())):
            if cand.is_file() and cand != header:
                return cand
    tried = ", ".join(header.stem + s for s in ENVI_BINARY_SUFFIXES if s)
    raise DataError(f"{header}: ENVI header without its binary (looked for {header.stem}, {tried})")


def find_rasters(path: Path) -> list[Path]:
    """GeoTIFFs and ENVI binaries (found by their ``.hdr``) at or under ``path``, sorted."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".hdr":
            return [envi_binary(path)]
        if suffix in RASTER_SUFFIXES or path.with_suffix(".hdr").is_file():
            return [path]
        raise DataError(
            f"{path}: not a GeoTIFF (.tif/.tiff) or an ENVI cube (.hdr with its binary); give one of those"
        )
    found = {p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES}
    found |= {envi_binary(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".hdr"}
    return sorted(found)


def open_raster(path: str | Path, **kwargs: Any) -> RasterProduct:
    """Open a GeoTIFF/COG or ENVI cube (``sensor=``, ``reflectance_scale_factor=`` optional)."""
    path = Path(path)
    if path.suffix.lower() == ".hdr":
        path = envi_binary(path)
    return RasterProduct(path, **kwargs)


# The ``reader`` registry entry ``raster`` (declared in hyperkd/core/plugins.py) points here.
FORMAT = ProductFormat(
    name="raster",
    sensors=("*",),
    open=open_raster,
    find=find_rasters,
    description="GeoTIFF/COG or ENVI (.hdr + binary) files with band wavelengths in their metadata",
)
