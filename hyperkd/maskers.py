"""Maskers: which patches a masked autoencoder hides.

Every masker hides exactly ``round(ratio * N)`` patches in every sample, so visible-token
batches stay dense. ``random`` is plain MAE masking; ``spatial-feature`` is hyperkd's
version of the HyperKD paper's spatial feature-guided masking, whose exact rule the paper
does not publish (the rule used here is documented on :class:`SpatialFeatureMasker` and in
docs/distillation.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hyperkd.errors import HyperKDError
from hyperkd.interfaces import Masker
from hyperkd.registry import register


def num_masked(n: int, ratio: float) -> int:
    """How many of ``n`` patches a ``ratio`` hides (at least 1, at most n-1)."""
    if not 0.0 < ratio < 1.0:
        raise HyperKDError(f"mask ratio must be in (0, 1), got {ratio}")
    return min(max(round(ratio * n), 1), n - 1)


def mask_from_scores(scores: Tensor, ratio: float) -> Tensor:
    """Boolean ``(B, N)`` mask hiding the ``ratio`` highest-scoring patches of each row."""
    b, n = scores.shape
    k = num_masked(n, ratio)
    idx = torch.topk(scores, k, dim=1).indices
    mask = torch.zeros(b, n, dtype=torch.bool, device=scores.device)
    mask.scatter_(1, idx, True)
    return mask


@register("masker", "random")
class RandomMasker(Masker):
    """Uniformly random patches (plain MAE masking)."""

    def __call__(
        self, images: Tensor, grid: tuple[int, int], ratio: float, generator: torch.Generator | None = None
    ) -> Tensor:
        b, n = images.shape[0], grid[0] * grid[1]
        noise = torch.rand(b, n, generator=generator)
        return mask_from_scores(noise, ratio).to(images.device)


SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
"""Sobel kernel (x derivative), scaled so a unit ramp gives gradient 1 per pixel."""


def patch_structure(images: Tensor, grid: tuple[int, int]) -> Tensor:
    """Spatial-structure score ``(B, N)`` of each patch: mean Sobel gradient energy.

    The image is first reduced to one band (the mean over bands: spatial structure that
    most bands share), its Sobel gradients ``gx, gy`` are taken with replicate padding, and
    ``gx^2 + gy^2`` is averaged over each patch of the ``grid``. Computed in float32
    without gradients: masks are not differentiable choices.
    """
    b, _, h, w = images.shape
    gh, gw = grid
    if h % gh or w % gw:
        raise HyperKDError(f"image {h}x{w} is not divisible into a {gh}x{gw} patch grid")
    with torch.no_grad():
        g = images.detach().float().mean(1, keepdim=True)
        g = F.pad(g, (1, 1, 1, 1), mode="replicate")
        kx = SOBEL_X.to(g.device)[None, None]
        ky = kx.transpose(2, 3)
        energy = F.conv2d(g, kx) ** 2 + F.conv2d(g, ky) ** 2
        return F.avg_pool2d(energy, (h // gh, w // gw)).reshape(b, gh * gw)


@register("masker", "spatial-feature")
class SpatialFeatureMasker(Masker):
    """Spatial feature-guided masking: structured patches are hidden more often.

    Rule (hyperkd's design; the paper does not publish its own):

    1. score each patch by its spatial structure, ``s`` = mean Sobel gradient energy of the
       band-mean image over the patch (:func:`patch_structure`; in distillation the image is
       the aligned, teacher-band view of the chip);
    2. standardise the RMS gradient within each image, ``z = (sqrt(s) - mean) / std``
       (standardising makes the rule independent of brightness and contrast; a flat image
       gives ``z = 0`` everywhere, i.e. random masking);
    3. sampling distribution ``q = (1 - mix) / N + mix * softmax(z / temperature)``;
    4. draw exactly ``k = round(ratio * N)`` distinct patches from ``q`` without replacement
       (Gumbel-top-k: the ``k`` largest ``log q + Gumbel`` keys), so every row hides the same
       number of patches and the draw is reproducible from ``generator``.

    ``mix = 0`` is plain random masking; ``mix = 1`` with a small ``temperature`` hides the
    ``k`` most structured patches almost deterministically. The default (``mix = 0.9``,
    ``temperature = 0.5``) keeps a uniform floor so every patch is sometimes visible and
    sometimes reconstructed.
    ``prefer = "low"`` inverts the preference (hide flat patches), for ablations.
    """

    def __init__(self, temperature: float = 0.5, mix: float = 0.9, prefer: str = "high") -> None:
        if not temperature > 0:
            raise HyperKDError(f"spatial-feature masker: temperature must be > 0, got {temperature}")
        if not 0.0 <= mix <= 1.0:
            raise HyperKDError(f"spatial-feature masker: mix must be in [0, 1], got {mix}")
        if prefer not in ("high", "low"):
            raise HyperKDError(f"spatial-feature masker: prefer must be 'high' or 'low', got {prefer!r}")
        self.temperature, self.mix, self.prefer = float(temperature), float(mix), prefer

    def probabilities(self, images: Tensor, grid: tuple[int, int]) -> Tensor:
        """The per-patch sampling distribution ``q`` ``(B, N)`` (rows sum to 1)."""
        s = patch_structure(images, grid).cpu().sqrt()
        z = (s - s.mean(1, keepdim=True)) / s.std(1, keepdim=True).clamp_min(1e-6)
        if self.prefer == "low":
            z = -z
        n = z.shape[1]
        return (1.0 - self.mix) / n + self.mix * torch.softmax(z / self.temperature, dim=1)

    def __call__(
        self, images: Tensor, grid: tuple[int, int], ratio: float, generator: torch.Generator | None = None
    ) -> Tensor:
        q = self.probabilities(images, grid)
        u = torch.rand(q.shape, generator=generator).clamp(1e-12, 1.0 - 1e-7)
        keys = torch.log(q.clamp_min(1e-30)) - torch.log(-torch.log(u))
        return mask_from_scores(keys, ratio).to(images.device)
