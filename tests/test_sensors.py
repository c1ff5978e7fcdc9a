"""Sensor tables: exact values from the reference files, selections, serialisation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from hyperkd.core.errors import SensorError
from hyperkd.core.sensors import Band, Sensor, get_sensor

PLUGIN_DATA = Path(__file__).resolve().parents[1] / "plugins"


def test_hls_matches_prithvi_reference():
    ref = json.loads((PLUGIN_DATA / "hyperkd_prithvi/data/prithvi.json").read_text())
    hls = get_sensor("hls")
    assert hls.band_names == ["B02", "B03", "B04", "B05", "B06", "B07"]
    assert hls.ranges_nm[0] == pytest.approx((450.0, 510.0))
    assert hls.ranges_nm[5] == pytest.approx((2110.0, 2290.0))
    assert hls.centers_nm[3] == pytest.approx(865.0)
    assert hls.means == pytest.approx([m / 1e4 for m in ref["v1"]["mean"]])
    assert hls.stds == pytest.approx([s / 1e4 for s in ref["v1"]["std"]])
    assert hls.gsd_m == 30.0 and hls.nodata == -9999.0


def test_enmap_has_224_bands_from_inflight_table():
    with open(PLUGIN_DATA / "hyperkd_enmap/data/inflight_l2a_bands.csv") as fh:
        rows = list(csv.DictReader(fh))
    enmap = get_sensor("enmap", selection="all")
    assert enmap.num_bands == 224
    assert enmap.centers_nm == pytest.approx([float(r["wavelength_center_nm"]) for r in rows])
    assert enmap.fwhms_nm == pytest.approx([float(r["fwhm_nm"]) for r in rows])
    assert enmap.centers_nm[0] == pytest.approx(418.2)
    assert enmap.nodata == -32768.0


def test_enmap_default_selection_is_torchgeo_202():
    enmap = get_sensor("enmap")
    assert enmap.selection == "torchgeo-202"
    assert enmap.num_bands == 202
    names = set(enmap.band_names)
    assert {"B1", "B126", "B142", "B160", "B168", "B224"} <= names
    assert not names & {"B127", "B141", "B161", "B167"}
    # dropped bands flank the 1.4 and 1.9 um water-vapour absorptions (whose cores L2A
    # products do not carry at all: the table jumps 1391 -> 1461 nm and 1760 -> 1939 nm)
    full = get_sensor("enmap", selection="all")
    dropped = [b.center_nm for b in full.bands if b.name not in names]
    assert len(dropped) == 22
    assert all(1290 < c < 1520 or 1730 < c < 1970 for c in dropped)


def test_enmap_218_table():
    s = get_sensor("enmap-218")
    assert s.num_bands == 218
    assert s.centers_nm[0] == pytest.approx(423.03)
    assert s.centers_nm[-1] == pytest.approx(2438.6)


def test_selection_errors_and_custom_lists():
    enmap = get_sensor("enmap", selection="all")
    with pytest.raises(SensorError, match="no band selection 'nope'"):
        enmap.select("nope")
    sub = enmap.select(["B10", "B20"])
    assert sub.band_names == ["B10", "B20"] and sub.selection == "custom"
    with pytest.raises(SensorError, match="B999"):
        enmap.select(["B999"])


def test_roundtrip_dict():
    for name in ("hls", "enmap"):
        s = get_sensor(name)
        again = Sensor.from_dict(json.loads(json.dumps(s.to_dict())))
        assert again == s


def test_product_band_table_replaces_defaults():
    enmap = get_sensor("enmap", selection="all")
    centers = [c + 0.5 for c in enmap.centers_nm]
    new = enmap.with_band_table(centers, enmap.fwhms_nm, gains=[2e-4] * 224, offsets=[0.01] * 224)
    assert new.centers_nm == pytest.approx(centers)
    assert new.bands[0].gain == 2e-4 and new.bands[0].offset == 0.01
    assert new.select().num_bands == 202  # selection survives a same-size table
    short = enmap.with_band_table(centers[:218], enmap.fwhms_nm[:218])
    assert short.default_selection is None  # B219.. are gone, so torchgeo-202 cannot apply


def test_any_band_count_works():
    s = Sensor(name="three", bands=tuple(Band(f"b{i}", 500.0 + 100 * i, 10.0) for i in range(3)), gsd_m=10)
    assert s.num_bands == 3 and s.select().num_bands == 3


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"center_nm": -1, "fwhm_nm": 10}, "centre wavelength"),
        ({"center_nm": 500, "fwhm_nm": 0}, "FWHM"),
        ({"center_nm": 500, "fwhm_nm": 10, "range_nm": (600, 500)}, "range"),
    ],
)
def test_bad_bands_are_refused(kwargs, match):
    with pytest.raises(SensorError, match=match):
        Band(name="x", **kwargs)


def test_duplicate_band_names_refused():
    with pytest.raises(SensorError, match="duplicate band names"):
        Sensor(name="dup", bands=(Band("a", 500, 10), Band("a", 600, 10)), gsd_m=30)
