"""Write small hyperspectral rasters in the formats users have (torchgeo style: real files).

* :func:`write_geotiff`: a GeoTIFF as the EnMAP-Box exports one: per-band GDAL tags
  ``wavelength``/``fwhm``/``bbl``/``wavelength_units`` in the ENVI convention, band
  descriptions, GDAL scale/offset and a nodata value;
* :func:`write_envi`: an ENVI cube (``.hdr`` + ``.bsq``/``.bil``/``.bip`` binary) with
  ``wavelength``, ``fwhm``, ``bbl``, ``wavelength units``, ``data ignore value`` and
  ``reflectance scale factor`` in its header, with or without ``map info``.

Run as a script to write one of each into a folder: ``python tests/data/raster/data.py OUT``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

CENTERS = [450.0, 550.0, 650.0, 750.0, 850.0, 950.0]
FWHMS = [10.0] * 6


def reflectance(bands: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Plausible surface reflectance in 0.02-0.6, ``(bands, height, width)`` float64."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.02, 0.6, size=(bands, height, width))


def write_geotiff(
    path: Path,
    values: np.ndarray,
    *,
    centers: Sequence[float] | None = CENTERS,
    fwhms: Sequence[float] | None = FWHMS,
    bbl: Sequence[int] | None = None,
    units: str | None = "Nanometers",
    nodata: float | None = None,
    scale: float | None = None,
    crs: bool = True,
) -> Path:
    """Write ``values`` (stored numbers, their dtype kept) as a GeoTIFF with ENVI-style band tags."""
    count, height, width = values.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": values.dtype.name,
        "nodata": nodata,
    }
    if crs:
        profile.update(crs=CRS.from_epsg(32633), transform=from_origin(366015.0, 5809965.0, 30.0, 30.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(values)
            for i in range(count):
                tags = {}
                if centers is not None:
                    tags["wavelength"] = f"{centers[i]:g}"
                    if units is not None:
                        tags["wavelength_units"] = units
                    dst.set_band_description(i + 1, f"band {i + 1} ({centers[i]:g} {units})")
                if fwhms is not None:
                    tags["fwhm"] = f"{fwhms[i]:g}"
                if bbl is not None:
                    tags["bbl"] = str(bbl[i])
                if tags:
                    dst.update_tags(i + 1, **tags)
            if scale is not None:
                dst.scales = [scale] * count
                dst.offsets = [0.0] * count
    return path


def write_envi(
    path: Path,
    values: np.ndarray,
    *,
    interleave: str = "bsq",
    centers: Sequence[float] = CENTERS,
    fwhms: Sequence[float] | None = FWHMS,
    bbl: Sequence[int] | None = None,
    units: str = "Nanometers",
    ignore: float | None = None,
    scale_factor: float | None = None,
    map_info: bool = False,
) -> Path:
    """Write ``values`` as an ENVI cube: ``path`` (the binary, e.g. ``cube.bil``) + ``cube.hdr``.

    The binary and the header are written by hand, as ENVI and other tools write them.
    """
    count, height, width = values.shape
    dtypes = {"uint8": 1, "int16": 2, "int32": 3, "float32": 4, "float64": 5, "uint16": 12}
    order = {"bsq": (0, 1, 2), "bil": (1, 0, 2), "bip": (1, 2, 0)}[interleave]
    values.astype(values.dtype.newbyteorder("<")).transpose(order).tofile(path)
    lines = [
        "ENVI",
        "description = {hyperkd test cube}",
        f"samples = {width}",
        f"lines = {height}",
        f"bands = {count}",
        "header offset = 0",
        "file type = ENVI Standard",
        f"data type = {dtypes[values.dtype.name]}",
        f"interleave = {interleave}",
        "byte order = 0",
        f"wavelength units = {units}",
        "wavelength = {" + ", ".join(f"{c:g}" for c in centers) + "}",
    ]
    if fwhms is not None:
        lines.append("fwhm = {" + ", ".join(f"{f:g}" for f in fwhms) + "}")
    if bbl is not None:
        lines.append("bbl = {" + ", ".join(str(b) for b in bbl) + "}")
    if ignore is not None:
        lines.append(f"data ignore value = {ignore:g}")
    if scale_factor is not None:
        lines.append(f"reflectance scale factor = {scale_factor:g}")
    if map_info:
        lines.append("map info = {UTM, 1, 1, 366015, 5809965, 30, 30, 33, North, WGS-84, units=Meters}")
    Path(path).with_suffix(".hdr").write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    refl = reflectance(len(CENTERS), 16, 16)
    write_geotiff(out / "tile.tif", np.round(refl * 10000).astype("float32"), nodata=-32768, scale=1e-4)
    for il in ("bsq", "bil", "bip"):
        write_envi(
            out / f"cube_{il}.{il}", np.round(refl * 10000).astype("int16"), interleave=il, scale_factor=1e4
        )
