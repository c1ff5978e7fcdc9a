"""The student MAE: full-size configs on the meta device, shapes, and the factorised embedding."""

from __future__ import annotations

import pytest
import torch

from hyperkd.core.errors import HyperKDError
from hyperkd.models.mae import SIZES, build_student


@pytest.mark.parametrize("size", sorted(SIZES))
def test_full_size_students_build_on_meta_and_run_shapes(size):
    with torch.device("meta"):
        model = build_student(f"enmap-mae-{size}", img_size=224)
        x = torch.empty(2, 202, 224, 224)
        latent, _, ids_restore, feats = model.forward_encoder(model.standardize(x), None, layers=[-1])
        pred = model.forward_decoder(latent, ids_restore)
    n, p, d = model.num_patches, model.patch_size, SIZES[size]["embed_dim"]
    assert model.in_chans == 202 and model.grid == (224 // p, 224 // p)
    assert latent.shape == (2, 1 + n, d) and feats[0].shape == (2, n, d)
    assert pred.shape == (2, n, p * p * 202)
    assert model.unpatchify(pred).shape == (2, 202, 224, 224)


def test_factorised_embedding_is_the_documented_size():
    with torch.device("meta"):
        plain = build_student("enmap-mae-base", img_size=224, embedding="plain")
        fact = build_student("enmap-mae-base", img_size=224, embedding="factorized", spectral_dim=32)
    # plain: Conv2d(202, 768, 16, 16) = 202*16*16*768 + 768
    assert plain.num_parameters("embedding") == 202 * 256 * 768 + 768
    # factorised: 1x1 (202 -> 32, no bias) then Conv2d(32, 768, 16, 16)
    assert fact.num_parameters("embedding") == 202 * 32 + 32 * 256 * 768 + 768
    assert plain.num_parameters() - fact.num_parameters() == (
        plain.num_parameters("embedding") - fact.num_parameters("embedding")
    )


def test_any_sensor_gets_a_student_and_bad_inputs_are_named():
    m = build_student("hls-mae-tiny", img_size=32)
    assert m.in_chans == 6
    with pytest.raises(HyperKDError, match=r"expects \(B, 6, 32, 32\)"):
        m(torch.zeros(1, 5, 32, 32), torch.zeros(1, m.num_patches, dtype=torch.bool))
    with pytest.raises(HyperKDError, match="unknown student 'nope-mae-huge'"):
        build_student("nope-mae-huge")
    with pytest.raises(HyperKDError, match="not a multiple of patch_size"):
        build_student("enmap", img_size=30, patch_size=8)  # an explicit patch size is kept, even a bad one
