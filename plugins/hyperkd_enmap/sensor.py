"""EnMAP sensors.

``enmap``: the 224 bands of in-flight Level-2A products, sorted by wavelength (VNIR and
SWIR detectors interleave between about 900 and 1000 nm). Default centres and FWHM come
from an in-flight L2A product (``data/inflight_l2a_bands.csv``); centres shift slightly
between products and processor versions, so the L2A reader replaces them with each
product's own METADATA.XML values.

Band selections on ``enmap``:

* ``torchgeo-202`` (the default): torchgeo's EnMAP default, B1-126, B142-160, B168-224 —
  drops the 22 bands on the flanks of the 1.4 um and 1.9 um water-vapour absorptions
  (1295-1519 nm and 1739-1968 nm; the absorption cores are not in L2A products at all);
* ``all``: every band.

``enmap-218``: the 218-band table of DLR's pre-launch L2A test products, the band count
the HyperKD paper reports for its tiles. Its centres and FWHM are those of the DLR
METADATA.XML in ``data/prelaunch_l2a_218_bands.csv``. The paper does not publish which
of the 224 in-flight bands its 218 are, so no 218-band selection of ``enmap`` is offered.
"""

from __future__ import annotations

from importlib import resources

from hyperkd.core.registry import register
from hyperkd.core.sensors import Band, Sensor, band_ranges, read_band_csv

L2A_GAIN = 1e-4
"""Nominal L2A reflectance gain; readers use each product's GainOfBand instead."""
L2A_NODATA = -32768.0

TORCHGEO_202 = band_ranges([(1, 126), (142, 160), (168, 224)])
WATER_VAPOUR = tuple(f"B{i}" for i in range(1, 225) if f"B{i}" not in set(TORCHGEO_202))


def _bands(csv_name: str) -> tuple[Band, ...]:
    path = resources.files("hyperkd_enmap").joinpath(f"data/{csv_name}")
    with resources.as_file(path) as p:
        rows = read_band_csv(p)
    return tuple(
        Band(name=f"B{r['band']}", center_nm=r["center_nm"], fwhm_nm=r["fwhm_nm"], gain=L2A_GAIN)
        for r in rows
    )


@register("sensor", "enmap")
def enmap() -> Sensor:
    """EnMAP L2A, 224 bands 418-2446 nm, 30 m (default selection: torchgeo's 202)."""
    return Sensor(
        name="enmap",
        bands=_bands("inflight_l2a_bands.csv"),
        gsd_m=30.0,
        nodata=L2A_NODATA,
        dtype="int16",
        description="EnMAP HSI Level-2A surface reflectance: 224 bands (VNIR 91 + SWIR 133) "
        "sorted by wavelength, 30 m GSD, 30 km swath.",
        bad_bands=WATER_VAPOUR,
        selections={"torchgeo-202": TORCHGEO_202},
        default_selection="torchgeo-202",
        source="in-flight L2A product DT0000001049 (2022); products carry their own band table",
    )


@register("sensor", "enmap-218")
def enmap_218() -> Sensor:
    """EnMAP L2A in the 218-band format of DLR's pre-launch test products (the paper's band count)."""
    return Sensor(
        name="enmap-218",
        bands=_bands("prelaunch_l2a_218_bands.csv"),
        gsd_m=30.0,
        nodata=0.0,
        dtype="int16",
        description="EnMAP L2A, 218-band pre-launch product format (DLR test data), 30 m.",
        source="DLR pre-launch L2A METADATA.XML (DT0000326721), bandCharacterisation",
    )
