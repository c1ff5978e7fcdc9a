"""The sensor-agnostic student (``any-mae-<size>``): one set of weights reads any band table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import hyperkd
from hyperkd.components.losses import masked_mse
from hyperkd.core.errors import HyperKDError
from hyperkd.core.sensors import Band, Sensor, get_sensor
from hyperkd.models.anymae import AnyMAE
from hyperkd.models.pixel import PixelModel

from .helpers.threads import one_thread  # noqa: F401 - autouse fixture
from .helpers.toy import TINY_STUDENT, toy_store

TINY = dict(
    img_size=16,
    patch_size=4,
    embed_dim=32,
    depth=2,
    num_heads=2,
    decoder_embed_dim=32,
    decoder_depth=1,
    decoder_num_heads=2,
    spectral_dim=8,
    hyper_dim=32,
)


def _table(name: str, centres, widths) -> Sensor:
    bands = tuple(
        Band(f"b{i + 1}", float(c), float(w)) for i, (c, w) in enumerate(zip(centres, widths, strict=True))
    )
    return Sensor(name=name, bands=bands, gsd_m=30.0)


PRISMA_LIKE = _table("prisma-like", np.linspace(402, 2497, 239), np.full(239, 11.0))
EMIT_LIKE = _table("emit-like", np.linspace(381, 2493, 285), np.full(285, 8.5))
UNSEEN = _table(  # irregular, unsorted, gappy: no sensor has it
    "unseen",
    [1650, 480, 2210, 705, 560, 1240, 865, 990, 2350, 620, 1040],
    [60, 20, 45, 9, 35, 25, 14, 7, 80, 5, 30],
)
TABLES = {
    "enmap-224": get_sensor("enmap", selection=None),
    "enmap-218": get_sensor("enmap-218"),
    "prisma-like": PRISMA_LIKE,
    "emit-like": EMIT_LIKE,
    "hls": get_sensor("hls"),
    "unseen": UNSEEN,
}


def _model(sensor: str | Sensor = "enmap", seed: int = 0) -> AnyMAE:
    torch.manual_seed(seed)
    model = hyperkd.create_model("any-mae-tiny", sensor=sensor, **TINY)
    assert isinstance(model, AnyMAE)
    return model


def _mask(model: AnyMAE, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(model.num_patches, generator=g) for _ in range(batch)])
    return ids < int(0.75 * model.num_patches)


def _chips(sensor: Sensor, batch: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth spectra (a red edge and a slope) mixed per pixel: reflectance in 0-0.6."""
    g = torch.Generator().manual_seed(seed)
    wl = torch.tensor(sensor.centers_nm)
    ends = torch.stack([0.05 + 0.45 / (1 + torch.exp(-(wl - 720) / 15)), 0.15 + 0.2 * (wl - 400) / 2100])
    ab = torch.rand(batch, 2, size, size, generator=g)
    return torch.einsum("kc,bkhw->bchw", ends, ab / ab.sum(1, keepdim=True))


# -- one set of weights, any band table ------------------------------------------------------------
def test_the_same_weights_read_every_band_table_and_the_mae_loss_trains_them():
    model = _model()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    for name, sensor in TABLES.items():
        model.bind(sensor)
        assert model.in_chans == sensor.num_bands and model.sensor.name == sensor.name
        x = _chips(sensor)
        out = model(x, _mask(model))
        c = sensor.num_bands
        assert out.pred.shape == out.target.shape == (2, model.num_patches, 16 * c), name
        loss = masked_mse(out.pred, out.target, out.weight)
        assert torch.isfinite(loss) and loss > 0, name
        model.zero_grad()
        loss.backward()
        for part in (model.patch_embed.spectral, model.patch_embed.proj, model.decoder_pred):
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters()), name
        # binding changed no weight and added no band-shaped tensor
        assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in weights.items()}
        assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    assert model.num_parameters() == _model("hls").num_parameters() == _model(EMIT_LIKE).num_parameters()


def test_a_few_steps_of_masked_reconstruction_lower_the_loss_on_hls_and_enmap_alternately():
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tables, losses = [get_sensor("hls"), get_sensor("enmap")], {"hls": [], "enmap": []}
    for step in range(16):
        sensor = tables[step % 2]
        model.bind(sensor)
        out = model(_chips(sensor, seed=step), _mask(model, seed=step))
        loss = masked_mse(out.pred, out.target, out.weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses[sensor.name].append(float(loss.detach()))
    assert losses["hls"][-1] < losses["hls"][0] and losses["enmap"][-1] < losses["enmap"][0]


def test_the_decoder_predicts_the_input_bands_in_the_input_order():
    """Reversing the band table and the input's bands reverses the prediction, band by band: the
    encoder does not depend on the band order and the decoder reads out exactly the input's bands."""
    model = _model(UNSEEN).eval()
    x, mask = _chips(UNSEEN), _mask(model)
    pred = model(x, mask).pred
    rev = _table("unseen-reversed", UNSEEN.centers_nm[::-1], UNSEEN.fwhms_nm[::-1])
    pred_rev = model.bind(rev)(x.flip(1), mask).pred
    c = UNSEEN.num_bands
    torch.testing.assert_close(
        pred_rev.view(2, -1, 16, c).flip(-1), pred.view(2, -1, 16, c), rtol=1e-4, atol=1e-5
    )
    # and the band table matters: other wavelengths for the same numbers give another prediction
    shifted = _table("shifted", [w + 150 for w in UNSEEN.centers_nm], UNSEEN.fwhms_nm)
    assert not torch.allclose(model.bind(shifted)(x, mask).pred, pred, atol=1e-3)


def test_bind_takes_another_chip_size_and_refuses_one_the_patches_do_not_tile():
    model = _model()
    model.bind("hls", img_size=32)
    assert model.img_size == 32 and model.grid == (8, 8) and model.pos_embed.shape[1] == 65
    out = model(_chips(get_sensor("hls"), size=32), _mask(model))
    assert out.pred.shape == (2, 64, 16 * 6)
    with pytest.raises(HyperKDError, match="not a multiple of 4"):
        model.bind("hls", img_size=30)
    with pytest.raises(HyperKDError, match="embedding is 'wavelength'"):
        AnyMAE(sensor=get_sensor("hls").to_dict(), embedding="plain")


# -- registry and saved models ---------------------------------------------------------------------
def test_any_mae_sizes_are_registered_students_and_recipe_fields_of_plain_students_are_ignored(caplog):
    from hyperkd.core.registry import registry

    names = set(registry("student").names())
    assert {"any-mae-tiny", "any-mae-small", "any-mae-base", "any-mae-large"} <= names
    with caplog.at_level("WARNING"):
        model = hyperkd.create_model("any-mae-tiny", sensor="hls", embedding="factorized", **TINY)
    assert isinstance(model, AnyMAE) and "embedding=factorized ignored" in caplog.text
    auto = hyperkd.create_model("any-mae-small", sensor="hls", img_size=32)
    assert auto.patch_size == 4 and auto.grid == (8, 8)  # the MAE sizes' automatic patch size


def test_a_saved_any_sensor_student_says_so_holds_no_band_shaped_weight_and_reloads(tmp_path: Path):
    model = _model("enmap-218")
    folder = tmp_path / "student"
    model.save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["sensor_agnostic"] is True and cfg["model_type"] == "any-sensor-mae"
    assert cfg["architecture"] == "any-mae-tiny" and cfg["embedding"] == "wavelength"
    assert [r["kind"] for r in cfg["requires"]] == ["model_type"]  # no sensor plugin needed
    weights = load_file(folder / "model.safetensors")
    assert not any(218 in t.shape for t in weights.values()) and "band_mean" not in weights
    loaded = hyperkd.from_pretrained(folder)
    assert isinstance(loaded, AnyMAE) and loaded.sensor.name == "enmap-218"
    rebuilt = hyperkd.create_model(cfg["architecture"], sensor=cfg["sensor"], **cfg["model_args"])
    rebuilt.load_state_dict(weights)
    x, mask = _chips(get_sensor("hls")), _mask(model)
    expected = model.eval().bind("hls")(x, mask).pred
    for other in (loaded, rebuilt.eval()):
        torch.testing.assert_close(other.bind("hls")(x, mask).pred, expected)


# -- fine-tuning on a store of another band table ---------------------------------------------------
@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> Path:
    """An any-sensor student saved bound to the 202-band EnMAP table, as pretraining exports one."""
    from hyperkd.training.callbacks import export_student

    return export_student(_model("enmap"), tmp_path_factory.mktemp("any") / "student")


@pytest.mark.parametrize("sensor", ["hls", "enmap-218"])
def test_finetune_reads_a_store_of_another_band_table_with_the_same_weights(student_dir, sensor, tmp_path):
    from hyperkd.evaluation.finetune import evaluate, finetune

    store = toy_store(tmp_path / "store", sensor=sensor, chips=12, size=16)
    res = finetune(
        student=student_dir,
        task="segmentation",
        label="lc",
        store=store,
        out=tmp_path / "ft",
        epochs=2,
        figures=False,
    )
    assert 0.0 <= res.metrics["overall_accuracy"] <= 1.0
    pm = PixelModel.load(res.run_dir)
    assert isinstance(pm.encoder, AnyMAE) and pm.encoder.sensor.name == store.sensor.name
    assert pm.in_chans == store.sensor.num_bands and pm.config["encoder"]["sensor"]["name"] == sensor
    # the encoder is the student's weights as they were (the default protocol keeps them fixed)
    saved = load_file(student_dir / "model.safetensors")
    enc = pm.encoder.state_dict()
    assert all(
        torch.equal(enc[k], v) for k, v in saved.items() if not k.startswith(("decoder", "mask_token"))
    )
    # standardised with the store's statistics, not the pretraining table's
    torch.testing.assert_close(pm.encoder.band_mean.flatten(), torch.tensor(store.sensor.means))
    x = torch.from_numpy(store[0]["image"])[None]
    assert pm.predict(x).shape == (1, 16, 16)
    assert evaluate(res.run_dir, store).metrics["pixels"] > 0
    # an untrained control of the same architecture, on the same store
    ctrl = finetune(
        student=student_dir,
        init="random",
        task="segmentation",
        label="lc",
        store=store,
        out=tmp_path / "r",
        epochs=1,
        figures=False,
    )
    assert PixelModel.load(ctrl.run_dir).encoder.sensor.name == sensor
    # the fine-tuned model is for this band table: its head reads these spectra
    other = toy_store(tmp_path / "other", sensor="enmap" if sensor == "hls" else "hls", chips=4, size=16)
    with pytest.raises(HyperKDError, match=f"expects {store.sensor.num_bands} bands"):
        evaluate(res.run_dir, other, chips="all")


def test_adapt_to_keeps_the_trained_statistics_for_the_same_band_table_and_takes_a_new_tables():
    hls = get_sensor("hls")
    trained = hls.with_stats([0.1] * 6, [0.05] * 6)
    model = _model(trained)
    model.adapt_to(hls.with_stats([0.3] * 6, [0.2] * 6), img_size=32)
    assert model.img_size == 32 and torch.allclose(model.band_mean.flatten(), torch.full((6,), 0.1))
    enmap = get_sensor("enmap-218")
    model.adapt_to(enmap.with_stats([0.2] * 218, [0.1] * 218))
    assert model.in_chans == 218 and torch.allclose(model.band_std.flatten(), torch.full((218,), 0.1))


def test_pretrain_builds_an_any_sensor_student_and_a_saved_one_trains_on_another_band_table(tmp_path):
    from hyperkd.training.runner import pretrain

    hls = toy_store(tmp_path / "hls", sensor="hls", chips=8, size=16)
    run = tmp_path / "run"
    sets = ["trainer.figures=false", *TINY_STUDENT, "trainer.max_steps=2"]
    res = pretrain("mae", run, overrides=[f"data.store={hls.root}", *sets, "student.name=any-mae-tiny"])
    assert res.global_step == 2
    cfg = json.loads((run / "student" / "config.json").read_text())
    assert cfg["sensor_agnostic"] is True and cfg["sensor"]["name"] == "hls" and cfg["spectral_dim"] == 16
    # the saved student goes on pretraining, unchanged, on a store of 218 EnMAP bands and 32 px chips
    enmap = toy_store(tmp_path / "enmap218", sensor="enmap-218", chips=8, size=32)
    more = tmp_path / "more"
    res = pretrain("mae", more, overrides=[f"data.store={enmap.root}", *sets, f"student.name={run}"])
    assert res.global_step == 2
    cfg = json.loads((more / "student" / "config.json").read_text())
    assert cfg["sensor"]["name"] == "enmap-218" and cfg["img_size"] == 32
    before = load_file(run / "student" / "model.safetensors")
    after = load_file(more / "student" / "model.safetensors")
    assert {k: v.shape for k, v in before.items()} == {k: v.shape for k, v in after.items()}
    # or a fresh any-mae student of the same architecture starts from the saved weights
    init = tmp_path / "init"
    res = pretrain(
        "mae",
        init,
        overrides=[
            f"data.store={enmap.root}",
            *sets,
            "student.name=any-mae-tiny",
            f"student.init_from={run}",
        ],
    )
    assert res.global_step == 2


def test_distill_trains_an_any_sensor_student_from_a_teacher(tmp_path):
    from hyperkd.core.plugins import load_plugins
    from hyperkd.training.distill import distill

    load_plugins()
    from hyperkd_prithvi.testing import write_tiny_checkpoint

    teacher = write_tiny_checkpoint(tmp_path / "prithvi_tiny.pt", seed=1)
    store = toy_store(tmp_path / "store", chips=8, size=32)
    run = tmp_path / "run"
    res = distill(
        "hyperkd",
        run,
        teacher="prithvi-eo-tiny",
        teacher_weights=str(teacher),
        student="any-mae-tiny",
        data=str(store.root),
        overrides=[*TINY_STUDENT, "trainer.max_steps=2", "trainer.figures=false"],
    )
    assert res.global_step == 2
    cfg = json.loads((run / "student" / "config.json").read_text())
    assert cfg["architecture"] == "any-mae-tiny" and cfg["sensor"]["name"] == "enmap"
