"""Training across sensors: several chip stores in one run (``--data A --data B``), band dropout."""

from __future__ import annotations

import json
from typing import Any

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from hyperkd.core.errors import RecipeError
from hyperkd.data.multistore import StoreBatchSampler, StoreBinder, store_schedule
from hyperkd.models.anymae import AnyMAE
from hyperkd.models.pixel import PixelModel
from hyperkd.training.runner import pretrain

from .helpers.threads import one_thread  # noqa: F401 - autouse fixture
from .helpers.toy import TINY_STUDENT, logged, toy_store

SETS = [*TINY_STUDENT, "trainer.figures=false", "data.batch_size=2"]


class Seen(L.Callback):
    """Records, for every training step, the batch's store and chips and what the student was bound
    to when the loss was computed (bands, chip size, the first band's mean); and the validated chips."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, list[int]]] = []
        self.bound: list[tuple[int, int, float]] = []
        self.validated: set[tuple[int, int]] = set()

    def on_train_batch_start(self, trainer, pl_module, batch: dict[str, Any], batch_idx: int) -> None:
        stores = torch.as_tensor(batch["store"]).tolist() if "store" in batch else [0]
        assert len(set(stores)) == 1  # one store per batch
        self.batches.append((stores[0], [int(i) for i in batch["index"]]))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        stores = torch.as_tensor(batch["store"]).tolist() if "store" in batch else [0]
        self.validated.update(zip(stores, [int(i) for i in batch["index"]], strict=True))

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        s = pl_module.student
        self.bound.append((s.in_chans, s.img_size, float(s.band_mean.flatten()[0])))


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("stores")
    return {
        "enmap": toy_store(root / "enmap", sensor="enmap", chips=8, size=16, seed=0),
        "enmap-218": toy_store(root / "enmap218", sensor="enmap-218", chips=12, size=32, seed=1),
        "enmap-b": toy_store(root / "enmap-b", sensor="enmap", chips=8, size=16, seed=2),
        "hls": toy_store(root / "hls", sensor="hls", chips=12, size=16, seed=3),
    }


# -- the done-when: one any-mae student, two band tables in one run, fine-tuned on others ----
def test_one_any_mae_pretrained_on_enmap_and_enmap218_in_one_run_finetunes_unchanged_on_hls_and_enmap218(
    stores, tmp_path
):
    from hyperkd.evaluation.finetune import finetune

    enmap, e218 = stores["enmap"], stores["enmap-218"]
    run, seen = tmp_path / "run", Seen()
    res = pretrain(
        "mae",
        run,
        overrides=[*SETS, "student.name=any-mae-tiny", "trainer.max_steps=8"],
        data__store=[str(enmap.root), str(e218.root)],
        callbacks=[seen],
    )
    assert res.global_step == 8 and all(torch.isfinite(torch.tensor(logged(run, "train/loss"))))
    # each step read one store, with that store's band table, chip size and own statistics
    first_mean = {0: enmap.sensor.means[0], 1: e218.sensor.means[0]}
    for (store, _), (bands, size, mean) in zip(seen.batches, seen.bound, strict=True):
        sensor = (enmap, e218)[store]
        assert (bands, size) == (sensor.sensor.num_bands, sensor.chip_size)
        assert mean == pytest.approx(first_mean[store], rel=1e-6)
    assert {s for s, _ in seen.batches} == {0, 1}
    # the exported student is bound back to the first store's table and is sensor-agnostic
    cfg = json.loads((run / "student" / "config.json").read_text())
    assert cfg["sensor_agnostic"] is True and cfg["sensor"]["name"] == "enmap" and cfg["img_size"] == 16
    assert cfg["architecture"] == "any-mae-tiny"
    saved = load_file(run / "student" / "model.safetensors")
    for name in ("hls", "enmap-218"):
        store = stores[name]
        ft = finetune(
            student=run / "student",
            task="segmentation",
            label="lc",
            store=store,
            out=tmp_path / f"ft-{name}",
            epochs=1,
            figures=False,
        )
        assert 0.0 <= ft.metrics["overall_accuracy"] <= 1.0
        pm = PixelModel.load(ft.run_dir)
        assert isinstance(pm.encoder, AnyMAE) and pm.encoder.sensor.name == name
        assert pm.in_chans == store.sensor.num_bands
        enc = pm.encoder.state_dict()  # the pretrained weights, unchanged
        kept = [k for k in saved if not k.startswith(("decoder", "mask_token"))]
        assert kept and all(torch.equal(enc[k], saved[k]) for k in kept)


# -- what is refused ------------------------------------------------------------------------------
@pytest.mark.parametrize("student", ["enmap", "mae-tiny"])
def test_a_band_tied_student_on_stores_of_different_band_tables_is_refused_before_training(
    stores, tmp_path, student
):
    enmap, e218 = stores["enmap"], stores["enmap-218"]
    run = tmp_path / "run"
    with pytest.raises(RecipeError, match="any-mae-<size>") as err:
        pretrain(
            "mae",
            run,
            overrides=[*SETS, f"student.name={student}", "trainer.max_steps=1"],
            data__store=[str(enmap.root), str(e218.root)],
        )
    msg = str(err.value)
    assert str(enmap.root) in msg and str(e218.root) in msg and "\n" not in msg
    assert not run.exists()  # nothing written


def test_the_cli_takes_data_repeatedly_and_prints_the_refusal_on_one_line(stores, tmp_path, capsys):
    from hyperkd.cli import main

    enmap, hls = stores["enmap"], stores["hls"]
    args = ["pretrain", "--student", "enmap", "--data", str(enmap.root), "--data", str(hls.root)]
    code = main([*args, "--out", str(tmp_path / "run"), "--set", "trainer.max_steps=1"])
    err = capsys.readouterr().err
    assert code == 1 and str(hls.root) in err and "any-mae" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("sets", "match"),
    [
        (["data.band_dropout=0.5", "student.name=enmap"], "band_dropout 0.5 needs a sensor-agnostic"),
        (["data.band_dropout=1.0", "student.name=any-mae-tiny"], "data.band_dropout is 1.0"),
        (["data.mix=shuffle", "student.name=any-mae-tiny"], "data.mix is 'shuffle'"),
        (["data.val_list=[0]", "student.name=any-mae-tiny"], "data.val_list names chips of one store"),
    ],
)
def test_bad_multi_store_settings_are_refused_with_one_line(stores, tmp_path, sets, match):
    with pytest.raises(RecipeError, match=match):
        pretrain(
            "mae",
            tmp_path / "run",
            overrides=[*SETS, *sets, "trainer.max_steps=1"],
            data__store=[str(stores["enmap"].root), str(stores["enmap-b"].root)],
        )
    assert not (tmp_path / "run").exists()


def test_a_store_named_twice_or_synthetic_in_a_list_is_refused(stores, tmp_path):
    root = str(stores["enmap"].root)
    with pytest.raises(RecipeError, match="twice"):
        pretrain("mae", tmp_path / "a", overrides=SETS, data__store=[root, root])
    with pytest.raises(RecipeError, match="not 'synthetic'"):
        pretrain("mae", tmp_path / "b", overrides=SETS, data__store=[root, "synthetic"])


def test_a_first_store_without_validation_chips_is_refused_when_the_others_have_some(stores, tmp_path):
    one = toy_store(tmp_path / "one", chips=1, size=16)
    data = [str(one.root), str(stores["enmap"].root)]
    with pytest.raises(RecipeError, match="list a larger store first"):
        pretrain("mae", tmp_path / "run", overrides=[*SETS, "student.name=any-mae-tiny"], data__store=data)


# -- stores of one band table: any student, each store standardised with its own statistics --------
def test_stores_of_one_band_table_train_a_plain_student_with_each_stores_statistics(stores, tmp_path):
    a, b = stores["enmap"], stores["enmap-b"]
    assert a.sensor.means[0] != pytest.approx(b.sensor.means[0], rel=1e-6)
    seen, run = Seen(), tmp_path / "run"
    res = pretrain(
        "mae",
        run,
        overrides=[*SETS, "student.name=enmap", "trainer.max_steps=6"],
        data__store=[str(a.root), str(b.root)],
        callbacks=[seen],
    )
    assert res.global_step == 6 and {s for s, _ in seen.batches} == {0, 1}
    for (store, _), (bands, _, mean) in zip(seen.batches, seen.bound, strict=True):
        assert bands == 202 and mean == pytest.approx((a, b)[store].sensor.means[0], rel=1e-6)
    # the exported student standardises with the first store's statistics
    saved = load_file(run / "student" / "model.safetensors")
    torch.testing.assert_close(saved["band_mean"].flatten(), torch.tensor(a.sensor.means))


# -- band dropout -----------------------------------------------------------------------------------
def test_band_dropout_binds_the_student_to_random_band_subsets_and_the_loss_stays_finite(stores, tmp_path):
    enmap, hls = stores["enmap"], stores["hls"]
    seen, run = Seen(), tmp_path / "run"
    res = pretrain(
        "mae",
        run,
        overrides=[*SETS, "student.name=any-mae-tiny", "trainer.max_steps=8", "data.band_dropout=0.5"],
        data__store=[str(enmap.root), str(hls.root)],
        callbacks=[seen],
    )
    assert res.global_step == 8
    losses = logged(run, "train/loss")
    assert len(losses) == 8 and all(torch.isfinite(torch.tensor(losses)))
    for (store, _), (bands, _, _) in zip(seen.batches, seen.bound, strict=True):
        assert bands == {0: 101, 1: 3}[store]  # half of 202 and of 6 bands kept
    # validation and the export read every band of the first store
    cfg = json.loads((run / "student" / "config.json").read_text())
    assert cfg["sensor"]["num_bands"] == 202
    assert torch.isfinite(torch.tensor(res.metrics["val/loss"]))


def test_the_binder_keeps_a_seeded_sorted_subset_and_cuts_the_image_to_it(stores):
    student = AnyMAE(sensor=stores["enmap"].sensor.to_dict(), img_size=16, patch_size=4, embed_dim=32,
                     depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2,
                     spectral_dim=8, hyper_dim=16)  # fmt: skip
    binder = StoreBinder([stores["enmap"], stores["hls"]], band_dropout=0.25, seed=3)
    image = torch.arange(202, dtype=torch.float32).view(1, 202, 1, 1).expand(2, 202, 16, 16)
    out = binder(student, {"image": image, "store": torch.tensor([0, 0])}, step=5)
    keep = binder.kept_bands(202, 5)
    assert keep == sorted(keep) and len(keep) == 202 - round(0.25 * 202) and keep == binder.kept_bands(202, 5)
    assert keep != binder.kept_bands(202, 6)
    assert torch.equal(out["image"][0, :, 0, 0], torch.tensor(keep, dtype=torch.float32))
    names = stores["enmap"].sensor.band_names
    assert student.sensor.band_names == [names[i] for i in keep]
    # validation (no step) keeps every band; another store rebinds chip size and table
    binder(student, {"image": image, "store": torch.tensor([0, 0])})
    assert student.in_chans == 202
    binder(student, {"image": torch.zeros(2, 6, 16, 16), "store": torch.tensor([1, 1])})
    assert student.sensor.name == "hls" and student.in_chans == 6
    with pytest.raises(RecipeError, match="several stores"):
        binder(student, {"image": image, "store": torch.tensor([0, 1])})


# -- the batch schedule ------------------------------------------------------------------------------
def test_proportional_schedule_covers_every_chip_once_one_store_per_batch_and_is_seeded():
    sizes = [7, 10, 3]
    sched = store_schedule(sizes, 2, seed=0, epoch=0)
    # full batches (a store smaller than the batch: one batch of all of it); last partial dropped
    assert sorted(len(b) for s, b in sched if s == 1) == [2] * 5 and [len(b) for s, b in sched if s == 2] == [
        2
    ]
    for s, n in enumerate(sizes):
        chips = [i for t, b in sched if t == s for i in b]
        assert len(set(chips)) == len(chips) and set(chips) <= set(range(n))
    assert sum(len(b) for _, b in sched) == 3 * 2 + 5 * 2 + 2
    assert sched == store_schedule(sizes, 2, seed=0, epoch=0)
    assert sched != store_schedule(sizes, 2, seed=0, epoch=1) != store_schedule(sizes, 2, seed=1, epoch=0)
    assert len({s for s, _ in sched[:6]}) > 1  # the stores are interleaved, not one after the other


def test_round_robin_schedule_takes_turns_and_repeats_the_smaller_store():
    sched = store_schedule([4, 12], 2, seed=0, epoch=0, mix="round-robin")
    assert [s for s, _ in sched] == [0, 1] * 6
    small = [i for s, b in sched if s == 0 for i in b]
    assert len(small) == 12 and set(small) == set(range(4))  # reshuffled three times
    # several devices: each rank takes every other batch of the same schedule
    whole = [[(s, p) for p in b] for s, b in sched]
    ranks = [list(StoreBatchSampler([4, 12], 2, mix="round-robin", rank=r, world_size=2)) for r in (0, 1)]
    assert ranks[0] == whole[0::2] and ranks[1] == whole[1::2]


# -- resume continues the schedule ------------------------------------------------------------------
class Crash(L.Callback):
    """Fails the run when it reaches ``step`` (after a checkpoint was saved)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("crash")


def test_a_run_resumed_mid_epoch_continues_the_multi_store_batch_schedule_exactly(stores, tmp_path):
    data = [str(stores["enmap"].root), str(stores["hls"].root)]
    sets = [*SETS, "student.name=any-mae-tiny", "trainer.checkpoint_every_n_steps=5", "trainer.max_steps=12"]
    whole = Seen()
    pretrain("mae", tmp_path / "whole", overrides=sets, data__store=data, callbacks=[whole])
    first, second = Seen(), Seen()
    part = tmp_path / "part"
    with pytest.raises(RuntimeError, match="crash"):  # killed at step 7, checkpoint of step 5 kept
        pretrain("mae", part, overrides=sets, data__store=data, callbacks=[first, Crash(7)])
    res = pretrain("mae", part, overrides=sets, data__store=data, resume=True, callbacks=[second])
    assert res.global_step == 12
    # step 5 is mid-epoch (an epoch is 8 batches: 3 of one store, 5 of the other); the resumed run
    # trains the rest of that epoch, then the next, exactly as the uninterrupted run did
    assert len(whole.batches) == 12 and {s for s, _ in whole.batches[:8]} == {0, 1}
    assert first.batches[:5] + second.batches == whole.batches


# -- distillation over several stores ----------------------------------------------------------------
def test_distill_takes_stores_of_one_band_table_and_refuses_several_tables(tmp_path):
    from hyperkd.core.plugins import load_plugins
    from hyperkd.training.distill import distill

    load_plugins()
    from hyperkd_prithvi.testing import write_tiny_checkpoint

    teacher = write_tiny_checkpoint(tmp_path / "prithvi_tiny.pt", seed=1)
    a = toy_store(tmp_path / "a", chips=6, size=32, seed=0)
    b = toy_store(tmp_path / "b", chips=6, size=32, seed=1)
    c = toy_store(tmp_path / "c", sensor="enmap-218", chips=6, size=32, seed=2)
    kw = dict(teacher="prithvi-eo-tiny", teacher_weights=str(teacher), student="any-mae-tiny")
    sets = [*SETS, "trainer.max_steps=10"]
    with pytest.raises(RecipeError, match="distill trains on one band table") as err:
        distill("hyperkd", tmp_path / "no", data=[str(a.root), str(c.root)], overrides=sets, **kw)
    assert str(c.root) in str(err.value) and not (tmp_path / "no").exists()
    run, seen = tmp_path / "run", Seen()
    res = distill("hyperkd", run, data=[str(a.root), str(b.root)], overrides=sets, callbacks=[seen], **kw)
    assert res.global_step == 10
    info = json.loads((run / "distill.json").read_text())
    # chip indices repeat across the stores: the teacher cache keeps each store's chips apart
    chips = {(s, i) for s, batch in seen.batches for i in batch} | seen.validated
    assert {s for s, _ in chips} == {0, 1} and len({i for _, i in chips}) < len(chips)
    assert info["cache"]["enabled"] and info["cache"]["entries"] == info["cache"]["misses"] == len(chips)


def test_distill_refuses_stores_of_one_band_table_but_different_gsd(stores):
    """The teacher's ground matching is built from one student GSD: a second GSD would be matched wrongly."""
    from dataclasses import replace
    from types import SimpleNamespace

    from hyperkd.data.multistore import check_student_for_stores

    a = stores["enmap"]
    coarse = SimpleNamespace(root="coarse-store", sensor=replace(a.sensor, gsd_m=60.0), chip_size=a.chip_size)
    student = SimpleNamespace(sensor=a.sensor, sensor_agnostic=True)
    check_student_for_stores(student, [a, coarse])  # pretraining reads both: the GSD does not matter there
    with pytest.raises(RecipeError, match="one band table, chip size and GSD") as err:
        check_student_for_stores(student, [a, coarse], distill=True)
    assert "coarse-store" in str(err.value) and "60 m" in str(err.value)
