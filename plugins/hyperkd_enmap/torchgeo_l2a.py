"""EnMAP L2A products as a torchgeo ``RasterDataset``, for torchgeo's samplers.

torchgeo 0.8's :class:`torchgeo.datasets.EnMAP` indexes ``ENMAP*SPECTRAL_IMAGE*`` files and
returns raw digital numbers for B1-B224. :class:`EnMAPL2A` builds on it (same file index,
same geo-queries, same warping/merging across products and UTM zones) and adds what the
METADATA.XML knows: each product's band table (so 218-band products work too), reflectance
= ``DN * gain + offset``, and a ``valid`` mask from the no-data value, ``QL_PIXELMASK`` and the
cloud layers. Use it with any torchgeo sampler::

    from torch.utils.data import DataLoader
    from torchgeo.samplers import RandomGeoSampler
    from torchgeo.datasets import stack_samples
    ds = hyperkd.create("dataset", "enmap-l2a", paths=["products/"])
    dl = DataLoader(ds, sampler=RandomGeoSampler(ds, size=64, length=1000),
                    batch_size=16, collate_fn=stack_samples)

Kept in its own module because importing torchgeo takes seconds; the ``enmap-l2a``
dataset factory imports it on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio.merge
import torch
from rasterio.enums import Resampling
from torchgeo.datasets import EnMAP
from torchgeo.datasets.geo import RasterDataset
from torchgeo.datasets.utils import GeoSlice

from hyperkd.core.errors import DataError
from hyperkd.core.sensors import Sensor
from hyperkd_enmap.l2a import (
    DEFAULT_CLOUD_LAYERS,
    MASK_BACKGROUND,
    PIXELMASK,
    find_l2a_products,
    open_l2a,
    pixelmask_defective,
    quality_flagged,
)


class EnMAPL2A(EnMAP):
    """EnMAP L2A products (folders, zips, or folders of them) as a torchgeo GeoDataset.

    Samples are ``{"image": (C, H, W) float32 reflectance (0 where no data), "valid": (H, W)
    bool, "crs", "bounds"}`` in the band order of ``sensor`` (the first product's band table
    with ``selection`` applied: torchgeo's 202 bands on 224-band products, all bands on
    218-band ones). All products must share band names, gains, offsets and no-data value,
    since one query may merge pixels of several products.
    """

    def __init__(
        self,
        paths: str | Path | Iterable[str | Path] = "data",
        crs: Any = None,
        res: float | tuple[float, float] | None = None,
        selection: str | Sequence[str] | None = "default",
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        cache: bool = True,
        cloud_layers: Sequence[str] = DEFAULT_CLOUD_LAYERS,
        use_pixelmask: bool = True,
    ) -> None:
        roots = [paths] if isinstance(paths, (str, Path)) else list(paths)
        product_paths = [p for root in roots for p in find_l2a_products(root)]
        if not product_paths:
            raise DataError(f"{', '.join(str(r) for r in roots)}: no EnMAP L2A product found")
        self._layers: dict[str, dict[str, str]] = {}
        first: Sensor | None = None
        for ppath in product_paths:
            with open_l2a(ppath, cloud_layers=cloud_layers, use_pixelmask=use_pixelmask) as product:
                if first is None:
                    first = product.sensor
                    nodata = product.nodata
                elif (
                    product.sensor.band_names != first.band_names
                    or [(b.gain, b.offset) for b in product.sensor.bands]
                    != [(b.gain, b.offset) for b in first.bands]
                    or product.nodata != nodata
                ):
                    raise DataError(
                        f"{ppath}: its band table, gains, offsets or no-data value differ from "
                        f"{product_paths[0]}'s; one torchgeo dataset merges pixels across products, so they "
                        "must agree. Prepare a chip store instead (`hyperkd data prepare`), which applies "
                        "each product's own table"
                    )
                layers = {
                    f"QL_QUALITY_{c}": product.files.masks[f"QL_QUALITY_{c}"] for c in product.cloud_layers
                }
                if product.use_pixelmask:
                    layers[PIXELMASK] = product.files.masks[PIXELMASK]
                self._layers[product.files.image] = layers
        assert first is not None
        self.sensor: Sensor = first.select(selection)
        self.all_bands = tuple(first.band_names)
        self.cloud_layers = tuple(c.upper() for c in cloud_layers)
        self.nodata = nodata
        sel = [first.band_index(n) for n in self.sensor.band_names]
        self._gain = np.asarray([first.bands[i].gain for i in sel], dtype=np.float64)[:, None, None]
        self._offset = np.asarray([first.bands[i].offset for i in sel], dtype=np.float64)[:, None, None]
        self._user_transforms = transforms
        RasterDataset.__init__(self, list(self._layers), crs, res, self.sensor.band_names, None, cache)

    def _merge(
        self,
        filepaths: Sequence[str],
        query: GeoSlice,
        indexes: Sequence[int] | None,
        nodata: float | None,
        resampling: Resampling,
    ) -> np.ndarray:
        fhs = [
            self._cached_load_warp_file(fp) if self.cache else self._load_warp_file(fp) for fp in filepaths
        ]
        x, y, _ = self._disambiguate_slice(query)
        dest, _ = rasterio.merge.merge(
            fhs,
            (x.start, y.start, x.stop, y.stop),
            (x.step, y.step),
            indexes=indexes,
            nodata=nodata,
            resampling=resampling,
        )
        return dest

    def __getitem__(self, query: GeoSlice) -> dict[str, Any]:
        """Reflectance and validity of the products' pixels inside ``query``."""
        x, y, t = self._disambiguate_slice(query)
        index = self.index.iloc[self.index.index.overlaps(pd.Interval(t.start, t.stop))]
        index = index.iloc[:: t.step]
        index = index.cx[x.start : x.stop, y.start : y.stop]
        if index.empty:
            raise IndexError(f"query: {query} not found in index with bounds: {self.bounds}")
        files = list(index.filepath)
        fill = self.nodata if self.nodata is not None else -32768
        # numpy, not torch, for the arithmetic: single-threaded and several times faster on CPU here
        dn = self._merge(files, query, self.band_indexes, fill, self.resampling)
        missing = dn == fill
        valid = ~missing.any(axis=0)
        image = (dn * self._gain + self._offset).astype(np.float32)
        image[missing] = 0.0
        for key in [PIXELMASK, *(f"QL_QUALITY_{c}" for c in self.cloud_layers)]:
            masked = [f for f in files if key in self._layers[f]]
            if not masked:
                continue
            layer_files = [self._layers[f][key] for f in masked]
            if key == PIXELMASK:
                with rasterio.open(layer_files[0]) as src:
                    per_band = src.count > 1
                layers = self.band_indexes if per_band else [1]
                q = self._merge(layer_files, query, layers, MASK_BACKGROUND, Resampling.nearest)
                flagged = pixelmask_defective(q)
            else:
                q = self._merge(layer_files, query, [1], MASK_BACKGROUND, Resampling.nearest)[0]
                flagged = quality_flagged(key.removeprefix("QL_QUALITY_"), q)
            valid &= ~flagged
        sample: dict[str, Any] = {
            "image": torch.from_numpy(image),
            "valid": torch.from_numpy(valid),
            "crs": self.crs,
            "bounds": query,
        }
        if self._user_transforms is not None:
            sample = self._user_transforms(sample)
        return sample
