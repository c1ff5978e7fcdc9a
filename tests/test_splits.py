"""Explicit splits by chip list, validation stores for pretraining, and the label-scarce subsets."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hyperkd.cli import main
from hyperkd.core.errors import DataError, HyperKDError, RecipeError, SensorError
from hyperkd.data.splits import (
    check_heldout_store,
    chips_from_list,
    read_list,
    split_chips,
    split_listed,
    split_store,
)

from .helpers.threads import one_thread  # noqa: F401 - autouse fixture
from .helpers.toy import TINY_STUDENT, toy_store


def _chips(n: int, per_file: int = 1) -> list[dict]:
    """Manifest records of ``n`` chips cut ``per_file`` at a time from GeoTIFFs tile_<k>.tif."""
    return [
        {"source": f"tile_{i // per_file}", "path": f"/data/img/tile_{i // per_file}.tif"} for i in range(n)
    ]


# -- lists ---------------------------------------------------------------------------------------
def test_a_list_names_chips_by_index_file_name_or_product_name(tmp_path):
    chips = _chips(8, per_file=2)  # tile_0 .. tile_3, two chips each
    txt = tmp_path / "train.txt"
    txt.write_text("# my training chips\n0\n\nimages/tile_2.tif\ntile_3\n")
    assert chips_from_list(txt, chips) == [0, 4, 5, 6, 7]  # a file names every chip cut from it
    assert chips_from_list(["1", 1, "C:\\scenes\\tile_1.tif"], chips) == [1, 2, 3]


def test_a_csv_list_reads_its_first_column_and_skips_the_header(tmp_path):
    # the layout of the EnMAP-Box Potsdam split files
    csv = tmp_path / "train_files.csv"
    csv.write_text("image,mask\nimages/tile_1.tif,labels/tile_1.tif\nimages/tile_3.tif,labels/tile_3.tif\n")
    assert read_list(csv) == ([(1, "image"), (2, "images/tile_1.tif"), (3, "images/tile_3.tif")], True)
    assert chips_from_list(csv, _chips(4)) == [1, 3]
    # a text file's first line is an entry, never a header
    txt = tmp_path / "list.txt"
    txt.write_text("image\ntile_1.tif\n")
    with pytest.raises(DataError, match="entry 'image' \\(line 1\\)"):
        chips_from_list(txt, _chips(4))


def test_an_entry_that_matches_no_chip_is_one_line_naming_the_file_the_entry_and_how_chips_are_named(
    tmp_path,
):
    lst = tmp_path / "val.csv"
    lst.write_text("image,mask\nimages/tile_1.tif,x\nimages/tile_9.tif,y\n")
    with pytest.raises(DataError) as err:
        chips_from_list(lst, _chips(4), root="S")
    msg = str(err.value)
    assert str(lst) in msg and "'images/tile_9.tif' (line 3)" in msg and "matches no chip of S" in msg
    assert "chip indices 0..3" in msg and "'tile_0.tif'" in msg and "\n" not in msg
    with pytest.raises(DataError, match=r"'7' \(item 1\) is no chip of S: its 4 chips are numbered 0\.\.3"):
        chips_from_list([7], _chips(4), root="S")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(DataError, match="names no chip"):
        chips_from_list(empty, _chips(4))
    with pytest.raises(DataError, match="cannot read it"):
        chips_from_list(tmp_path / "missing.txt", _chips(4))


def test_listed_parts_are_exact_and_the_rest_is_drawn_by_the_fractions():
    chips = _chips(20)
    tr, va, te = split_listed(chips, 0.1, 0.2, 0, train=list(range(10)))
    assert tr == list(range(10)) and sorted(va + te) == list(range(10, 20))  # the rest, shared
    assert (len(va), len(te)) == (3, 7)  # in proportion to 0.1 : 0.2
    # the listed part does not depend on the seed; the drawn ones do
    for seed in range(4):
        assert split_listed(chips, 0.1, 0.2, seed, train=list(range(10)))[0] == tr
    assert {tuple(split_listed(chips, 0.1, 0.2, s, train=list(range(10)))[1]) for s in range(4)} != {
        tuple(va)
    }
    # training not listed: the rest is split as split_chips splits a store of its size
    tr, va, te = split_listed(chips, 0.1, 0.2, 0, test=[0, 1, 2, 3])
    assert te == [0, 1, 2, 3] and len(va) == 2 and len(tr) == 14 and not set(tr) & set(va)
    # every part listed: exactly the lists, the rest unused
    assert split_listed(chips, 0.1, 0.2, 0, train=[0, 1], val=[2], test=[3]) == ([0, 1], [2], [3])
    # one held-out part listed, training listed: the other held-out part takes the rest
    assert split_listed(chips, 0.1, 0.2, 0, train=list(range(15)), val=[15]) == (
        list(range(15)),
        [15],
        [16, 17, 18, 19],
    )
    # no lists: exactly split_chips
    assert split_listed(chips, 0.1, 0.2, 3) == split_chips(20, 0.1, 0.2, 3)


def test_lists_that_overlap_or_leave_nothing_are_refused_naming_the_chip(tmp_path):
    chips = _chips(6)
    train = tmp_path / "train.txt"
    train.write_text("tile_0.tif\ntile_1.tif\ntile_2.tif\n")
    with pytest.raises(DataError) as err:
        split_listed(chips, 0.1, 0.2, 0, train=train, test=["tile_2.tif", "tile_3.tif"], root="S")
    msg = str(err.value)
    assert "chip 2 (tile_2) of S is in both" in msg and str(train) in msg and "--test-list" in msg
    with pytest.raises(DataError, match="no chip of S is left to train on"):
        split_listed(chips, 0.0, 0.5, 0, val=[0, 1, 2], test=[3, 4, 5], root="S")
    # a held-out part with a fraction but no chip left: say how to give it one
    with pytest.raises(DataError, match=r"left for the test part.*--test-list FILE, --eval-data STORE"):
        split_listed(chips, 0.1, 0.2, 0, train=[0, 1, 2, 3], val=[4, 5], root="S")
    assert split_listed(chips, 0.1, 0.2, 0, train=[0, 1, 2, 3], val=[4, 5], strict=False)[2] == []
    # no chip left for validation: the run validates on none
    assert split_listed(chips, 0.1, 0.2, 0, train=[0, 1, 2, 3], test=[4, 5]) == ([0, 1, 2, 3], [], [4, 5])
    # a list for a part that comes from another store (None fraction) is refused
    with pytest.raises(DataError, match=r"--val-list names chips of S.*--val-data"):
        split_listed(chips, None, 0.2, 0, val=[0], root="S")
    _, va, _ = split_listed(chips, None, 0.0, 0, train=[0, 1])
    assert va == []  # validation comes from the other store


def test_split_store_matches_chips_recorded_by_prepare(tmp_path):
    store = toy_store(tmp_path / "s", chips=5, size=8)  # sources toy0..toy4
    (tmp_path / "l.txt").write_text("toy1\ntoy3\n")
    assert split_store(store, 0.0, 0.0, 0, train_list=tmp_path / "l.txt") == ([1, 3], [], [])


# -- separate stores -----------------------------------------------------------------------------
def _sensor(wl):
    from hyperkd.core.sensors import Band, Sensor

    return Sensor(name="s", bands=tuple(Band(f"B{i}", w, 10.0) for i, w in enumerate(wl)), gsd_m=30.0)


def test_a_heldout_store_is_checked_by_wavelength_chip_size_and_identity():
    train = SimpleNamespace(sensor=_sensor([450, 550, 650]), root=Path("train"), chip_size=8)
    ok = SimpleNamespace(sensor=_sensor([450, 550, 650]), root=Path("val"), chip_size=8)
    check_heldout_store(train, ok, "validation store")
    swapped = SimpleNamespace(sensor=_sensor([550, 450, 650]), root=Path("val"), chip_size=8)
    with pytest.raises(DataError, match="validation store val holds train's bands in another order"):
        check_heldout_store(train, swapped, "validation store")
    with pytest.raises(SensorError, match="550 nm"):
        check_heldout_store(train, SimpleNamespace(**{**vars(ok), "sensor": _sensor([450, 600, 650])}), "v")
    with pytest.raises(DataError, match="16 px chips but train has 8 px"):
        check_heldout_store(train, SimpleNamespace(**{**vars(ok), "chip_size": 16}), "validation store")
    with pytest.raises(DataError, match="is the training store"):
        check_heldout_store(train, SimpleNamespace(**{**vars(ok), "root": Path("train")}), "validation store")


def test_pretraining_data_takes_lists_and_a_validation_store(tmp_path):
    from hyperkd import recipes
    from hyperkd.training.runner import data_module

    toy_store(tmp_path / "s", chips=6, size=8)
    toy_store(tmp_path / "v", chips=3, size=8, seed=1)
    (tmp_path / "train.txt").write_text("toy0\ntoy1\ntoy2\ntoy3\n")
    rec = recipes.resolve(
        "mae",
        [f"data.store={tmp_path / 's'}", f"data.train_list={tmp_path / 'train.txt'}", "data.test_list=[5]"],
    )
    dm = data_module(rec, tmp_path / "run")
    assert (dm.train_idx, dm.val_idx) == ([0, 1, 2, 3], [4])  # the rest, but never the test chip
    rec["data"]["val_store"] = str(tmp_path / "v")
    dm = data_module(rec, tmp_path / "run")
    assert dm.val_idx == [0, 1, 2] and len(dm.val_dataloader().dataset) == 3
    assert dm.val_dataloader().dataset.store.root == tmp_path / "v"
    # a validation store on other bands is refused before anything is trained
    toy_store(tmp_path / "other", chips=2, size=8, selection="all")
    rec["data"]["val_store"] = str(tmp_path / "other")
    with pytest.raises(DataError, match=r"validation store .*other"):
        data_module(rec, tmp_path / "run")
    rec["data"].update(val_store=None, val_fraction=1.0)
    with pytest.raises(RecipeError, match=r"data\.val_fraction 1 must be"):
        data_module(rec, tmp_path / "run")


def test_pretrain_cli_trains_on_the_list_and_validates_on_the_other_store(tmp_path, capsys):
    toy_store(tmp_path / "s", chips=6, size=16)
    toy_store(tmp_path / "v", chips=2, size=16, seed=1)
    (tmp_path / "train.csv").write_text(
        "image,mask\nimg/toy0.tif,a\nimg/toy1.tif,b\nimg/toy2.tif,c\nimg/toy3.tif,d\n"
    )
    out = tmp_path / "run"
    sets = [*TINY_STUDENT, "data.batch_size=2", "trainer.max_epochs=1", "trainer.figures=false"]
    args = ["pretrain", "--data", str(tmp_path / "s"), "--out", str(out), "--val-data", str(tmp_path / "v")]
    args += ["--train-list", str(tmp_path / "train.csv"), *[a for s in sets for a in ("--set", s)]]
    assert main(args) == 0, capsys.readouterr()
    saved = json.loads(json.dumps(__import__("yaml").safe_load((out / "recipe.yaml").read_text())))
    assert saved["data"]["val_store"] == str(tmp_path / "v")
    assert saved["data"]["train_list"] == str(tmp_path / "train.csv")
    metrics = json.loads((out / "metrics.json").read_text())
    assert "val/loss" in metrics
    from .helpers.toy import logged

    assert len(logged(out, "train/loss")) == 2  # 4 listed chips in batches of 2, one epoch
    # a bad list fails in one line before a run folder is made
    assert main([*args[:4], str(tmp_path / "run2"), "--train-list", str(tmp_path / "nope.txt")]) == 1
    assert "cannot read it" in capsys.readouterr().err and not (tmp_path / "run2").exists()


def test_distill_cli_passes_the_split_flags_as_recipe_fields(monkeypatch):
    import hyperkd.training.distill as distill_mod

    seen: dict = {}
    monkeypatch.setattr(distill_mod, "distill", lambda *a, **kw: seen.update(kw))
    args = ["distill", "--val-data", "V", "--val-fraction", "0.2", "--train-list", "t.csv"]
    assert main([*args, "--val-list", "v.txt", "--test-list", "x.txt"]) == 0
    assert {k: seen[k] for k in seen if k.startswith("data__")} == {
        "data__val_store": "V",
        "data__val_fraction": 0.2,
        "data__train_list": "t.csv",
        "data__val_list": "v.txt",
        "data__test_list": "x.txt",
    }


# -- label-scarce subsets ------------------------------------------------------------------------
@pytest.fixture
def seg_labels(tmp_path):
    from hyperkd.evaluation.labels import bind_labels
    from hyperkd.evaluation.tasks import get_task

    store = toy_store(tmp_path / "lab", chips=6, size=16)
    return bind_labels(get_task("segmentation", label="lc"), store)[1]


def _kept(labels, chips) -> np.ndarray:
    ign = labels.task.ignore_index
    return np.stack([labels.target(i) != ign for i in chips])


def test_label_fractions_are_nested_fixed_by_the_split_seed_and_keep_every_class(seg_labels):
    from hyperkd.evaluation.labels import label_fraction_subset

    train = [0, 1, 2, 4]
    full = _kept(seg_labels, train)
    n = int(full.sum())
    subsets = {f: label_fraction_subset(seg_labels, train, f, seed=0) for f in (0.01, 0.05, 0.25, 1.0)}
    kept = {f: _kept(s, train) for f, s in subsets.items()}
    assert kept[1.0].sum() == n
    for small, big in ((0.01, 0.05), (0.05, 0.25), (0.25, 1.0)):
        assert not (kept[small] & ~kept[big]).any()  # nested
    for f, s in subsets.items():
        assert s.kept == int(kept[f].sum()) and s.labelled == n
        assert round(f * n) <= s.kept <= round(f * n) + 3  # + at most one pixel per class (3 classes)
        targets = np.stack([s.target(i) for i in train])
        assert set(np.unique(targets[kept[f]])) == set(
            np.unique(np.stack([seg_labels.target(i) for i in train])[full])
        )
    # the same subset whenever it is drawn with this seed, another with another seed
    again = label_fraction_subset(seg_labels, train, 0.05, seed=0)
    assert (_kept(again, train) == kept[0.05]).all()
    assert (_kept(label_fraction_subset(seg_labels, train, 0.05, seed=1), train) != kept[0.05]).any()
    # the full labels (validation and test read them) are untouched
    assert (_kept(seg_labels, train) == full).all()
    assert label_fraction_subset(seg_labels, train, None, 0) is seg_labels
    assert subsets[0.05].record() == {
        "label_fraction": 0.05,
        "label_subset_seed": 0,
        "train_pixels": subsets[0.05].kept,
        "train_pixels_labelled": n,
    }
    with pytest.raises(DataError, match="--label-fraction 0 must be above 0"):
        label_fraction_subset(seg_labels, train, 0.0, 0)


def test_a_rare_class_keeps_one_pixel(seg_labels):
    from hyperkd.evaluation.labels import TaskLabels, label_fraction_subset

    # one chip whose labels are all class 0 but a single class-2 pixel
    values = np.zeros((6, 16, 16), dtype=np.int64)
    values[3, 5, 7] = 2
    values[3, 0, :] = 1
    labels = TaskLabels(seg_labels.store, seg_labels.task, values)
    sub = label_fraction_subset(labels, [3], 0.01, seed=0)
    t = sub.target(3)
    kept = t != labels.task.ignore_index
    assert t[5, 7] == 2 and set(np.unique(t[kept])) == {0, 1, 2}
    assert sub.kept == int(kept.sum()) and round(0.01 * 256) <= sub.kept <= round(0.01 * 256) + 2


def test_regression_targets_are_thinned_to_nan(seg_labels):
    from hyperkd.data.store import LabelSpec
    from hyperkd.evaluation.labels import TaskLabels, label_fraction_subset
    from hyperkd.evaluation.tasks import get_task

    task = get_task("regression", label="soc").bind(LabelSpec("continuous", unit="g/kg"))
    values = np.random.default_rng(0).normal(size=(6, 16, 16)).astype(np.float32)
    values[:, :4] = np.nan
    sub = label_fraction_subset(TaskLabels(seg_labels.store, task, values), [0, 1], 0.25, seed=0)
    kept = sum(int(np.isfinite(sub.target(i)).sum()) for i in [0, 1])
    assert kept == sub.kept == round(0.25 * 2 * 12 * 16)
    with pytest.raises(HyperKDError, match="no labelled pixel"):
        values[:] = np.nan
        label_fraction_subset(TaskLabels(seg_labels.store, task, values), [0, 1], 0.25, seed=0)


# -- fine-tuning ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synth_store(tmp_path_factory):
    from hyperkd.synth import synthesize

    return synthesize(
        "enmap", tmp_path_factory.mktemp("sp") / "enmap", chips=8, size=16, seed=0, progress=False
    )


def test_finetune_trains_on_the_lists_and_a_label_fraction_and_scores_whole_test_labels(
    synth_store, tmp_path, capsys
):
    import torch

    from hyperkd.evaluation.finetune import finetune
    from hyperkd.evaluation.labels import bind_labels, label_fraction_subset
    from hyperkd.evaluation.tasks import get_task
    from hyperkd.models.pixel import PixelModel

    (tmp_path / "train.txt").write_text("0\n1\n2\n3\n4\n")
    common = ["--task", "landcover", "--student", "raw", "--data", str(synth_store.root), "--epochs", "1"]
    common += ["--train-list", str(tmp_path / "train.txt"), "--test-list", str(tmp_path / "test.txt")]
    (tmp_path / "test.txt").write_text("6\n7\n")
    assert main(["finetune", *common, "--label-fraction", "0.05", "--out", str(tmp_path / "f")]) == 0, (
        capsys.readouterr()
    )
    s = json.loads((tmp_path / "f" / "finetune.json").read_text())
    assert (s["train_chips"], s["val_chips"], s["test_chips"]) == ([0, 1, 2, 3, 4], [5], [6, 7])
    assert (
        s["train_list"] == str(tmp_path / "train.txt") and s["label_scarce"] and s["label_fraction"] == 0.05
    )
    _, full = bind_labels(get_task("landcover"), synth_store)
    expected = label_fraction_subset(full, [0, 1, 2, 3, 4], 0.05, seed=0)
    assert s["train_pixels"] == expected.kept and s["train_pixels_labelled"] == expected.labelled
    metrics = json.loads((tmp_path / "f" / "metrics.json").read_text())
    assert metrics["settings"]["label_fraction"] == 0.05 and metrics["scored_chips"] == [6, 7]
    ign = full.task.ignore_index
    whole = sum(int((full.target(i) != ign).sum()) for i in (6, 7))
    assert sum(c["support"] for c in metrics["metrics"]["per_class"].values()) == whole  # test labels whole
    assert PixelModel.load(tmp_path / "f").config["trained_on"]["label_fraction"] == 0.05
    # the same run on every labelled pixel trains another model
    finetune(
        student="raw",
        task="landcover",
        store=synth_store,
        epochs=1,
        train_list=[0, 1, 2, 3, 4],
        test_list=tmp_path / "test.txt",
        out=tmp_path / "all",
        figures=False,
    )
    a, b = PixelModel.load(tmp_path / "f").state_dict(), PixelModel.load(tmp_path / "all").state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    assert json.loads((tmp_path / "all" / "finetune.json").read_text())["label_fraction"] is None
    # a list entry that matches no chip: one line, before any label is aligned
    (tmp_path / "bad.txt").write_text("0\nscene_9.tif\n")
    args = ["finetune", *common[:8], "--train-list", str(tmp_path / "bad.txt"), "--out", str(tmp_path / "x")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "bad.txt: entry 'scene_9.tif' (line 2) matches no chip" in err
