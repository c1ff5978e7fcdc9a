"""Labels as users have them (rasters, folders of raster tiles, vector files) aligned onto the chips.

Real chip stores (``hyperkd data prepare``) record for every chip the CRS and the affine
transform of its window. Labels rarely share that grid: NLCD and CDL are 30 m Albers
(EPSG:5070), EnMAP L2A products are UTM; gNATSGO rasters are 10 or 90 m; field surveys are
points and polygons in a GeoPackage. :func:`align_labels` brings any of them onto each chip's
own grid:

* **a raster** (any file rasterio opens) is *reprojected* with GDAL warp: class rasters with
  ``mode`` resampling (the most frequent source class inside each chip pixel; on an
  identical grid an exact copy, and unlike ``nearest`` it does not pick an arbitrary
  sub-pixel when the raster is finer than the chip), continuous rasters with ``average``
  (area-weighted mean; an exact copy on an identical grid);
* **a folder of rasters** (label tiles, ``*.tif``/``*.tiff``/``*.vrt``/``*.img``/``*.jp2``) is
  looked up per chip: every tile whose bounds meet the chip is reprojected as above, the
  first tile (in file-name order) to label a chip pixel wins;
* **a vector file** (GeoPackage, Shapefile, GeoJSON, FlatGeobuf; read with geopandas, which
  torchgeo already requires) is rasterised onto the chip grid with ``rasterio.features``:
  polygons label the pixels whose centre they contain, points (and lines) the pixel they
  fall in, points drawn last. The value is the attribute ``field`` (``--label-field``):
  numbers are codes or values; text becomes codes 1..K in name order, and the names become
  the class names.

The ignore value (``nodata``, ``--label-nodata``; default: the raster's own nodata) and chip
pixels that no label covers become "no label" (NaN here; ``ignore_index`` for classes after
:func:`encode_classes`), excluded from the loss and the metrics. :func:`background_warning`
says in one line when a code that looks like "no label" (0, or named so) covers most pixels
and is about to be trained as a class.

Class rasters carry codes (NLCD 11, 21, 41...), not the ``0..K-1`` ids a classifier
predicts: :func:`class_codes` lists the codes present, and :func:`encode_classes` maps
codes to ids (codes not in the list become ``ignore_index``, so a model evaluated on a
region with a class it never saw does not crash; the count is reported). Class names come
from a legend CSV (:func:`read_legend`), from the raster's category names (GDAL's
``.aux.xml`` sidecar, :func:`raster_legend`), or from the text of a vector field.
"""

from __future__ import annotations

import csv
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hyperkd.core.errors import DataError
from hyperkd.data.store import ChipStore

logger = logging.getLogger(__name__)

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

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
"""Files of a label folder that are read as label tiles."""

VECTOR_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".fgb")
"""Label files read as vector features (points, lines, polygons)."""

_BACKGROUND = re.compile(r"no.?label|unlabel|background|no.?data|unclassified|^none$|^void$", re.I)

_Grid = tuple[Any, Any]  # (rasterio CRS, Affine)


def chip_grid(store: ChipStore, index: int) -> _Grid:
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


def _output(n: int, s: int, cache: str | Path | None) -> np.ndarray:
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        return np.lib.format.open_memmap(cache, mode="w+", dtype=np.float32, shape=(n, s, s))
    return np.empty((n, s, s), dtype=np.float32)


def _fill_chips(
    store: ChipStore,
    indices: Sequence[int] | None,
    cache: str | Path | None,
    fill: Callable[[np.ndarray, Any, Any], None],
) -> np.ndarray:
    """``(n, S, S)`` float32 of NaN, each chip's slice filled by ``fill(dst, crs, transform)``."""
    idx = list(range(len(store))) if indices is None else list(indices)
    grids = [chip_grid(store, i) for i in idx]  # a store without georeferencing fails before any work
    out = _output(len(idx), store.chip_size, cache)
    for row, (crs, transform) in enumerate(grids):
        dst = np.full((store.chip_size, store.chip_size), np.nan, dtype=np.float32)
        fill(dst, crs, transform)
        out[row] = dst
    if cache is not None:
        out.flush()  # type: ignore[attr-defined]
    return out


def _open_raster(path: Path) -> Any:
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.windows import Window

    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"cannot read label raster {path}: {exc}") from None
    try:  # a truncated file opens (its header is intact) and then lacks its georeferencing
        src.read(1, window=Window(src.width - 1, src.height - 1, 1, 1))
    except rasterio.errors.RasterioError as exc:
        src.close()
        raise DataError(
            f"cannot read label raster {path} ({str(exc.__cause__ or exc).strip().rstrip('.')}); "
            "the file is truncated or corrupt"
        ) from None
    data_bands = [c for c in src.colorinterp[1:] if c != ColorInterp.alpha]
    if data_bands:
        kinds = ", ".join(c.name for c in src.colorinterp)
        src.close()
        raise DataError(
            f"label raster {path} has {len(data_bands) + 1} bands ({kinds}); labels are one band of class "
            "codes or values (a colour rendering of a map cannot be read back as codes): give that band alone"
        )
    if src.crs is None:
        src.close()
        raise DataError(f"label raster {path} has no CRS; it cannot be aligned to the chips")
    return src


def _reproject_into(
    src: Any, dst: np.ndarray, crs: Any, transform: Any, kind: str, nodata: float | None
) -> None:
    """Reproject band 1 of open raster ``src`` onto ``dst`` (NaN = no label), filling only NaN pixels."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    tmp = np.full(dst.shape, np.nan, dtype=np.float32)
    src_nodata = nodata if nodata is not None else src.nodata
    reproject(
        source=rasterio.band(src, 1),
        destination=tmp,
        src_transform=src.transform,
        src_crs=src.crs,
        src_nodata=src_nodata,
        dst_transform=transform,
        dst_crs=crs,
        dst_nodata=np.nan,
        resampling=Resampling.mode if kind == "class" else Resampling.average,
    )
    for value in {src.nodata, nodata} - {None}:
        if not np.isnan(value):  # type: ignore[arg-type]
            tmp[tmp == np.float32(value)] = np.nan
    empty = np.isnan(dst)
    dst[empty] = tmp[empty]


def _check_kind(kind: str) -> None:
    if kind not in ("class", "continuous"):
        raise DataError(f"label kind must be 'class' or 'continuous', got {kind!r}")


def align_label_raster(
    raster: str | Path,
    store: ChipStore,
    kind: str,
    indices: Sequence[int] | None = None,
    cache: str | Path | None = None,
    nodata: float | None = None,
) -> np.ndarray:
    """Reproject band 1 of ``raster`` onto chips of ``store``: ``(n, S, S)`` float32, NaN = no label.

    ``kind`` is ``"class"`` (mode resampling) or ``"continuous"`` (average). ``indices``
    selects chips (default: all, in order). With ``cache`` the result is a memory-mapped
    ``.npy`` file there (large stores need not fit in memory). ``nodata``: a value that
    means "no label", besides the raster's own nodata.
    """
    _check_kind(kind)
    path = Path(raster)
    if not path.exists():
        raise DataError(f"label raster {path} does not exist")
    with _open_raster(path) as src:
        return _fill_chips(
            store, indices, cache, lambda dst, crs, tf: _reproject_into(src, dst, crs, tf, kind, nodata)
        )


def label_tiles(folder: str | Path) -> list[Path]:
    """The label tiles of ``folder`` (files with a :data:`RASTER_SUFFIXES` suffix), in name order."""
    folder = Path(folder)
    tiles = sorted(p for p in folder.iterdir() if p.suffix.lower() in RASTER_SUFFIXES and p.is_file())
    if not tiles:
        raise DataError(
            f"label folder {folder} holds no raster tile ({', '.join(RASTER_SUFFIXES)}); "
            "pass a raster, a folder of label rasters or a vector file to --labels"
        )
    return tiles


def align_label_folder(
    folder: str | Path,
    store: ChipStore,
    kind: str,
    indices: Sequence[int] | None = None,
    cache: str | Path | None = None,
    nodata: float | None = None,
) -> np.ndarray:
    """Like :func:`align_label_raster` for a folder of label tiles: each chip is filled from the
    tiles whose bounds meet it (first tile in name order wins where tiles overlap)."""
    from rasterio.coords import disjoint_bounds
    from rasterio.transform import array_bounds
    from rasterio.warp import transform_bounds

    _check_kind(kind)
    index = []
    for path in label_tiles(folder):
        with _open_raster(path) as src:
            index.append((path, src.crs, tuple(src.bounds)))
    s = store.chip_size

    def fill(dst: np.ndarray, crs: Any, transform: Any) -> None:
        chip = array_bounds(s, s, transform)
        for path, tile_crs, bounds in index:
            if disjoint_bounds(transform_bounds(crs, tile_crs, *chip), bounds):
                continue
            with _open_raster(path) as src:
                _reproject_into(src, dst, crs, transform, kind, nodata)
            if not np.isnan(dst).any():
                break

    return _fill_chips(store, indices, cache, fill)


def _vector_field(gdf: Any, path: Path, field: str | None) -> str:
    columns = [c for c in gdf.columns if c != gdf.geometry.name]
    if field is not None:
        if field not in columns:
            raise DataError(
                f"vector labels {path} have no field {field!r} (fields: {', '.join(columns) or 'none'}); "
                "pass --label-field with one of them"
            )
        return field
    if len(columns) == 1:
        return str(columns[0])
    raise DataError(
        f"vector labels {path} have {len(columns)} fields ({', '.join(map(str, columns)) or 'none'}); "
        "pass --label-field NAME to say which holds the class code or value"
    )


def read_vector_labels(
    path: str | Path, field: str | None = None, legend: Mapping[int, str] | None = None
) -> tuple[Any, dict[int, str]]:
    """Features of a vector label file: ``(GeoDataFrame with float column 'value', legend)``.

    Text values become codes: a name in ``legend`` keeps its code, others get 1.. in name
    order after the legend's codes; the returned legend names every text code (empty for a
    numeric field). Features without geometry or value are dropped.
    """
    import geopandas as gpd

    path = Path(path)
    if not path.exists():
        raise DataError(f"vector labels {path} do not exist")
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # pyogrio raises its own DataSourceError / DataLayerError
        raise DataError(f"cannot read vector labels {path}: {str(exc).splitlines()[0]}") from None
    if gdf.crs is None:
        raise DataError(f"vector labels {path} have no CRS; they cannot be placed on the chips")
    name = _vector_field(gdf, path, field)
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty & gdf[name].notna()]
    values = gdf[name]
    names: dict[int, str] = {}
    if values.dtype.kind in "iufb":
        numeric = values.astype(np.float64)
    else:
        known = {str(v): int(k) for k, v in (legend or {}).items()}
        nxt = max(known.values(), default=0) + 1
        for text in sorted({str(v) for v in values}):
            if text not in known:
                known[text] = nxt
                nxt += 1
        names = {c: t for t, c in known.items() if t in set(map(str, values))}
        numeric = values.astype(str).map(known).astype(np.float64)
    out = gpd.GeoDataFrame({"value": numeric.to_numpy()}, geometry=gdf.geometry.to_numpy(), crs=gdf.crs)
    if out.empty:
        raise DataError(f"vector labels {path} have no feature with a geometry and a {name!r} value")
    # polygons first, then lines and points: a point survey drawn over a polygon layer wins
    area = out.geometry.geom_type.isin(["Polygon", "MultiPolygon"])
    return out.iloc[np.argsort(~area.to_numpy(), kind="stable")], names


def align_vector_labels(
    path: str | Path,
    store: ChipStore,
    kind: str,
    indices: Sequence[int] | None = None,
    cache: str | Path | None = None,
    nodata: float | None = None,
    field: str | None = None,
    legend: Mapping[int, str] | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Rasterise (polygons) and sample (points) a vector label file onto chips of ``store``.

    Returns the ``(n, S, S)`` float32 values (NaN = no label) and the legend of a text field.
    A polygon labels the chip pixels whose centre it contains; a point the pixel it falls in.
    """
    from rasterio.features import rasterize
    from rasterio.transform import array_bounds
    from shapely.geometry import box

    _check_kind(kind)
    features, names = read_vector_labels(path, field, legend)
    if nodata is not None:
        features = features[features["value"] != nodata]
    by_crs: dict[str, Any] = {}
    s = store.chip_size

    def fill(dst: np.ndarray, crs: Any, transform: Any) -> None:
        key = crs.to_string()
        if key not in by_crs:
            by_crs[key] = features.to_crs(crs)
        feats = by_crs[key]
        hits = feats.sindex.query(box(*array_bounds(s, s, transform)))
        if len(hits) == 0:
            return
        sub = feats.iloc[np.sort(hits)]
        dst[:] = rasterize(
            zip(sub.geometry, sub["value"], strict=True),
            out_shape=dst.shape,
            transform=transform,
            fill=np.nan,
            dtype="float32",
        )

    return _fill_chips(store, indices, cache, fill), names


def align_labels(
    source: str | Path,
    store: ChipStore,
    kind: str,
    indices: Sequence[int] | None = None,
    cache: str | Path | None = None,
    *,
    nodata: float | None = None,
    field: str | None = None,
    legend: Mapping[int, str] | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Labels from a raster, a folder of raster tiles or a vector file, on the chips of ``store``.

    Returns ``(values, legend)``: ``(n, S, S)`` float32 (NaN = no label) and the class
    names the source itself carries (a raster's category names, a vector field's text;
    empty if none). ``nodata`` is the ignore value (``--label-nodata``); ``field`` the
    attribute of a vector file (``--label-field``); ``legend`` the known code -> name table
    (text values of a vector field keep its codes).
    """
    path = Path(source)
    if not path.exists():
        raise DataError(
            f"labels {path} do not exist; pass a raster, a folder of label rasters or a vector file"
        )
    if path.is_dir():
        return align_label_folder(path, store, kind, indices, cache, nodata), {}
    if path.suffix.lower() in VECTOR_SUFFIXES:
        return align_vector_labels(path, store, kind, indices, cache, nodata, field, legend)
    if field is not None:
        raise DataError(f"--label-field {field!r} is for vector labels; {path} is read as a raster")
    return align_label_raster(path, store, kind, indices, cache, nodata), raster_legend(path)


def source_nodata(source: str | Path) -> float | None:
    """The nodata value a label raster (or the first tile of a label folder) declares, if any."""
    path = Path(source)
    if path.suffix.lower() in VECTOR_SUFFIXES:
        return None
    if path.is_dir():
        path = label_tiles(path)[0]
    with _open_raster(path) as src:
        return None if src.nodata is None else float(src.nodata)


def raster_legend(raster: str | Path) -> dict[int, str]:
    """Class names a raster carries beside it: a QGIS style (``<name>.qml``), or in GDAL's
    ``.aux.xml`` sidecar its category names (code = position) or a raster attribute table with
    a value column and a text column; empty if none."""
    qml = Path(raster).with_suffix(".qml")  # QGIS's default style, saved beside the layer
    if qml.exists():
        return _qml_legend(qml)[0]
    aux = Path(f"{raster}.aux.xml")
    if not aux.exists():
        return {}
    try:
        band = ET.parse(aux).getroot().find("PAMRasterBand")
    except ET.ParseError:
        logger.warning("%s is not valid XML; its class names are not used", aux)
        return {}
    if band is None:
        return {}
    cats = band.find("CategoryNames")
    if cats is not None:
        return {
            i: (c.text or "").strip()
            for i, c in enumerate(cats.findall("Category"))
            if (c.text or "").strip()
        }
    rat = band.find("GDALRasterAttributeTable")
    if rat is None:
        return {}
    fields = rat.findall("FieldDefn")
    # GDAL field types: 0 integer, 1 real, 2 string; usage 5 = "MinMax"/1 = "PixelCount"/2 = "Name"/0 = generic
    value_col = next(
        (i for i, f in enumerate(fields) if f.findtext("Type") == "0" and f.findtext("Usage") in ("0", "5")),
        None,
    )
    name_col = next((i for i, f in enumerate(fields) if f.findtext("Type") == "2"), None)
    if value_col is None or name_col is None:
        return {}
    out = {}
    for row in rat.findall("Row"):
        cells = [f.text or "" for f in row.findall("F")]
        out[int(float(cells[value_col]))] = cells[name_col].strip()
    return out


def _qml_legend(path: Path) -> tuple[dict[int, str], dict[int, str]]:
    """Classes of a QGIS style file: a paletted raster's ``paletteEntry``, a pseudocolour ramp's
    ``item`` or a categorised vector renderer's numeric ``category`` entries."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DataError(f"legend {path} is not a valid QGIS style file: {exc}") from None
    names: dict[int, str] = {}
    colours: dict[int, str] = {}
    entries = [*root.iter("paletteEntry"), *root.iter("item"), *root.iter("category")]
    for e in entries:
        try:
            code = float(e.get("value", ""))
        except ValueError:
            continue  # a text category: no code
        if code != round(code) or int(code) in names:
            continue
        names[int(code)] = e.get("label") or f"class {int(code)}"
        if e.get("color"):
            colours[int(code)] = str(e.get("color"))
    if not names:
        raise DataError(f"legend {path} holds no class with an integer value (paletted or categorised style)")
    return names, colours


def read_legend(path: str | Path) -> tuple[dict[int, str], dict[int, str]]:
    """A legend: ``(code -> name, code -> colour)`` from a CSV (``code,name[,colour]``, optional
    header) or a QGIS style file (``.qml``). Colours are kept as written (``#1f77b4``...).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"legend {path} does not exist")
    if path.suffix.lower() == ".qml":
        return _qml_legend(path)
    names: dict[int, str] = {}
    colours: dict[int, str] = {}
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    except UnicodeDecodeError as exc:
        raise DataError(
            f"legend {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as a UTF-8 CSV "
            "of 'code,name[,colour]' lines"
        ) from None
    for n, row in enumerate(rows, 1):
        row = [c.strip() for c in row]
        if not row or not any(row) or row[0].startswith("#"):
            continue
        try:
            code = float(row[0])
        except ValueError:
            if n == 1:
                continue  # a header line
            raise DataError(f"legend {path}, line {n}: code {row[0]!r} is not a number") from None
        if code != round(code) or len(row) < 2 or not row[1]:
            raise DataError(f"legend {path}, line {n}: expected 'code,name[,colour]' with an integer code")
        if int(code) in names:
            raise DataError(f"legend {path}, line {n}: code {int(code)} is listed twice")
        names[int(code)] = row[1]
        if len(row) > 2 and row[2]:
            colours[int(code)] = row[2]
    if not names:
        raise DataError(f"legend {path} lists no class (expected lines 'code,name[,colour]')")
    return names, colours


def background_warning(
    values: np.ndarray, legend: Mapping[int, str] | None = None, source: str | Path = "the labels"
) -> str | None:
    """A one-line warning when a code that looks like "no label" (0, or named like background)
    covers most labelled pixels and is about to be trained as a class; else ``None``."""
    v = np.asarray(values)
    finite = v[np.isfinite(v)]
    if not finite.size:
        return None
    codes, counts = np.unique(finite, return_counts=True)
    top = int(np.argmax(counts))
    share = counts[top] / finite.size
    code = codes[top]
    named = (legend or {}).get(int(code), "") if code == round(code) else ""
    if share <= 0.5 or not (code == 0 or _BACKGROUND.search(named)):
        return None
    what = f"code {code:g}" + (f" ({named})" if named else "")
    return (
        f"label {what} covers {share:.0%} of the labelled pixels of {source} and is trained as a class; "
        f"if it means 'no label', pass --label-nodata {code:g}"
    )


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


def class_names(codes: Sequence[int], *legends: Mapping[int, str] | None) -> list[str]:
    """Names for class codes: ``name (code)`` from the first legend that names the code, else
    ``class <code>``."""
    out = []
    for c in codes:
        name = next((lg[int(c)] for lg in legends if lg and int(c) in lg), None)
        out.append(f"{name} ({int(c)})" if name else f"class {int(c)}")
    return out


__all__ = [
    "NLCD_CLASSES",
    "RASTER_SUFFIXES",
    "VECTOR_SUFFIXES",
    "align_label_folder",
    "align_label_raster",
    "align_labels",
    "align_vector_labels",
    "background_warning",
    "chip_grid",
    "class_codes",
    "class_names",
    "encode_classes",
    "label_tiles",
    "raster_legend",
    "read_legend",
    "read_vector_labels",
    "source_nodata",
]
