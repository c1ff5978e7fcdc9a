"""Task metrics against hand-computed values; label rasters reprojected onto chip windows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hyperkd.data.store import LabelSpec
from hyperkd.errors import DataError, HyperKDError
from hyperkd.tasks import (
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
        acc.update(torch.from_numpy(p[i:i + 4]), torch.from_numpy(t[i:i + 4]))
    whole = classification_metrics(confusion_matrix(p, t, 3))
    got = acc.compute()
    assert got["overall_accuracy"] == pytest.approx(whole["overall_accuracy"])
    assert got["miou"] == pytest.approx(whole["miou"])
    valid = t != -1
    assert got["overall_accuracy"] == pytest.approx((p[valid] == t[valid]).mean())


def test_no_evaluated_pixels_gives_none_not_zero():
    m = classification_metrics(np.zeros((2, 2), dtype=np.int64))
    assert m["overall_accuracy"] is None and m["miou"] is None and m["pixels"] == 0


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
        acc.update(p[i:i + 333], t[i:i + 333])
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
