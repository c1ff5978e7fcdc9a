"""Maskers: which patches a masked autoencoder hides.

Every masker hides exactly ``round(ratio * N)`` patches in every sample, so visible-token
batches stay dense. ``random`` is plain MAE masking; ``spatial-feature`` is hyperkd's
version of the HyperKD paper's spatial feature-guided masking, whose exact rule the paper
does not publish (the rule used here is documented on :class:`SpatialFeatureMasker` and in
docs/distillation.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from hyperkd.core.errors import HyperKDError
from hyperkd.core.interfaces import Masker
from hyperkd.core.registry import register


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


def robust_standardize(v: Tensor, clip: float = 3.0) -> Tensor:
    """Row-wise ``(v - median) / (IQR / 1.349)``, clipped to ``[-clip, clip]``.

    Median and inter-quartile range, not mean and std: one extreme patch (a bright roof, a
    cloud edge) must not compress the scores of all others. Falls back to the std where
    the IQR is 0 (more than half the patches alike), and gives 0 where the row is constant.
    """
    q = torch.quantile(v, torch.tensor([0.25, 0.5, 0.75], dtype=v.dtype), dim=1, keepdim=True)
    scale = (q[2] - q[0]) / 1.349
    scale = torch.where(scale > 0, scale, v.std(1, keepdim=True))
    z = torch.where(scale > 0, (v - q[1]) / scale.clamp_min(torch.finfo(v.dtype).tiny), torch.zeros_like(v))
    return z.clamp(-clip, clip)


@register("masker", "spatial-feature")
class SpatialFeatureMasker(Masker):
    """Spatial feature-guided masking: structured patches are hidden more often.

    Rule (hyperkd's design; the paper does not publish its own):

    1. score each patch by its spatial structure, ``s`` = mean Sobel gradient energy of the
       band-mean image over the patch (:func:`patch_structure`; in distillation the image is
       the aligned, teacher-band view of the chip);
    2. ``z`` = robustly standardised log energy, ``log(s + 1e-6 * mean(s))`` minus its
       median, over IQR/1.349, clipped to [-3, 3] (:func:`robust_standardize`). Log:
       gradient energy is heavy-tailed. Median/IQR: one extreme edge must not flatten the
       preference among all other patches. The relative floor and the standardisation make
       the rule independent of brightness and contrast; a flat image gives ``z = 0``;
    3. draw exactly ``k = round(ratio * N)`` distinct patches with probabilities
       proportional to ``exp(strength * z)``, sequentially without replacement
       (Plackett-Luce), by Gumbel-top-k: the ``k`` largest ``strength * z + Gumbel`` keys.
       Every row hides the same number of patches, and the draw is reproducible from
       ``generator``.

    ``strength = 0`` is plain random masking; large values hide the ``k`` most structured
    patches almost deterministically. Every patch keeps a non-zero chance of being visible
    and of being hidden at any finite strength. ``prefer = "low"`` inverts the preference
    (hide flat patches), for ablations.
    """

    def __init__(self, strength: float = 2.0, prefer: str = "high", clip: float = 3.0) -> None:
        if not (strength >= 0 and math.isfinite(strength)):
            raise HyperKDError(
                f"spatial-feature masker: strength must be a finite number >= 0, got {strength}"
            )
        if prefer not in ("high", "low"):
            raise HyperKDError(f"spatial-feature masker: prefer must be 'high' or 'low', got {prefer!r}")
        if not clip > 0:
            raise HyperKDError(f"spatial-feature masker: clip must be > 0, got {clip}")
        self.strength, self.prefer, self.clip = float(strength), prefer, float(clip)

    def logits(self, images: Tensor, grid: tuple[int, int]) -> Tensor:
        """Per-patch log-preference ``strength * z`` ``(B, N)`` (0 everywhere = random)."""
        s = patch_structure(images, grid).cpu().double()
        z = robust_standardize(torch.log(s + 1e-6 * s.mean(1, keepdim=True) + 1e-300), self.clip)
        return (self.strength * (z if self.prefer == "high" else -z)).float()

    def __call__(
        self, images: Tensor, grid: tuple[int, int], ratio: float, generator: torch.Generator | None = None
    ) -> Tensor:
        logits = self.logits(images, grid)
        u = torch.rand(logits.shape, generator=generator).clamp(1e-12, 1.0 - 1e-7)
        return mask_from_scores(logits - torch.log(-torch.log(u)), ratio).to(images.device)
