"""Label rasters (NLCD, CDL, gNATSGO... as GeoTIFF) aligned onto the chips of a store.

Real chip stores (``hyperkd data prepare``) record for every chip the CRS and the affine
transform of its window. A label raster rarely shares that grid: NLCD and CDL are 30 m
Albers (EPSG:5070), EnMAP L2A products are UTM; gNATSGO rasters are 10 or 90 m. Each chip's
labels are therefore *reprojected* onto the chip's own grid with rasterio (GDAL warp):

* class rasters with ``mode`` resampling (the most frequent source class inside each chip
  pixel; on an identical grid that is an exact copy, and unlike ``nearest`` it does not
  pick an arbitrary sub-pixel when the raster is finer than the chip);
* continuous rasters with ``average`` (area-weighted mean of the source pixels; an exact
  copy on an identical grid);
* the raster's nodata value, and chip pixels outside the raster, become "no label"
  (``ignore_index`` for classes, NaN for values); GDAL leaves nodata source pixels out of
  ``mode`` and ``average``.

Class rasters carry codes (NLCD 11, 21, 41...), not the ``0..K-1`` ids a classifier
predicts: :func:`class_codes` lists the codes present, and :func:`encode_classes` maps
codes to ids (codes not in the list become ``ignore_index``, so a model evaluated on a
region with a class it never saw does not crash; the count is reported).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hyperkd.core.errors import DataError
from hyperkd.data.store import ChipStore

NLCD_CLASSES: dict[int, str] = {
    11: "open water",
    12: "perennial ice/snow",
    21: "developed, open space",
    22: "developed, low intensity",
    23: "developed, medium intensity",
    24: "developed, high intensity",
    31: "barren land",
    41: "deciduous forest",
    42: "evergreen forest",
    43: "mixed forest",
    51: "dwarf scrub",
    52: "shrub/scrub",
    71: "grassland/herbaceous",
    72: "sedge/herbaceous",
    73: "lichens",
    74: "moss",
    81: "pasture/hay",
    82: "cultivated crops",
    90: "woody wetlands",
    95: "emergent herbaceous wetlands",
}
"""NLCD (2001-2021) legend: code -> class name, used to name classes of an NLCD raster."""


def chip_grid(store: ChipStore, index: int) -> tuple[Any, Any]:
    """``(crs, affine transform)`` of chip ``index``, from the store manifest."""
    from affine import Affine
    from rasterio.crs import CRS

    meta = store.chips[index]
    if not meta.get("crs") or not meta.get("transform"):
        what = "a SYNTHETIC store" if store.synthetic else "a store without chip georeferencing"
        raise DataError(
            f"{store.root} is {what}: chip {index} has no CRS/transform, so a label raster cannot be "
            "aligned to it; use the store's own label layers (omit --labels) or a store made by "
            "`hyperkd data prepare`"
        )
    return CRS.from_user_input(meta["crs"]), Affine(*meta["transform"][:6])


def align_label_raster(
    raster: str | Path,
    store: ChipStore,
    kind: str,
    indices: Sequence[int] | None = None,
    cache: str | Path | None = None,
) -> np.ndarray:
    """Reproject band 1 of ``raster`` onto chips of ``store``: ``(n, S, S)`` float32, NaN = no label.

    ``kind`` is ``"class"`` (mode resampling) or ``"continuous"`` (average). ``indices``
    selects chips (default: all, in order). With ``cache`` the result is a memory-mapped
    ``.npy`` file there (large stores need not fit in memory).
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    if kind not in ("class", "continuous"):
        raise DataError(f"label kind must be 'class' or 'continuous', got {kind!r}")
    path = Path(raster)
    if not path.exists():
        raise DataError(f"label raster {path} does not exist")
    idx = list(range(len(store))) if indices is None else list(indices)
    s = store.chip_size
    shape = (len(idx), s, s)
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        out = np.lib.format.open_memmap(cache, mode="w+", dtype=np.float32, shape=shape)
    else:
        out = np.empty(shape, dtype=np.float32)
    resampling = Resampling.mode if kind == "class" else Resampling.average
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"cannot read label raster {path}: {exc}") from None
    with src:
        if src.crs is None:
            raise DataError(f"label raster {path} has no CRS; it cannot be aligned to the chips")
        nodata = src.nodata
        for row, i in enumerate(idx):
            crs, transform = chip_grid(store, i)
            dst = np.full((s, s), np.nan, dtype=np.float32)
            reproject(
                source=rasterio.band(src, 1),
                destination=dst,
                src_transform=src.transform,
                src_crs=src.crs,
                src_nodata=nodata,
                dst_transform=transform,
                dst_crs=crs,
                dst_nodata=np.nan,
                resampling=resampling,
            )
            if nodata is not None and not np.isnan(nodata):
                dst[dst == np.float32(nodata)] = np.nan
            out[row] = dst
    if cache is not None:
        out.flush()
    return out


def class_codes(values: np.ndarray) -> list[int]:
    """Sorted distinct class codes among the finite values; non-integer values are an error."""
    v = np.asarray(values)
    finite = np.unique(v[np.isfinite(v)])
    if finite.size and not np.all(finite == np.round(finite)):
        raise DataError(
            "a class label raster must hold integer codes; it holds fractional values "
            "(is it a continuous layer? use a regression task)"
        )
    return [int(c) for c in finite]


def encode_classes(
    values: np.ndarray, codes: Sequence[float], ignore_index: int = -1
) -> tuple[np.ndarray, int]:
    """Map raster codes to class ids ``0..K-1`` (int64); NaN and unknown codes -> ``ignore_index``.

    Returns the ids and the number of labelled pixels whose code is not in ``codes``.
    """
    v = np.asarray(values, dtype=np.float64)
    out = np.full(v.shape, ignore_index, dtype=np.int64)
    finite = np.isfinite(v)
    table = np.asarray(codes, dtype=np.float64)
    order = np.argsort(table)
    pos = np.searchsorted(table[order], v[finite])
    pos = np.clip(pos, 0, max(len(table) - 1, 0))
    hit = table[order][pos] == v[finite] if len(table) else np.zeros(pos.shape, dtype=bool)
    ids = np.where(hit, order[pos] if len(table) else 0, ignore_index)
    out[finite] = ids
    return out, int((~hit).sum())


def class_names(codes: Sequence[int], legend: Mapping[int, str] | None = None) -> list[str]:
    """Names for raster codes: the legend's where every code is in it, else ``class <code>``."""
    if legend and all(int(c) in legend for c in codes):
        return [f"{legend[int(c)]} ({int(c)})" for c in codes]
    return [f"class {int(c)}" for c in codes]


__all__ = ["NLCD_CLASSES", "align_label_raster", "chip_grid", "class_codes", "class_names", "encode_classes"]
