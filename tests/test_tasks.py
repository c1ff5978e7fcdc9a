"""Task metrics against hand-computed values; label rasters reprojected onto chip windows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hyperkd.core.errors import DataError, HyperKDError
from hyperkd.data.store import LabelSpec
from hyperkd.evaluation.tasks import (
    ConfusionAccumulator,
    RegressionAccumulator,
    RegressionTask,
    SegmentationTask,
    classification_metrics,
    confusion_matrix,
    get_task,
    regression_metrics,
    task_from_dict,
)

# -- classification ---------------------------------------------------------------------------


def test_confusion_matrix_counts_rows_truth_columns_prediction_and_skips_ignore_index():
    target = np.array([[0, 0, 1], [1, 2, -1]])
    pred = np.array([[0, 1, 1], [0, 2, 2]])
    cm = confusion_matrix(pred, target, 3, ignore_index=-1)
    assert cm.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    # a non-default ignore index (255) with torch inputs
    cm255 = confusion_matrix(torch.tensor([2, 0]), torch.tensor([255, 0]), 3, ignore_index=255)
    assert cm255.tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]
    with pytest.raises(DataError, match=r"0\.\.2"):
        confusion_matrix(np.array([0]), np.array([3]), 3)


def test_classification_metrics_by_hand():
    # truth:      0 0 0 0 1 1 2 2 ; class 3 absent from truth and prediction
    # prediction: 0 0 0 1 1 2 2 2
    cm = confusion_matrix(np.array([0, 0, 0, 1, 1, 2, 2, 2]), np.array([0, 0, 0, 0, 1, 1, 2, 2]), 4)
    m = classification_metrics(cm, ["a", "b", "c", "d"])
    assert m["overall_accuracy"] == pytest.approx(6 / 8)
    # IoU: a = 3/(3+0+1) ; b = 1/(1+1+1) ; c = 2/(2+1+0) ; d = 0/0 -> excluded
    ious = [3 / 4, 1 / 3, 2 / 3]
    assert [m["per_class"][k]["iou"] for k in "abc"] == pytest.approx(ious)
    assert m["per_class"]["d"]["iou"] is None and m["per_class"]["d"]["f1"] is None
    assert m["miou"] == pytest.approx(sum(ious) / 3)
    # F1 = 2TP / (2TP + FP + FN): a = 6/7, b = 2/4, c = 4/5
    f1 = [6 / 7, 2 / 4, 4 / 5]
    assert [m["per_class"][k]["f1"] for k in "abc"] == pytest.approx(f1)
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert m["per_class"]["a"]["precision"] == pytest.approx(1.0)
    assert m["per_class"]["a"]["recall"] == pytest.approx(3 / 4)
    assert m["per_class"]["d"]["support"] == 0 and m["pixels"] == 8
    assert m["confusion_matrix"][0] == [3, 1, 0, 0]


def test_a_class_predicted_but_absent_from_truth_counts_as_zero_iou():
    cm = confusion_matrix(np.array([0, 1]), np.array([0, 0]), 2)
    m = classification_metrics(cm)
    assert m["per_class"]["1"]["iou"] == 0.0 and m["per_class"]["1"]["f1"] == 0.0
    assert m["miou"] == pytest.approx((1 / 2 + 0.0) / 2)


def test_accumulated_metrics_equal_whole_set_metrics_not_a_mean_of_batches():
    rng = np.random.default_rng(0)
    t = rng.integers(-1, 3, size=(6, 5, 5))
    p = rng.integers(0, 3, size=(6, 5, 5))
    acc = ConfusionAccumulator(["x", "y", "z"])
    for i in range(0, 6, 4):  # uneven batches
        acc.update(torch.from_numpy(p[i : i + 4]), torch.from_numpy(t[i : i + 4]))
    whole = classification_metrics(confusion_matrix(p, t, 3))
    got = acc.compute()
    assert got["overall_accuracy"] == pytest.approx(whole["overall_accuracy"])
    assert got["miou"] == pytest.approx(whole["miou"])
    valid = t != -1
    assert got["overall_accuracy"] == pytest.approx((p[valid] == t[valid]).mean())


def test_no_evaluated_pixels_gives_none_not_zero():
    m = classification_metrics(np.zeros((2, 2), dtype=np.int64))
    assert m["overall_accuracy"] is None and m["miou"] is None and m["pixels"] == 0


def test_iou_and_f1_of_present_classes_agree_with_torchmetrics():
    from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex

    rng = np.random.default_rng(2)
    t = torch.from_numpy(rng.integers(-1, 3, size=(4, 6, 6)))  # class 3 absent from truth and prediction
    p = torch.from_numpy(rng.integers(0, 3, size=(4, 6, 6)))
    acc = ConfusionAccumulator(["a", "b", "c", "d"])
    acc.update(p, t)
    got = acc.compute()
    iou = MulticlassJaccardIndex(4, average=None, ignore_index=-1)(p, t)
    f1 = MulticlassF1Score(4, average=None, ignore_index=-1)(p, t)
    assert [got["per_class"][k]["iou"] for k in "abc"] == pytest.approx(iou[:3].tolist())
    assert [got["per_class"][k]["f1"] for k in "abc"] == pytest.approx(f1[:3].tolist())
    assert got["per_class"]["d"]["iou"] is None  # torchmetrics scores the absent class 0 instead


def test_accumulator_states_merged_as_ddp_ranks_sync_them_give_the_whole_set_metrics():
    """torchmetrics sums ``confmat``/``sums`` over ranks and stacks ``moments``; compute merges them."""
    rng = np.random.default_rng(3)
    t = 50.0 + rng.normal(size=300)
    p = t + rng.normal(scale=0.5, size=300)
    ranks = [RegressionAccumulator(sample_size=0) for _ in range(2)]
    ranks[0].update(p[:100], t[:100])
    ranks[1].update(p[100:], t[100:])
    merged = RegressionAccumulator(sample_size=0)
    merged.update(p[:1], t[:1])  # mark as updated; the synced states replace its own
    merged.sums = ranks[0].sums + ranks[1].sums
    merged.moments = torch.stack([ranks[0].moments, ranks[1].moments])
    got, whole = merged.compute(), regression_metrics(p, t)
    assert got["pixels"] == 300 and got["r2"] == pytest.approx(whole["r2"], abs=1e-12)
    assert got["target_std"] == pytest.approx(whole["target_std"]) and got["rmse"] == pytest.approx(
        whole["rmse"]
    )
    from torchmetrics.regression import R2Score

    assert got["r2"] == pytest.approx(
        float(R2Score().set_dtype(torch.float64)(torch.from_numpy(p), torch.from_numpy(t))), abs=1e-9
    )
    cls = [ConfusionAccumulator(["x", "y"]) for _ in range(2)]
    cls[0].update(np.array([0, 1]), np.array([0, 0]))
    cls[1].update(np.array([1, 1]), np.array([1, -1]))
    cls[0].confmat = cls[0].confmat + cls[1].confmat
    assert cls[0].compute()["confusion_matrix"] == [[1, 1], [0, 1]]


# -- regression ---------------------------------------------------------------------------------


def test_regression_metrics_by_hand_with_nan_targets():
    t = np.array([1.0, 2.0, np.nan, 3.0, 4.0])
    p = np.array([1.5, 2.0, 100.0, 2.0, 4.5])
    m = regression_metrics(p, t, unit="g/kg")
    # errors on finite targets: 0.5, 0, -1, 0.5 ; SSE = 1.5 ; SST about mean 2.5 = 5
    assert m["pixels"] == 4
    assert m["rmse"] == pytest.approx(math.sqrt(1.5 / 4))
    assert m["mae"] == pytest.approx(2.0 / 4)
    assert m["bias"] == pytest.approx(0.0)
    assert m["r2"] == pytest.approx(1 - 1.5 / 5)
    assert m["target_mean"] == pytest.approx(2.5) and m["unit"] == "g/kg"


def test_regression_accumulator_matches_one_pass_and_predicting_the_mean_scores_zero():
    rng = np.random.default_rng(1)
    t = 1e4 + rng.normal(size=1000)  # large offset: naive sum-of-squares SST would cancel
    p = t + rng.normal(scale=0.1, size=1000)
    acc = RegressionAccumulator(sample_size=100)
    for i in range(0, 1000, 333):
        acc.update(p[i : i + 333], t[i : i + 333])
    one = regression_metrics(p, t)
    got = acc.compute()
    assert got["r2"] == pytest.approx(one["r2"], abs=1e-9) and got["rmse"] == pytest.approx(one["rmse"])
    assert acc.sample.shape == (100, 2)
    assert regression_metrics(np.full(1000, t.mean()), t)["r2"] == pytest.approx(0.0, abs=1e-9)
    assert regression_metrics(np.ones(3), np.ones(3))["r2"] is None  # constant targets: R2 undefined
    assert regression_metrics(np.ones(2), np.full(2, np.nan))["pixels"] == 0


# -- tasks --------------------------------------------------------------------------------------


def test_presets_bind_to_label_layers_and_refuse_the_wrong_kind():
    lc = get_task("landcover").bind(LabelSpec("class", classes=("a", "b", "c"), ignore_index=7))
    assert isinstance(lc, SegmentationTask) and lc.label == "landcover" and lc.out_channels == 3
    assert lc.ignore_index == 7
    soc = get_task("soc").bind(LabelSpec("continuous", unit="g/kg"))
    assert isinstance(soc, RegressionTask) and soc.unit == "g/kg"
    assert get_task("croptype", label="cdl").label == "cdl"
    with pytest.raises(DataError, match="needs a continuous label"):
        get_task("soc").bind(LabelSpec("class", classes=("a",)))
    with pytest.raises(HyperKDError, match=r"unknown task 'landcovr'.*landcover"):
        get_task("landcovr")
    assert task_from_dict(lc.to_dict()) == lc
    assert task_from_dict(soc.with_target_stats(3.0, 2.0).to_dict()).target_std == 2.0


def test_task_losses_ignore_unlabelled_pixels():
    seg = SegmentationTask(classes=("a", "b"))
    out = torch.tensor([[[[5.0, 0.0]], [[0.0, 5.0]]]])  # (1, 2, 1, 2): pixel 0 says a, pixel 1 says b
    good = seg.loss(out, torch.tensor([[[0, -1]]]))
    bad = seg.loss(out, torch.tensor([[[1, -1]]]))
    assert float(good) < 0.01 < float(bad)
    assert float(seg.loss(out, torch.full((1, 1, 2), -1))) == 0.0
    reg = RegressionTask(unit="g/kg").with_target_stats(10.0, 2.0)
    pred = torch.tensor([[[[0.5, 99.0]]]])  # standardised output: 0.5 -> 11 g/kg
    assert float(reg.loss(pred, torch.tensor([[[11.0, float("nan")]]]))) == pytest.approx(0.0)
    assert reg.predict(pred)[0, 0, 0].item() == pytest.approx(11.0)


# -- label rasters aligned onto chip windows ---------------------------------------------------

X0, Y0 = 500_000.0, 4_100_000.0  # UTM 33N corner of the "product"


def _geo_store(root, offsets=((0, 0), (4, 2)), size=4):
    """A tiny store whose chips are windows (col, row offsets in 30 m pixels) of a UTM product."""
    from affine import Affine

    from hyperkd.core.sensors import get_sensor
    from hyperkd.data.store import ChipStoreWriter

    sensor = get_sensor("hls")
    w = ChipStoreWriter(root, sensor, size)
    for k, (col, row) in enumerate(offsets):
        tf = Affine(30.0, 0.0, X0 + 30.0 * col, 0.0, -30.0, Y0 - 30.0 * row)
        w.add(
            np.full((sensor.num_bands, size, size), 0.1, np.float32),
            source=f"p{k}",
            window=[col, row, size, size],
            crs="EPSG:32633",
            transform=list(tf)[:6],
        )
    return w.close()


def _write_raster(path, data, transform, crs="EPSG:32633", nodata=None):
    import rasterio

    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(data, 1)
    return path


def test_label_raster_on_the_chip_grid_is_copied_exactly_with_nodata_and_outside_as_no_label(tmp_path):
    from affine import Affine

    from hyperkd.data.labels import align_label_raster, class_codes, encode_classes

    store = _geo_store(tmp_path / "s")
    grid = np.arange(7 * 9, dtype=np.uint8).reshape(7, 9) % 5 + 10  # codes 10..14, 9 cols x 7 rows
    grid[1, 2] = 255
    path = _write_raster(tmp_path / "lc.tif", grid, Affine(30.0, 0, X0, 0, -30.0, Y0), nodata=255)
    got = align_label_raster(path, store, "class")
    assert got.shape == (2, 4, 4)
    want0 = grid[0:4, 0:4].astype(np.float32)
    want0[1, 2] = np.nan
    np.testing.assert_array_equal(got[0], want0)
    # chip 1 is the window at column 4, row 2
    np.testing.assert_array_equal(got[1], grid[2:6, 4:8].astype(np.float32))
    codes = class_codes(got)
    assert codes == [10, 11, 12, 13, 14]
    ids, unknown = encode_classes(got[0], [10, 11, 12, 13], ignore_index=-1)
    assert unknown == int((want0 == 14).sum()) and ids[1, 2] == -1
    assert ids[0, 0] == codes.index(int(want0[0, 0]))
    # a chip hanging over the raster's edge: the missing part is no label
    edge = _geo_store(tmp_path / "e", offsets=((7, 5),))
    e = align_label_raster(path, edge, "class")[0]
    np.testing.assert_array_equal(e[:2, :2], grid[5:7, 7:9].astype(np.float32))
    assert np.isnan(e[2:]).all() and np.isnan(e[:, 2:]).all()


def test_finer_raster_is_resampled_by_mode_for_classes_and_area_average_for_values(tmp_path):
    from affine import Affine

    from hyperkd.data.labels import align_label_raster

    store = _geo_store(tmp_path / "s", offsets=((0, 0),))
    fine = np.zeros((12, 12), np.float32)  # 10 m: each 30 m chip pixel is a 3x3 block
    fine[:, :] = 1
    fine[0:3, 0:3] = [[2, 2, 1], [2, 2, 1], [1, 1, 1]]  # block (0,0): four 2s, five 1s -> mode 1
    fine[0:3, 3:6] = [[2, 2, 2], [2, 2, 2], [-9, -9, -9]]  # block (0,1): nodata row ignored -> 2
    fine[3:6, 0:3] = -9  # block (1,0): all nodata -> no label
    tf = Affine(10.0, 0, X0, 0, -10.0, Y0)
    path = _write_raster(tmp_path / "fine.tif", fine, tf, nodata=-9)
    cls = align_label_raster(path, store, "class")[0]
    assert cls[0, 0] == 1 and cls[0, 1] == 2 and np.isnan(cls[1, 0]) and cls[3, 3] == 1
    val = align_label_raster(path, store, "continuous")[0]
    assert val[0, 0] == pytest.approx((4 * 2 + 5 * 1) / 9, abs=1e-6)
    assert val[0, 1] == pytest.approx(2.0) and np.isnan(val[1, 0])


def test_raster_in_another_crs_is_reprojected_onto_the_chip(tmp_path):
    from affine import Affine
    from rasterio.warp import transform as warp

    from hyperkd.data.labels import align_label_raster

    store = _geo_store(tmp_path / "s", offsets=((0, 0),), size=8)
    # geographic raster: value 1 west of the chip's column-4 centre line, 2 east of it
    xs = [X0 + 30 * 4.5]
    ys = [Y0 - 30 * 4.0]
    lon, lat = warp("EPSG:32633", "EPSG:4326", xs, ys)
    res = 0.00005  # ~5 m
    west, north = lon[0] - 0.01, lat[0] + 0.01
    n = int(0.02 / res)
    lons = west + (np.arange(n) + 0.5) * res
    data = np.where(lons[None, :] < lon[0], 1, 2).astype(np.uint8).repeat(n, axis=0)
    path = _write_raster(tmp_path / "geo.tif", data, Affine(res, 0, west, 0, -res, north), crs="EPSG:4326")
    got = align_label_raster(path, store, "class")[0]
    assert not np.isnan(got).any()
    assert (got[:, :3] == 1).all() and (got[:, 6:] == 2).all()


def test_label_raster_needs_georeferenced_chips_and_an_existing_file(tmp_path):
    from affine import Affine

    from hyperkd.core.sensors import get_sensor
    from hyperkd.data.labels import align_label_raster
    from hyperkd.data.store import ChipStoreWriter

    w = ChipStoreWriter(tmp_path / "s", get_sensor("hls"), 4, synthetic=True)
    w.add(np.full((6, 4, 4), 0.1, np.float32))
    store = w.close()
    path = _write_raster(tmp_path / "x.tif", np.ones((4, 4), np.uint8), Affine(30, 0, X0, 0, -30, Y0))
    with pytest.raises(DataError, match=r"SYNTHETIC store.*omit --labels"):
        align_label_raster(path, store, "class")
    with pytest.raises(DataError, match="does not exist"):
        align_label_raster(tmp_path / "missing.tif", store, "class")
