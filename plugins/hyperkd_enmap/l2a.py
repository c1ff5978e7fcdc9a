"""EnMAP Level-2A product reader.

An L2A product is a folder (or a zip of that folder) of files sharing one product name::

    ENMAP01-____L2A-DT0000001049_20220612T105735Z_030_V010111_20230119T143357Z-METADATA.XML
    ENMAP01-____L2A-DT0000001049_20220612T105735Z_030_V010111_20230119T143357Z-SPECTRAL_IMAGE.TIF
    ENMAP01-____L2A-DT0000001049_...-QL_PIXELMASK.TIF            (defective pixels, one band per band)
    ENMAP01-____L2A-DT0000001049_...-QL_QUALITY_CLOUD.TIF        (and _CLOUDSHADOW, _HAZE, _CIRRUS, ...)

Cloud-optimised deliveries name the rasters ``...-SPECTRAL_IMAGE_COG.TIF`` (or ``.tiff``);
both are accepted. DLR's "no prefix" variant (``METADATA.XML`` + ``SPECTRAL_IMAGE.TIF``)
is accepted too; the product name then comes from the XML.

What the reader takes from where, and why:

* band table: ``specific/bandCharacterisation/bandID[@number]`` children
  ``wavelengthCenterOfBand``, ``FWHMOfBand``, ``GainOfBand``, ``OffsetOfBand``. Elements are
  matched by local name (namespaces and schema versions differ between the pre-launch test
  products, schema 00-02-00, and in-flight ones), never by position in the file. Centres
  shift between products and processor versions, so each product's own table is used;
* reflectance = ``DN * GainOfBand + OffsetOfBand`` per band (not a hard-coded 1e-4);
* no-data: the GeoTIFF's nodata tag when present (it is what the pixel writer declared),
  else ``specific/backgroundValue``, else the sensor default (-32768 in-flight). A pixel
  holding the no-data value in *any* read band is invalid;
* detectors: ``specific/{vnir,swir}ProductQuality/expectedChannelsList`` says which band is
  VNIR and which SWIR (they interleave between about 900 and 1000 nm);
* ``QL_PIXELMASK`` (one layer per spectral band, 1 = defective) makes a pixel invalid where
  a read band is defective; ``QL_QUALITY_CLOUD`` / ``_CLOUDSHADOW`` (1 = flagged) form the
  cloud mask by default (``cloud_layers`` picks others: ``HAZE``, ``SNOW``, ``CIRRUS``
  medium/thick).

Band selection is the sensor's: a 224-band product becomes sensor ``enmap`` whose default
selection is torchgeo's 202 bands; a 218-band product (DLR's pre-launch format, the band
count of the HyperKD paper) becomes ``enmap-218``, which has no default selection, so all
218 bands are kept, as in the paper (its band numbers do not line up with the 224-band
table, so the 202-band selection cannot be transferred by index). Any band count reads; a
table the known selections do not fit keeps all bands.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from hyperkd.core.errors import DataError
from hyperkd.core.registry import register
from hyperkd.core.sensors import Sensor, get_sensor
from hyperkd.data.products import ProductBase, ProductFormat, ProductWindow
from hyperkd_enmap.metadata import PRODUCT_PATTERN, PRODUCT_RE, parse_l2a_metadata

FILE_RE = re.compile(
    rf"^(?:(?P<product>{PRODUCT_PATTERN})-)?"
    r"(?P<key>METADATA|HISTORY|SPECTRAL_IMAGE|QL_PIXELMASK|QL_QUALITY_[A-Z]+|QL_VNIR|QL_SWIR)"
    r"(?P<cog>_COG)?\.(?P<ext>xml|tif|tiff)$",
    re.IGNORECASE,
)
ZIP_RE = re.compile(rf"^{PRODUCT_PATTERN}(?:\.[A-Za-z0-9_-]+)*\.zip$", re.IGNORECASE)

METADATA = "METADATA"
SPECTRAL_IMAGE = "SPECTRAL_IMAGE"
PIXELMASK = "QL_PIXELMASK"

CLOUD_FLAGS: dict[str, tuple[int, ...]] = {
    "CLOUD": (1,),
    "CLOUDSHADOW": (1,),
    "HAZE": (1,),
    "SNOW": (1,),
    "CIRRUS": (2, 3),  # 1 thin, 2 medium, 3 thick
}
"""Quality layer (``QL_QUALITY_<name>``) -> values that flag a pixel (DLR L2A flag coding)."""
DEFAULT_CLOUD_LAYERS = ("CLOUD", "CLOUDSHADOW")
MASK_BACKGROUND = 255
"""Value of quality-layer pixels outside the scene."""
DN_TYPES = ("int16", "uint16", "int32")
"""Pixel types a SPECTRAL_IMAGE may hold: DLR delivers int16 (reflectance x 1e4 with the XML's
gains); 16/32-bit copies keep every value. 8-bit (gain 1e-4 caps reflectance at 0.0255) or
float (already scaled, the gain would apply twice) means the file was converted."""


def pixelmask_defective(pm: np.ndarray) -> np.ndarray:
    """``(L, h, w)`` ``QL_PIXELMASK`` values -> ``(h, w)`` True where a band marks the pixel defective.

    Bit 0 flags a defective pixel; the background value (outside the scene) is not a defect.
    One decoding for the product reader and the torchgeo dataset.
    """
    return ((pm & 1).astype(bool) & (pm != MASK_BACKGROUND)).any(axis=0)


def quality_flagged(layer: str, q: np.ndarray) -> np.ndarray:
    """True where the ``QL_QUALITY_<layer>`` values ``q`` flag a pixel (see :data:`CLOUD_FLAGS`)."""
    return np.isin(q, CLOUD_FLAGS[layer.upper()])


_LAYOUT_HINT = (
    "an EnMAP L2A product is a folder or .ZIP holding ENMAP01-____L2A-DT<id>_<start>Z_<tile>_V<ver>_"
    "<processed>Z-METADATA.XML and ...-SPECTRAL_IMAGE.TIF (or _COG.TIF)"
)


# ---------------------------------------------------------------------------------------
# locating the files of a product
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class L2AFiles:
    """Where the files of one L2A product are.

    ``image`` and ``masks`` are paths rasterio opens (``/vsizip/...`` inside a zip);
    ``metadata`` is a local path or a zip member name. ``display(...)`` gives the names
    used in error messages (``archive.zip!member`` inside a zip).
    """

    container: Path
    product: str | None
    metadata: str
    image: str
    masks: dict[str, str] = field(default_factory=dict)
    zip_path: Path | None = None

    def read_metadata(self) -> bytes:
        """The METADATA.XML bytes."""
        try:
            if self.zip_path is not None:
                with zipfile.ZipFile(self.zip_path) as zf:
                    return zf.read(self.metadata)
            return Path(self.metadata).read_bytes()
        except (OSError, zipfile.BadZipFile, KeyError) as exc:
            raise DataError(f"{self.metadata_display}: cannot read the METADATA.XML ({exc})") from None

    @property
    def metadata_display(self) -> str:
        return f"{self.zip_path}!{self.metadata}" if self.zip_path is not None else self.metadata

    @property
    def image_display(self) -> str:
        return _display(self.image)


def _display(gdal_path: str) -> str:
    if gdal_path.startswith("/vsizip/"):
        inner = gdal_path[len("/vsizip/") :]
        idx = inner.lower().find(".zip/")
        if idx >= 0:
            return f"{inner[: idx + 4]}!{inner[idx + 5 :]}"
    return gdal_path


def _classify(name: str) -> tuple[str | None, str, bool] | None:
    """``(product or None, KEY, is_cog)`` for an EnMAP file name, or None for other files."""
    m = FILE_RE.match(name)
    if m is None:
        return None
    key = m.group("key").upper()
    ext = m.group("ext").lower()
    if (key in (METADATA, "HISTORY")) != (ext == "xml"):
        return None
    return m.group("product"), key, bool(m.group("cog"))


def _group_files(names: Sequence[str]) -> dict[tuple[str, str | None], dict[str, tuple[str, bool]]]:
    """Group (folder, product) -> KEY -> (name, is_cog) for the EnMAP files among ``names``."""
    groups: dict[tuple[str, str | None], dict[str, tuple[str, bool]]] = {}
    for name in names:
        folder, _, base = name.rpartition("/")
        hit = _classify(base)
        if hit is None:
            continue
        product, key, cog = hit
        files = groups.setdefault((folder, product), {})
        if key not in files or (cog and not files[key][1]):  # prefer the cloud-optimised copy
            files[key] = (name, cog)
    return groups


def locate_l2a(path: str | Path) -> L2AFiles:
    """Find the METADATA.XML, spectral image and quality layers of the product at ``path``.

    ``path`` is a product folder, a product zip, or one of the product's files.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    zip_path: Path | None = None
    if path.is_file():
        if path.suffix.lower() == ".zip":
            zip_path = path
            try:
                with zipfile.ZipFile(path) as zf:
                    names = [i.filename for i in zf.infolist() if not i.is_dir()]
            except (OSError, zipfile.BadZipFile) as exc:
                raise DataError(
                    f"{path}: not a readable zip archive ({exc}); re-download the product"
                ) from None
        elif _classify(path.name) is not None:
            return locate_l2a(path.parent)
        else:
            raise DataError(f"{path}: unexpected file name; {_LAYOUT_HINT}")
    else:
        names = sorted(p.name for p in path.iterdir() if p.is_file())
    groups = {k: v for k, v in _group_files(names).items() if METADATA in v or SPECTRAL_IMAGE in v}
    if not groups:
        listing = ", ".join(n.rpartition("/")[2] for n in names[:6]) or "no files"
        more = f" (and {len(names) - 6} more)" if len(names) > 6 else ""
        raise DataError(
            f"{path}: no EnMAP METADATA.XML or SPECTRAL_IMAGE found (has {listing}{more}); {_LAYOUT_HINT}"
        )
    if len(groups) > 1:
        names_ = sorted(str(p or f"{f}/(no prefix)") for f, p in groups)
        raise DataError(
            f"{path}: holds files of several products ({', '.join(names_)}); give each product folder separately"
        )
    (folder, product), files = next(iter(groups.items()))
    if product is not None:
        level = PRODUCT_RE.match(product).group("level")  # type: ignore[union-attr]
        if level.upper() != "L2A":
            raise DataError(
                f"{path}: {product} is a {level} product; hyperkd reads L2A surface reflectance products"
            )
    where = f"{path}!{folder}" if zip_path is not None and folder else str(path / folder if folder else path)
    if METADATA not in files:
        xml = f"{product}-METADATA.XML" if product else "METADATA.XML"
        raise DataError(
            f"{where}: has a SPECTRAL_IMAGE but no {xml} (it holds the band "
            "table, gains and offsets); copy it from the delivery, or pass --reader raster to read the image "
            "alone with its own wavelength tags"
        )
    if SPECTRAL_IMAGE not in files:
        other = sorted(
            n for n in names if n.rpartition("/")[0] == folder and _classify(n.rpartition("/")[2]) is None
        )
        hint = (
            f" (unexpected file names here: {', '.join(n.rpartition('/')[2] for n in other[:5])})"
            if other
            else ""
        )
        raise DataError(f"{where}: has a METADATA.XML but no ...-SPECTRAL_IMAGE.TIF{hint}; {_LAYOUT_HINT}")

    def gdal_path(name: str) -> str:
        if zip_path is not None:
            return f"/vsizip/{zip_path.resolve()}/{name}"
        return str(path / name)

    masks = {
        k: gdal_path(v[0])
        for k, v in files.items()
        if k.startswith("QL_") and k not in ("QL_VNIR", "QL_SWIR")
    }
    return L2AFiles(
        container=path,
        product=product,
        metadata=files[METADATA][0] if zip_path is not None else str(path / files[METADATA][0]),
        image=gdal_path(files[SPECTRAL_IMAGE][0]),
        masks=masks,
        zip_path=zip_path,
    )


def find_l2a_products(path: str | Path) -> list[Path]:
    """Product folders and zips at or under ``path`` (sorted); ``[]`` when there are none.

    A product's own file stands for its folder. Other file names are an error, since the
    user named them explicitly.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".zip":
            return [path]
        if _classify(path.name) is not None:
            return [path.parent]
        raise DataError(f"{path}: unexpected file name; {_LAYOUT_HINT}")
    if any(_is_product_file(p) for p in path.iterdir() if p.is_file()):
        return [path]
    found: set[Path] = set()
    for p in path.rglob("*"):
        if p.is_file() and _is_product_file(p):
            found.add(p.parent)
        elif p.is_file() and ZIP_RE.match(p.name):
            found.add(p)
    return sorted(found)


def _is_product_file(p: Path) -> bool:
    """A METADATA.XML or a SPECTRAL_IMAGE: either makes its folder a product (one without
    the other is then named by :func:`locate_l2a`, not passed to another reader)."""
    hit = _classify(p.name)
    return hit is not None and hit[1] in (METADATA, SPECTRAL_IMAGE)


def _base_sensor(num_bands: int) -> Sensor:
    """The registered sensor a product with ``num_bands`` bands is a variant of."""
    return get_sensor("enmap-218" if num_bands == 218 else "enmap", selection="all")


class L2AProduct(ProductBase):
    """An opened EnMAP L2A product: band table from its XML, windowed reflectance reads.

    Opening validates names, XML and band counts; :meth:`check` additionally reads the last
    pixel of the image and masks to catch truncated files. Every problem is a
    :class:`~hyperkd.core.errors.DataError` naming the file.

    ``cloud_layers`` names the ``QL_QUALITY_*`` layers that form the cloud mask (see
    :data:`CLOUD_FLAGS`); ``use_pixelmask`` makes ``QL_PIXELMASK`` defective pixels invalid.
    """

    format_name = "enmap-l2a"

    def __init__(
        self,
        path: str | Path,
        *,
        cloud_layers: Sequence[str] = DEFAULT_CLOUD_LAYERS,
        use_pixelmask: bool = True,
    ) -> None:
        self.path = Path(path)
        unknown = [c for c in cloud_layers if c.upper() not in CLOUD_FLAGS]
        if unknown:
            raise DataError(f"unknown cloud layer(s) {unknown}; choose from {', '.join(CLOUD_FLAGS)}")
        self.files = locate_l2a(self.path)
        self.meta = parse_l2a_metadata(self.files.read_metadata(), self.files.metadata_display)
        if self.files.product and self.meta.product_name and self.meta.product_name != self.files.product:
            raise DataError(
                f"{self.files.metadata_display}: describes product {self.meta.product_name}, but its file "
                f"name says {self.files.product}; the folder mixes files of two products"
            )
        self.name: str = self.files.product or self.meta.product_name or self.path.name.split(".")[0]
        self.warnings: list[str] = []
        self._masks: dict[str, Any] = {}
        self._src = self._open_raster(self.files.image, "spectral image")
        try:
            self._init_from_image()
        except BaseException:
            self.close()
            raise
        self.cloud_layers = tuple(
            c.upper() for c in cloud_layers if f"QL_QUALITY_{c.upper()}" in self.files.masks
        )
        self.use_pixelmask = use_pixelmask and PIXELMASK in self.files.masks

    # -- opening --------------------------------------------------------------------------
    @staticmethod
    def _open_raster(gdal_path: str, what: str) -> Any:
        try:
            return rasterio.open(gdal_path)
        except RasterioError as exc:
            raise DataError(
                f"{_display(gdal_path)}: cannot open the {what} ({_cause(exc)}); the file is truncated, "
                "empty or not a GeoTIFF — re-download the product"
            ) from None

    def _init_from_image(self) -> None:
        src, meta = self._src, self.meta
        if src.count != meta.num_bands:
            raise DataError(
                f"{self.files.image_display}: the image has {src.count} bands but its METADATA.XML describes "
                f"{meta.num_bands}; the two files belong to different products or one is damaged"
            )
        if src.dtypes[0] not in DN_TYPES:
            cap = ""
            if np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
                top = np.iinfo(src.dtypes[0]).max * max(meta.gains) + max(meta.offsets)
                cap = f" (with its gains, reflectance could not exceed {top:.4g})" if top < 1.0 else ""
            raise DataError(
                f"{self.files.image_display}: pixels are {src.dtypes[0]}{cap}, but L2A images hold int16 "
                "digital numbers (reflectance = DN * gain + offset); was this file converted? Use the "
                "delivered SPECTRAL_IMAGE"
            )
        base = _base_sensor(meta.num_bands)
        tif_nodata, xml_nodata = src.nodata, meta.background
        if tif_nodata is not None:
            nodata, self.nodata_source = float(tif_nodata), "geotiff"
            if xml_nodata is not None and float(xml_nodata) != float(tif_nodata):
                self.warnings.append(
                    f"GeoTIFF nodata {tif_nodata:g} differs from XML backgroundValue {xml_nodata:g}; using {tif_nodata:g}"
                )
        elif xml_nodata is not None:
            nodata, self.nodata_source = float(xml_nodata), "xml"
        else:
            nodata, self.nodata_source = base.nodata, "sensor default"  # type: ignore[assignment]
        self.nodata: float | None = nodata
        table = base.with_band_table(
            meta.centers_nm,
            meta.fwhms_nm,
            gains=meta.gains,
            offsets=meta.offsets,
            names=[f"B{n}" for n in meta.band_numbers],
            detectors=meta.detectors,
            source=f"{self.name} METADATA.XML",
        )
        self.sensor: Sensor = replace(table, nodata=nodata)
        self.width: int = src.width
        self.height: int = src.height
        self.crs = src.crs
        self.transform = src.transform
        if self.crs is None:
            self.warnings.append(
                "no CRS: read on its pixel grid (delivered L2A images have one; was it converted?); "
                "maps made from it cannot be georeferenced"
            )
        self._gains = np.asarray(meta.gains, dtype=np.float64)
        self._offsets = np.asarray(meta.offsets, dtype=np.float64)

    def _mask(self, key: str) -> Any:
        if key not in self._masks:
            src = self._open_raster(self.files.masks[key], f"{key} quality layer")
            if (src.width, src.height) != (self.width, self.height):
                src.close()
                raise DataError(
                    f"{_display(self.files.masks[key])}: {src.width}x{src.height} px, but the spectral image "
                    f"is {self.width}x{self.height}; the quality layer belongs to another product"
                )
            if key == PIXELMASK and src.count not in (1, self.sensor.num_bands):
                src.close()
                raise DataError(
                    f"{_display(self.files.masks[key])}: {src.count} layers, expected 1 or one per spectral "
                    f"band ({self.sensor.num_bands})"
                )
            self._masks[key] = src
        return self._masks[key]

    # -- Product protocol -------------------------------------------------------------------
    def check(self) -> None:
        """Read the last pixel of the image (first and last band) and of each used mask.

        A truncated GeoTIFF opens fine (its header is intact) but fails here, before
        anything is written. Corruption in the middle of a file surfaces in :meth:`read`.
        """
        corner = Window(self.width - 1, self.height - 1, 1, 1)
        _read(self._src, [1, self._src.count], corner, self.files.image)
        keys = ([PIXELMASK] if self.use_pixelmask else []) + [f"QL_QUALITY_{c}" for c in self.cloud_layers]
        for key in keys:
            src = self._mask(key)
            _read(src, [1, src.count], corner, self.files.masks[key])

    def read(self, window: Window | None = None, bands: Sequence[str] | None = None) -> ProductWindow:
        """Surface reflectance and masks of ``bands`` (default: all) in ``window`` (default: all)."""
        names = tuple(bands) if bands is not None else tuple(self.sensor.band_names)
        idx = np.asarray([self.sensor.band_index(n) for n in names], dtype=np.int64)
        if window is None:
            window = Window(0, 0, self.width, self.height)
        col, row, w, h = (int(window.col_off), int(window.row_off), int(window.width), int(window.height))
        if col < 0 or row < 0 or w <= 0 or h <= 0 or col + w > self.width or row + h > self.height:
            raise ValueError(f"window {window} lies outside {self.name} ({self.width}x{self.height} px)")
        dn = _read(self._src, (idx + 1).tolist(), window, self.files.image)
        missing = dn == self.nodata if self.nodata is not None else np.zeros(dn.shape, dtype=bool)
        nodata = missing.any(axis=0)
        image = (dn * self._gains[idx, None, None] + self._offsets[idx, None, None]).astype(np.float32)
        image[missing] = 0.0
        if self.use_pixelmask:
            src = self._mask(PIXELMASK)
            layers = (idx + 1).tolist() if src.count > 1 else [1]
            pm = _read(src, layers, window, self.files.masks[PIXELMASK])
            nodata |= pixelmask_defective(pm)
        cloud: np.ndarray | None = None
        if self.cloud_layers:
            cloud = np.zeros((h, w), dtype=bool)
            for layer in self.cloud_layers:
                key = f"QL_QUALITY_{layer}"
                q = _read(self._mask(key), [1], window, self.files.masks[key])[0]
                cloud |= quality_flagged(layer, q)
        valid = ~nodata if cloud is None else ~nodata & ~cloud
        return ProductWindow(
            image=image,
            valid=valid,
            nodata=nodata,
            cloud=cloud,
            window=Window(col, row, w, h),
            transform=rasterio.windows.transform(window, self.transform),
            crs=self.crs,
            bands=names,
        )

    def info(self) -> dict[str, Any]:
        """Provenance of this product for manifests: name, files, schema, nodata, masks."""
        return {
            "format": self.format_name,
            "product": self.name,
            "path": str(self.path),
            "image": self.files.image_display,
            "schema_version": self.meta.schema_version,
            "mission_phase": self.meta.mission_phase,
            "num_bands": self.sensor.num_bands,
            "sensor": self.sensor.name,
            "width": self.width,
            "height": self.height,
            "crs": self.crs.to_string() if self.crs else None,
            "nodata": self.nodata,
            "nodata_source": self.nodata_source,
            "pixelmask": self.use_pixelmask,
            "cloud_layers": list(self.cloud_layers),
            "warnings": list(self.warnings),
        }

    def close(self) -> None:
        """Close the image and any opened quality layers."""
        for src in [self._src, *self._masks.values()]:
            if src is not None:
                src.close()
        self._masks = {}


def _cause(exc: BaseException) -> str:
    """The most specific message of a rasterio error chain."""
    parts = [str(e) for e in (exc.__cause__, exc.__context__) if e is not None and str(e)]
    msg = parts[0] if parts else str(exc)
    return msg.strip().rstrip(".")


def _read(src: Any, indexes: list[int], window: Window, gdal_path: str) -> np.ndarray:
    try:
        return src.read(indexes, window=window)
    except RasterioError as exc:
        raise DataError(
            f"{_display(gdal_path)}: cannot read pixels at column {int(window.col_off)}, row "
            f"{int(window.row_off)} ({_cause(exc)}); the file is truncated or corrupt — re-download the product"
        ) from None


def open_l2a(path: str | Path, **kwargs: Any) -> L2AProduct:
    """Open the EnMAP L2A product at ``path`` (folder, zip, or one of its files)."""
    return L2AProduct(path, **kwargs)


# The ``reader`` registry entry ``enmap-l2a`` (declared in hyperkd_enmap/__init__.py) points here.
FORMAT = ProductFormat(
    name="enmap-l2a",
    sensors=("enmap", "enmap-218"),
    open=open_l2a,
    find=find_l2a_products,
    description="EnMAP L2A product folders or zips with ...-SPECTRAL_IMAGE.TIF and ...-METADATA.XML",
)


@register("dataset", "enmap-l2a")
def enmap_l2a(paths: str | Path | Sequence[str | Path], **kwargs: Any) -> Any:
    """EnMAP L2A products as a torchgeo GeoDataset (reflectance + valid mask) for torchgeo samplers."""
    from hyperkd_enmap.torchgeo_l2a import EnMAPL2A

    return EnMAPL2A(paths, **kwargs)
