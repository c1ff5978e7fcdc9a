"""HyperKD distillation: loss terms, a tiny run that learns, resume, a plugin sensor, offline errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hyperkd import create, get_sensor
from hyperkd.cli import main
from hyperkd.components.losses import teacher_tokens_at
from hyperkd.core.errors import HyperKDError
from hyperkd.core.plugins import load_plugins
from hyperkd.models.mae import MAEOutput
from hyperkd.training.checkpoint import load_checkpoint_file

from .helpers.toy import TINY_STUDENT, logged, toy_store
from .test_ssim import tiny_student

ROOT = Path(__file__).resolve().parents[1]
TINY = [*TINY_STUDENT, "trainer.checkpoint_every_n_steps=1000"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Toy-sized models gain nothing from threads, and on a shared machine extra threads
    only contend (a 4x slower run was measured with 2 threads under load)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory) -> Path:
    """A tiny Prithvi-architecture checkpoint in the official (prefixed .pt) layout."""
    load_plugins()
    from hyperkd_prithvi.testing import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("teacher") / "prithvi_tiny.pt", seed=1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return toy_store(tmp_path_factory.mktemp("toy") / "store", chips=32, size=32)


# -- loss terms ---------------------------------------------------------------------------------
def test_teacher_tokens_are_matched_to_the_student_grid_and_visible_positions():
    t = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)  # 2x2 grid
    ids = torch.tensor([[0, 3], [1, 2]])
    torch.testing.assert_close(
        teacher_tokens_at(t, (2, 2), (2, 2), ids), torch.stack([t[0, [0, 3]], t[1, [1, 2]]])
    )
    up = teacher_tokens_at(torch.ones(2, 4, 3), (2, 2), (4, 4), torch.tensor([[0, 15], [5, 6]]))
    torch.testing.assert_close(up, torch.ones(2, 2, 3))
    # a 4x4 teacher grid averaged down to 2x2: token 0 is the mean of the top-left 2x2 block
    fine = torch.arange(16, dtype=torch.float32).view(1, 16, 1)
    down = teacher_tokens_at(fine, (4, 4), (2, 2), torch.tensor([[0]]))
    assert down.item() == pytest.approx((0 + 1 + 4 + 5) / 4)
    with pytest.raises(HyperKDError, match="expected a 3x3 grid"):
        teacher_tokens_at(t, (3, 3), (2, 2), ids)


def test_kld_and_cosine_are_zero_for_matching_features_and_need_a_teacher():
    load_plugins()
    t = torch.randn(2, 5, 16)
    same = {"kd_pairs": [(torch.nn.functional.layer_norm(t, (16,)), t)]}
    other = {"kd_pairs": [(torch.randn(2, 5, 16), t)]}
    kld = create("loss", "kld", temperature=2.0)
    assert kld.needs_teacher and float(kld(None, same)) == pytest.approx(0.0, abs=1e-6)
    assert float(kld(None, other)) > 0.01
    cos = create("loss", "cosine")
    assert float(cos(None, {"kd_pairs": [(2 * t, t)]})) == pytest.approx(0.0, abs=1e-6)
    assert float(cos(None, {"kd_pairs": [(-t, t)]})) == pytest.approx(2.0, abs=1e-5)
    with pytest.raises(HyperKDError, match="hyperkd distill"):
        kld(None, {})


def test_ssim_and_sam_measure_only_the_reconstructed_patches():
    student = tiny_student()
    x = 0.1 + 0.3 * torch.rand(2, 202, 16, 16)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, :8] = True
    target = student.patchify(student.standardize(x))
    weight = mask[..., None].float().expand_as(target)
    perfect = MAEOutput(
        pred=target.clone(), target=target, mask=mask, weight=weight, features=[], ids_keep=None
    )
    noisy = MAEOutput(
        pred=target + torch.randn_like(target),
        target=target,
        mask=mask,
        weight=weight,
        features=[],
        ids_keep=None,
    )
    ctx = {"batch": {"image": x}, "student": student}
    ssim, sam = create("loss", "ssim"), create("loss", "sam")
    assert float(ssim(perfect, ctx)) == pytest.approx(0.0, abs=1e-5)
    assert float(sam(perfect, ctx)) == pytest.approx(0.0, abs=1e-3)
    assert float(ssim(noisy, ctx)) > 0.2 and float(sam(noisy, ctx)) > 0.05
    strided = create("loss", "ssim", band_stride=3)
    assert float(strided(perfect, ctx)) == pytest.approx(0.0, abs=1e-5)
    assert float(strided(noisy, ctx)) == pytest.approx(float(ssim(noisy, ctx)), rel=0.1)
    # errors in visible patches are ignored: they are replaced by the input
    vis_noise = target + torch.randn_like(target) * (~mask)[..., None]
    vis = MAEOutput(pred=vis_noise, target=target, mask=mask, weight=weight, features=[], ids_keep=None)
    assert float(ssim(vis, ctx)) == pytest.approx(0.0, abs=1e-5)


def test_learned_aligner_is_trained_through_the_frozen_teacher_with_several_pairs():
    load_plugins()
    from hyperkd.training.distill import DistillModule

    student = create(
        "student",
        "mae-tiny",
        sensor=get_sensor("enmap"),
        img_size=32,
        patch_size=4,
        embed_dim=32,
        depth=2,
        num_heads=2,
        decoder_embed_dim=16,
        decoder_depth=1,
        decoder_num_heads=2,
    )
    teacher = create("teacher", "prithvi-eo-tiny", weights=None)
    aligner = create("aligner", "learned", source=student.sensor, target=teacher.sensor)
    losses = {
        "mse": (1.0, create("loss", "mse")),
        "kld": (1.0, create("loss", "kld")),
        "cosine": (0.5, create("loss", "cosine")),
    }
    module = DistillModule(
        student,
        teacher,
        aligner,
        create("masker", "spatial-feature"),
        losses,
        pairs=[[0, 0], [-1, -1]],
        projector="mlp",
    )
    assert module.cache is None  # a trainable aligner changes the teacher's features
    batch = {"image": 0.1 + 0.3 * torch.rand(2, 202, 32, 32), "index": torch.arange(2)}
    loss, parts, _, mask = module.shared_step(batch, torch.Generator().manual_seed(0))
    assert set(parts) == {"mse", "kld", "cosine"} and mask.sum(1).tolist() == [48, 48]
    loss.backward()
    assert aligner.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in module.projectors.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    module.train()
    assert not teacher.training and module.student.training
    with pytest.raises(HyperKDError, match="teacher block 7 out of range"):
        DistillModule(student, teacher, aligner, create("masker", "random"), losses, pairs=[[0, 7]])


def test_teacher_cache_skips_cached_chips_and_holds_normal_tensors():
    load_plugins()
    from hyperkd.training.distill import DistillModule

    student = create(
        "student",
        "mae-tiny",
        sensor=get_sensor("enmap"),
        img_size=32,
        patch_size=4,
        embed_dim=32,
        depth=1,
        num_heads=2,
        decoder_embed_dim=16,
        decoder_depth=1,
        decoder_num_heads=2,
    )
    teacher = create("teacher", "prithvi-eo-tiny", weights=None)
    aligner = create("aligner", "spectral-range", source=student.sensor, target=teacher.sensor)
    module = DistillModule(
        student, teacher, aligner, create("masker", "random"), {"kld": (1.0, create("loss", "kld"))}
    )
    image = 0.1 + 0.3 * torch.rand(3, 202, 32, 32)
    with torch.inference_mode():  # as in Lightning's validation loop
        first = module.teacher_features({"image": image[:2], "index": torch.tensor([7, 9])})
    assert module.cache.misses == 2 and module.teacher_chips == 2
    assert not any(t.is_inference() for rows in module.cache.store.values() for t in rows)
    feats = module.teacher_features({"image": image[[0, 2]], "index": torch.tensor([7, 4])})
    assert (module.cache.hits, module.cache.misses, module.teacher_chips) == (1, 3, 3)  # only chip 4 encoded
    torch.testing.assert_close(feats[0][0], first[0][0])
    with torch.no_grad():
        direct = teacher.forward_features(aligner(image[2:]), [-1])[0][0]
    torch.testing.assert_close(feats[0][1], direct)
    loss = module.shared_step({"image": image[:2], "index": torch.tensor([7, 9])})[0]
    loss.backward()  # cached (formerly inference-mode) features can enter autograd
    assert module.cache.hits == 3


# -- runs -------------------------------------------------------------------------------------
def test_tiny_distillation_lowers_reconstruction_and_distillation_loss(
    store, tiny_teacher, tmp_path, recwarn
):
    from hyperkd.training.distill import distill

    run = tmp_path / "run"
    sets = [*TINY, "trainer.max_epochs=10"]
    res = distill(
        "hyperkd",
        run,
        teacher="prithvi-eo-tiny",
        teacher_weights=str(tiny_teacher),
        student="enmap",
        data=str(store.root),
        overrides=sets,
    )
    # the frozen teacher is in eval mode on purpose: Lightning's notice of it is not shown
    assert not [w for w in recwarn if "in eval mode" in str(w.message)]
    mse, kld = logged(run, "val/loss_mse"), logged(run, "val/loss_kld")
    assert len(mse) == len(kld) == 10
    assert mse[-1] < 0.9 * mse[0], mse  # about 0.82 x on this data (fixed validation masks: no noise)
    assert kld[-1] < 0.3 * kld[0], kld  # about 0.18 x
    ssim = logged(run, "val/loss_ssim")  # the default structural term (rotating band subset) falls too
    assert len(ssim) == 10 and ssim[-1] < ssim[0], ssim
    for f in (
        "recipe.yaml",
        "metrics.json",
        "distill.json",
        "checkpoints/last.ckpt",
        "figures/loss.png",
        "figures/distill_loss.png",
        "figures/reconstruction.png",
        "student/model.safetensors",
    ):
        assert (run / f).exists(), f
    saved = (run / "recipe.yaml").read_text()
    for component in ("spatial-feature", "spectral-range", "prithvi-eo-tiny", "kld", "ssim", "pairs"):
        assert component in saved
    info = json.loads((run / "distill.json").read_text())
    assert info["teacher_weights"]["path"] == str(tiny_teacher)
    assert (
        info["cache"]["enabled"] and info["cache"]["misses"] == 32 and info["cache"]["hits"] == 10 * 28 - 32
    )
    assert info["cache"]["entries"] == 32 and info["cache"]["saved_s_estimate"] > 0
    # checkpoints hold student and projector, not the frozen teacher; a resume loads them
    state = load_checkpoint_file(run / "checkpoints" / "last.ckpt")["state_dict"]
    assert any(k.startswith("projectors.0.") for k in state) and not any(
        k.startswith("teacher.") for k in state
    )
    more = distill(run / "recipe.yaml", run, resume=True, overrides=["trainer.max_epochs=11"])
    assert more.global_step == res.global_step + 3  # 28 training chips, 3 full batches of 8


def test_ablations_are_one_set_away(store, tiny_teacher, tmp_path):
    from hyperkd.training.distill import distill

    run = tmp_path / "run"
    distill(
        "hyperkd",
        run,
        teacher="prithvi-eo-tiny",
        teacher_weights=str(tiny_teacher),
        data=str(store.root),
        overrides=[
            *TINY,
            "trainer.max_epochs=1",
            "trainer.figures=false",
            "masker.name=random",
            "losses.kld.weight=0",
            "aligner.name=srf",
        ],
    )
    info = json.loads((run / "distill.json").read_text())
    assert info["teacher_chips_encoded"] == 0  # no teacher term left: the teacher never runs
    assert not logged(run, "val/loss_kld") and logged(run, "val/loss_ssim")


def test_third_party_sensor_plugin_works_as_student(tiny_teacher, tmp_path, plugin_env):
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(site),
            str(ROOT / "examples/hyperkd-prisma"),
        ],
        check=True,
    )
    plugin_env.syspath_prepend(str(site))
    load_plugins(force=True)
    prisma = get_sensor("prisma")
    store = toy_store(tmp_path / "store", sensor=prisma, chips=16, size=32)
    from hyperkd.training.distill import distill

    run = tmp_path / "run"
    distill(
        "hyperkd",
        run,
        teacher="prithvi-eo-tiny",
        teacher_weights=str(tiny_teacher),
        student="prisma",
        data=str(store.root),
        overrides=[*TINY, "trainer.max_epochs=4", "trainer.figures=false"],
    )
    kld = logged(run, "val/loss_kld")
    assert len(kld) == 4 and kld[-1] < kld[0]
    cfg = json.loads((run / "student" / "config.json").read_text())
    assert cfg["sensor"]["name"] == "prisma" and len(cfg["sensor"]["bands"]) == prisma.num_bands == 239


def test_distill_command_help(capsys):
    assert main(["distill", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in (
        "--teacher",
        "--student",
        "--data",
        "--teacher-weights",
        "--recipe",
        "--set",
        "--out",
        "--resume",
    ):
        assert flag in out


def test_offline_without_prithvi_weights_fails_in_one_line(store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    run = tmp_path / "run"
    code = main(
        ["distill", "--teacher", "prithvi", "--student", "enmap", "--data", "synthetic", "--out", str(run)]
    )
    _, err = capsys.readouterr()
    assert code == 1
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Prithvi_EO_V1_100M.pt" in lines[0] and "--teacher-weights" in lines[0]
    assert not run.exists()  # failed before making the run folder or any data
    # a teacher without official weights also names the flag
    code = main(["distill", "--teacher", "prithvi-eo-tiny", "--data", "synthetic", "--out", str(run)])
    err = capsys.readouterr().err
    assert code == 1 and "no official weights" in err and "--teacher-weights" in err and not run.exists()
    # once the official file is in the HF cache, the same default-weights path runs offline
    # (a tiny checkpoint under the official repo and file name, architecture set to match)
    from hyperkd_prithvi.testing import install_in_hf_cache, tiny_overrides

    install_in_hf_cache(
        tmp_path / "empty-hub", "ibm-nasa-geospatial/Prithvi-EO-1.0-100M", "Prithvi_EO_V1_100M.pt"
    )
    arch = [f"teacher.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in tiny_overrides().items()]
    sets = [*TINY, *arch, "trainer.max_epochs=1", "trainer.figures=false"]
    code = main(
        [
            "distill",
            "--teacher",
            "prithvi",
            "--data",
            str(store.root),
            "--out",
            str(run),
            *[a for s in sets for a in ("--set", s)],
        ]
    )
    assert code == 0, capsys.readouterr().err
    info = json.loads((run / "distill.json").read_text())
    assert info["teacher_weights"]["source"].startswith(
        "Hugging Face ibm-nasa-geospatial/Prithvi-EO-1.0-100M"
    )
