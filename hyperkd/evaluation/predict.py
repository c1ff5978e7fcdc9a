"""Map whole scenes with a fine-tuned model: ``hyperkd predict MODEL SCENE... --out DIR``.

A scene is any product a ``reader`` reads (an EnMAP L2A folder or zip, a GeoTIFF or ENVI
cube): :func:`predict` finds its reader through the registry, matches the model's bands to
the scene's by wavelength (:func:`hyperkd.core.sensors.match_bands`, reordering when the
orders differ), and writes ``DIR/<scene>.tif``, a Cloud-Optimised GeoTIFF on the scene's own
grid (CRS, transform, size), plus a quick-look ``DIR/<scene>.png``.

How a scene of any size is mapped in bounded memory, and without seams:

* the model runs on windows of its chip size (``model.img_size``) laid on one grid over the
  whole scene, every ``chip - overlap`` px, the last ones flush with the edges;
* every window's output is weighted by a tapered window (1 in the middle, falling linearly
  over the ``overlap`` px at each side, never 0) and the weighted outputs (class
  probabilities, or values) are averaged. The weights are continuous, so where one window
  hands over to the next there is no edge in the map;
* the scene is processed in output *blocks* (``block`` px square). For each block the reader
  returns only the pixels of the windows that touch it, and the block is written to a tiled
  GeoTIFF before the next is read, so memory depends on ``block``, the chip size and the band
  count, never on the scene size (``benchmarks/predict_memory.py`` measures it). A window that
  touches two blocks is run for each, which costs a little compute, not memory;
* the tiled file is then copied into a COG (GDAL's ``COG`` driver streams it and adds
  overviews), and removed; a failed run leaves no partial map behind.

Pixels the scene holds no data for (any band's nodata, defective pixels) are nodata in the
map. Segmentation maps hold the label's own codes (e.g. 1-6 when the labels were coded so;
class ids 0..K-1 otherwise) with a colour table and the class names (band tags
``CLASS_<value>`` and the dataset tag ``class_names``); ``probabilities=True`` adds
``DIR/<scene>_probabilities.tif`` with one float32 band per class. Regression maps hold values
in the label's unit (nodata NaN).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import torch
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from hyperkd.core.errors import DataError, HyperKDError, WeightsError
from hyperkd.core.progress import progress_enabled, rich_progress
from hyperkd.core.sensors import match_bands
from hyperkd.data.products import Product, ProductFormat, find_products, product_formats
from hyperkd.evaluation.tasks import SegmentationTask
from hyperkd.models.pixel import PixelModel

log = logging.getLogger(__name__)

SCENE_SUFFIXES = (".tif", ".tiff", ".zip", ".hdr", ".bsq", ".bil", ".bip", ".img", ".dat", ".raw", ".vrt")
"""Extensions stripped from a scene's file name to name its map (``scene.tif`` -> ``scene``)."""


@dataclass(frozen=True)
class SceneMap:
    """What :func:`predict` wrote for one scene."""

    scene: str
    source: Path
    path: Path
    quicklook: Path | None
    probabilities: Path | None
    width: int
    height: int
    crs: str | None
    windows: int
    """Model windows run (a window touching two blocks counts twice; windows without data are skipped)."""
    nodata_pixels: int
    bands_reordered: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


# ----------------------------------------------------------------------------------------------
# Model and scenes
# ----------------------------------------------------------------------------------------------


def load_predictor(model: str | os.PathLike[str] | PixelModel, map_location: str = "cpu") -> PixelModel:
    """The fine-tuned model ``model`` names: a PixelModel, its folder, a finetune run folder or a Hub repo."""
    if isinstance(model, PixelModel):
        return model
    from hyperkd.models.factory import create_model

    text = os.fspath(model)
    run_model = Path(text).expanduser() / "model"
    if (run_model / "config.json").is_file():
        text = str(run_model)  # a `hyperkd finetune` run folder
    loaded = create_model(text, map_location=map_location)
    if not isinstance(loaded, PixelModel):
        raise WeightsError(
            f"{text} is a {type(loaded).__name__}, not a fine-tuned model; fine-tune it first "
            "(`hyperkd finetune`) and predict with the run folder"
        )
    return loaded


def scene_format(path: Path, reader: str | None = None) -> ProductFormat:
    """The reader for the scene at ``path``: the one named, else the first whose ``find`` accepts it.

    Sensor-specific readers are asked first, generic ones (``sensors == ("*",)``: GeoTIFF/ENVI)
    last: an L2A folder also holds GeoTIFFs, but it is an L2A product.
    """
    formats = sorted(product_formats(), key=lambda f: "*" in f.sensors)
    if reader is not None:
        named = [f for f in formats if f.name == reader]
        if not named:
            known = ", ".join(f.name for f in formats) or "(none)"
            raise DataError(
                f"no product reader named {reader!r}; installed readers: {known} (`hyperkd list reader`)"
            )
        return named[0]
    tried: list[str] = []
    for fmt in formats:
        try:
            if fmt.find(path):
                return fmt
        except DataError:
            pass
        tried.append(fmt.name)
    raise DataError(
        f"{path}: no installed reader reads this scene (tried {', '.join(tried) or 'none'}); "
        "pass --reader, see `hyperkd list reader`"
    )


def scene_name(path: Path) -> str:
    """The map's file stem for a scene: its file or folder name without raster extensions."""
    name = path.name
    while True:
        stem, ext = os.path.splitext(name)
        if ext.lower() not in SCENE_SUFFIXES or not stem:
            return name
        name = stem


# ----------------------------------------------------------------------------------------------
# Windows, weights and blocks
# ----------------------------------------------------------------------------------------------


def window_starts(n: int, chip: int, stride: int) -> list[int]:
    """Window starts along an axis of ``n`` px: every ``stride``, the last flush with the edge.

    A scene narrower than ``chip`` gets one window at 0 (the read is padded).
    """
    if n <= chip:
        return [0]
    starts = list(range(0, n - chip + 1, stride))
    if starts[-1] != n - chip:
        starts.append(n - chip)
    return starts


def blend_weights(chip: int, overlap: int) -> np.ndarray:
    """``(chip, chip)`` window weights: 1 in the middle, linear to a small positive value over ``overlap`` px.

    Outputs averaged with these weights change continuously from one window to the next
    (no seam), and a pixel covered by one window only (a scene edge) still gets its output.
    """
    i = np.arange(chip, dtype=np.float64)
    edge = np.minimum(i + 1, chip - i)  # 1 at the border pixels
    ramp = np.clip(edge / (overlap + 1), 0.0, 1.0) if overlap > 0 else np.ones(chip)
    ramp = np.maximum(ramp, 1e-3)
    return np.outer(ramp, ramp).astype(np.float32)


def _axis_blocks(n: int, block: int) -> list[tuple[int, int]]:
    return [(a, min(a + block, n)) for a in range(0, n, block)]


def _touching(starts: Sequence[int], chip: int, lo: int, hi: int) -> list[int]:
    return [s for s in starts if s < hi and s + chip > lo]


# ----------------------------------------------------------------------------------------------
# Running the model on one block
# ----------------------------------------------------------------------------------------------


class _Mapper:
    """Runs a model over one scene block by block (see the module docstring)."""

    def __init__(
        self,
        model: PixelModel,
        product: Product,
        bands: list[str],
        overlap: int,
        batch_size: int,
        device: str,
    ) -> None:
        self.model, self.product, self.bands = model, product, bands
        self.chip = model.img_size
        self.stride = self.chip - overlap
        self.weights = torch.from_numpy(blend_weights(self.chip, overlap)).to(device)
        self.batch_size, self.device = batch_size, device
        self.rows = window_starts(product.height, self.chip, self.stride)
        self.cols = window_starts(product.width, self.chip, self.stride)
        means = model.sensor.means
        self.fill = np.asarray(means if means else [0.0] * model.in_chans, dtype=np.float32)
        self.segmentation = isinstance(model.task, SegmentationTask)
        self.windows = 0

    def block(self, r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        """``(K, h, w)`` blended outputs (probabilities or values) and the ``(h, w)`` nodata mask."""
        chip, p = self.chip, self.product
        rows = _touching(self.rows, chip, r0, r1)
        cols = _touching(self.cols, chip, c0, c1)
        rr0, cc0 = rows[0], cols[0]
        rr1, cc1 = min(rows[-1] + chip, p.height), min(cols[-1] + chip, p.width)
        pw = p.read(Window(cc0, rr0, cc1 - cc0, rr1 - rr0), self.bands)
        image = pw.image
        if pw.nodata.any():  # standardised spectra of 0 (the band means) instead of zeros
            image = image.copy()
            image[:, pw.nodata] = self.fill[:, None]
        ph, pwid = max(chip, rr1 - rr0), max(chip, cc1 - cc0)
        if (ph, pwid) != image.shape[1:]:  # a scene smaller than one window: pad
            padded = np.broadcast_to(self.fill[:, None, None], (image.shape[0], ph, pwid)).copy()
            padded[:, : image.shape[1], : image.shape[2]] = image
            image = padded
        x = torch.from_numpy(np.ascontiguousarray(image))
        k = self.model.task.out_channels if self.segmentation else 1
        acc = torch.zeros((k, ph, pwid), device=self.device)
        wsum = torch.zeros((ph, pwid), device=self.device)
        data = np.zeros((ph, pwid), dtype=bool)
        data[: pw.nodata.shape[0], : pw.nodata.shape[1]] = ~pw.nodata
        # windows without a data pixel are skipped (scene backgrounds); every data pixel keeps its own
        offsets = [
            (r - rr0, c - cc0)
            for r in rows
            for c in cols
            if data[r - rr0 : r - rr0 + chip, c - cc0 : c - cc0 + chip].any()
        ]
        for i in range(0, len(offsets), self.batch_size):
            part = offsets[i : i + self.batch_size]
            batch = torch.stack([x[:, r : r + chip, c : c + chip] for r, c in part]).to(self.device)
            with torch.no_grad():
                out = self.model(batch)
                out = out.float().softmax(1) if self.segmentation else self.model.task.predict(out)[:, None]
            for (r, c), o in zip(part, out, strict=True):
                acc[:, r : r + chip, c : c + chip] += o * self.weights
                wsum[r : r + chip, c : c + chip] += self.weights
        self.windows += len(offsets)
        br, bc = r0 - rr0, c0 - cc0
        h, w = r1 - r0, c1 - c0
        wsum = torch.where(wsum > 0, wsum, torch.ones_like(wsum))  # pixels of skipped windows: nodata
        blended = (acc[:, br : br + h, bc : bc + w] / wsum[br : br + h, bc : bc + w]).cpu().numpy()
        return blended, pw.nodata[br : br + h, bc : bc + w]


# ----------------------------------------------------------------------------------------------
# Output encoding
# ----------------------------------------------------------------------------------------------


def class_values(task: SegmentationTask) -> tuple[np.ndarray, str, float]:
    """Map values of class ids 0..K-1 (the label's codes when known), their dtype and a nodata value."""
    codes = np.asarray(task.codes if task.codes else range(len(task.classes)), dtype=np.float64)
    if not np.all(codes == np.round(codes)):
        return codes.astype(np.float32), "float32", float("nan")
    for dtype, nodata in (("uint8", 255), ("uint16", 65535), ("int32", -(2**31))):
        info = np.iinfo(dtype)
        if codes.min() >= info.min and codes.max() <= info.max and nodata not in codes:
            return codes.astype(dtype), dtype, float(nodata)
    return codes.astype(np.float32), "float32", float("nan")


def _class_tags(task: SegmentationTask, values: np.ndarray) -> tuple[dict[str, str], dict[str, str]]:
    names = {str(v.item()): n for v, n in zip(values, task.classes, strict=True)}
    dataset = {"class_names": json.dumps(names), "label": task.label, "task": task.name or task.kind}
    band = {f"CLASS_{v}": n for v, n in names.items()}
    return dataset, band


@contextlib.contextmanager
def _bar(enabled: bool, total: int, name: str) -> Iterator[Any]:
    if not progress_enabled(enabled):
        yield lambda: None
        return
    with rich_progress("[bold]{task.description}", "blocks") as bar:
        task = bar.add_task(name, total=total)
        yield lambda: bar.update(task, advance=1)


def _to_cog(tmp: Path, dst: Path, resampling: str) -> None:
    part = dst.with_name(dst.name + ".part")
    rasterio.shutil.copy(
        tmp, part, driver="COG", compress="deflate", blocksize=256, resampling=resampling, overviews="auto"
    )
    os.replace(part, dst)


def map_scene(
    model: PixelModel,
    product: Product,
    out: Path,
    name: str,
    *,
    overlap: int,
    batch_size: int = 16,
    block: int = 256,
    probabilities: bool = False,
    quicklook: bool = True,
    device: str = "cpu",
    progress: bool = True,
) -> SceneMap:
    """Map one opened scene into ``out/<name>.tif`` (and the quick-look, probabilities)."""
    index = match_bands(model.sensor, product.sensor, f"model vs scene {product.path}")
    bands = [product.sensor.bands[j].name for j in index]
    reordered = [b.name for b in product.sensor.bands[: len(index)]] != bands
    if reordered:
        log.info("%s: bands read in the model's order (matched by wavelength, not position)", name)
    mapper = _Mapper(model, product, bands, overlap, batch_size, device)
    task = model.task
    seg = isinstance(task, SegmentationTask)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": product.width,
        "height": product.height,
        "count": 1,
        "crs": product.crs,
        "transform": product.transform,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    if seg:
        assert isinstance(task, SegmentationTask)
        values, dtype, nodata = class_values(task)
    else:
        values, dtype, nodata = np.zeros(0), "float32", float("nan")
    final = out / f"{name}.tif"
    prob_final = out / f"{name}_probabilities.tif" if probabilities and seg else None
    tmp = out / f".{name}.tmp.tif"
    prob_tmp = out / f".{name}_probabilities.tmp.tif"
    nodata_pixels = 0
    try:
        with contextlib.ExitStack() as stack:
            dst = stack.enter_context(rasterio.open(tmp, "w", **profile, dtype=dtype, nodata=nodata))
            pdst = None
            if prob_final is not None:
                k = task.out_channels
                pdst = stack.enter_context(
                    rasterio.open(
                        prob_tmp, "w", **{**profile, "count": k}, dtype="float32", nodata=float("nan")
                    )
                )
                for i, cname in enumerate(task.classes):  # type: ignore[attr-defined]
                    pdst.set_band_description(i + 1, cname)
            blocks = [
                (r, c)
                for r in _axis_blocks(product.height, block)
                for c in _axis_blocks(product.width, block)
            ]
            advance = stack.enter_context(_bar(progress, len(blocks), name))
            for (r0, r1), (c0, c1) in blocks:
                blended, missing = mapper.block(r0, r1, c0, c1)
                win = Window(c0, r0, c1 - c0, r1 - r0)
                nodata_pixels += int(missing.sum())
                if seg:
                    ids = values[blended.argmax(0)]
                    ids[missing] = nodata
                    dst.write(ids.astype(dtype), 1, window=win)
                    if pdst is not None:
                        blended[:, missing] = np.nan
                        pdst.write(blended.astype(np.float32), window=win)
                else:
                    vals = blended[0].astype(np.float32)
                    vals[missing] = np.nan
                    dst.write(vals, 1, window=win)
                advance()
            _describe(dst, task, values)
        _to_cog(tmp, final, "nearest" if seg else "average")
        if prob_final is not None:
            _to_cog(prob_tmp, prob_final, "average")
    finally:
        for p in (tmp, prob_tmp):
            p.unlink(missing_ok=True)
    png = out / f"{name}.png" if quicklook else None
    if png is not None:
        _quicklook(final, png, task, values, name)
    return SceneMap(
        scene=name,
        source=product.path,
        path=final,
        quicklook=png,
        probabilities=prob_final,
        width=product.width,
        height=product.height,
        crs=product.crs.to_string() if product.crs else None,
        windows=mapper.windows,
        nodata_pixels=nodata_pixels,
        bands_reordered=reordered,
    )


def _describe(dst: Any, task: Any, values: np.ndarray) -> None:
    """Band description, class names and colour table (segmentation) or unit (regression)."""
    if isinstance(task, SegmentationTask):
        from hyperkd.viz.maps import class_colors

        dataset, band = _class_tags(task, values)
        dst.update_tags(**dataset)
        dst.update_tags(1, **band)
        dst.set_band_description(1, task.label)
        if dst.dtypes[0] in ("uint8", "uint16"):
            colours = class_colors(len(task.classes), getattr(task, "colors", None))
            dst.write_colormap(1, {int(v): (*c, 255) for v, c in zip(values, colours, strict=True)})
    else:
        unit = getattr(task, "unit", "")
        dst.update_tags(label=task.label, unit=unit, task=task.name or task.kind)
        dst.set_band_description(1, f"{task.label} ({unit})" if unit else task.label)


def _quicklook(path: Path, png: Path, task: Any, values: np.ndarray, title: str, size: int = 1024) -> None:
    """A PNG of the map, read at most ``size`` px wide from the COG's overviews."""
    from hyperkd.viz.maps import map_figure

    with rasterio.open(path) as src:
        scale = max(src.width, src.height) / size
        shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale))) if scale > 1 else None
        arr = src.read(1, out_shape=shape, masked=True) if shape else src.read(1, masked=True)
    classes = list(task.classes) if isinstance(task, SegmentationTask) else None
    colors = getattr(task, "colors", None) if classes else None
    unit = getattr(task, "unit", "")
    fig = map_figure(np.ma.filled(arr.astype(np.float64), np.nan), title, classes, values, colors, unit)
    tmp = png.with_name(png.name + ".part.png")
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, png)


# ----------------------------------------------------------------------------------------------
# The public function
# ----------------------------------------------------------------------------------------------


def predict(
    model: str | os.PathLike[str] | PixelModel,
    scenes: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    reader: str | None = None,
    reader_options: Mapping[str, Any] | None = None,
    overlap: int | None = None,
    batch_size: int = 16,
    block: int = 256,
    probabilities: bool = False,
    quicklook: bool = True,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    gdal_cache_mb: int = 64,
) -> list[SceneMap]:
    """Map every scene with a fine-tuned model (``hyperkd.predict``; see the module docstring).

    model: a :class:`PixelModel`, its folder, a ``hyperkd finetune`` run folder or a Hub repo.
    scenes: scene files or folders (each reader's products, or folders of them).
    out: folder for ``<scene>.tif`` (COG), ``<scene>.png`` and ``<scene>_probabilities.tif``.
    reader: the reader to use (default: the first installed reader that accepts each scene).
    overlap: px shared by neighbouring windows (default: a quarter of the chip size).
    block: side of the output blocks processed at a time (memory, not results, depends on it).
    gdal_cache_mb: GDAL's block cache while mapping (its default grows to 5 % of the RAM).
    Everything is checked (model, scenes, bands, existing outputs) before anything is written.
    """
    pm = load_predictor(model)
    pm.eval()
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pm.to(dev)
    chip = pm.img_size
    ov = chip // 4 if overlap is None else int(overlap)
    if not 0 <= ov < chip:
        raise HyperKDError(f"overlap must be between 0 and {chip - 1} px (the chip is {chip} px), got {ov}")
    if block < 1 or batch_size < 1:
        raise HyperKDError(f"block and batch size must be positive, got {block} and {batch_size}")
    inputs = [scenes] if isinstance(scenes, (str, os.PathLike)) else list(scenes)
    if not inputs:
        raise DataError("no scene given; pass one or more scene files or folders")
    jobs: list[tuple[ProductFormat, Path, str]] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if not path.exists():
            raise DataError(f"{path}: no such scene file or folder")
        fmt = scene_format(path, reader)
        jobs += [(fmt, p, scene_name(p)) for p in find_products(fmt, [path])]
    names = [n for _f, _p, n in jobs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(
            f"several scenes would be written as {dupes[0]}.tif; map them into separate --out folders"
        )
    outdir = Path(out).expanduser()
    if not overwrite:
        taken = [outdir / f"{n}.tif" for n in names if (outdir / f"{n}.tif").exists()]
        if taken:
            raise DataError(f"{taken[0]} exists; pass --overwrite (overwrite=True) to replace it")
    opts = dict(reader_options or {})
    for fmt, path, _n in jobs:  # validate every scene (bands) before writing anything
        with fmt.open(path, **opts) as product:
            product.check()
            match_bands(pm.sensor, product.sensor, f"model vs scene {path}")
    outdir.mkdir(parents=True, exist_ok=True)
    results = []
    for fmt, path, name in jobs:
        # GDAL's block cache defaults to 5 % of RAM and fills with the scene's blocks: cap it
        with rasterio.Env(GDAL_CACHEMAX=int(gdal_cache_mb)), fmt.open(path, **opts) as product:
            if product.crs is None:
                log.warning("%s has no CRS: its map is on the pixel grid and cannot be georeferenced", path)
            with warnings.catch_warnings():
                if product.crs is None:  # said once above; GDAL would repeat it per write
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                res = map_scene(
                    pm,
                    product,
                    outdir,
                    name,
                    overlap=ov,
                    batch_size=batch_size,
                    block=block,
                    probabilities=probabilities,
                    quicklook=quicklook,
                    device=dev,
                    progress=progress,
                )
        log.info("%s: %s (%d windows)", path, res.path, res.windows)
        results.append(res)
    return results


__all__ = [
    "SceneMap",
    "blend_weights",
    "class_values",
    "load_predictor",
    "map_scene",
    "predict",
    "window_starts",
]
