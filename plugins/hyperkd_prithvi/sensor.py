"""The ``hls`` sensor: the six Harmonized Landsat-Sentinel bands Prithvi-EO was trained on.

Band ranges and statistics come from the Prithvi-EO model cards (``data/prithvi.json``).
Prithvi's mean/std are in HLS digital numbers (reflectance x 10000); the sensor stores
them in reflectance units like every hyperkd sensor (divided by 10000).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from hyperkd.core.registry import register
from hyperkd.core.sensors import Band, Sensor

HLS_SCALE = 10000.0
"""HLS digital numbers are surface reflectance times this."""


@lru_cache(maxsize=1)
def prithvi_reference() -> dict[str, Any]:
    """The Prithvi constants shipped with the plugin (configs, bands, mean/std)."""
    text = resources.files("hyperkd_prithvi").joinpath("data/prithvi.json").read_text()
    return json.loads(text)


@register("sensor", "hls")
def hls() -> Sensor:
    """HLS L30/S30, the 6 Prithvi-EO bands B02-B07 (blue..swir2), 30 m."""
    ref = prithvi_reference()
    v1 = ref["v1"]
    bands = []
    for i, code in enumerate(ref["bands"]):
        lo_um, hi_um = ref["band_range_um"][i]
        lo, hi = lo_um * 1000.0, hi_um * 1000.0
        bands.append(
            Band(
                name=code,
                center_nm=round((lo + hi) / 2.0, 6),
                fwhm_nm=round(hi - lo, 6),
                range_nm=(lo, hi),
                gain=1.0 / HLS_SCALE,
                offset=0.0,
                mean=v1["mean"][i] / HLS_SCALE,
                std=v1["std"][i] / HLS_SCALE,
                detector=ref["band_names"][i],
            )
        )
    return Sensor(
        name="hls",
        bands=tuple(bands),
        gsd_m=30.0,
        nodata=-9999.0,
        dtype="int16",
        description="Harmonized Landsat Sentinel-2 (HLS) bands used by Prithvi-EO: "
        "B02 blue, B03 green, B04 red, B05 NIR-narrow, B06 SWIR1, B07 SWIR2 (HLS L30 naming).",
        source="Prithvi-EO model cards; mean/std are Prithvi-EO-1.0's, divided by 10000",
    )
