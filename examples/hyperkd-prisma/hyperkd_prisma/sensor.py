"""The ASI PRISMA hyperspectral sensor: 239 nominal bands, 400-2505 nm, 30 m.

The band table is PRISMA's *nominal* design: VNIR 66 bands over 400-1010 nm and SWIR 173
bands over 920-2505 nm, at most 12 nm apart (ASI PRISMA Products Specification). Real
products carry their own per-band centres and FWHM (HE5 attributes ``List_Cw_Vnir``,
``List_Fwhm_Vnir``, ``List_Cw_Swir``, ``List_Fwhm_Swir``); a PRISMA product reader would
replace this table with those values, as the EnMAP reader does with METADATA.XML.

hyperkd imports this module only when the ``prisma`` sensor is first built (the plugin's
``__init__`` declares it); the ``@register`` decorator then fills that declaration.
"""

from __future__ import annotations

import numpy as np

from hyperkd import Band, Sensor, register

VNIR = (400.0, 1010.0, 66)
SWIR = (920.0, 2505.0, 173)


@register("sensor", "prisma")
def prisma() -> Sensor:
    """ASI PRISMA, 239 nominal bands 400-2505 nm (VNIR 66 + SWIR 173), 30 m."""
    bands = []
    for detector, (lo, hi, n) in (("vnir", VNIR), ("swir", SWIR)):
        centers = np.linspace(lo, hi, n)
        step = float(centers[1] - centers[0])
        for c in centers:
            bands.append((float(c), step * 1.1, detector))
    bands.sort(key=lambda b: b[0])
    return Sensor(
        name="prisma",
        bands=tuple(
            Band(name=f"B{i + 1}", center_nm=round(c, 3), fwhm_nm=round(f, 3), detector=d)
            for i, (c, f, d) in enumerate(bands)
        ),
        gsd_m=30.0,
        nodata=None,
        description="ASI PRISMA L2D surface reflectance, nominal band table (example plugin).",
        source="nominal design values; products carry their own band table",
    )
