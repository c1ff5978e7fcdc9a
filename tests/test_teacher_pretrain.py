"""Teachers hyperkd trains: ``hyperkd teacher pretrain``, teacher folders (load by folder, by name),
the synthetic HLS corpus, and the packaged ``prithvi-tiny-synth`` teacher."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from hyperkd import create
from hyperkd.cli import main
from hyperkd.core.errors import DataError, HyperKDError, WeightsError
from hyperkd.core.plugins import load_plugins
from hyperkd.hub.teachers import read_teacher_folder, teacher_spec
from hyperkd.synth import synthesize
from hyperkd.training.distill import teacher_from_spec
from hyperkd.training.teacher import (
    CORPUS_SEED,
    SIZES,
    corpus_sets,
    evaluate_teacher,
    load_teacher,
    pretrain_teacher,
    synthetic_hls_corpus,
)

from .helpers.threads import one_thread  # noqa: F401 - autouse: one torch thread here
from .helpers.toy import TINY_STUDENT, toy_store

ROOT = Path(__file__).resolve().parents[1]
ARCH = {
    "patch_size": [1, 8, 8],
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "decoder_embed_dim": 16,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
}
SHIPPED = "prithvi-tiny-synth"
SHIPPED_SHA256 = "16073607e8b390b1e2624637cf5708413783fc801c9acb8cdf7e5f079b1fef90"
"""sha256 of the packaged model.safetensors: a retrained or edited asset must update this test."""
SHIPPED_FORWARD = (0.87592, -1.54861, -1.36539, -0.53018, 0.41988, -0.88472, 0.79101)
"""Features ``[0, 0, :3]``, ``[1, -1, -3:]`` and mean ``|x|`` of the packaged teacher's last block on
:func:`_fixed_input` (printed once, after the asset was trained)."""


def _fixed_input() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return 0.02 + 0.4 * torch.rand(2, 6, 32, 32, generator=g)


@pytest.fixture(scope="module")
def hls(tmp_path_factory):
    return synthesize(
        "hls", tmp_path_factory.mktemp("hls") / "hls", chips=24, size=32, seed=1, progress=False
    )


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- pretraining into a teacher folder -----------------------------------------------------------
def test_teacher_mae_learns_and_the_folder_loads_back(hls, tmp_path):
    x = torch.stack([torch.from_numpy(hls[i]["image"]) for i in range(8)])
    torch.manual_seed(0)
    before = create("teacher", "prithvi-eo-tiny", weights=None, keep_decoder=True, img_size=32, **ARCH)
    torch.manual_seed(123)
    loss_before = before.mae_loss(x).item()
    folder = pretrain_teacher(hls, tmp_path / "teacher", epochs=6, batch_size=8, lr=2e-3, **ARCH)
    assert folder == tmp_path / "teacher"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    trained = create(
        "teacher", "prithvi-eo-tiny", weights=str(folder), keep_decoder=True, img_size=32, **ARCH
    )
    torch.manual_seed(123)
    assert trained.mae_loss(x).item() < 0.8 * loss_before
    cfg = json.loads((folder / "config.json").read_text())
    assert "NOT NASA/IBM" in cfg["note"] and cfg["training"]["data"]["synthetic"] is True
    assert cfg["teacher"] == "prithvi-eo-tiny" and cfg["architecture"]["embed_dim"] == 32
    assert cfg["training"]["val_loss"] < cfg["training"]["val_loss_random_init"]
    assert len(cfg["training"]["val_loss_by_epoch"]) == 6
    card = (folder / "README.md").read_text()
    assert "NOT NASA/IBM" in card and "## Validation" in card and str(cfg["training"]["val_loss"]) in card
    # by folder: no architecture keywords needed, frozen, the same features as the explicit build
    again = load_teacher(str(folder))
    assert not any(p.requires_grad for p in again.parameters())
    assert torch.allclose(again.forward_features(x)[0], trained.forward_features(x)[0], atol=1e-5)


def test_teacher_refuses_a_store_of_other_bands_and_unknown_sizes(tmp_path):
    store = synthesize("enmap", tmp_path / "enmap", chips=2, size=16, seed=0, progress=False)
    with pytest.raises(HyperKDError, match="expects bands"):
        pretrain_teacher(store, tmp_path / "t", epochs=1, **ARCH)
    with pytest.raises(HyperKDError, match="unknown teacher size 'huge'; choose one of tiny, small"):
        pretrain_teacher(store, tmp_path / "t", size="huge")


def test_cli_pretrain_refuses_to_overwrite_and_distill_loads_the_folder(hls, tmp_path, capsys):
    out = tmp_path / "my-teacher"
    args = ["teacher", "pretrain", "--data", str(hls.root), "--out", str(out), "--size", "tiny"]
    args += ["--epochs", "1", "--batch-size", "8"]
    code, stdout, err = run(capsys, *args)
    assert code == 0, err
    assert "done" in stdout and (out / "model.safetensors").exists()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["size"] == "tiny" and cfg["architecture"]["patch_size"] == SIZES["tiny"]["patch_size"]
    assert cfg["training"]["command"].startswith("hyperkd teacher pretrain --data ")
    assert "--size tiny" in cfg["training"]["command"]
    before = (out / "model.safetensors").read_bytes()
    code, _, err = run(capsys, *args)
    assert code == 1 and err.count("\n") == 1 and "already exists" in err and "--overwrite" in err
    assert (out / "model.safetensors").read_bytes() == before
    code, _, err = run(capsys, *args, "--overwrite", "--seed", "3")
    assert code == 0, err
    assert (out / "model.safetensors").read_bytes() != before
    assert not list(tmp_path.glob(".my-teacher*"))  # no temporary folders left behind
    # a recipe section naming the folder: architecture and weights from config.json
    teacher = teacher_from_spec({"name": str(out), "weights": "default"})
    assert teacher.embed_dim == SIZES["tiny"]["embed_dim"] and teacher.patch_size == 4
    assert teacher.weights_info["path"] == str(out / "model.safetensors")
    name, kw = teacher_spec(str(out), {"weights": None})  # the random-teacher control
    assert name == "prithvi-eo-tiny" and kw["weights"] is None and kw["embed_dim"] == 64


def test_distill_with_a_teacher_folder_needs_no_architecture_flags(hls, tmp_path, capsys):
    teacher = pretrain_teacher(hls, tmp_path / "t", size="tiny", epochs=1, batch_size=8)
    store = toy_store(tmp_path / "enmap", chips=8, size=32)
    run_dir = tmp_path / "run"
    sets = [*TINY_STUDENT, "trainer.max_epochs=1", "trainer.figures=false"]
    code, _, err = run(
        capsys,
        "distill",
        "--teacher",
        str(teacher),
        "--student",
        "enmap",
        "--data",
        str(store.root),
        "--out",
        str(run_dir),
        *(x for s in sets for x in ("--set", s)),
    )
    assert code == 0, err
    info = json.loads((run_dir / "distill.json").read_text())
    assert info["teacher_weights"]["path"] == str(teacher / "model.safetensors")


# -- refusals ----------------------------------------------------------------------------------
def test_teacher_folder_refusals_are_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    student = tmp_path / "student"
    student.mkdir()
    (student / "config.json").write_text(json.dumps({"hyperkd_format": 1, "model_type": "hyperspectral-mae"}))
    nameless = tmp_path / "nameless"
    nameless.mkdir()
    (nameless / "config.json").write_text(json.dumps({"hyperkd_format": 1, "architecture": {}}))
    cases = {
        str(tmp_path / "missing"): "does not exist",
        str(empty): "has no config.json, so it is not a teacher folder",
        str(bad): "is not valid JSON",
        str(student): "holds a student model (hyperspectral-mae), not a teacher",
        str(nameless): "names no teacher",
    }
    for folder, message in cases.items():
        with pytest.raises(WeightsError, match=re.escape(message)):
            read_teacher_folder(folder)
        run_dir = tmp_path / "run"
        code, _, err = run(
            capsys, "distill", "--teacher", folder, "--data", "synthetic", "--out", str(run_dir)
        )
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 1 and len(lines) == 1 and message in lines[0], err
        assert not run_dir.exists()  # refused before any run folder or data


# -- the corpus --------------------------------------------------------------------------------
def test_corpus_sets_cover_every_region_and_landscape_with_their_own_seeds():
    sets = corpus_sets(0)
    names = [n for n, _, _ in sets]
    seeds = [s for _, _, s in sets]
    assert len(set(names)) == len(sets) == 15 and len(set(seeds)) == 15 and min(seeds) == CORPUS_SEED
    regions = set()
    for _, cfg, _ in sets:
        active = [r.name for r in cfg.regions if r.weight > 0]
        assert len(active) == 1
        regions.add(active[0])
    assert {"asia", "oceania"} <= regions  # the regions the kd-student set lacks
    assert {cfg.parcel_px for _, cfg, _ in sets} == {(6.0, 20.0), (3.0, 9.0), (5.0, 14.0)}
    assert [s for _, _, s in corpus_sets(1)] != seeds


def test_synthetic_hls_corpus_is_written_once_reused_and_recorded(tmp_path, monkeypatch):
    import hyperkd.training.teacher as mod

    two = corpus_sets(0)[:2]  # every set works alike; two keep the test fast
    monkeypatch.setattr(mod, "corpus_sets", lambda seed=0: two)
    stores = synthetic_hls_corpus(tmp_path / "corpus", chips=4, size=16)
    assert [s.root.name for s in stores] == [n for n, _, _ in two]
    assert all(len(s) == 2 and s.chip_size == 16 and s.synthetic for s in stores)
    assert stores[0].sensor.band_names[0] == "B02"
    manifest = stores[0].root / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    again = synthetic_hls_corpus(tmp_path / "corpus", chips=4, size=16)
    assert [s.root for s in again] == [s.root for s in stores] and manifest.stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match="holds another corpus set"):
        synthetic_hls_corpus(tmp_path / "corpus", chips=4, size=32)
    # `--data synthetic-hls` without --corpus: a temporary corpus, recorded, then removed
    out = tmp_path / "teachers" / "t"
    out.parent.mkdir()
    pretrain_teacher("synthetic-hls", out, size="tiny", epochs=1, batch_size=4, chips=8, chip_size=16)
    corpus = json.loads((out / "config.json").read_text())["training"]["data"]["corpus"]
    assert corpus["chips"] == 8 and [s["name"] for s in corpus["sets"]] == [n for n, _, _ in two]
    assert corpus["sets"][0]["region"] == "americas" and corpus["sets"][0]["scene_seed"] == CORPUS_SEED
    assert sorted(p.name for p in out.parent.iterdir()) == ["t"]


# -- the packaged teacher ----------------------------------------------------------------------
def test_packaged_teacher_loads_offline_by_name_and_folder_and_reproduces_its_forward(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    load_plugins()
    from hyperkd_prithvi.teacher import asset_dir

    folder = asset_dir(SHIPPED)
    weights = folder / "model.safetensors"
    assert weights.stat().st_size < 5_000_000
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == SHIPPED_SHA256
    by_name = teacher_from_spec({"name": SHIPPED, "weights": "default"})  # the hyperkd recipe's default
    assert by_name.weights_info["source"].startswith(f"packaged {SHIPPED}")
    x = _fixed_input()
    with torch.no_grad():
        feats = by_name.forward_features(x)[0]
        by_folder = load_teacher(str(folder)).forward_features(x)[0]
    assert feats.shape == (2, 64, by_name.embed_dim)
    assert torch.equal(feats, by_folder)
    got = [*feats[0, 0, :3].tolist(), *feats[1, -1, -3:].tolist(), feats.abs().mean().item()]
    assert got == pytest.approx(SHIPPED_FORWARD, abs=1e-4)
    cfg = json.loads((folder / "config.json").read_text())
    t = cfg["training"]
    assert cfg["teacher"] == "prithvi-eo-tiny" and cfg["size"] == "small"
    assert t["data"]["corpus"]["name"] == "synthetic-hls" and t["val_loss"] < 0.5 * t["val_loss_random_init"]
    card = (folder / "README.md").read_text()
    for needle in ("NOT NASA/IBM", t["command"], t["date"], str(t["val_loss"]), "Apache-2.0"):
        assert needle in card


def test_evaluate_teacher_scores_the_packaged_teacher_better_than_random_init(hls, capsys):
    trained = evaluate_teacher(SHIPPED, hls)
    random = evaluate_teacher({"name": SHIPPED, "weights": None}, hls)
    assert trained["chips"] == 24 and trained["patch_size"] == 4
    assert trained["masked_recon_loss"] < 0.5 * random["masked_recon_loss"]
    code, out, err = run(capsys, "teacher", "evaluate", SHIPPED, "--data", str(hls.root), "--json")
    assert code == 0, err
    assert json.loads(out)["masked_recon_loss"] == trained["masked_recon_loss"]


@pytest.mark.slow
def test_a_built_wheel_contains_the_packaged_teacher(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("hyperkd", "plugins"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("hyperkd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("config.json", "model.safetensors", "README.md"):
        assert f"hyperkd_prithvi/assets/{SHIPPED}/{f}" in names
