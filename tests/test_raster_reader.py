"""The ``raster`` reader (GeoTIFF/ENVI with their own band tables) and band matching by wavelength."""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio

from hyperkd.cli import main
from hyperkd.core.errors import DataError, HyperKDError, SensorError
from hyperkd.core.plugins import load_plugins
from hyperkd.core.sensors import Band, Sensor, get_sensor, match_bands
from hyperkd.data.prepare import prepare, store_products
from hyperkd.data.raster import RasterProduct, find_rasters, open_raster
from hyperkd.data.store import ChipStore

from . import test_hub

load_plugins()

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:rasterio.*")

_spec = importlib.util.spec_from_file_location(
    "raster_fixtures", Path(__file__).parent / "data/raster/data.py"
)
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)  # type: ignore[union-attr]

saved = test_hub.saved  # fixture: a tiny random student and its saved folder
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "enmap-potsdam"
H = W = 16


def _sensor(centers: list[float], name: str = "s", fwhm: float = 10.0) -> Sensor:
    bands = tuple(Band(f"B{i + 1}", c, fwhm) for i, c in enumerate(centers))
    return Sensor(name=name, bands=bands, gsd_m=30.0)


# -- match_bands ---------------------------------------------------------------------------------
def test_match_bands_identity_reorder_subset_and_refusal():
    a = _sensor([450, 550, 650, 750])
    assert match_bands(a, _sensor([451, 549, 650, 750]), "x") == [0, 1, 2, 3]
    assert match_bands(a, _sensor([650, 450, 750, 550]), "x") == [1, 3, 0, 2]
    assert match_bands(_sensor([550, 750]), a, "x") == [1, 3]  # a scene with more bands than the model
    with pytest.raises(SensorError) as err:
        match_bands(a, _sensor([450, 560, 650, 750], name="data"), "model vs scene.tif")
    msg = str(err.value)
    assert "model vs scene.tif" in msg and "550 nm" in msg and "560 nm" in msg and "\n" not in msg


def test_match_bands_pairs_the_closest_bands_first():
    # EnMAP's VNIR/SWIR overlap: two bands 0.6 nm apart, in detector order in one table
    exp = _sensor([951.68, 952.30], fwhm=7.0)
    act = _sensor([952.355, 951.677], fwhm=7.0)
    assert match_bands(exp, act, "x") == [1, 0]


def test_eval_store_with_the_same_names_but_other_wavelengths_is_refused():
    from hyperkd.evaluation.finetune import _check_eval_store

    train = SimpleNamespace(sensor=_sensor([450, 550, 650]), root="train", chip_size=8, labels={})
    swapped = SimpleNamespace(sensor=_sensor([550, 450, 650]), root="val", chip_size=8, labels={})
    task = SimpleNamespace(label="landcover")
    with pytest.raises(HyperKDError, match="another order"):
        _check_eval_store(train, swapped, task, None)  # type: ignore[arg-type]
    other = SimpleNamespace(sensor=_sensor([450, 600, 650]), root="val", chip_size=8, labels={})
    with pytest.raises(SensorError, match="550 nm"):
        _check_eval_store(train, other, task, None)  # type: ignore[arg-type]


def _swapped(sensor: Sensor) -> Sensor:
    """The same band names with the first two bands' wavelengths swapped (a detector-order file)."""
    b = sensor.bands
    first = replace(b[0], center_nm=b[1].center_nm, fwhm_nm=b[1].fwhm_nm)
    second = replace(b[1], center_nm=b[0].center_nm, fwhm_nm=b[0].fwhm_nm)
    return replace(sensor, bands=(first, second, *b[2:]))


def test_a_trained_student_meets_a_store_with_its_names_but_other_wavelengths(saved, tmp_path):
    from hyperkd import recipes
    from hyperkd.core.errors import RecipeError
    from hyperkd.evaluation.finetune import resolve_student
    from hyperkd.training.runner import build_student_for

    from .helpers.toy import toy_store

    model, folder = saved
    store = toy_store(tmp_path / "store", sensor=_swapped(model.sensor), chips=2, size=16)
    assert store.sensor.band_names == model.sensor.band_names  # a check by name would pass
    with pytest.raises(RecipeError, match="student band 1 is store band 2"):
        build_student_for(recipes.resolve("mae", [f"student.name={folder}"]), store)
    with pytest.raises(HyperKDError, match="another order"):
        resolve_student(str(folder), store)


# -- GeoTIFF ---------------------------------------------------------------------------------------
def _tile(tmp_path: Path, name: str = "tile.tif", **kw) -> tuple[Path, np.ndarray]:
    refl = fx.reflectance(6, H, W)
    stored = np.round(refl * 10000).astype("float32")
    stored[4] = -32768  # band 5 holds no data at all
    path = fx.write_geotiff(tmp_path / name, stored, bbl=[1, 1, 0, 1, 1, 1], nodata=-32768, scale=1e-4, **kw)
    return path, np.round(refl * 10000) * 1e-4


def test_geotiff_with_envi_tags_prepares_its_own_band_table_without_bad_bands(tmp_path):
    path, refl = _tile(tmp_path)
    with open_raster(path) as p:
        assert p.sensor.name == "raster" and p.sensor.centers_nm == fx.CENTERS
        assert p.unusable_bands == {"B3": "bbl = 0", "B5": "no data"}
        assert "GDAL scale 0.0001" in p.info()["reflectance_scale"]
    store = prepare([path], tmp_path / "S", size=8, progress=False)
    assert store.sensor.centers_nm == [450.0, 550.0, 750.0, 950.0]
    dropped = store.manifest["attrs"]["dropped_bands"]
    assert set(dropped) == {"B3", "B5"} and dropped["B5"]["reasons"] == ["no data"]
    assert store.manifest["attrs"]["reader"] == "raster" and len(store) == 4
    image = np.asarray(ChipStore(tmp_path / "S")[0]["image"])
    np.testing.assert_allclose(image, refl[[0, 1, 3, 5], :8, :8], rtol=1e-3)  # float16 store


def test_selection_all_keeps_the_bad_bands(tmp_path):
    path, _ = _tile(tmp_path)
    # band 5 is empty: every window has no data in it, so keeping it leaves nothing to store
    with pytest.raises(DataError, match=r"no chips|no pixel holds data"):
        prepare([path], tmp_path / "S", size=8, selection="all", progress=False)
    assert not (tmp_path / "S").exists()


def test_detector_order_matches_a_registered_sensor_and_keeps_the_file_order(tmp_path):
    enmap = get_sensor("enmap", selection="all")
    order = list(range(224))
    order[90:96] = [93, 94, 95, 90, 91, 92]  # a detector-order stretch
    values = np.full((224, 8, 8), 1000.0, dtype="float32")
    path = fx.write_geotiff(
        tmp_path / "scene.tif",
        values,
        centers=[enmap.centers_nm[i] for i in order],
        fwhms=[enmap.fwhms_nm[i] for i in order],
        nodata=-32768,
        scale=1e-4,
    )
    with open_raster(path) as p:
        assert p.sensor.name == "enmap"
        assert p.sensor.band_names[90:96] == ["B94", "B95", "B96", "B91", "B92", "B93"]
        assert p.sensor.centers_nm == [enmap.centers_nm[i] for i in order]
        assert p.info()["sensor_band_index"][90] == 94
        assert p.sensor.default_selection is None
        # the model <-> scene check finds the permutation
        assert match_bands(enmap, p.sensor, "x")[90:96] == [93, 94, 95, 90, 91, 92]


def test_forced_sensor_must_match_by_wavelength(tmp_path):
    path, _ = _tile(tmp_path)
    with pytest.raises(SensorError, match=r"B3, 650 nm.*nearest band is B45 at 647.296 nm"):
        open_raster(path, sensor="enmap")


def test_no_wavelengths_needs_a_sensor(tmp_path):
    path = fx.write_geotiff(
        tmp_path / "plain.tif", fx.reflectance(6, 4, 4).astype("float32"), centers=None, fwhms=None
    )
    with pytest.raises(DataError, match=r"no band wavelengths.*--sensor"):
        open_raster(path)


@pytest.mark.parametrize(
    ("dtype", "factor", "label"),
    [("float32", 1.0, "x1"), ("uint8", 100.0, "percent"), ("uint16", 1e4, "x10000")],
)
def test_scale_detected_from_values_when_no_metadata_says(tmp_path, dtype, factor, label):
    refl = fx.reflectance(6, H, W)
    path = fx.write_geotiff(tmp_path / "t.tif", np.round(refl * factor).astype(dtype))
    with open_raster(path) as p:
        assert label in p.info()["reflectance_scale"]
        assert any("values read as reflectance" in w for w in p.warnings)
        np.testing.assert_allclose(p.read().image, np.round(refl * factor) / factor, atol=1e-6)


def test_implausible_values_are_refused_in_one_line(tmp_path):
    radiance = fx.reflectance(6, H, W) * 1e6  # not reflectance at any of the known scales
    path = fx.write_geotiff(tmp_path / "rad.tif", radiance.astype("float32"))
    with pytest.raises(DataError) as err:
        open_raster(path)
    assert str(err.value).startswith(str(path)) and "not surface reflectance" in str(err.value)
    assert "\n" not in str(err.value)


# -- ENVI ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
def test_envi_unknown_units_no_map_info(tmp_path, interleave, caplog):
    refl = fx.reflectance(6, H, W)
    stored = np.round(refl * 10000).astype("int16")
    stored[:, 0, 0] = -9999
    path = fx.write_envi(
        tmp_path / f"cube.{interleave}",
        stored,
        interleave=interleave,
        centers=[c / 1000 for c in fx.CENTERS],
        fwhms=[f / 1000 for f in fx.FWHMS],
        units="Unknown",
        ignore=-9999,
        scale_factor=10000,
    )
    assert find_rasters(tmp_path) == [path] and find_rasters(path.with_suffix(".hdr")) == [path]
    with open_raster(path.with_suffix(".hdr")) as p:
        assert isinstance(p, RasterProduct) and p.crs is None and p.nodata == -9999
        assert p.sensor.centers_nm == pytest.approx(fx.CENTERS)
        assert p.sensor.fwhms_nm == pytest.approx(fx.FWHMS)
        assert "reflectance scale factor 10000" in p.info()["reflectance_scale"]
        pw = p.read()
        assert not pw.valid[0, 0] and pw.valid.sum() == H * W - 1
        np.testing.assert_allclose(pw.image[:, 1:, 1:], stored[:, 1:, 1:] / 1e4, atol=1e-6)
    with pytest.raises(DataError, match=r"cube\.\w+: has no CRS .* or pass --allow-no-crs"):
        prepare([tmp_path], tmp_path / "S", size=8, progress=False)
    with caplog.at_level(logging.WARNING, logger="hyperkd.data.prepare"):
        store = prepare([tmp_path], tmp_path / "S", size=8, progress=False, allow_no_crs=True)
    assert store.sensor.centers_nm == pytest.approx(fx.CENTERS)
    text = caplog.text
    assert "no CRS" in text and "cannot be georeferenced" in text and "read as micrometres" in text
    assert store_products(store)["cube"]["crs"] is None


def test_envi_bbl_and_float_without_scale(tmp_path):
    refl = fx.reflectance(6, H, W).astype("float32")
    path = fx.write_envi(tmp_path / "f.bsq", refl, bbl=[1, 0, 1, 1, 1, 1])
    with open_raster(path) as p:
        assert p.unusable_bands == {"B2": "bbl = 0"} and "x1" in p.info()["reflectance_scale"]


def test_two_tiles_with_different_empty_bands_share_one_table(tmp_path):
    refl = fx.reflectance(6, H, W)
    a = np.round(refl * 10000).astype("float32")
    b = a.copy()
    a[1] = -32768
    b[3] = -32768
    fx.write_geotiff(tmp_path / "a.tif", a, nodata=-32768)
    fx.write_geotiff(tmp_path / "b.tif", b, nodata=-32768)
    store = prepare([tmp_path], tmp_path / "S", size=8, progress=False)
    assert store.sensor.band_names == ["B1", "B3", "B5", "B6"] and len(store) == 8


def test_cli_names_the_dropped_bands(tmp_path, capsys):
    path, _ = _tile(tmp_path)
    assert main(["data", "prepare", str(path), "--out", str(tmp_path / "S"), "--size", "8"]) == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert "dropped 2 unusable band(s): B3 (650 nm: bbl = 0), B5 (850 nm: no data)" in flat
    assert "reflectance scale: GDAL scale 0.0001" in flat
    argv = [
        "data",
        "prepare",
        str(path),
        "--out",
        str(tmp_path / "T"),
        "--size",
        "8",
        "--json",
        "--reader",
        "raster",
    ]
    assert main(argv) == 0
    assert set(json.loads(capsys.readouterr().out)["dropped_bands"]) == {"B3", "B5"}


# -- real data -------------------------------------------------------------------------------------
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"real EnMAP tiles not present at {SHARED}")
def test_real_enmap_potsdam_tiles_prepare_as_they_are(tmp_path):
    images = sorted((SHARED / "images").glob("*.tif"))
    with rasterio.open(images[0]) as src:
        own = [float(src.tags(i)["wavelength"]) for i in range(1, src.count + 1)]
        bbl = [src.tags(i)["bbl"] for i in range(1, src.count + 1)]
    store = prepare([SHARED / "images"], tmp_path / "S", size=32, progress=False)
    assert store.sensor.name == "enmap" and len(store) == len(images)
    assert store.sensor.centers_nm == [w for w, b in zip(own, bbl, strict=True) if b == "1"]
    assert len(store.manifest["attrs"]["dropped_bands"]) == 6
    mean = np.asarray(store.sensor.means)
    assert mean.min() > 0.0 and mean.max() < 1.0  # reflectance, not x10000
