"""``hyperkd predict``: whole scenes mapped in blended windows, written as COGs on the scene's grid."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from hyperkd.cli import main
from hyperkd.core.errors import HyperKDError
from hyperkd.core.sensors import get_sensor
from hyperkd.evaluation.predict import blend_weights, predict, window_starts
from hyperkd.evaluation.tasks import RegressionTask, SegmentationTask
from hyperkd.models.pixel import PixelModel

from .helpers.threads import one_thread  # noqa: F401 - autouse fixture

_spec = importlib.util.spec_from_file_location("enmap_fixtures", Path(__file__).parent / "data/enmap/data.py")
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)  # type: ignore[union-attr]
footprint_mask, write_l2a_product = fx.footprint_mask, fx.write_l2a_product
_rspec = importlib.util.spec_from_file_location(
    "raster_fixtures", Path(__file__).parent / "data/raster/data.py"
)
rx = importlib.util.module_from_spec(_rspec)
_rspec.loader.exec_module(rx)  # type: ignore[union-attr]

# rasterio 1.4 multiplies Affine objects with `*`, which affine 2.4+ flags as pending deprecation
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:rasterio.*")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "enmap-potsdam"
TASK = SegmentationTask(
    label="landcover", name="landcover", classes=("water", "grass", "roof"), codes=(1, 2, 3)
)
CHIP = 16


def _model(task=TASK, protocol="frozen", seed=0, sensor=None) -> PixelModel:
    torch.manual_seed(seed)
    model = PixelModel.build(
        task, sensor=sensor or get_sensor("enmap", "all"), img_size=CHIP, protocol=protocol
    )
    return model.eval()


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """A 48 x 40 px L2A product with a 12 px background (nodata) corner."""
    return write_l2a_product(tmp_path_factory.mktemp("scenes"))


def _nodata_corner(height: int = 40, width: int = 48, corner: int = 12) -> np.ndarray:
    return footprint_mask(height, width, corner)


def test_a_class_map_is_a_cog_on_the_scenes_grid_with_codes_names_colours_and_nodata(scene, tmp_path):
    (res,) = predict(_model(), [scene], tmp_path / "maps", progress=False)
    assert res.path == tmp_path / "maps" / f"{scene.name}.tif" and res.quicklook.is_file()
    image = next(scene.glob("*SPECTRAL_IMAGE.TIF"))
    with rasterio.open(image) as src, rasterio.open(res.path) as out:
        assert (out.crs, out.transform, out.width, out.height) == (
            src.crs,
            src.transform,
            src.width,
            src.height,
        )
        assert out.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        ids = out.read(1)
        assert out.dtypes[0] == "uint8" and out.nodata == 255
        assert json.loads(out.tags()["class_names"]) == {"1": "water", "2": "grass", "3": "roof"}
        assert out.tags(1)["CLASS_2"] == "grass" and out.descriptions == ("landcover",)
        assert set(out.colormap(1)) >= {1, 2, 3}
    missing = _nodata_corner()
    assert (ids[missing] == 255).all()
    assert set(np.unique(ids[~missing])) <= {1, 2, 3}
    assert res.nodata_pixels == int(missing.sum())


def test_results_do_not_depend_on_the_block_size_and_equal_a_whole_scene_reference(scene, tmp_path):
    """Blocks bound memory only: the map equals one computed over the whole scene in memory."""
    model = _model(seed=1)
    a = predict(model, [scene], tmp_path / "a", block=256, probabilities=True, overlap=6, progress=False)[0]
    b = predict(model, [scene], tmp_path / "b", block=10, probabilities=True, overlap=6, progress=False)[0]
    with rasterio.open(a.probabilities) as pa, rasterio.open(b.probabilities) as pb:
        prob_a, prob_b = pa.read(), pb.read()
        assert pa.descriptions == ("water", "grass", "roof")
    np.testing.assert_allclose(prob_a, prob_b, atol=1e-5, equal_nan=True)
    # reference: every window of the scene at once, weighted by blend_weights
    from hyperkd_enmap.l2a import open_l2a

    with open_l2a(scene) as product:
        pw = product.read()
    x = torch.from_numpy(pw.image)
    w = blend_weights(CHIP, 6)
    acc, wsum = np.zeros((3, 40, 48)), np.zeros((40, 48))
    for r in window_starts(40, CHIP, CHIP - 6):
        for c in window_starts(48, CHIP, CHIP - 6):
            with torch.no_grad():
                p = model(x[None, :, r : r + CHIP, c : c + CHIP]).softmax(1)[0].numpy()
            acc[:, r : r + CHIP, c : c + CHIP] += p * w
            wsum[r : r + CHIP, c : c + CHIP] += w
    ref = acc / wsum
    data = ~pw.nodata
    far = data.copy()  # windows that touch the corner see the filled nodata values, not zeros
    far[: CHIP * 2, : CHIP * 2] = False
    np.testing.assert_allclose(prob_a[:, far], ref[:, far], atol=1e-4)
    assert np.isnan(prob_a[:, pw.nodata]).all()
    np.testing.assert_allclose(prob_a[:, data].sum(0), 1.0, atol=1e-4)
    with rasterio.open(a.path) as out:
        ids = out.read(1)
    np.testing.assert_array_equal(ids[data], np.asarray([1, 2, 3])[prob_a[:, data].argmax(0)])


def test_blend_weights_taper_over_the_overlap_and_leave_no_seam():
    w = blend_weights(16, 4)
    assert w.shape == (16, 16) and np.allclose(w, w.T) and np.allclose(w, w[::-1, ::-1])
    assert w[8, 8] == 1.0 and 0 < w[0, 0] < w[0, 8] < w[2, 8] < w[4, 8] == 1.0
    # two windows with constant outputs 0 and 1 overlapping by 4 px: the blend ramps, no jump
    starts = window_starts(28, 16, 12)
    assert starts == [0, 12]
    acc, wsum = np.zeros(28), np.zeros(28)
    for value, s in zip((0.0, 1.0), starts, strict=True):
        acc[s : s + 16] += value * w[8]
        wsum[s : s + 16] += w[8]
    blended = acc / wsum
    assert np.all(np.diff(blended) >= 0) and np.abs(np.diff(blended)).max() < 0.5
    assert window_starts(10, 16, 12) == [0]


def test_a_linear_raw_spectra_model_maps_each_pixel_as_it_would_alone(scene, tmp_path):
    """Per-pixel models are window-invariant: any seam would show as a difference here."""
    model = _model(protocol="linear", seed=2)
    (res,) = predict(model, scene, tmp_path / "m", probabilities=True, overlap=0, progress=False)
    from hyperkd_enmap.l2a import open_l2a

    with open_l2a(scene) as product:
        pw = product.read()
    with torch.no_grad():
        head = model.head.linear
        direct = torch.einsum("kc,chw->khw", head.weight[:, :, 0, 0], torch.from_numpy(pw.image))
        direct = (direct + head.bias[:, None, None]).softmax(0).numpy()
    with rasterio.open(res.probabilities) as src:
        prob = src.read()
    np.testing.assert_allclose(prob[:, ~pw.nodata], direct[:, ~pw.nodata], atol=1e-5)


def test_bands_are_matched_by_wavelength_and_read_in_the_models_order(scene, tmp_path):
    """A model whose band table lists the scene's bands reversed gives the same map, reordered."""
    sensor = get_sensor("enmap", "all")
    a = _model(protocol="linear", seed=3, sensor=sensor)
    rev = sensor.select(list(reversed(sensor.band_names)))
    b = _model(protocol="linear", seed=3, sensor=rev)
    with torch.no_grad():
        b.head.linear.weight.copy_(a.head.linear.weight.flip(1))
        b.head.linear.bias.copy_(a.head.linear.bias)
    ra = predict(a, scene, tmp_path / "a", probabilities=True, progress=False)[0]
    rb = predict(b, scene, tmp_path / "b", probabilities=True, progress=False)[0]
    assert not ra.bands_reordered and rb.bands_reordered
    with rasterio.open(ra.probabilities) as pa, rasterio.open(rb.probabilities) as pb:
        np.testing.assert_allclose(pa.read(), pb.read(), atol=1e-5, equal_nan=True)


def test_a_regression_map_holds_values_in_the_labels_unit_and_nan_where_no_data(scene, tmp_path):
    task = RegressionTask(label="soc", name="soc", unit="g/kg", target_mean=20.0, target_std=5.0)
    (res,) = predict(_model(task=task), scene, tmp_path / "r", progress=False)
    with rasterio.open(res.path) as out:
        vals = out.read(1)
        assert out.dtypes[0] == "float32" and out.tags()["unit"] == "g/kg"
    missing = _nodata_corner()
    assert np.isnan(vals[missing]).all() and np.isfinite(vals[~missing]).all()
    assert res.quicklook.is_file()


def test_a_scene_smaller_than_one_window_is_padded(tmp_path):
    small = write_l2a_product(tmp_path / "s", width=10, height=12, corner=3)
    (res,) = predict(_model(), small, tmp_path / "m", progress=False)
    with rasterio.open(res.path) as out:
        ids = out.read(1)
    assert ids.shape == (12, 10) and (ids[footprint_mask(12, 10, 3)] == 255).all()
    assert set(np.unique(ids[~footprint_mask(12, 10, 3)])) <= {1, 2, 3}


def test_bad_input_is_refused_in_one_line_before_anything_is_written(scene, tmp_path):
    hls = _model(sensor=get_sensor("hls"))
    with pytest.raises(HyperKDError, match="has no match in"):
        predict(hls, scene, tmp_path / "none", progress=False)
    assert not (tmp_path / "none").exists()
    with pytest.raises(HyperKDError, match="no such scene"):
        predict(_model(), tmp_path / "missing.tif", tmp_path / "none", progress=False)
    with pytest.raises(HyperKDError, match="overlap must be"):
        predict(_model(), scene, tmp_path / "none", overlap=CHIP, progress=False)
    predict(_model(), scene, tmp_path / "m", quicklook=False, progress=False)
    with pytest.raises(HyperKDError, match="exists; pass --overwrite"):
        predict(_model(), scene, tmp_path / "m", progress=False)
    predict(_model(), scene, tmp_path / "m", overwrite=True, quicklook=False, progress=False)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [f"{scene.name}.tif"]


def test_cli_predict_maps_a_scene_with_a_finetune_run_folder(scene, tmp_path, capsys):
    run = tmp_path / "run"
    _model().save(run / "model")
    rc = main(["predict", str(run), str(scene), "--out", str(tmp_path / "maps"), "--json"])
    assert rc == 0
    stdout = capsys.readouterr().out
    got = json.loads(stdout[stdout.index("{") :])
    out = tmp_path / "maps" / f"{scene.name}.tif"
    assert got["maps"][0]["path"] == str(out) and got["maps"][0]["width"] == 48
    assert out.is_file() and (tmp_path / "maps" / f"{scene.name}.png").is_file()
    rc = main(["predict", str(tmp_path / "nothing"), str(scene), "--out", str(tmp_path / "x")])
    assert rc == 1 and "nothing" in capsys.readouterr().err


def _raster_model(path: Path, seed: int = 0) -> PixelModel:
    from hyperkd.data.raster import open_raster

    with open_raster(path) as product:
        return _model(sensor=product.sensor, seed=seed)


def test_a_geotiff_scene_is_read_by_the_raster_reader_and_mapped_on_its_grid(tmp_path):
    values = np.round(rx.reflectance(6, 30, 37, seed=4) * 10000).astype(np.int16)
    values[:, :5, :7] = -9999
    tif = rx.write_geotiff(tmp_path / "scene.tif", values, nodata=-9999)
    (res,) = predict(_raster_model(tif), [tif], tmp_path / "maps", progress=False)
    assert res.path == tmp_path / "maps" / "scene.tif" and res.nodata_pixels == 35
    with rasterio.open(tif) as src, rasterio.open(res.path) as out:
        assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)
        ids = out.read(1)
    assert (ids[:5, :7] == 255).all() and set(np.unique(ids)) - {255} <= {1, 2, 3}
    assert (ids != 255).sum() == 30 * 37 - 35


def test_windows_without_data_are_skipped_and_their_pixels_are_nodata(tmp_path):
    values = rx.reflectance(6, 40, 40, seed=6).astype(np.float32)
    values[:, :20, :20] = np.nan
    tif = rx.write_geotiff(tmp_path / "bg.tif", values)
    (res,) = predict(_raster_model(tif), tif, tmp_path / "maps", overlap=4, quicklook=False, progress=False)
    assert window_starts(40, CHIP, CHIP - 4) == [0, 12, 24] and res.windows == 8  # 9 windows, 1 empty
    with rasterio.open(res.path) as out:
        ids = out.read(1)
    assert (ids[:20, :20] == 255).all() and (ids[20:] != 255).all() and (ids[:, 20:] != 255).all()


def test_an_l2a_folder_is_read_by_the_l2a_reader_not_as_loose_geotiffs(scene):
    from hyperkd.evaluation.predict import scene_format

    assert scene_format(scene).name == "enmap-l2a"


def test_a_scene_without_a_crs_is_mapped_on_its_pixel_grid_with_a_warning(tmp_path, caplog):
    values = rx.reflectance(6, 20, 20, seed=5).astype(np.float32)
    tif = rx.write_geotiff(tmp_path / "nocrs.tif", values, crs=False)
    with caplog.at_level("WARNING"):
        (res,) = predict(_raster_model(tif), tif, tmp_path / "maps", quicklook=False, progress=False)
    assert res.crs is None and "cannot be georeferenced" in caplog.text
    with rasterio.open(res.path) as out:
        assert out.shape == (20, 20) and out.crs is None


def test_the_notebook_api_exports_predict():
    import hyperkd

    assert hyperkd.predict is predict


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"real EnMAP tiles not present at {SHARED}")
def test_a_real_potsdam_tile_is_mapped_on_its_own_grid(tmp_path):
    from hyperkd.data.products import product_formats

    if "raster" not in {f.name for f in product_formats()}:
        pytest.skip("no `raster` reader installed yet to read the Potsdam GeoTIFFs")
    tile = sorted((SHARED / "images").glob("*.tif"))[0]
    from hyperkd.evaluation.predict import scene_format

    with scene_format(tile).open(tile) as product:
        sensor = product.sensor
    (res,) = predict(_model(sensor=sensor), tile, tmp_path, progress=False)
    with rasterio.open(tile) as src, rasterio.open(res.path) as out:
        assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)
