"""Pretraining a tiny Prithvi-architecture teacher on a multispectral store."""

from __future__ import annotations

import json

import pytest
import torch

from hyperkd import create
from hyperkd.core.errors import HyperKDError
from hyperkd.synth import synthesize
from hyperkd.training.teacher import pretrain_teacher

ARCH = {
    "patch_size": [1, 8, 8],
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "decoder_embed_dim": 16,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
}


def test_teacher_mae_learns_and_weights_load_back(tmp_path):
    store = synthesize("hls", tmp_path / "hls", chips=24, size=32, seed=1, progress=False)
    x = torch.stack([torch.from_numpy(store[i]["image"]) for i in range(8)])
    torch.manual_seed(0)
    before = create("teacher", "prithvi-eo-tiny", weights=None, keep_decoder=True, img_size=32, **ARCH)
    torch.manual_seed(123)
    loss_before = before.mae_loss(x).item()
    weights = pretrain_teacher(store, tmp_path / "teacher", epochs=6, batch_size=8, lr=2e-3, **ARCH)
    trained = create(
        "teacher", "prithvi-eo-tiny", weights=str(weights), keep_decoder=True, img_size=32, **ARCH
    )
    torch.manual_seed(123)
    assert trained.mae_loss(x).item() < 0.8 * loss_before
    info = json.loads((tmp_path / "teacher" / "teacher.json").read_text())
    assert "NOT NASA/IBM" in info["note"] and info["data"]["synthetic"] is True
    # frozen, and features are the same through a fresh load
    again = create("teacher", "prithvi-eo-tiny", weights=str(weights), img_size=32, **ARCH)
    assert not any(p.requires_grad for p in again.parameters())
    assert torch.allclose(again.forward_features(x)[0], trained.forward_features(x)[0], atol=1e-5)


def test_teacher_refuses_a_store_of_other_bands(tmp_path):
    store = synthesize("enmap", tmp_path / "enmap", chips=2, size=16, seed=0, progress=False)
    with pytest.raises(HyperKDError, match="expects bands"):
        pretrain_teacher(store, tmp_path / "t", epochs=1, **{**ARCH, "patch_size": [1, 8, 8]})
