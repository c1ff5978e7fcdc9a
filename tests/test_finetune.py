"""End-to-end fine-tuning on a small synthetic store: it learns, it saves, it reloads, it says why not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hyperkd.cli import main
from hyperkd.core.errors import DataError, HyperKDError
from hyperkd.data.splits import split_chips
from hyperkd.evaluation.finetune import evaluate, finetune
from hyperkd.models.pixel import PixelModel

from .helpers.threads import one_thread  # noqa: F401 - autouse fixture

TINY = dict(
    patch_size=8,
    embed_dim=64,
    depth=2,
    num_heads=2,
    decoder_embed_dim=32,
    decoder_depth=1,
    decoder_num_heads=2,
    spectral_dim=16,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from hyperkd.synth import synthesize

    return synthesize(
        "enmap", tmp_path_factory.mktemp("ft") / "enmap", chips=16, size=32, seed=0, progress=False
    )


@pytest.fixture(scope="module")
def student_dir(store, tmp_path_factory) -> Path:
    """A saved (untrained) tiny student folder, as `hyperkd pretrain` exports one."""
    from hyperkd.models.mae import build_student
    from hyperkd.training.runner import export_student

    torch.manual_seed(0)
    stu = build_student("mae-tiny", sensor=store.sensor, img_size=32, **TINY)
    return export_student(stu, tmp_path_factory.mktemp("stu") / "student")


def _test_pixels(store, chips, label):
    return np.concatenate([np.where(store[i]["valid"], store[i][label], -1).ravel() for i in chips])


def test_split_is_deterministic_disjoint_and_keeps_every_part_non_empty():
    tr, va, te = split_chips(16, 0.1, 0.2, seed=0)
    assert (len(tr), len(va), len(te)) == (11, 2, 3)
    assert sorted(tr + va + te) == list(range(16)) and split_chips(16, 0.1, 0.2, seed=0) == (tr, va, te)
    assert [len(p) for p in split_chips(3, 0.1, 0.2, 0)] == [1, 1, 1]
    with pytest.raises(HyperKDError, match="too few"):
        split_chips(2, 0.1, 0.2, 0)


def test_non_strict_split_leaves_holdouts_that_do_not_fit_empty_as_pretraining_needs():
    # pretraining's train/validation split is the same rule with no test part
    assert split_chips(1, 0.125, seed=0, strict=False) == ([0], [], [])
    assert split_chips(0, 0.125, seed=0, strict=False) == ([], [], [])
    tr, va, te = split_chips(8, 0.125, seed=3, strict=False)
    assert (len(tr), len(va), te) == (7, 1, []) and split_chips(8, 0.125, 0.0, 3) == (tr, va, te)
    with pytest.raises(HyperKDError, match="too few to split into train/validation"):
        split_chips(1, 0.125, seed=0)


def test_feature_cache_encodes_only_uncached_chips_and_keeps_the_batch_order():
    from hyperkd.data.cache import FeatureCache

    calls: list[list[int]] = []
    table = torch.arange(40.0).view(10, 4)

    def encode(keys):
        def compute(pos):
            calls.append([keys[i] for i in pos])
            return [table[[keys[i] for i in pos]], -table[[keys[i] for i in pos]]]

        return compute

    cache = FeatureCache(max_mb=1)
    a, b = cache.fetch([3, 5], encode([3, 5]), "cpu")
    torch.testing.assert_close(a, table[[3, 5]])
    torch.testing.assert_close(b, -table[[3, 5]])
    a, b = cache.fetch([5, 7, 3], encode([5, 7, 3]), "cpu")
    assert calls == [[3, 5], [7]] and (cache.hits, cache.misses, len(cache)) == (2, 3, 3)
    torch.testing.assert_close(a, table[[5, 7, 3]])
    torch.testing.assert_close(b, -table[[5, 7, 3]])
    tiny = FeatureCache(max_mb=40 / 2**20)  # room for one chip's two 4-float rows (32 bytes), not two
    tiny.fetch([1, 2], encode([1, 2]), "cpu")
    assert len(tiny) == 1 and tiny.full


def test_finetune_module_from_plain_arguments_trains_under_a_plain_lightning_trainer(store, tmp_path):
    """No hyperkd runner: a notebook builds the module, a stock Trainer fits it, a checkpoint rebuilds it."""
    import lightning as L
    from torch.utils.data import DataLoader

    from hyperkd.evaluation.datasets import TaskDataset
    from hyperkd.evaluation.labels import bind_labels
    from hyperkd.evaluation.tasks import get_task
    from hyperkd.models.mae import build_student
    from hyperkd.training.finetune import FinetuneModule

    task, labels = bind_labels(get_task("landcover"), store)
    torch.manual_seed(0)
    student = build_student("mae-tiny", sensor=store.sensor, img_size=32, **TINY)
    module = FinetuneModule(task=task, encoder=student, protocol="frozen", lr=5e-3, hidden=32)
    assert module.hparams["lr"] == 5e-3 and module.hparams["model"]["task"]["classes"] == list(task.classes)
    torch.testing.assert_close(module.model.encoder.pos_embed, student.pos_embed)  # the student's weights
    before = [p.detach().clone() for p in module.model.head.parameters()]
    train = DataLoader(TaskDataset(store, range(8), labels), batch_size=4)
    val = DataLoader(TaskDataset(store, range(8, 10), labels), batch_size=2)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, train, val)
    assert trainer.global_step == 4
    assert any(not torch.equal(a, b) for a, b in zip(before, module.model.head.parameters(), strict=True))
    # the fixed encoder ran once per chip: 8 training + 2 validation chips, everything else from the cache
    assert len(module.cache) == 10 and module.cache.misses == 10 and module.cache.hits > 0
    assert "val/miou" in trainer.callback_metrics and "val/loss" in trainer.callback_metrics
    ckpt = tmp_path / "ft.ckpt"
    trainer.save_checkpoint(ckpt)
    again = FinetuneModule.load_from_checkpoint(ckpt)
    x = torch.from_numpy(store[0]["image"])[None]
    torch.testing.assert_close(again.model.eval().predict(x), module.model.eval().predict(x))
    raw = FinetuneModule(task=task, sensor=store.sensor, img_size=32, protocol="linear")
    assert raw.model.encoder is None and raw.cache is None
    with pytest.raises(HyperKDError, match="either model= or task="):
        FinetuneModule(module.model, task=task)


def test_batchnorm_statistics_are_recomputed_exactly_over_the_given_batches():
    from hyperkd.models.pixel import recompute_batchnorm

    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3))
    batches = [torch.randn(4, 2, 5, 5) * 3 + 1 for _ in range(3)]
    net.eval()
    assert recompute_batchnorm(net, batches, net) == 3 and not net.training
    feats = torch.cat([net[0](b) for b in batches])  # equal batch sizes: mean of batch means = overall mean
    torch.testing.assert_close(net[1].running_mean, feats.mean((0, 2, 3)).detach())
    assert net[1].momentum == 0.1


def test_frozen_protocol_beats_the_majority_class_and_reloads_exactly(store, student_dir, tmp_path):
    out = tmp_path / "frozen"
    res = finetune(
        student=student_dir.parent,
        task="landcover",
        store=store,
        protocol="frozen",
        epochs=8,
        batch_size=4,
        seed=1,
        out=out,
    )
    s = res.settings
    test = s["test_chips"]
    assert not set(test) & set(s["train_chips"]) and len(test) == 3
    # chance: always predicting the training chips' most frequent class
    train_lab = _test_pixels(store, s["train_chips"], "landcover")
    majority = np.bincount(train_lab[train_lab >= 0]).argmax()
    truth = _test_pixels(store, test, "landcover")
    chance = float((truth[truth >= 0] == majority).mean())
    assert res.metrics["overall_accuracy"] > chance + 0.05, (res.metrics["overall_accuracy"], chance)
    # the saved model reproduces the reported metrics, recomputed here by hand
    model = PixelModel.load(out).eval()
    assert model.encoder is not None and not any(p.requires_grad for p in model.encoder.parameters())
    x = torch.stack([torch.from_numpy(store[i]["image"]) for i in test])
    pred = model.predict(x).numpy().ravel()
    keep = truth >= 0
    assert res.metrics["overall_accuracy"] == pytest.approx(float((pred[keep] == truth[keep]).mean()))
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["chips"] == "held-out test chips of the training store" and saved["num_chips"] == 3
    assert saved["metrics"]["miou"] == pytest.approx(res.metrics["miou"])
    for f in ("confusion.png", "maps.png", "loss.png"):
        assert (out / "figures" / f).stat().st_size > 1000
    assert not (out / "checkpoints").exists() and (out / "model" / "model.safetensors").exists()
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["model_type"] == "hyperkd-pixel" and cfg["encoder"]["embed_dim"] == 64
    assert not any(k.startswith("decoder") for k in model.state_dict())  # the MAE decoder is not kept
    with pytest.raises(HyperKDError, match="already holds a fine-tune run"):
        finetune(student=student_dir, task="landcover", store=store, out=out, epochs=1)


def test_soc_regression_gives_finite_r2_in_the_labels_unit(store, student_dir, tmp_path):
    res = finetune(
        student=student_dir,
        task="soc",
        store=store,
        protocol="linear",
        epochs=3,
        batch_size=4,
        out=tmp_path / "soc",
        train_chips=6,
    )
    m = res.metrics
    assert np.isfinite(m["r2"]) and m["rmse"] > 0 and m["mae"] <= m["rmse"] and m["unit"] == "g/kg"
    assert m["pixels"] > 0 and len(res.settings["train_chips"]) == 6 and res.settings["label_scarce"]
    # NaN targets (water, built-up) are not scored: pixel count = finite, valid target pixels
    t = np.concatenate(
        [np.where(store[i]["valid"], store[i]["soc"], np.nan).ravel() for i in res.settings["test_chips"]]
    )
    assert m["pixels"] == int(np.isfinite(t).sum())
    assert (tmp_path / "soc" / "figures" / "scatter.png").exists()
    model = PixelModel.load(tmp_path / "soc")
    assert model.task.target_std > 0 and model.task.unit == "g/kg"
    # the fine-tuned model is a shareable hyperkd model: card, dispatch by model_type, bound task
    import hyperkd

    folder = tmp_path / "soc" / "model"
    assert (folder / "README.md").exists()
    assert json.loads((folder / "config.json").read_text())["model_type"] == "hyperkd-pixel"
    again = hyperkd.from_pretrained(folder)
    assert type(again) is PixelModel and again.task.target_std == model.task.target_std
    x = torch.from_numpy(store[0]["image"])[None]
    torch.testing.assert_close(again.predict(x), model.eval().predict(x))


def test_raw_spectra_baseline_and_untrained_encoder_controls(store, student_dir, tmp_path):
    raw = finetune(
        student="raw",
        task="croptype",
        store=store,
        protocol="frozen",
        epochs=4,
        batch_size=4,
        out=tmp_path / "raw",
        figures=False,
    )
    assert PixelModel.load(tmp_path / "raw").encoder is None
    assert raw.settings["init"] == "none" and 0.0 <= raw.metrics["overall_accuracy"] <= 1.0
    assert len(raw.metrics["per_class"]) == len(store.labels["croptype"].classes)
    rnd = finetune(
        student=student_dir,
        init="random",
        task="landcover",
        store=store,
        protocol="linear",
        epochs=1,
        out=tmp_path / "rnd",
        figures=False,
    )
    from safetensors.torch import load_file

    trained = PixelModel.load(tmp_path / "rnd").encoder.state_dict()

    original = load_file(str(student_dir / "model.safetensors"))
    w = "blocks.0.attn.qkv.weight"
    assert trained[w].shape == original[w].shape and not torch.equal(trained[w], original[w])
    torch.testing.assert_close(trained["band_mean"], original["band_mean"])  # same standardisation
    assert rnd.settings["init"] == "random"
    with pytest.raises(HyperKDError, match="architecture, not trained weights"):
        finetune(student="enmap-mae-tiny", task="landcover", store=store, out=tmp_path / "arch", epochs=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(HyperKDError, match="holds no student"):
        finetune(student=tmp_path / "empty", task="landcover", store=store, out=tmp_path / "e", epochs=1)


def test_full_protocol_trains_the_encoder_and_layers_are_concatenated(store, student_dir, tmp_path):
    from safetensors.torch import load_file

    finetune(
        student=student_dir,
        task="landcover",
        store=store,
        protocol="full",
        layers=(0, -1),
        epochs=1,
        batch_size=4,
        out=tmp_path / "full",
        figures=False,
    )
    model = PixelModel.load(tmp_path / "full")
    assert model.layers == (0, -1) and model.head.body[0].in_channels == 2 * 64
    original = load_file(str(student_dir / "model.safetensors"))
    w = "blocks.1.mlp.fc1.weight"
    assert not torch.equal(model.encoder.state_dict()[w], original[w])  # the encoder was fine-tuned
    frozen = finetune(
        student=student_dir,
        task="landcover",
        store=store,
        protocol="frozen",
        epochs=1,
        out=tmp_path / "frozen",
        figures=False,
    )
    torch.testing.assert_close(PixelModel.load(frozen.run_dir).encoder.state_dict()[w], original[w])


def test_evaluate_scores_the_test_split_of_the_training_store_unless_asked_for_all(store, tmp_path, capsys):
    run = tmp_path / "run"
    finetune(
        student="raw", task="landcover", store=store, protocol="linear", epochs=1, out=run, figures=False
    )
    held = evaluate(run, store)
    assert held.chips == json.loads((run / "finetune.json").read_text())["test_chips"]
    every = evaluate(run, store, chips="all", out=tmp_path / "ev")
    assert len(every.chips) == len(store) and every.metrics["pixels"] > held.metrics["pixels"]
    assert (tmp_path / "ev" / "figures" / "maps.png").exists()
    assert main(["evaluate", "--model", str(run), "--data", str(store.root), "--json"]) == 0
    out = _json_from(capsys.readouterr().out)
    assert out["num_chips"] == len(held.chips)
    assert out["metrics"]["overall_accuracy"] == pytest.approx(held.metrics["overall_accuracy"])


def test_a_separate_evaluation_store_is_checked_before_training(store, tmp_path):
    from .test_tasks import _geo_store

    other = _geo_store(tmp_path / "hls")
    with pytest.raises(HyperKDError, match=r"has no match in"):
        finetune(student="raw", task="landcover", store=store, eval_store=other, out=tmp_path / "x", epochs=1)
    assert not (tmp_path / "x" / "logs").exists()  # refused before any training
    with pytest.raises(HyperKDError, match="is the training store"):
        finetune(student="raw", task="landcover", store=store, eval_store=store, out=tmp_path / "z", epochs=1)
    copy = tmp_path / "copy"
    shutil.copytree(store.root, copy)  # the same chips under another path: a separate store
    res = finetune(
        student="raw",
        task="landcover",
        store=store,
        eval_store=copy,
        protocol="linear",
        epochs=1,
        out=tmp_path / "y",
        figures=False,
    )
    labelled = sum(int(((store[i]["landcover"] >= 0) & store[i]["valid"]).sum()) for i in range(len(store)))
    assert res.settings["test_chips"] == [] and res.metrics["pixels"] == labelled  # every chip of the store
    # evaluate on the training store: every chip was trained or validated on, so it refuses (issue 12)
    with pytest.raises(DataError, match=r"every chip of .* was used to train or validate"):
        evaluate(tmp_path / "y", store)
    trained = json.loads((tmp_path / "y" / "finetune.json").read_text())
    allc = evaluate(tmp_path / "y", store, chips="all", out=tmp_path / "all")
    record = json.loads((tmp_path / "all" / "metrics.json").read_text())
    assert record["scored_chips"] == list(range(len(store))) == allc.chips
    n_used = len(trained["train_chips"]) + len(trained["val_chips"])
    assert f"including {n_used} the model was trained or validated on" in record["chips"]
    # label-scarce with a separate test store: the training-split chips it never used are fair to score
    scarce = finetune(
        student="raw",
        task="landcover",
        store=store,
        eval_store=copy,
        train_chips=4,
        protocol="linear",
        epochs=1,
        out=tmp_path / "scarce",
        figures=False,
    )
    used = set(scarce.settings["train_chips"]) | set(scarce.settings["val_chips"])
    assert evaluate(tmp_path / "scarce", store).chips == [i for i in range(len(store)) if i not in used]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "landcovr"], "unknown task 'landcovr'"),
        (["--task", "soc", "--label", "nope"], "has no label layer 'nope'"),
        (["--task", "soc", "--label", "landcover"], "needs a continuous label"),
        (["--task", "landcover", "--protocol", "probe"], "protocol must be one of"),
        (["--task", "landcover", "--train-chips", "99"], "--train-chips 99"),
        (["--task", "landcover", "--val-fraction", "1.5"], "--val-fraction 1.5 must be at least 0"),
        (
            ["--task", "landcover", "--val-fraction", "0.5", "--test-fraction", "0.5"],
            "leave no chip to train on",
        ),
    ],
)
def test_cli_reports_a_wrong_task_or_label_in_one_line(store, tmp_path, capsys, args, message):
    rc = main(
        [
            "finetune",
            "--student",
            "raw",
            "--data",
            str(store.root),
            "--out",
            str(tmp_path / "r"),
            "--epochs",
            "1",
            *args,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 1 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_same_seed_same_result_and_scalars_are_the_headline_metrics(store, tmp_path):
    kw = dict(
        student="raw",
        task="soc",
        store=store,
        protocol="frozen",
        epochs=2,
        batch_size=4,
        seed=5,
        figures=False,
    )
    a = finetune(out=tmp_path / "a", **kw)
    b = finetune(out=tmp_path / "b", **kw)
    assert a.scalars == b.scalars and set(a.scalars) == {"rmse", "mae", "r2", "bias"}


def test_cli_finetune_runs_end_to_end(store, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(
        [
            "finetune",
            "--task",
            "landcover",
            "--student",
            "raw",
            "--data",
            str(store.root),
            "--protocol",
            "linear",
            "--epochs",
            "1",
            "--train-chips",
            "4",
            "--seed",
            "3",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert rc == 0
    got = _json_from(capsys.readouterr().out)
    assert 0.0 <= got["metrics"]["overall_accuracy"] <= 1.0
    s = json.loads((out / "finetune.json").read_text())
    assert s["seed"] == 3 and len(s["train_chips"]) == 4 and s["protocol"] == "linear"


def test_the_default_protocol_is_fused_in_python_and_cli_and_weighted_loss_is_recorded(
    store, student_dir, tmp_path, capsys, monkeypatch
):
    """No --protocol: the fused head on the student's blocks; no --loss: weighted (weights from the
    training chips' labels), recorded with the run (and the CLI's defaults are the library's); no
    --epochs: enough epochs for MIN_STEPS optimiser steps (shrunk here to keep the test fast)."""
    import inspect

    import hyperkd.training.finetune as ft
    from hyperkd.cli.finetune import finetune_cmd
    from hyperkd.models.heads import FusedHead
    from hyperkd.models.pixel import DEFAULT_PROTOCOL
    from hyperkd.training.finetune import class_weights_from_counts

    assert DEFAULT_PROTOCOL == "fused"
    assert inspect.signature(finetune).parameters["protocol"].default == DEFAULT_PROTOCOL
    cli_default = inspect.signature(finetune_cmd).parameters["protocol"].default
    assert cli_default == DEFAULT_PROTOCOL
    assert inspect.signature(finetune_cmd).parameters["loss"].default == ft.DEFAULT_LOSS == "auto"
    monkeypatch.setattr(ft, "MIN_EPOCHS", 1)
    monkeypatch.setattr(ft, "MIN_STEPS", 3)
    out = tmp_path / "w"
    args = ["finetune", "--student", str(student_dir), "--data", str(store.root)]
    rc = main([*args, "--task", "landcover", "--out", str(out), "--json"])
    assert rc == 0
    s = json.loads((out / "finetune.json").read_text())
    assert s["protocol"] == "fused" and s["loss"] == "weighted" and s["layers"] == [0, 1]
    assert s["fusion"] == "residual" and s["epochs"] * -(-len(s["train_chips"]) // 8) >= 3 > (
        s["epochs"] - 1
    ) * -(-len(s["train_chips"]) // 8)
    counts = np.bincount(_test_pixels(store, s["train_chips"], "landcover") + 1)[1:]  # -1: unlabelled
    k = len(store.labels["landcover"].classes)
    expect = class_weights_from_counts(np.pad(counts, (0, k - len(counts))))
    np.testing.assert_allclose(s["class_weights"], expect.numpy(), rtol=1e-5)
    model = PixelModel.load(out)
    assert isinstance(model.head, FusedHead) and model.head.feature_dim == 2 * 64
    capsys.readouterr()
    rc = main([*args, "--epochs", "1", "--task", "soc", "--loss", "focal", "--out", str(tmp_path / "s")])
    assert rc == 1 and "is for segmentation tasks" in capsys.readouterr().err


def _json_from(stdout: str) -> dict:
    """The JSON document a ``--json`` command printed (Lightning may print lines before it)."""
    lines = stdout.splitlines()
    return json.loads("\n".join(lines[lines.index("{") :]))


def test_labels_from_a_geotiff_are_reprojected_encoded_and_scored(tmp_path):
    from affine import Affine

    from .test_tasks import X0, Y0, _geo_store, _write_raster

    geo = _geo_store(tmp_path / "geo", offsets=((0, 0), (4, 0), (0, 4), (4, 4)))
    codes = np.full((8, 8), 82, np.uint8)  # NLCD: cultivated crops
    codes[:, :3] = 41  # deciduous forest
    codes[0, :] = 11  # open water
    codes[7, 7] = 0  # nodata
    raster = _write_raster(tmp_path / "nlcd.tif", codes, Affine(30.0, 0, X0, 0, -30.0, Y0), nodata=0)
    res = finetune(
        student="raw",
        task="landcover",
        store=geo,
        labels=raster,
        protocol="linear",
        epochs=1,
        batch_size=2,
        out=tmp_path / "run",
        figures=False,
        val_fraction=0.25,
        test_fraction=0.25,
    )
    model = PixelModel.load(tmp_path / "run")
    assert model.task.codes == (11.0, 41.0, 82.0)
    assert model.task.classes == ("open water (11)", "deciduous forest (41)", "cultivated crops (82)")
    (test_chip,) = res.settings["test_chips"]
    col, row = geo.chips[test_chip]["window"][:2]
    labelled = int((codes[row : row + 4, col : col + 4] != 0).sum())
    assert res.metrics["pixels"] == labelled
    again = evaluate(tmp_path / "run", geo, labels=raster)
    assert again.metrics["confusion_matrix"] == res.metrics["confusion_matrix"]


def test_train_crop_trains_the_fused_head_on_crops_and_is_recorded(store, student_dir, tmp_path, monkeypatch):
    seen: list[tuple[int, int]] = []
    original = PixelModel.head_forward

    def spy(self, features, x=None, window=None):
        if torch.is_grad_enabled() and x is not None:  # training steps (not validation, not the BN pass)
            seen.append(tuple(x.shape[-2:]))
        return original(self, features, x, window)

    monkeypatch.setattr(PixelModel, "head_forward", spy)
    res = finetune(
        student=student_dir,
        task="landcover",
        store=store,
        train_crop=12,
        epochs=2,
        batch_size=4,
        out=tmp_path / "crop",
        figures=False,
    )
    assert res.settings["train_crop"] == 12
    assert seen and all(h <= 12 + 4 and w <= 12 + 4 for h, w in seen)  # the crop and its 2 px margin
    assert len(set(seen)) > 1 or seen[0] != (32, 32)
    assert 0.0 <= res.metrics["overall_accuracy"] <= 1.0  # scored on whole chips
    with pytest.raises(HyperKDError, match=r"--train-crop 12.*--protocol fused or fused-full.*frozen"):
        finetune(
            student=student_dir,
            task="landcover",
            store=store,
            protocol="frozen",
            train_crop=12,
            out=tmp_path / "frozen",
            epochs=1,
        )
    assert not (tmp_path / "frozen").exists()


def test_how_often_training_validates_changes_nothing_it_learns(store, student_dir, tmp_path):
    # validation only draws the val/loss curve: about ten points (finetune.val_every), and the
    # weights must not depend on it (a validation pass once drew its loader's seed from the global
    # RNG, shifting the fused head's dropout masks)
    from safetensors.torch import load_file

    from hyperkd.training.finetune import val_every

    assert [val_every(e) for e in (1, 9, 20, 60, 200)] == [1, 1, 2, 6, 20]
    kw = dict(
        student=student_dir, task="landcover", store=store, epochs=4, batch_size=4, seed=3, figures=False
    )
    a = finetune(out=tmp_path / "a", **kw)
    b = finetune(out=tmp_path / "b", trainer={"check_val_every_n_epoch": 3}, **kw)
    wa, wb = (
        load_file(str(tmp_path / "a/model/model.safetensors")),
        load_file(str(tmp_path / "b/model/model.safetensors")),
    )
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.scalars == b.scalars
    logged = (tmp_path / "b/logs/metrics.csv").read_text()
    assert "val/loss" in logged  # still validated, less often
