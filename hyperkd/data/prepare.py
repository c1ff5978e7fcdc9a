"""Tile sensor products into a chip store — ``hyperkd data prepare`` as a Python function.

::

    from hyperkd.data.prepare import prepare
    store = prepare(["products/"], "stores/enmap-224", sensor="enmap", size=224)
    print(store.summary())

What happens, in order, and why:

1. the ``dataset`` registry names the product reader for ``sensor``
   (:func:`hyperkd.data.products.product_format_for`), which lists the products under each
   input (a product, or a folder of them);
2. *pre-flight*: every product is opened and checked (names, metadata, band counts, a
   truncated image, band tables that disagree) **before anything is written**, so a bad
   input costs nothing;
3. each product is cut into ``size`` x ``size`` windows every ``stride`` pixels (plus a last
   row/column flush with the far edge, so the whole product is covered); a window whose
   no-data share exceeds ``max_nodata``, or whose cloudy share of data pixels exceeds
   ``max_cloud``, is dropped; kept chips go to the store as reflectance with their valid
   mask and provenance (product, window, CRS, transform);
4. a product is marked done only when all its chips are on disk, so an interrupted run
   resumes (``resume=True``) at the first unfinished product and the result equals an
   uninterrupted run; a product that fails half-way (corrupt pixels, no data at all) is
   rolled back, and a store that would hold nothing is removed;
5. closing the store computes per-band mean/std over valid pixels in one streaming pass.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rasterio.windows import Window

import hyperkd
from hyperkd.core.errors import DataError, SensorError
from hyperkd.core.progress import progress_enabled, rich_progress
from hyperkd.core.sensors import BAND_TOLERANCE, GOOD_BANDS, Sensor
from hyperkd.data.products import Product, ProductFormat, find_products, product_format_for, product_formats
from hyperkd.data.store import MANIFEST, ChipStore, ChipStoreWriter, nbytes_per_chip

logger = logging.getLogger(__name__)

SHARD_BYTES = 256 << 20
"""Target shard size: big enough for few files, small enough to buffer in memory."""
CENTER_TOLERANCE = BAND_TOLERANCE
"""Products may share a store when each band centre differs by at most this share of its FWHM."""
RASTER_READER = "raster"
"""The reader of plain GeoTIFF/ENVI files, used when no sensor-specific reader finds the inputs."""

_RANGE_RE = re.compile(r"^([A-Za-z_]*)(\d+)-(?:[A-Za-z_]*)(\d+)$")


def parse_selection(text: str | Sequence[str] | None) -> str | list[str] | None:
    """A ``--selection`` value: ``default``, ``all``, a selection name, or band names.

    Band names are comma-separated and may be inclusive ranges: ``B1-B126,B142-160``.
    """
    if text is None or not isinstance(text, str):
        return None if text is None else list(text)
    text = text.strip()
    if "," not in text and not _RANGE_RE.match(text):
        return text
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        m = _RANGE_RE.match(part)
        if m:
            prefix, lo, hi = m.group(1) or "B", int(m.group(2)), int(m.group(3))
            if hi < lo:
                raise DataError(f"band range {part!r} runs backwards")
            names.extend(f"{prefix}{i}" for i in range(lo, hi + 1))
        else:
            names.append(part)
    return names


def chip_windows(width: int, height: int, size: int, stride: int) -> list[Window]:
    """Row-major ``size`` x ``size`` windows every ``stride`` px, the last ones flush with the edges.

    A product narrower or lower than ``size`` gives no window.
    """
    if size <= 0 or stride <= 0:
        raise DataError(f"chip size and stride must be positive, got size {size}, stride {stride}")
    if width < size or height < size:
        return []

    def starts(n: int) -> list[int]:
        s = list(range(0, n - size + 1, stride))
        if s[-1] != n - size:
            s.append(n - size)
        return s

    return [Window(c, r, size, size) for r in starts(height) for c in starts(width)]


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    """A rich progress bar over chip windows (a no-op object when disabled)."""
    if not enabled:

        class _Null:
            def add_task(self, *a: Any, **k: Any) -> int:
                return 0

            def update(self, *a: Any, **k: Any) -> None:
                return None

        yield _Null()
        return
    with rich_progress("[bold]{task.description}", "windows, {task.fields[kept]} chips kept") as bar:
        yield bar


def short_product_name(name: str) -> str:
    """A product name shortened for tables and progress bars (datatake, start time, tile)."""
    m = re.search(r"DT\d{10}_\d{8}T\d{6}Z_\d{3}", name)
    return m.group(0) if m else name[:40]


def _check_compatible(products: Sequence[Product], reference: Sensor) -> dict[str, float]:
    """Each product's largest centre shift (nm) against ``reference``; DataError if too large."""
    shifts: dict[str, float] = {}
    for p in products:
        try:
            bands = [p.sensor.bands[p.sensor.band_index(b.name)] for b in reference.bands]
        except hyperkd.HyperKDError:
            raise DataError(
                f"{p.path}: has {p.sensor.num_bands} bands ({p.sensor.name}); it lacks bands of the store's "
                f"table ({reference.num_bands} bands, {reference.name}, selection {reference.selection}). "
                "Products with different band tables go into separate stores"
            ) from None
        worst = 0.0
        for ref, own in zip(reference.bands, bands, strict=True):
            shift = abs(own.center_nm - ref.center_nm)
            if shift > CENTER_TOLERANCE * min(own.fwhm_nm, ref.fwhm_nm):
                raise DataError(
                    f"{p.path}: band {own.name} is centred at {own.center_nm:g} nm, the store's table at "
                    f"{ref.center_nm:g} nm (FWHM {ref.fwhm_nm:g}); products with different band tables go "
                    "into separate stores"
                )
            worst = max(worst, shift)
        shifts[p.name] = round(worst, 4)
    return shifts


def choose_format(
    sensor: str | None, reader: str | None, inputs: Sequence[str | Path]
) -> tuple[ProductFormat, dict[str, Any]]:
    """The reader for ``inputs`` and the options it needs.

    ``reader`` names one. Otherwise a sensor-specific reader (for ``sensor``, or any when
    ``sensor`` is None) that finds products in every input is used (EnMAP L2A folders), and
    the ``raster`` reader (GeoTIFF/ENVI with their own band tables) takes everything else,
    forced to ``sensor`` when one is given.
    """
    forced = {"sensor": sensor} if sensor is not None else {}
    if reader is not None:
        fmt = product_format_for(sensor or "*", reader)
        return fmt, forced if "*" in fmt.sensors else {}
    specific = [
        f for f in product_formats() if "*" not in f.sensors and (sensor is None or sensor in f.sensors)
    ]
    fitting = []
    for f in specific:
        try:
            if all(f.find(Path(i).expanduser()) for i in inputs):
                fitting.append(f)
        except hyperkd.HyperKDError:
            continue
    if len(fitting) > 1:
        raise DataError(
            f"several readers read these inputs ({', '.join(f.name for f in fitting)}); choose one with --reader"
        )
    if fitting:
        return fitting[0], {}
    return product_format_for(sensor or "*", RASTER_READER), forced


def drop_unusable(products: Sequence[Product], selected: Sensor) -> tuple[Sensor, dict[str, dict[str, Any]]]:
    """``selected`` without the bands any product calls unusable (``bbl = 0``, no data), and those bands.

    Readers say so through an optional ``unusable_bands`` mapping (band name -> reason);
    one store needs one band table, so a band unusable in any product is dropped from all.
    """
    dropped: dict[str, dict[str, Any]] = {}
    for p in products:
        for name, why in (getattr(p, "unusable_bands", None) or {}).items():
            if name in selected.band_names:
                band = selected.bands[selected.band_index(name)]
                entry = dropped.setdefault(name, {"center_nm": band.center_nm, "reasons": [], "products": 0})
                entry["products"] += 1
                if why not in entry["reasons"]:
                    entry["reasons"].append(why)
    if not dropped:
        return selected, {}
    kept = [n for n in selected.band_names if n not in dropped]
    if not kept:
        raise DataError(
            f"{products[0].path}: every band is unusable (bbl = 0 or no data); nothing to prepare"
        )
    label = selected.selection if selected.selection != "all" else "usable"
    return replace(selected.select(kept), selection=label), dropped


def dropped_summary(dropped: Mapping[str, Mapping[str, Any]]) -> str:
    """One line naming the dropped bands, their wavelengths and why."""
    parts = [f"{n} ({d['center_nm']:g} nm: {'; '.join(d['reasons'])})" for n, d in dropped.items()]
    return f"dropped {len(dropped)} unusable band(s): {', '.join(parts)}; --selection all keeps them"


def _stored_sensor(out: Path, selected: Sensor) -> Sensor:
    """On resume, the band table the store was started with (so argument order cannot change it)."""
    try:
        old = json.loads((out / MANIFEST).read_text())
        stored = Sensor.from_dict(old["sensor"])
    except (OSError, ValueError, KeyError, hyperkd.HyperKDError) as exc:
        raise DataError(f"{out / MANIFEST}: cannot read the unfinished store's manifest ({exc})") from None
    if stored.band_names != selected.band_names:
        raise DataError(
            f"cannot resume {out}: it was started with {stored.num_bands} bands (selection {stored.selection}), "
            f"this run selects {selected.num_bands} ({selected.selection}); use the same --selection or a new --out"
        )
    return stored


def _remove_store(out: Path, created_dir: bool) -> None:
    """Delete what this run created (the store was new and holds nothing finished)."""
    if created_dir:
        shutil.rmtree(out, ignore_errors=True)
        return
    for path in [out / MANIFEST, out / "index.npy", *out.glob("shard-*.*")]:
        path.unlink(missing_ok=True)


def prepare(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    sensor: str | None = None,
    size: int = 224,
    stride: int | None = None,
    max_nodata: float = 0.1,
    max_cloud: float = 0.1,
    selection: str | Sequence[str] | None = "default",
    resume: bool = False,
    shard_size: int | None = None,
    reader: str | None = None,
    reader_options: Mapping[str, Any] | None = None,
    progress: bool = True,
    allow_no_crs: bool = False,
) -> ChipStore:
    """Tile the products in ``inputs`` into a chip store at ``out``; returns the sealed store.

    Parameters
    ----------
    inputs: products (folders, zips, files the reader accepts) or folders of products.
    out: the store folder; it must not hold a store unless ``resume``.
    sensor: which sensor's reader to use (``enmap`` reads 224- and 218-band L2A products); for
        GeoTIFF/ENVI files (the ``raster`` reader) the sensor their bands must match. None:
        L2A products are read as such, other files by the ``raster`` reader with the sensor
        matched from their wavelengths (or made from their band table).
    size, stride: chip size and step in pixels (``stride`` defaults to ``size``: no overlap).
    max_nodata: drop a chip when more than this share of its pixels has no data.
    max_cloud: drop a chip when more than this share of its data pixels is cloudy
        (products without cloud layers count as cloud-free).
    selection: band selection: ``"default"`` (the sensor's), ``"all"``, a selection name, or
        band names (``parse_selection`` turns ``"B1-B126,B142-B160"`` into names).
    resume: continue an unfinished store; finished products are skipped.
    shard_size: chips per shard (default: about 256 MB per shard).
    reader: the product reader's name (``raster``, ``enmap-l2a``); default: chosen from the inputs.
    reader_options: keyword arguments for the reader's ``open`` (EnMAP: ``cloud_layers``,
        ``use_pixelmask``; raster: ``reflectance_scale_factor``).
    progress: show a progress bar (also off when ``HYPERKD_DISABLE_PROGRESS=1``).
    allow_no_crs: prepare products without a CRS on their pixel grid (with a warning);
        otherwise such a product is refused, since its chips could never be matched to label
        rasters or vectors, nor its maps placed on the ground.
    """
    if not 0.0 <= max_nodata <= 1.0 or not 0.0 <= max_cloud <= 1.0:
        raise DataError(
            f"--max-nodata and --max-cloud are fractions in [0, 1], got {max_nodata}, {max_cloud}"
        )
    stride = stride or size
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: --out must be a folder for the chip store, but it is a file")
    fmt, options = choose_format(sensor, reader, inputs)
    options.update(reader_options or {})
    paths = find_products(fmt, inputs)
    products: list[Product] = []
    try:
        # -- pre-flight: everything that can be checked before writing ------------------------
        for path in paths:
            products.append(fmt.open(path, **options))
            products[-1].check()
            if products[-1].crs is None and not allow_no_crs:
                raise DataError(
                    f"{products[-1].info().get('image') or path}: has no CRS (coordinate reference system), so "
                    "its chips could not be matched to labels nor its maps placed on the ground; assign one "
                    "(gdal_edit.py -a_srs EPSG:<code> FILE) or pass --allow-no-crs to prepare it on its pixel grid"
                )
        seen: dict[str, Path] = {}
        for p in products:
            if p.name in seen:
                raise DataError(f"{p.path}: product {p.name} was given twice (also as {seen[p.name]})")
            seen[p.name] = p.path
        try:
            selected = products[0].sensor.select(
                parse_selection(selection) if isinstance(selection, str) else selection
            )
        except SensorError as exc:
            raise DataError(f"{products[0].path}: {str(exc).rstrip(', ')}") from None
        dropped: dict[str, dict[str, Any]] = {}
        if selection == "default" and selected.selection == GOOD_BANDS:
            selected = products[0].sensor  # its bad bands are the unusable ones: dropped and named below
        if selection == "default":
            selected, dropped = drop_unusable(products, selected)
        if resume and (out / MANIFEST).exists():
            selected = _stored_sensor(out, selected)
        shifts = _check_compatible(products, selected)
        windows = {p.name: chip_windows(p.width, p.height, size, stride) for p in products}
        if shard_size is None:
            shard_size = max(1, SHARD_BYTES // nbytes_per_chip(selected.num_bands, size))

        # -- write -----------------------------------------------------------------------------
        created_dir = not out.exists()
        writer = ChipStoreWriter(
            out,
            selected,
            size,
            shard_size=shard_size,
            resume=resume,
            attrs={
                "created_by": "hyperkd data prepare",
                "hyperkd_version": hyperkd.__version__,
                "reader": fmt.name,
                "requested_sensor": sensor,
                "dropped_bands": dropped,
                "selection": selected.selection,
                "chip_size": size,
                "stride": stride,
                "max_nodata": max_nodata,
                "max_cloud": max_cloud,
                "inputs": [str(i) for i in inputs],
                "allow_no_crs": allow_no_crs,
            },
        )
        writer.attrs.setdefault("products", {})
        if dropped:
            logger.warning("%s", dropped_summary(dropped))
        said: set[str] = set()
        bands = selected.band_names
        with _progress(progress_enabled(progress)) as bar:
            for p in products:
                task = bar.add_task(short_product_name(p.name), total=len(windows[p.name]), kept=0)
                if p.name in writer.sources_done:
                    bar.update(task, completed=len(windows[p.name]), kept="(done before)")
                    continue
                try:
                    counts = _tile_product(
                        p, windows[p.name], bands, writer, max_nodata, max_cloud, bar, task
                    )
                except DataError as exc:
                    writer.discard_unfinished()
                    if not writer.sources_done:
                        _remove_store(out, created_dir)
                        raise DataError(f"{exc} (nothing was written to {out})") from None
                    raise DataError(
                        f"{exc} (the store at {out} keeps the {len(writer.sources_done)} product(s) finished "
                        "before; fix or remove this input, then rerun with --resume)"
                    ) from None
                info = p.info()
                writer.attrs["products"][p.name] = {
                    **info,
                    **counts,
                    "windows": len(windows[p.name]),
                    "max_center_shift_nm": shifts[p.name],
                }
                for note in info.get("warnings") or ():
                    if note not in said:  # said once per run, not once per tile
                        said.add(note)
                        logger.warning("%s: %s", p.name, note)
                logger.info(
                    "%s: %d of %d windows kept as chips (%d dropped for no data, %d for cloud)",
                    p.name,
                    counts["chips"],
                    len(windows[p.name]),
                    counts["dropped_nodata"],
                    counts["dropped_cloud"],
                )
                writer.mark_source_done(p.name)
        if len(writer) == 0:
            tried = sum(len(w) for w in windows.values())
            if not any(windows.values()):
                why = f"every product is smaller than the {size} px chip size"
            else:
                why = (
                    f"all {tried} windows had more than {max_nodata:.0%} no data or {max_cloud:.0%} cloud; "
                    "raise --max-nodata / --max-cloud or use a smaller --size"
                )
            _remove_store(out, created_dir)
            raise DataError(f"no chips to store in {out}: {why}")
        return writer.close()
    finally:
        for p in products:
            p.close()


def _tile_product(
    product: Product,
    windows: Sequence[Window],
    bands: Sequence[str],
    writer: ChipStoreWriter,
    max_nodata: float,
    max_cloud: float,
    bar: Any,
    task: Any,
) -> dict[str, int]:
    """Cut one product into chips; returns kept/dropped counts. DataError if it has no data."""
    kept = dropped_nodata = dropped_cloud = 0
    data_pixels = 0
    crs = product.crs.to_string() if product.crs is not None else None
    for window in windows:
        pw = product.read(window, bands)
        data_pixels += int((~pw.nodata).sum())
        nodata_frac, cloud_frac = pw.nodata_fraction, pw.cloud_fraction
        if nodata_frac > max_nodata:
            dropped_nodata += 1
        elif cloud_frac > max_cloud:
            dropped_cloud += 1
        else:
            writer.add(
                pw.image,
                pw.valid,
                source=product.name,
                path=str(product.path),
                window=[int(window.col_off), int(window.row_off), int(window.width), int(window.height)],
                crs=crs,
                transform=list(pw.transform)[:6],
                nodata_fraction=round(nodata_frac, 6),
                cloud_fraction=round(cloud_frac, 6),
            )
            kept += 1
        bar.update(task, advance=1, kept=kept)
    if windows and data_pixels == 0:
        where = product.info().get("image") or product.path
        raise DataError(
            f"{where}: no pixel holds data in the selected bands (every value is the no-data value "
            f"{product.nodata} or flagged defective); remove this product from the inputs"
        )
    return {"chips": kept, "dropped_nodata": dropped_nodata, "dropped_cloud": dropped_cloud}


def store_products(store: ChipStore) -> dict[str, dict[str, Any]]:
    """Per-product provenance and chip counts recorded by :func:`prepare` in a store."""
    return dict((store.manifest.get("attrs") or {}).get("products", {}))


__all__ = [
    "chip_windows",
    "choose_format",
    "drop_unusable",
    "dropped_summary",
    "parse_selection",
    "prepare",
    "short_product_name",
    "store_products",
]
