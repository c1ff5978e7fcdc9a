"""The training engine: loss falls, kill + resume continues, 2-process DDP, run folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest

from hyperkd.core.errors import HyperKDError
from hyperkd.models.mae import HyperspectralMAE
from hyperkd.training.checkpoint import load_checkpoint_file
from hyperkd.training.runner import pretrain

from .helpers.toy import TINY_STUDENT, logged, toy_store

HYPERKD = str(Path(sys.executable).with_name("hyperkd"))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return toy_store(tmp_path_factory.mktemp("toy") / "store", chips=48, size=32)


def test_pretraining_lowers_masked_reconstruction_loss(store, tmp_path):
    run = tmp_path / "run"
    res = pretrain("mae", run, overrides=[f"data.store={store.root}", "trainer.max_epochs=25", *TINY_STUDENT])
    losses = logged(run, "val/loss_mse")
    assert len(losses) == 25
    # standardised targets: always predicting the band means scores about 1.0
    assert losses[-1] < 0.85 * losses[0] and losses[-1] < 0.75, losses
    # run folder contents
    for f in (
        "recipe.yaml",
        "metrics.json",
        "checkpoints/last.ckpt",
        "figures/reconstruction.png",
        "figures/loss.png",
        "student/model.safetensors",
        "student/config.json",
    ):
        assert (run / f).exists(), f
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == res.global_step == 25 * 5  # 42 training chips, batches of 8
    assert {"val/psnr", "val/ssim", "val/sam_deg", "val/mse"} <= set(metrics)
    student = HyperspectralMAE.from_pretrained(str(run / "student"))
    assert student.in_chans == 202 and student.img_size == 32
    # the exported student carries the store's statistics
    assert student.band_mean.flatten()[0].item() == pytest.approx(store.stats["mean"][0], rel=1e-5)
    with pytest.raises(HyperKDError, match="already holds a run"):
        pretrain("mae", run, overrides=[f"data.store={store.root}", *TINY_STUDENT])


class StepRecorder(L.Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.steps.append(trainer.global_step)


def test_killed_run_resumes_from_its_last_checkpoint(store, tmp_path):
    run = tmp_path / "run"
    sets = [
        f"data.store={store.root}",
        "trainer.max_steps=60",
        "trainer.max_epochs=100",
        "trainer.checkpoint_every_n_steps=1",
        "trainer.figures=false",
        *TINY_STUDENT,
    ]
    args = [HYPERKD, "pretrain", "--out", str(run)] + [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "HYPERKD_DISABLE_PROGRESS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if ckpt.exists() and load_checkpoint_file(ckpt)["global_step"] >= 6:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "training finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    step = load_checkpoint_file(ckpt)["global_step"]
    assert 6 <= step < 60
    rec = StepRecorder()
    res = pretrain(run / "recipe.yaml", run, resume=True, callbacks=[rec])
    assert rec.steps[0] == step  # continues where the checkpoint left off, mid-epoch
    assert res.global_step == 60
    assert rec.steps == list(range(step, 60))
    # the metrics logged before the kill are kept next to the resumed part
    from hyperkd.viz.figures import read_metrics

    assert (run / "logs" / "metrics.part-000.csv").exists()
    steps = [int(r["step"]) for r in read_metrics(run / "logs" / "metrics.csv") if r.get("train/loss")]
    assert min(steps) < step <= max(steps)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(HyperKDError, match="no checkpoint"):
        pretrain("mae", tmp_path / "nothing", resume=True)


def test_ddp_two_processes_on_cpu(store, tmp_path):
    run = tmp_path / "ddp"
    sets = [f"data.store={store.root}", "trainer.max_steps=3", "trainer.figures=false", *TINY_STUDENT]
    args = [
        HYPERKD,
        "pretrain",
        "--out",
        str(run),
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
    ] + [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "HYPERKD_DISABLE_PROGRESS": "1"}
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 3
    assert (run / "student" / "model.safetensors").exists()


def test_synthetic_chips_come_from_prepare_data_and_the_student_gets_their_statistics(tmp_path):
    run = tmp_path / "syn"
    pretrain(
        "mae",
        run,
        overrides=[
            "data.store=synthetic",
            "data.synthetic.chips=6",
            "data.synthetic.size=16",
            "trainer.max_steps=1",
            "trainer.figures=false",
            *TINY_STUDENT,
        ],
    )
    from hyperkd.data.store import ChipStore

    store = ChipStore(run / "data" / "synthetic-enmap")  # generated by the data module, sealed
    student = HyperspectralMAE.from_pretrained(str(run / "student"))
    # built for the nominal band table, rebuilt for the generated chips at setup
    assert student.band_mean.flatten()[0].item() == pytest.approx(store.stats["mean"][0], rel=1e-5)
    assert student.sensor.means is not None and student.img_size == 16
