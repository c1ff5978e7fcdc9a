"""Labels as users have them: a raster, a folder of label tiles, a vector file; ignore value, legend.

Every reader is tested on small files written here in the real formats (GeoTIFF tiles, a
GeoPackage and a GeoJSON of polygons and points, a legend CSV, GDAL's .aux.xml category
names); the real EnMAP Potsdam label tiles in ../shared are used when present.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from hyperkd.core.errors import DataError, HyperKDError
from hyperkd.evaluation.labels import bind_labels
from hyperkd.evaluation.tasks import get_task

from .helpers.threads import one_thread  # noqa: F401 - autouse fixture

X0, Y0 = 500_000.0, 4_100_000.0  # UTM 33N corner of the labelled area
POTSDAM = Path(__file__).resolve().parents[2] / "shared" / "data" / "enmap-potsdam"


def _store(root, offsets, size=4, crs="EPSG:32633", x0=X0, y0=Y0, res=30.0, seed=0):
    """A store of ``size`` px chips at (col, row) offsets of a 30 m grid; random 'hls' spectra."""
    from affine import Affine

    from hyperkd.core.sensors import get_sensor
    from hyperkd.data.store import ChipStoreWriter

    sensor = get_sensor("hls")
    rng = np.random.default_rng(seed)
    w = ChipStoreWriter(root, sensor, size)
    for k, (col, row) in enumerate(offsets):
        tf = Affine(res, 0.0, x0 + res * col, 0.0, -res, y0 - res * row)
        w.add(
            rng.uniform(0.05, 0.5, (sensor.num_bands, size, size)).astype(np.float32),
            source=f"p{k}",
            window=[col, row, size, size],
            crs=crs,
            transform=list(tf)[:6],
        )
    return w.close()


def _tif(path, data, col=0, row=0, nodata=None, crs="EPSG:32633"):
    """A GeoTIFF of ``data`` whose top-left pixel is (col, row) of the 30 m grid at (X0, Y0)."""
    import rasterio
    from affine import Affine

    path.parent.mkdir(parents=True, exist_ok=True)
    tf = Affine(30.0, 0, X0 + 30.0 * col, 0, -30.0, Y0 - 30.0 * row)
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1, dtype=data.dtype,
        crs=crs, transform=tf, nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(data, 1)
    return path


def _scene(shape=(12, 12), seed=0):
    """Class codes 0..3 (0 = no label covering most pixels), as float32 like the Potsdam labels."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(1, 4, shape).astype(np.float32)
    codes[rng.random(shape) < 0.6] = 0
    return codes


def _tiles(folder, scene, tile=6):
    for r in range(0, scene.shape[0], tile):
        for c in range(0, scene.shape[1], tile):
            _tif(folder / f"t_{r}_{c}.tif", scene[r : r + tile, c : c + tile], col=c, row=r)
    return folder


def test_a_folder_of_tiles_is_mosaicked_per_chip_and_the_ignore_value_is_no_label(tmp_path):
    from hyperkd.data.labels import align_labels

    scene = _scene()
    folder = _tiles(tmp_path / "labels", scene)
    (folder / "notes.txt").write_text("not a tile")
    # chips straddle the tile edges (tiles are 6 px, chips 4 px at offsets 4 and 8)
    store = _store(tmp_path / "s", [(0, 0), (4, 4), (8, 2), (4, 8)])
    values, own = align_labels(folder, store, "class")
    assert own == {}
    for k, (c, r) in enumerate([(0, 0), (4, 4), (8, 2), (4, 8)]):
        np.testing.assert_array_equal(values[k], scene[r : r + 4, c : c + 4])
    ignored, _ = align_labels(folder, store, "class", nodata=0)
    want = scene[4:8, 4:8].copy()
    want[want == 0] = np.nan
    np.testing.assert_array_equal(ignored[1], want)
    # a chip beyond every tile is unlabelled, not an error
    far = _store(tmp_path / "far", [(40, 40)])
    assert np.isnan(align_labels(folder, far, "class")[0]).all()
    with pytest.raises(DataError, match="holds no raster tile"):
        align_labels(tmp_path / "s", store, "class")  # a store folder, not label tiles


def test_bind_labels_warns_once_when_code_0_covers_most_pixels_and_ignores_it_when_told(tmp_path, caplog):
    scene = _scene()
    folder = _tiles(tmp_path / "labels", scene)
    store = _store(tmp_path / "s", [(0, 0), (4, 4), (8, 8), (0, 8)])
    with caplog.at_level(logging.WARNING):
        as_class, _ = bind_labels(get_task("segmentation"), store, folder)
    warned = [r.getMessage() for r in caplog.records if "--label-nodata 0" in r.getMessage()]
    assert len(warned) == 1 and "code 0 covers" in warned[0] and str(folder) in warned[0]
    assert as_class.codes == (0.0, 1.0, 2.0, 3.0)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        task, labels = bind_labels(get_task("segmentation"), store, folder, nodata=0)
    assert not [r for r in caplog.records if "--label-nodata" in r.getMessage()]
    assert task.codes == (1.0, 2.0, 3.0) and task.classes == ("class 1", "class 2", "class 3")
    t = labels.target(1)
    want = scene[4:8, 4:8]
    np.testing.assert_array_equal(t == -1, want == 0)  # ignored exactly where the code is 0
    np.testing.assert_array_equal(t[want > 0], want[want > 0] - 1)


def test_legend_csv_names_the_classes_and_must_list_every_labelled_code(tmp_path):
    from hyperkd.data.labels import read_legend

    folder = _tiles(tmp_path / "labels", _scene())
    store = _store(tmp_path / "s", [(0, 0), (4, 4), (8, 8)])
    legend = tmp_path / "legend.csv"
    legend.write_text(
        "code,name,colour\n0,no label,#000000\n1,roof,#ff0000\n2,tree,#00aa00\n3,water,#0000ff\n"
    )
    names, colours = read_legend(legend)
    assert names == {0: "no label", 1: "roof", 2: "tree", 3: "water"} and colours[2] == "#00aa00"
    task, _ = bind_labels(get_task("segmentation"), store, folder, nodata=0, legend=legend)
    assert task.classes == ("roof (1)", "tree (2)", "water (3)")
    short = tmp_path / "short.csv"
    short.write_text("1,roof\n2,tree\n")
    with pytest.raises(DataError, match=r"hold codes \[3\] that legend .*short.csv does not list"):
        bind_labels(get_task("segmentation"), store, folder, nodata=0, legend=short)
    bad = tmp_path / "bad.csv"
    bad.write_text("1,roof\nx,tree\n")
    with pytest.raises(DataError, match=r"bad.csv, line 2: code 'x' is not a number"):
        read_legend(bad)


def test_category_names_in_the_gdal_sidecar_name_the_classes(tmp_path):
    from hyperkd.data.labels import raster_legend

    codes = np.array([[1, 2, 2, 0]] * 4, np.uint8)
    path = _tif(tmp_path / "lc.tif", codes, nodata=0)
    Path(f"{path}.aux.xml").write_text(
        "<PAMDataset><PAMRasterBand band='1'><CategoryNames><Category>none</Category>"
        "<Category>grass</Category><Category>forest</Category></CategoryNames></PAMRasterBand></PAMDataset>"
    )
    assert raster_legend(path) == {0: "none", 1: "grass", 2: "forest"}
    store = _store(tmp_path / "s", [(0, 0)])
    task, labels = bind_labels(get_task("segmentation"), store, path)
    assert task.classes == ("grass (1)", "forest (2)")  # 0 is the raster's nodata: no class
    assert (labels.target(0)[:, 3] == -1).all()


def test_a_raster_attribute_table_or_a_qgis_style_names_the_classes(tmp_path):
    from hyperkd.data.labels import raster_legend, read_legend

    path = _tif(tmp_path / "rat.tif", np.array([[1, 7]], np.uint8))
    Path(f"{path}.aux.xml").write_text(
        "<PAMDataset><PAMRasterBand band='1'><GDALRasterAttributeTable tableType='thematic'>"
        "<FieldDefn index='0'><Name>Value</Name><Type>0</Type><Usage>5</Usage></FieldDefn>"
        "<FieldDefn index='1'><Name>Count</Name><Type>0</Type><Usage>1</Usage></FieldDefn>"
        "<FieldDefn index='2'><Name>Class</Name><Type>2</Type><Usage>2</Usage></FieldDefn>"
        "<Row index='0'><F>1</F><F>10</F><F>wheat</F></Row><Row index='1'><F>7</F><F>3</F><F>maize</F></Row>"
        "</GDALRasterAttributeTable></PAMRasterBand></PAMDataset>"
    )
    assert raster_legend(path) == {1: "wheat", 7: "maize"}
    qml = tmp_path / "rat.qml"  # QGIS's default style beside the layer wins
    qml.write_text(
        "<qgis><pipe><rasterrenderer type='paletted'><colorPalette>"
        "<paletteEntry value='1' label='winter wheat' color='#f5deb3' alpha='255'/>"
        "<paletteEntry value='7' label='maize' color='#ffd700' alpha='255'/>"
        "</colorPalette></rasterrenderer></pipe></qgis>"
    )
    assert raster_legend(path) == {1: "winter wheat", 7: "maize"}
    assert read_legend(qml) == ({1: "winter wheat", 7: "maize"}, {1: "#f5deb3", 7: "#ffd700"})


def _features(crs="EPSG:32633"):
    """Two polygons (class 'tree' = 2 over cols 0-3, 'water' = 3 over cols 4-7 of rows 0-3) and a
    'roof' point in pixel (row 1, col 1) drawn over the tree polygon; in ``crs``."""
    import geopandas as gpd
    from shapely.geometry import Point, box

    def px(c, r):
        return X0 + 30.0 * c, Y0 - 30.0 * r

    geoms = [
        box(*px(0, 4), *px(4, 0)),
        box(*px(4, 4), *px(8, 0)),
        Point(px(1.5, 1.5)),
    ]
    gdf = gpd.GeoDataFrame(
        {"code": [2, 3, 1], "name": ["tree", "water", "roof"], "area": [1.0, 2.0, 0.0]},
        geometry=geoms,
        crs="EPSG:32633",
    )
    return gdf.to_crs(crs)


@pytest.mark.parametrize(
    ("suffix", "driver", "crs"), [(".gpkg", "GPKG", "EPSG:32633"), (".geojson", "GeoJSON", "EPSG:4326")]
)
def test_vector_polygons_are_rasterised_and_points_sampled_onto_the_chips(tmp_path, suffix, driver, crs):
    from hyperkd.data.labels import align_labels

    path = tmp_path / f"survey{suffix}"
    _features(crs).to_file(path, driver=driver)
    store = _store(tmp_path / "s", [(0, 0), (4, 0), (2, 2)])
    values, own = align_labels(path, store, "class", field="code")
    assert own == {}
    want = np.full((4, 8), 2.0, np.float32)
    want[:, 4:] = 3
    want[1, 1] = 1  # the point wins over the polygon under it
    np.testing.assert_array_equal(values[0], want[:, :4])
    np.testing.assert_array_equal(values[1], want[:, 4:])
    np.testing.assert_array_equal(values[2][:2], want[2:4, 2:6])
    assert np.isnan(values[2][2:]).all()  # rows 4-5: no feature there
    # a text field: codes 1.. in name order, the names become the legend
    by_name, legend = align_labels(path, store, "class", field="name")
    assert legend == {1: "roof", 2: "tree", 3: "water"}
    np.testing.assert_array_equal(by_name[0], values[0])
    task, _ = bind_labels(get_task("segmentation"), store, path, field="name")
    assert task.classes == ("roof (1)", "tree (2)", "water (3)")


def test_vector_labels_say_which_field_to_choose(tmp_path):
    from hyperkd.data.labels import align_labels

    path = tmp_path / "survey.gpkg"
    _features().to_file(path, driver="GPKG")
    store = _store(tmp_path / "s", [(0, 0)])
    with pytest.raises(DataError, match=r"have 3 fields \(code, name, area\).*pass --label-field NAME"):
        align_labels(path, store, "class")
    with pytest.raises(DataError, match=r"no field 'klass' \(fields: code, name, area\)"):
        align_labels(path, store, "class", field="klass")
    with pytest.raises(DataError, match="is for vector labels"):
        align_labels(_tif(tmp_path / "r.tif", np.ones((4, 4), np.uint8)), store, "class", field="code")
    with pytest.raises(DataError, match="do not exist"):
        align_labels(tmp_path / "missing.gpkg", store, "class")


def test_regression_targets_from_points_label_only_their_pixels(tmp_path):
    import geopandas as gpd
    from shapely.geometry import Point

    pts = gpd.GeoDataFrame(
        {"soc": [12.5, 30.0]},
        geometry=[Point(X0 + 45.0, Y0 - 15.0), Point(X0 + 105.0, Y0 - 75.0)],  # pixels (0,1), (2,3)
        crs="EPSG:32633",
    )
    path = tmp_path / "soc.geojson"
    pts.to_file(path, driver="GeoJSON")
    store = _store(tmp_path / "s", [(0, 0)])
    _, labels = bind_labels(get_task("soc"), store, path)
    t = labels.target(0)
    assert t[0, 1] == pytest.approx(12.5) and t[2, 3] == pytest.approx(30.0)
    assert int(np.isfinite(t).sum()) == 2


def test_finetune_on_a_label_folder_trains_without_the_ignore_class_and_validates_on_another_store(tmp_path):
    from hyperkd.evaluation.finetune import evaluate, finetune
    from hyperkd.models.pixel import PixelModel

    scene = _scene((16, 16), seed=1)
    folder = _tiles(tmp_path / "labels", scene, tile=8)
    train = _store(tmp_path / "train", [(0, 0), (4, 0), (8, 0), (12, 0), (0, 4), (4, 4), (8, 4), (12, 4)])
    val = _store(tmp_path / "val", [(0, 8), (4, 8)], seed=1)
    test = _store(tmp_path / "test", [(8, 12), (12, 12)], seed=2)
    res = finetune(
        student="raw",
        task="segmentation",
        store=train,
        labels=folder,
        label_nodata=0,
        val_store=val,
        eval_store=test,
        protocol="linear",
        epochs=1,
        batch_size=4,
        out=tmp_path / "run",
        figures=False,
    )
    model = PixelModel.load(tmp_path / "run")
    assert model.task.codes == (1.0, 2.0, 3.0) and model.task.out_channels == 3  # not 4: 0 is no label
    assert res.settings["train_chips"] == list(range(8)) and res.settings["test_chips"] == []
    assert res.settings["val_chips"] == [0, 1] and res.settings["val_store"] == str(val.root.resolve())
    want_test = int((scene[12:16, 8:16] > 0).sum())
    assert res.metrics["pixels"] == want_test  # ignored pixels are not scored
    assert res.val_metrics["pixels"] == int((scene[8:12, 0:8] > 0).sum())
    # evaluate reuses the run's ignore value; it never scores the training store's trained chips
    again = evaluate(tmp_path / "run", test, labels=folder)
    assert again.metrics["confusion_matrix"] == res.metrics["confusion_matrix"]
    assert "pixels_unknown_class" not in again.metrics
    with pytest.raises(DataError, match=r"every chip of .*train was used to train or validate"):
        evaluate(tmp_path / "run", train, labels=folder)
    with pytest.raises(HyperKDError, match=r"--val-data .* is the training store"):
        finetune(
            student="raw",
            task="segmentation",
            store=train,
            labels=folder,
            val_store=train,
            out=tmp_path / "x",
        )


def test_cli_takes_a_label_folder_ignore_value_legend_val_fraction_and_evaluate_lists_its_chips(
    tmp_path, capsys
):
    from hyperkd.cli import main

    scene = _scene((16, 16), seed=2)
    folder = _tiles(tmp_path / "labels", scene, tile=8)
    offsets = [(c, r) for r in (0, 4, 8, 12) for c in (0, 4, 8, 12)]
    store = _store(tmp_path / "s", offsets)
    legend = tmp_path / "legend.csv"
    legend.write_text("1,roof\n2,tree\n3,water\n")
    run = tmp_path / "run"
    args = ["finetune", "--task", "segmentation", "--student", "raw", "--data", str(store.root)]
    args += [
        "--labels",
        str(folder),
        "--label-nodata",
        "0",
        "--legend",
        str(legend),
        "--val-fraction",
        "0.25",
    ]
    args += ["--test-fraction", "0.25", "--protocol", "linear", "--epochs", "1", "--out", str(run)]
    assert main(args) == 0
    settings = json.loads((run / "finetune.json").read_text())
    assert len(settings["val_chips"]) == 4 and len(settings["test_chips"]) == 4
    assert settings["label_nodata"] == 0 and settings["legend"] == str(legend)
    cfg = json.loads((run / "model" / "config.json").read_text())
    assert cfg["trained_on"]["legend"]["2"] == ["tree", None]
    capsys.readouterr()
    assert (
        main(["evaluate", "--model", str(run), "--data", str(store.root), "--labels", str(folder), "--json"])
        == 0
    )
    out = capsys.readouterr().out
    got = json.loads(out[out.index("{") :])
    assert got["chips"] == settings["test_chips"]
    assert set(got["metrics"]["per_class"]) == {"roof (1)", "tree (2)", "water (3)"}


@pytest.mark.skipif(not POTSDAM.exists(), reason=f"the real EnMAP Potsdam tiles are not at {POTSDAM}")
def test_the_real_potsdam_label_tiles_give_six_classes_with_label_nodata_0(tmp_path, caplog):
    """The EnMAP-Box Potsdam labels (0 = no label, 1-6) aligned onto chips cut from the real image tiles."""
    import rasterio

    from hyperkd.core.sensors import get_sensor
    from hyperkd.data.store import ChipStoreWriter

    # the training tiles, where 0 (no label) covers 73 % of the pixels
    pairs = [line.split(",") for line in (POTSDAM / "train_files.csv").read_text().splitlines()[1:]]
    w = ChipStoreWriter(tmp_path / "s", get_sensor("hls"), 32)
    truth = []
    for name, mask in pairs:
        with rasterio.open(POTSDAM / name) as src:
            image = src.read([20, 30, 45, 80, 150, 200]).astype(np.float32) / 10000.0
            w.add(np.clip(image, 0, 1), source=name, window=[0, 0, 32, 32], crs=src.crs.to_string(),
                  transform=list(src.transform)[:6])  # fmt: skip
        with rasterio.open(POTSDAM / mask) as lab:
            truth.append(lab.read(1))
    store = w.close()
    with caplog.at_level(logging.WARNING):
        seven, _ = bind_labels(get_task("segmentation"), store, POTSDAM / "labels")
    assert any("code 0 covers" in r.getMessage() for r in caplog.records)
    task, labels = bind_labels(get_task("segmentation"), store, POTSDAM / "labels", nodata=0)
    assert len(seven.classes) == 7 and len(task.classes) == 6 and task.codes == (1, 2, 3, 4, 5, 6)
    for k, t in enumerate(truth):
        got = labels.target(k)
        valid = np.asarray(store[k]["valid"], bool)
        np.testing.assert_array_equal(got[valid], np.where(t == 0, -1, t - 1)[valid].astype(np.int64))
