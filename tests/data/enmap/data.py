#!/usr/bin/env python3
"""Write small fake EnMAP Level-2A products in the official file format (torchgeo style).

Used by the tests (import it and call the writers on ``tmp_path``), and runnable to write a
sample set for a look with QGIS or ``hyperkd data prepare``::

    python tests/data/enmap/data.py OUT_DIR

What a product looks like (as DLR delivers it; pixel values are made up):

* ``<PRODUCT>-SPECTRAL_IMAGE.TIF``: int16 GeoTIFF, one band per spectral band, bands sorted by
  wavelength, nodata tag -32768, a UTM CRS, 30 m pixels; the scene's rotated footprint leaves
  a background (nodata) corner, as in real products;
* ``<PRODUCT>-METADATA.XML``: ``level_X`` with ``metadata/schema``, ``base/level``,
  ``specific/{vnir,swir}ProductQuality/expectedChannelsList``, ``specific/backgroundValue``,
  ``specific/bandCharacterisation/bandID[@number]/{wavelengthCenterOfBand, FWHMOfBand,
  GainOfBand, OffsetOfBand}``, ``product/image/merge`` and ``productFileInformation`` — element
  names as in DLR's files (compare the real one in ``prelaunch/``);
* optional ``QL_PIXELMASK.TIF`` (1-bit, one layer per band, 1 = defective) and
  ``QL_QUALITY_CLOUD.TIF`` / ``QL_QUALITY_CLOUDSHADOW.TIF`` (uint8, 1 = flagged);
* optionally zipped as ``<PRODUCT>.ZIP`` holding the folder ``<PRODUCT>/``, or written with
  the cloud-optimised names (``-SPECTRAL_IMAGE_COG.TIF``).

``write_prelaunch_product`` pairs the *real* DLR METADATA.XML (218 bands, pre-launch schema
00-02-00, backgroundValue 0) kept gzipped in ``prelaunch/`` with a small 218-band image.
"""

from __future__ import annotations

import csv
import gzip
import shutil
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
INFLIGHT_CSV = REPO / "plugins" / "hyperkd_enmap" / "data" / "inflight_l2a_bands.csv"
PRELAUNCH_NAME = "ENMAP01-____L2A-DT0000326721_20170626T102020Z_001_V000204_20200406T201930Z"
PRELAUNCH_XML_GZ = HERE / "prelaunch" / f"{PRELAUNCH_NAME}-METADATA.XML.gz"

PRODUCT = "ENMAP01-____L2A-DT0000004242_20230615T103512Z_002_V010303_20230620T081545Z"
"""A realistic (made-up) in-flight product name."""
PRODUCT_B = "ENMAP01-____L2A-DT0000004242_20230615T103516Z_003_V010303_20230620T081545Z"
"""The next tile of the same datatake."""

NODATA = -32768
CRS_UTM32 = CRS.from_epsg(32632)
ORIGIN = (628785.0, 5294265.0)  # upper-left corner of the real pre-launch product (EPSG:32632)

# In-flight L2A band order is by wavelength; these band numbers come from the VNIR detector
# (91 bands), the others from SWIR (133): the detectors interleave between 900 and 1000 nm.
INFLIGHT_VNIR = (*range(1, 80), 81, 82, 84, 86, 88, 90, 92, 93, 95, 97, 99, 100)


def inflight_table() -> tuple[list[float], list[float]]:
    """Centre wavelengths and FWHM (nm) of the 224 in-flight bands (from the plugin's CSV)."""
    with INFLIGHT_CSV.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [float(r["wavelength_center_nm"]) for r in rows], [float(r["fwhm_nm"]) for r in rows]


def synthetic_dn(num_bands: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Plausible L2A digital numbers (reflectance x 1e4): smooth spectra, patchy space."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, num_bands)[:, None, None]
    veg = rng.uniform(0, 1, size=(1, height, width))
    base = 400 + 2500 * veg * (x > 0.25) + 900 * (1 - veg) * x
    noise = rng.normal(0, 60, size=(num_bands, height, width))
    return np.clip(np.round(base + noise), 1, 10000).astype(np.int16)


def footprint_mask(height: int, width: int, corner: int) -> np.ndarray:
    """True in the upper-left background triangle a rotated swath leaves (``corner`` px legs)."""
    r, c = np.mgrid[0:height, 0:width]
    return (r + c) < corner


def _sub(parent: ET.Element, tag: str, text: object | None = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = str(text)
    return el


def l2a_metadata_xml(
    product: str,
    centers: Sequence[float],
    fwhms: Sequence[float],
    gains: Sequence[float],
    offsets: Sequence[float],
    *,
    vnir: Sequence[int],
    background: float | None = NODATA,
    width: int = 0,
    height: int = 0,
    image_name: str | None = None,
    drop: tuple[int, str] | None = None,
    level: str = "L2A",
) -> bytes:
    """A METADATA.XML in DLR's element layout (no XML declaration, as in real files).

    ``drop=(band_number, element)`` leaves one field out (to test incomplete files).
    """
    n = len(centers)
    root = ET.Element("level_X")
    md = _sub(root, "metadata")
    schema = _sub(md, "schema")
    _sub(schema, "copyright", "(c) DLR EnMAP")
    _sub(schema, "versionSchema", "00.06.00")
    _sub(schema, "name", "metadata_Lx_00-06-00.xsd")
    _sub(schema, "processingLevel", level)
    _sub(md, "name", f"{product}-METADATA.XML")
    base = _sub(root, "base")
    _sub(base, "format", f"ENMAP_{level}")
    _sub(base, "level", level)
    specific = _sub(root, "specific")
    swir = [b for b in range(1, n + 1) if b not in set(vnir)]
    for det, chans in (("vnir", list(vnir)), ("swir", swir)):
        q = _sub(specific, f"{det}ProductQuality")
        _sub(q, "numChannelsExpected", len(chans))
        _sub(q, "expectedChannelsList", ",".join(str(c) for c in chans))
        _sub(q, "numChannelsMissing", 0)
        _sub(q, "missingChannelsList")
    _sub(specific, "missionPhase", "commissioning")
    _sub(specific, "numberOfSWIRBands", len(swir))
    _sub(specific, "numberOfVNIRBands", len(vnir))
    if background is not None:
        _sub(specific, "backgroundValue", int(background) if float(background).is_integer() else background)
    _sub(specific, "widthOfScene", width, unit="pixel")
    _sub(specific, "heightOfScene", height, unit="pixel")
    chars = _sub(specific, "bandCharacterisation")
    fields = ("wavelengthCenterOfBand", "FWHMOfBand", "GainOfBand", "OffsetOfBand")
    for i in range(n):
        band = _sub(chars, "bandID", number=str(i + 1))
        for tag, value in zip(fields, (centers[i], fwhms[i], gains[i], offsets[i]), strict=True):
            if drop == (i + 1, tag):
                continue
            _sub(band, tag, repr(float(value)) if tag != "OffsetOfBand" or value else "0")
    product_el = _sub(root, "product")
    merge = _sub(_sub(product_el, "image"), "merge")
    _sub(merge, "channels", n)
    _sub(merge, "name", image_name or f"{product}-SPECTRAL_IMAGE.TIF")
    dim = _sub(merge, "dimension")
    _sub(dim, "columns", width)
    _sub(dim, "rows", height)
    files = _sub(product_el, "productFileInformation")
    for k, suffix in enumerate(("METADATA.XML", "SPECTRAL_IMAGE.TIF"), start=1):
        f = _sub(files, "file", number=str(k))
        _sub(f, "name", f"{product}-{suffix}")
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="utf-8") + b"\n"


def write_image(
    path: Path,
    dn: np.ndarray,
    *,
    nodata: float | None = NODATA,
    crs: CRS = CRS_UTM32,
    origin: tuple[float, float] = ORIGIN,
    driver: str = "GTiff",
    **creation: object,
) -> None:
    """Write ``dn`` (bands, rows, cols) as a georeferenced GeoTIFF."""
    profile = {
        "driver": driver,
        "dtype": dn.dtype.name,
        "count": dn.shape[0],
        "height": dn.shape[1],
        "width": dn.shape[2],
        "crs": crs,
        "transform": from_origin(origin[0], origin[1], 30.0, 30.0),
        **creation,
    }
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(dn)


def write_l2a_product(
    root: Path,
    *,
    product: str = PRODUCT,
    width: int = 48,
    height: int = 40,
    seed: int = 0,
    corner: int = 12,
    gains: Sequence[float] | None = None,
    offsets: Sequence[float] | None = None,
    dn: np.ndarray | None = None,
    xml_bands: int | None = None,
    drop: tuple[int, str] | None = None,
    pixelmask: np.ndarray | None = None,
    cloud: np.ndarray | None = None,
    cloudshadow: np.ndarray | None = None,
    cog: bool = False,
    as_zip: bool = False,
    origin: tuple[float, float] = ORIGIN,
    **creation: object,
) -> Path:
    """Write a fake 224-band in-flight L2A product under ``root``; returns its folder or zip.

    ``dn`` overrides the pixel values (default :func:`synthetic_dn` with a background corner
    of ``corner`` px). ``xml_bands`` writes an XML describing another band count; ``drop``
    leaves one band field out of the XML; ``pixelmask`` ((bands, rows, cols) or (rows, cols)
    bool), ``cloud`` and ``cloudshadow`` ((rows, cols) bool) add quality layers.
    ``creation`` passes GeoTIFF creation options (``compress``, ``tiled``, ``blockxsize``...).
    """
    centers, fwhms = inflight_table()
    n = len(centers)
    if dn is None:
        dn = synthetic_dn(n, height, width, seed)
        dn[:, footprint_mask(height, width, corner)] = NODATA
    height, width = dn.shape[1], dn.shape[2]
    gains = list(gains) if gains is not None else [1e-4] * n
    offsets = list(offsets) if offsets is not None else [0.0] * n
    nx = xml_bands if xml_bands is not None else n
    folder = root / product
    folder.mkdir(parents=True, exist_ok=True)
    suffix = "_COG.TIF" if cog else ".TIF"
    xml = l2a_metadata_xml(
        product,
        (centers * 2)[:nx],
        (fwhms * 2)[:nx],
        (gains * 2)[:nx],
        (offsets * 2)[:nx],
        vnir=[b for b in INFLIGHT_VNIR if b <= nx],
        width=width,
        height=height,
        image_name=f"{product}-SPECTRAL_IMAGE{suffix}",
        drop=drop,
    )
    (folder / f"{product}-METADATA.XML").write_bytes(xml)
    driver = "COG" if cog else "GTiff"
    write_image(folder / f"{product}-SPECTRAL_IMAGE{suffix}", dn, origin=origin, driver=driver, **creation)
    if pixelmask is not None:
        pm = pixelmask if pixelmask.ndim == 3 else np.broadcast_to(pixelmask, (n, height, width))
        write_image(
            folder / f"{product}-QL_PIXELMASK{suffix}",
            pm.astype(np.uint8),
            nodata=None,
            origin=origin,
            driver=driver,
            nbits=1,
        )
    for key, layer in (("CLOUD", cloud), ("CLOUDSHADOW", cloudshadow)):
        if layer is not None:
            write_image(
                folder / f"{product}-QL_QUALITY_{key}{suffix}",
                layer[None].astype(np.uint8),
                nodata=None,
                origin=origin,
                driver=driver,
            )
    if not as_zip:
        return folder
    archive = root / f"{product}.ZIP"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"{product}/{f.name}")
    shutil.rmtree(folder)
    return archive


def prelaunch_xml() -> bytes:
    """The real DLR pre-launch L2A METADATA.XML (218 bands), verbatim."""
    with gzip.open(PRELAUNCH_XML_GZ, "rb") as fh:
        return fh.read()


def write_prelaunch_product(
    root: Path,
    *,
    width: int = 40,
    height: int = 36,
    seed: int = 1,
    corner: int = 10,
    nodata_tag: bool = False,
) -> Path:
    """A product folder with the real pre-launch METADATA.XML and a small 218-band image.

    Pre-launch products use background value 0 (in the XML); the image carries no nodata
    tag unless ``nodata_tag``, so the reader has to take it from the XML.
    """
    folder = root / PRELAUNCH_NAME
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{PRELAUNCH_NAME}-METADATA.XML").write_bytes(prelaunch_xml())
    dn = synthetic_dn(218, height, width, seed)
    dn[:, footprint_mask(height, width, corner)] = 0
    write_image(folder / f"{PRELAUNCH_NAME}-SPECTRAL_IMAGE.TIF", dn, nodata=0 if nodata_tag else None)
    return folder


def main(argv: Sequence[str]) -> int:
    """Write a sample set: two in-flight tiles (one with quality layers, one zipped) + pre-launch."""
    out = Path(argv[0]) if argv else HERE / "sample"
    out.mkdir(parents=True, exist_ok=True)
    h, w = 96, 128
    cloud = np.zeros((h, w), dtype=bool)
    cloud[10:40, 60:100] = True
    pm = np.zeros((224, h, w), dtype=bool)
    pm[50, 70, 20] = True
    write_l2a_product(
        out, width=w, height=h, corner=30, pixelmask=pm, cloud=cloud, cloudshadow=np.roll(cloud, 12, axis=0)
    )
    write_l2a_product(
        out,
        product=PRODUCT_B,
        width=w,
        height=h,
        seed=2,
        corner=20,
        as_zip=True,
        origin=(ORIGIN[0], ORIGIN[1] - 30.0 * h),
    )
    write_prelaunch_product(out)
    print(f"wrote sample EnMAP L2A products to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
