"""Maskers: exact ratio, determinism, and spatial-feature masking's preference for structure."""

from __future__ import annotations

import pytest
import torch

from hyperkd import create
from hyperkd.components.maskers import num_masked, patch_structure
from hyperkd.core.errors import HyperKDError
from hyperkd.core.plugins import load_plugins

GRID = (8, 8)  # 32 px images, 4 px patches


def half_textured(b: int = 16, c: int = 6, seed: int = 0) -> torch.Tensor:
    """Left half: strong random texture; right half: one flat value (+ tiny noise)."""
    g = torch.Generator().manual_seed(seed)
    img = torch.full((b, c, 32, 32), 0.2)
    img[..., :16] += 0.2 * torch.rand(b, 1, 32, 16, generator=g)
    img += 1e-4 * torch.rand(b, c, 32, 32, generator=g)
    return img


def textured_fraction(mask: torch.Tensor) -> tuple[float, float]:
    """Masked fraction of the textured and of the flat interior (the seam columns 3-4 hold
    a real edge, so they count as neither)."""
    m = mask.view(-1, *GRID).float()
    return m[..., :3].mean().item(), m[..., 5:].mean().item()


@pytest.fixture(scope="module", autouse=True)
def _plugins():
    load_plugins()


@pytest.mark.parametrize("name", ["random", "spatial-feature"])
@pytest.mark.parametrize("ratio", [0.25, 0.75, 0.9])
def test_masks_hide_exactly_the_ratio_in_every_row(name, ratio):
    masker = create("masker", name)
    mask = masker(half_textured(), GRID, ratio, torch.Generator().manual_seed(1))
    assert mask.dtype == torch.bool and mask.shape == (16, 64)
    assert (mask.sum(1) == num_masked(64, ratio)).all()


def test_spatial_feature_prefers_the_textured_half():
    masker = create("masker", "spatial-feature")
    img = half_textured()
    tex, flat = textured_fraction(masker(img, GRID, 0.5, torch.Generator().manual_seed(0)))
    assert tex > 0.7 and flat < 0.2, (tex, flat)
    # at 0.75 the textured patches are almost all hidden before most flat ones are
    tex, flat = textured_fraction(masker(img, GRID, 0.75, torch.Generator().manual_seed(0)))
    assert tex > 0.95 and flat < 0.5, (tex, flat)
    # the preference sharpens with strength
    sharp = create("masker", "spatial-feature", strength=4.0)
    tex, flat = textured_fraction(sharp(img, GRID, 0.5, torch.Generator().manual_seed(0)))
    assert tex > 0.8 and flat < 0.02, (tex, flat)
    # prefer=low inverts the rule; mix=0 is plain random masking
    low = create("masker", "spatial-feature", prefer="low")
    tex, flat = textured_fraction(low(img, GRID, 0.5, torch.Generator().manual_seed(0)))
    assert tex < 0.3 and flat > 0.9, (tex, flat)
    tex, flat = textured_fraction(
        create("masker", "spatial-feature", strength=0.0)(
            half_textured(256), GRID, 0.5, torch.Generator().manual_seed(0)
        )
    )
    assert abs(tex - flat) < 0.05


def test_one_extreme_edge_does_not_erase_the_preference():
    img = half_textured()
    img[:, :, 0:4, 28:32] = torch.where(torch.arange(4) < 2, 0.0, 10.0)  # one huge step in the flat half
    masker = create("masker", "spatial-feature")
    tex, flat = textured_fraction(masker(img, GRID, 0.5, torch.Generator().manual_seed(0)))
    assert tex > 0.55 and flat < 0.35, (tex, flat)
    logits = masker.logits(img, GRID)
    assert torch.equal(logits[:, 7], logits.max(1).values)  # the step patch scores highest


def test_spatial_feature_ignores_brightness_and_contrast():
    masker = create("masker", "spatial-feature")
    img = half_textured()
    torch.testing.assert_close(
        masker.logits(img, GRID), masker.logits(0.05 + 3 * img, GRID), atol=1e-4, rtol=1e-4
    )


def test_spatial_feature_is_deterministic_given_a_generator():
    masker = create("masker", "spatial-feature")
    img = half_textured()
    a = masker(img, GRID, 0.75, torch.Generator().manual_seed(3))
    b = masker(img, GRID, 0.75, torch.Generator().manual_seed(3))
    c = masker(img, GRID, 0.75, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_structure_scores_and_flat_images():
    img = half_textured(2)
    s = patch_structure(img, GRID).view(2, *GRID)
    assert s[..., :3].min() > 100 * s[..., 5:].max()  # the seam column (3, 4) is excluded
    masker = create("masker", "spatial-feature")
    torch.testing.assert_close(masker.logits(torch.full((2, 3, 32, 32), 0.4), GRID), torch.zeros(2, 64))
    with pytest.raises(HyperKDError, match="strength"):
        create("masker", "spatial-feature", strength=-1)
    with pytest.raises(HyperKDError, match="patch grid"):
        patch_structure(torch.rand(1, 1, 30, 30), GRID)
