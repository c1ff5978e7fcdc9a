"""Runs refuse bad recipes in one line, leave nothing half-written, resume exactly, stop on NaN."""

from __future__ import annotations

import json
import logging
import shutil

import lightning as L
import pytest
import torch
import yaml

from hyperkd.cli import main
from hyperkd.core.errors import HyperKDError, RecipeError, TrainingError
from hyperkd.evaluation.finetune import finetune
from hyperkd.training.checkpoint import checkpoint_step, find_checkpoint, load_checkpoint_file
from hyperkd.training.runner import pretrain

from .helpers.threads import one_thread  # noqa: F401 - autouse fixture
from .helpers.toy import TINY_STUDENT, toy_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return toy_store(tmp_path_factory.mktemp("safety") / "store", chips=12, size=16)


def _sets(store, *extra: str) -> list[str]:
    return [f"data.store={store.root}", "trainer.figures=false", *TINY_STUDENT, *extra]


def _cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


class StepRecorder(L.Callback):
    """The global step of every training batch."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.steps.append(trainer.global_step)


class Killed(Exception):
    pass


class KillAt(L.Callback):
    """Stands in for a kill: stops the run at the start of global step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Killed(self.step)


# -- 1. recipe values and keys ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sets", "names"),
    [
        (["optim.lr=fast"], ["optim.lr", "'fast'"]),
        (["data.batch_size=0"], ["data.batch_size", "at least 1"]),
        (["trainer.max_epochs=-3"], ["trainer.max_epochs", "at least -1"]),
        (["trainer.max_epochs=-1", "trainer.max_steps=-1"], ["train forever"]),
        (["optim.learning_rate=0.1"], ["optim.learning_rate", "did you mean optim.lr?"]),
        (["trainer.max_epoch=3"], ["trainer.max_epoch ", "did you mean trainer.max_epochs?"]),
        (["masker.ratoi=0.5"], ["masker.ratoi", "did you mean masker.ratio?"]),
        (["losses.mse.wieght=2"], ["losses.mse.wieght", "did you mean losses.mse.weight?"]),
    ],
)
def test_bad_recipe_values_and_unknown_keys_are_one_line_and_nothing_is_written(
    store, tmp_path, capsys, sets, names
):
    run = tmp_path / "run"
    args = ["pretrain", "--out", str(run)] + [a for s in _sets(store, *sets) for a in ("--set", s)]
    code, err = _cli(capsys, *args)
    assert code == 1 and "Traceback" not in err and err.count("\n") == 1, err
    assert all(n in err for n in names), err
    assert not run.exists()


def test_a_yaml_syntax_error_is_one_line_with_file_line_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: mae\noptim:\n  lr: [0.1\ntrainer: {max_epochs: 1}\n")
    code, err = _cli(capsys, "recipes", "show", str(bad))
    assert code == 1 and err.count("\n") == 1, err
    assert f"{bad}:4:" in err and "YAML syntax error" in err


def test_numbers_given_as_text_are_recorded_as_numbers(tmp_path):
    from hyperkd import recipes

    r = recipes.resolve("mae", ["optim.lr=1e-3", "data.batch_size=4"])
    assert r["optim"]["lr"] == pytest.approx(1e-3) and isinstance(r["optim"]["lr"], float)


# -- 2. nothing half-written ------------------------------------------------------------------------
def test_a_run_that_fails_on_input_leaves_no_run_folder_and_out_may_not_be_a_file(store, tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(HyperKDError, match="sensor"):  # the student is built before the folder
        pretrain("mae", run, overrides=_sets(store, "student.name=prisma-mae-tiny", "trainer.max_steps=1"))
    assert not run.exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, err = _cli(capsys, "pretrain", "--out", str(afile), "--data", str(store.root))
    assert code == 1 and "is a file" in err and err.count("\n") == 1
    code, err = _cli(capsys, "pretrain", "--out", str(afile / "run"), "--data", str(store.root))
    assert code == 1 and "is a file" in err


def test_the_final_checkpoint_is_the_full_state_and_lightning_logs_no_weights_only_notice(
    store, tmp_path, caplog
):
    # Lightning's "`weights_only` was not set, defaulting to `False`" read like an unsafe load
    caplog.set_level(logging.INFO, logger="lightning.pytorch")
    pretrain("mae", tmp_path / "run", overrides=_sets(store, "trainer.max_steps=1"))
    assert "weights_only" not in caplog.text
    state = load_checkpoint_file(tmp_path / "run" / "checkpoints" / "last.ckpt")  # safetensors, no pickle
    assert "optimizer_states" in state and state["global_step"] == 1  # what --resume needs


def test_a_run_that_never_saved_a_checkpoint_is_started_again_without_resume(store, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("name: killed before its first checkpoint\n")  # a kill's leftover
    res = pretrain("mae", run, overrides=_sets(store, "trainer.max_steps=1"))
    assert res.global_step == 1
    assert yaml.safe_load((run / "recipe.yaml").read_text())["trainer"]["max_steps"] == 1


def test_a_failed_finetune_removes_what_it_wrote_and_flags_are_named(store, tmp_path):
    out = tmp_path / "ft"
    common = dict(student="raw", task="segmentation", label="lc", store=store.root, epochs=1, figures=False)
    with pytest.raises(RecipeError, match=r"trainer\.max_epoch .*did you mean trainer\.max_epochs"):
        finetune(out=out, trainer={"max_epoch": 1}, **common)
    assert not out.exists()
    with pytest.raises(Exception, match="bogus"):  # fails inside Lightning, after finetune.json was written
        finetune(out=out, trainer={"precision": "bogus"}, **common)
    assert not out.exists()
    out.mkdir()
    (out / "finetune.json").write_text("{}")
    with pytest.raises(HyperKDError, match="--overwrite"):
        finetune(out=out, **common)
    with pytest.raises(HyperKDError, match="is a file"):
        finetune(out=out / "finetune.json", **common)


# -- 3. resume --------------------------------------------------------------------------------------
def test_a_moved_run_killed_twice_and_resumed_twice_trains_every_step_once(store, tmp_path, capsys):
    first, moved = tmp_path / "first", tmp_path / "elsewhere" / "run"
    sets = _sets(
        store, "trainer.max_steps=12", "trainer.max_epochs=100", "trainer.checkpoint_every_n_steps=1"
    )
    rec = [StepRecorder() for _ in range(3)]
    with pytest.raises(Killed):
        pretrain("mae", first, overrides=sets, callbacks=[KillAt(5), rec[0]])
    moved.parent.mkdir()
    shutil.move(first, moved)
    ckpts = moved / "checkpoints"
    (ckpts / ".last.ckpt.x1y2.tmp.ckpt").write_bytes(b"\0" * 64)  # a checkpoint write cut by a kill
    # --resume alone: the saved recipe (with its --set values) is used; a changed lr is refused
    code, err = _cli(capsys, "pretrain", "--out", str(moved), "--resume", "--set", "optim.lr=0.5")
    assert code == 1 and "optim.lr (0.001 -> 0.5)" in err and err.count("\n") == 1, err
    assert not (moved / "logs" / "metrics.part-000.csv").exists()  # a refused resume moves nothing
    with pytest.raises(Killed):
        pretrain(out=moved, resume=True, callbacks=[KillAt(9), rec[1]])
    assert not list(ckpts.glob(".*tmp*")), "the stale temporary file is removed"
    assert not list(ckpts.glob("last-v*.ckpt")), "last.ckpt is overwritten in place after a move"
    assert checkpoint_step(ckpts / "last.ckpt") == 9
    res = pretrain(out=moved, resume=True, callbacks=[rec[2]])
    steps = rec[0].steps + rec[1].steps + rec[2].steps
    assert res.global_step == 12 and steps == list(range(12)), steps
    assert json.loads((moved / "metrics.json").read_text())["global_step"] == 12


def test_the_newest_checkpoint_is_resumed_whatever_its_name(tmp_path):
    from hyperkd.training.checkpoint import save_checkpoint_file

    for name, step in (("last.ckpt", 4), ("last-v1.ckpt", 9), ("step7.ckpt", 7)):
        save_checkpoint_file({"global_step": step, "state_dict": {"w": torch.zeros(1)}}, tmp_path / name)
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    assert find_checkpoint(tmp_path) == tmp_path / "last-v1.ckpt"


def test_a_pretraining_run_is_not_resumed_as_distillation_and_a_changed_masker_is_named(store, tmp_path):
    from hyperkd.training.distill import distill

    run = tmp_path / "run"
    pretrain("mae", run, overrides=_sets(store, "trainer.max_steps=2", "trainer.checkpoint_every_n_steps=1"))
    with pytest.raises(HyperKDError, match=r"holds a pretrain run.*hyperkd pretrain --out"):
        distill(out=run, resume=True, teacher="prithvi-eo-tiny")
    with pytest.raises(RecipeError, match=r"masker\.name \('random' -> 'spatial-feature'\)"):
        pretrain(out=run, resume=True, overrides=["masker.name=spatial-feature", "trainer.max_steps=3"])
    logs = run / "logs"
    with pytest.raises(Killed):  # a resume that fails before it logged anything keeps the log in place
        pretrain(out=run, resume=True, overrides=["trainer.max_steps=3"], callbacks=[KillAt(2)])
    assert (logs / "metrics.csv").exists() and not list(logs.glob("metrics.part-*"))
    res = pretrain(out=run, resume=True, overrides=["trainer.max_steps=3"])  # trainer limits may change
    assert res.global_step == 3 and (logs / "metrics.part-000.csv").exists()
    assert yaml.safe_load((run / "recipe.yaml").read_text())["trainer"]["max_steps"] == 3


# -- 4. non-finite losses ---------------------------------------------------------------------------
class PoisonAt(L.Callback):
    """Turns every chip of the batch at ``step`` into NaN, as a store holding NaN would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            batch["image"].fill_(float("nan"))


def test_a_nan_loss_stops_training_at_its_step_and_exports_nothing(store, tmp_path):
    run = tmp_path / "run"
    sets = _sets(store, "trainer.max_steps=6", "trainer.checkpoint_every_n_steps=1")
    with pytest.raises(TrainingError, match=rf"nan at step 3 .*hyperkd data info {store.root}"):
        pretrain("mae", run, overrides=sets, callbacks=[PoisonAt(3)])
    assert not (run / "student").exists() and not (run / "metrics.json").exists()
    last = find_checkpoint(run / "checkpoints")
    assert last is not None and checkpoint_step(last) == 3  # the weights before the NaN step
    from hyperkd.training.checkpoint import load_checkpoint_file

    weights = load_checkpoint_file(last)["state_dict"].values()
    assert all(bool(torch.isfinite(w).all()) for w in weights if torch.is_tensor(w) and w.is_floating_point())


# -- 5. a run folder as the student of pretraining --------------------------------------------------
class ModeRecorder(L.Callback):
    def __init__(self) -> None:
        self.training: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.training.append(pl_module.student.training)


def test_pretrain_continues_from_a_run_folder_given_as_student(store, tmp_path):
    first = tmp_path / "first"
    pretrain("mae", first, overrides=_sets(store, "trainer.max_steps=1"))
    rec = ModeRecorder()
    res = pretrain(
        "mae",
        tmp_path / "second",
        overrides=_sets(store, "trainer.max_steps=1"),
        callbacks=[rec],
        student__name=str(first),
    )
    assert res.global_step == 1 and rec.training == [True]  # loaded for inference, trained in train mode
    assert (tmp_path / "second" / "student" / "model.safetensors").exists()
