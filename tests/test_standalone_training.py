"""The LightningModules without hyperkd's runner: built from names, trained under a plain
``L.Trainer``, reloaded with ``load_from_checkpoint``; the shared optimiser; the data module
that generates synthetic chips in ``prepare_data``; the run callbacks on their own."""

from __future__ import annotations

import json
import math

import lightning as L
import pytest
import torch

from hyperkd.core.errors import RecipeError
from hyperkd.core.plugins import load_plugins
from hyperkd.data.loader import ChipDataModule
from hyperkd.synth.datamodule import SyntheticChipDataModule
from hyperkd.training.callbacks import ExportStudent, MetricsReport
from hyperkd.training.distill import DistillModule
from hyperkd.training.optim import OptimConfig, decay_groups, warmup_cosine
from hyperkd.training.pretrain import MAEModule
from hyperkd.training.teacher import TeacherMAEModule

from .helpers.toy import toy_store

STUDENT = {
    "name": "enmap-mae-tiny",
    "img_size": 32,
    "patch_size": 4,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "decoder_embed_dim": 16,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
    "spectral_dim": 8,
}


def plain_trainer(tmp_path, **kw) -> L.Trainer:
    return L.Trainer(
        max_steps=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1,
        default_root_dir=str(tmp_path),
        **kw,
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return toy_store(tmp_path_factory.mktemp("toy") / "store", chips=12, size=32)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_mae_module_from_names_trains_under_a_plain_trainer_and_reloads(store, tmp_path):
    module = MAEModule(
        student=STUDENT,
        masker={"name": "random", "ratio": 0.5},
        losses={"mse": {"weight": 1.0}, "sam": {"weight": 0.1}},
        optim={"lr": 2e-3, "warmup_steps": 1},
    )
    init = {k: v.clone() for k, v in module.student.state_dict().items()}
    run = tmp_path / "run"
    trainer = plain_trainer(
        tmp_path, callbacks=[MetricsReport(run / "metrics.json"), ExportStudent(run / "student")]
    )
    trainer.fit(module, datamodule=ChipDataModule(store, batch_size=4))
    assert trainer.global_step == 2
    assert any(not torch.equal(init[k], v) for k, v in module.student.state_dict().items())
    # the shared schedule ran per step: warmup (1 step) then cosine over the 2 steps
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(2e-3 * warmup_cosine(2, 1, 2))
    assert module.hparams["masker"] == {"name": "random", "ratio": 0.5}
    assert module.hparams["student"]["name"] == "enmap-mae-tiny"
    # the callbacks did their work under the user's Trainer
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 2
    assert (run / "student" / "model.safetensors").exists()

    ckpt = tmp_path / "mae.ckpt"
    trainer.save_checkpoint(ckpt)
    again = MAEModule.load_from_checkpoint(ckpt)
    assert dict(again.hparams) == dict(module.hparams)
    assert again.mask_ratio == 0.5 and set(again.loss_terms) == {"mse", "sam"}
    assert again.optim_cfg == OptimConfig(lr=2e-3, warmup_steps=1)
    assert_same_weights(again, module)


def test_distill_module_from_names_trains_under_a_plain_trainer_and_reloads(store, tmp_path):
    load_plugins()
    from hyperkd_prithvi.testing import write_tiny_checkpoint

    weights = write_tiny_checkpoint(tmp_path / "prithvi_tiny.pt", seed=1)
    module = DistillModule(
        student=STUDENT,
        teacher={"name": "prithvi-eo-tiny", "weights": str(weights)},
        aligner="spectral-range",
        masker="random",
        losses={"mse": {"weight": 1.0}, "kld": {"weight": 1.0}},
        pairs=[[-1, -1]],
        optim={"lr": 1e-3},
    )
    teacher_before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    trainer = plain_trainer(tmp_path)
    trainer.fit(module, datamodule=ChipDataModule(store, batch_size=4))
    assert trainer.global_step == 2
    assert module.cache is not None and module.cache.misses > 0  # the teacher ran, features cached
    assert all(torch.equal(teacher_before[k], v) for k, v in module.teacher.state_dict().items())
    assert module.hparams["teacher"] == {"name": "prithvi-eo-tiny", "weights": str(weights)}
    assert "feature_layers" not in module.hparams

    ckpt = tmp_path / "kd.ckpt"
    trainer.save_checkpoint(ckpt)
    again = DistillModule.load_from_checkpoint(ckpt)
    assert dict(again.hparams) == dict(module.hparams)
    assert again.pairs == [(-1, -1)] and set(again.loss_terms) == {"mse", "kld"}
    assert_same_weights(again, module)  # student and projectors; the teacher is left out
    assert_same_weights(again.teacher, module.teacher)  # rebuilt from its weights file


def test_teacher_module_from_a_name_trains_under_a_plain_trainer(tmp_path):
    hls = toy_store(tmp_path / "hls", sensor="hls", chips=8, size=32)
    load_plugins()
    arch = {
        "patch_size": [1, 8, 8],
        "embed_dim": 32,
        "depth": 1,
        "num_heads": 2,
        "decoder_embed_dim": 16,
        "decoder_depth": 1,
        "decoder_num_heads": 2,
    }
    module = TeacherMAEModule({"name": "prithvi-eo-tiny", "img_size": 32, **arch}, optim={"lr": 1e-3})
    trainer = plain_trainer(tmp_path)
    trainer.fit(module, datamodule=ChipDataModule(hls, batch_size=4))
    assert trainer.global_step == 2 and module.hparams["teacher"]["name"] == "prithvi-eo-tiny"
    ckpt = tmp_path / "t.ckpt"
    trainer.save_checkpoint(ckpt)
    assert_same_weights(TeacherMAEModule.load_from_checkpoint(ckpt), module)


def test_named_parts_report_bad_input_in_one_line():
    with pytest.raises(RecipeError, match=r"masker\.ratio 0\.5 and mask_ratio 0\.6 disagree"):
        MAEModule(STUDENT, masker={"name": "random", "ratio": 0.5}, mask_ratio=0.6)
    with pytest.raises(RecipeError, match=r"losses\.mse: expected a mapping"):
        MAEModule(STUDENT, losses={"mse": 1.0})
    with pytest.raises(RecipeError, match=r"optim: unknown key\(s\) \['lr_max'\]"):
        MAEModule(STUDENT, optim={"lr_max": 1.0})


def test_one_warmup_cosine_schedule_and_timm_decay_groups():
    assert [warmup_cosine(s, 2, 6) for s in (0, 1)] == [0.5, 1.0]
    assert warmup_cosine(2, 2, 6) == 1.0 and warmup_cosine(4, 2, 6) == pytest.approx(0.5)
    assert warmup_cosine(6, 2, 6) == pytest.approx(0.0) and warmup_cosine(99, 2, 6) == pytest.approx(0.0)
    assert warmup_cosine(0, 10, 1) == 1.0  # warmup never eats the whole (one-step) run
    assert warmup_cosine(3, 0, 12) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    module = MAEModule(STUDENT)
    decay, no_decay = decay_groups(module, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    no_decay_ids = {id(p) for p in no_decay["params"]}
    for name, p in module.named_parameters():
        expected = p.ndim < 2 or name.endswith(("cls_token", "mask_token"))
        assert (id(p) in no_decay_ids) == expected, name


def test_synthetic_data_module_generates_in_prepare_data_once(tmp_path):
    from hyperkd.core.sensors import get_sensor

    sensor = get_sensor("enmap")
    dm = SyntheticChipDataModule(tmp_path / "syn", sensor, chips=3, size=16, synth_seed=0, batch_size=2)
    assert not dm.is_prepared() and dm.chip_size == 16 and dm.sensor.means is None
    assert not (tmp_path / "syn").exists()  # nothing generated before Lightning asks
    assert dm.prepare_data_per_node is False  # global rank 0 only
    dm.prepare_data()
    assert dm.is_prepared() and len(dm.store) == 3 and dm.sensor.means is not None
    stamp = (tmp_path / "syn" / "manifest.json").stat().st_mtime_ns
    again = SyntheticChipDataModule(tmp_path / "syn", sensor, chips=3, size=16, batch_size=2)
    again.prepare_data()  # a sealed store is reused (resume)
    assert (tmp_path / "syn" / "manifest.json").stat().st_mtime_ns == stamp
    again.setup("fit")
    assert len(again.train_idx) + len(again.val_idx) == 3 and next(iter(again.train_dataloader()))[
        "image"
    ].shape[1:] == (sensor.num_bands, 16, 16)


def test_unnamed_parts_are_the_built_in_recipes():
    load_plugins()
    from hyperkd.components.maskers import RandomMasker, SpatialFeatureMasker

    mae = MAEModule(STUDENT, mask_ratio=0.6)  # the mae recipe's masker and losses; the ratio given wins
    assert isinstance(mae.masker, RandomMasker) and mae.mask_ratio == 0.6 and set(mae.loss_terms) == {"mse"}
    kd = DistillModule(STUDENT, {"name": "prithvi-eo-tiny", "weights": None})
    assert isinstance(kd.masker, SpatialFeatureMasker) and kd.mask_ratio == 0.75
    assert set(kd.loss_terms) == {"mse", "ssim", "kld"} and kd.aligner.method == "spectral-range"
