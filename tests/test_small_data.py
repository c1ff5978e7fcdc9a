"""Students for small chips and the ``mae-small-data`` recipe: patch size chosen for the chip, the
spectral-conv stem, flips/rotations in the pretraining data path."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from hyperkd import recipes
from hyperkd.core.errors import HyperKDError
from hyperkd.data.loader import NUM_TRANSFORMS, ChipDataModule, ChipDataset, dihedral
from hyperkd.models.layers import SpectralConvStem
from hyperkd.models.mae import HyperspectralMAE, build_student, chip_patch_size, flops_per_chip
from hyperkd.training.runner import pretrain

from .helpers.toy import toy_store

SMALL = {"embed_dim": 32, "depth": 1, "num_heads": 2, "decoder_embed_dim": 16, "decoder_depth": 1}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return toy_store(tmp_path_factory.mktemp("small") / "store", chips=10, size=32)


@pytest.mark.parametrize(
    ("img", "preferred", "patch"),
    [(32, 8, 4), (64, 8, 8), (224, 16, 16), (64, 16, 8), (30, 8, 3), (72, 16, 9), (4, 8, 1)],
)
def test_patch_size_gives_at_least_an_8x8_grid(img, preferred, patch):
    assert chip_patch_size(img, preferred) == patch


def test_student_for_small_chips_gets_small_patches_unless_told(caplog):
    with caplog.at_level(logging.INFO, logger="hyperkd.models.mae"):
        m = build_student("enmap", img_size=32, **SMALL)
    assert (m.patch_size, m.grid) == (4, (8, 8))
    assert "4 px patches for 32 px chips (token grid 8x8)" in caplog.text
    assert build_student("enmap", img_size=32, patch_size="auto", **SMALL).patch_size == 4
    assert build_student("enmap", img_size=32, patch_size=8, **SMALL).grid == (4, 4)  # explicit wins
    assert build_student("enmap-mae-small", img_size=224).patch_size == 16  # big chips: unchanged
    fine = build_student("enmap", img_size=32, min_grid=16, **SMALL)
    assert (fine.patch_size, fine.grid) == (2, (16, 16)) and "min_grid" not in fine._hub_mixin_config
    assert build_student("enmap", img_size=32, patch_size=8, min_grid=16, **SMALL).patch_size == 8


def test_chosen_patch_size_is_saved_and_reloads(tmp_path):
    m = build_student("hls", img_size=32, **SMALL)
    m.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["patch_size"] == 4 and cfg["embedding"] == "factorized"
    assert HyperspectralMAE.from_pretrained(str(tmp_path / "m")).grid == (8, 8)


def test_configs_written_before_the_stem_existed_still_load(tmp_path):
    m = build_student("hls", img_size=16, patch_size=4, **SMALL)
    m.save_pretrained(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["stem_channels"]
    cfg_path.write_text(json.dumps(cfg))
    again = HyperspectralMAE.from_pretrained(str(tmp_path / "m"))
    x = torch.rand(1, 6, 16, 16)
    assert torch.equal(again.forward_features(x)[0], m.eval().forward_features(x)[0])


def test_spectral_conv_stem_is_per_pixel_and_shared_along_the_spectrum():
    torch.manual_seed(0)
    stem = SpectralConvStem(40, 8, channels=4)
    x = torch.rand(1, 40, 5, 5)
    y = stem(x)
    assert y.shape == (1, 8, 5, 5)
    x2 = x.clone()
    x2[0, :, 2, 3] += 1.0  # one pixel changes: only its features change
    changed = (stem(x2) - y).abs().sum(1)[0] > 0
    assert changed[2, 3] and int(changed.sum()) == 1
    # the convolutions are shared along the bands: shifting the spectrum by 4 bands (two stride-2
    # layers) shifts their output by one step, away from the padded ends
    z = stem.conv(x[0, :, 0, 0].view(1, 1, 40))
    z_shift = stem.conv(torch.roll(x[0, :, 0, 0], 4).view(1, 1, 40))
    assert torch.allclose(z_shift[..., 3:-2], z[..., 2:-3], atol=1e-6)
    assert stem.macs_per_pixel() == 20 * 2 * 7 + 10 * 4 * 2 * 5 + 4 * 10 * 8


def test_spectral_conv_student_trains_and_counts_its_cost():
    torch.manual_seed(0)
    m = build_student("enmap", img_size=16, embedding="spectral-conv", spectral_dim=16, **SMALL)
    fact = build_student("enmap", img_size=16, embedding="factorized", spectral_dim=16, **SMALL)
    assert isinstance(m.patch_embed.spectral, SpectralConvStem) and m.grid == (8, 8)
    assert flops_per_chip(m) > flops_per_chip(fact)
    x = torch.rand(2, m.in_chans, 16, 16) * 0.3
    mask = torch.zeros(2, m.num_patches, dtype=torch.bool)
    mask[:, ::2] = True
    out = m(x, mask)
    loss = ((out.pred - out.target) ** 2 * out.weight).sum() / out.weight.sum()
    loss.backward()
    assert m.patch_embed.spectral.conv[0].weight.grad.abs().sum() > 0
    with pytest.raises(HyperKDError, match="plain, factorized, spectral-conv"):
        build_student("enmap", img_size=16, embedding="spectral")


def test_dihedral_transforms_are_the_eight_views_of_a_chip():
    x = torch.arange(9.0).view(1, 3, 3)
    views = {tuple(dihedral(x, k).flatten().tolist()) for k in range(NUM_TRANSFORMS)}
    assert len(views) == 8 and tuple(x.flatten().tolist()) in views
    assert torch.equal(dihedral(x, 1), torch.rot90(x, 1, dims=(-2, -1)))
    with pytest.raises(ValueError, match=r"in 0\.\.7"):
        dihedral(x, 8)


def test_augmented_chips_move_image_valid_and_labels_together(store):
    plain = ChipDataset(store, [3])
    aug = ChipDataset(store, [3], augment=True)
    ref = plain[0]
    assert "augment" not in ref
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        item = aug[0]
        code = int(item["augment"])
        seen.add(code)
        for key in ("image", "valid", "lc"):
            assert torch.equal(item[key], dihedral(ref[key], code)), key
        assert item["index"] == ref["index"]
    assert seen == set(range(NUM_TRANSFORMS))


def test_data_module_augments_training_chips_only(store):
    dm = ChipDataModule(store, batch_size=4, augment=True)
    assert dm.train_dataloader().dataset.augment and not dm.val_dataloader().dataset.augment
    assert not ChipDataModule(store, batch_size=4).train_dataloader().dataset.augment


def test_mae_small_data_recipe_is_listed_and_trains(store, tmp_path):
    assert "mae-small-data" in recipes.available()
    r = recipes.load_recipe("mae-small-data")
    assert (
        r["data"]["augment"] is True
        and r["student"]["patch_size"] == "auto"
        and r["student"]["min_grid"] == 16
    )
    assert recipes.load_recipe("mae")["data"].get("augment", False) is False  # off elsewhere
    sets = [f"data.store={store.root}", "trainer.max_steps=2", "trainer.figures=false"]
    sets += [f"student.{k}={v}" for k, v in SMALL.items()]
    res = pretrain("mae-small-data", tmp_path / "run", overrides=sets)
    assert res.global_step == 2
    student = HyperspectralMAE.from_pretrained(str(res.student_dir))
    assert (student.patch_size, student.grid) == (2, (16, 16))  # 32 px chips, at least 16x16 tokens


def test_teacher_cache_keeps_each_view_of_a_chip_apart():
    from hyperkd import create, get_sensor
    from hyperkd.core.plugins import load_plugins
    from hyperkd.training.distill import DistillModule

    load_plugins()
    student = create(
        "student", "mae-tiny", sensor=get_sensor("enmap"), img_size=32, decoder_num_heads=2, **SMALL
    )
    teacher = create("teacher", "prithvi-eo-tiny", weights=None)
    aligner = create("aligner", "spectral-range", source=student.sensor, target=teacher.sensor)
    module = DistillModule(
        student, teacher, aligner, create("masker", "random"), {"kld": (1.0, create("loss", "kld"))}
    )
    image = 0.1 + 0.3 * torch.rand(1, 202, 32, 32)
    flipped = dihedral(image, 4)
    with torch.no_grad():
        a = module.teacher_features(
            {"image": image, "index": torch.tensor([5]), "augment": torch.tensor([0])}
        )
        b = module.teacher_features(
            {"image": flipped, "index": torch.tensor([5]), "augment": torch.tensor([4])}
        )
        again = module.teacher_features(
            {"image": flipped, "index": torch.tensor([5]), "augment": torch.tensor([4])}
        )
    assert (module.cache.misses, module.cache.hits) == (2, 1)  # the flipped view is not the cached original
    assert not torch.allclose(a[0], b[0]) and torch.equal(b[0], again[0])
