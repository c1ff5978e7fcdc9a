"""Maskers: which patches a masked autoencoder hides.

Every masker hides exactly ``round(ratio * N)`` patches in every sample, so visible-token
batches stay dense. ``random`` is plain MAE masking. The paper's spatial feature-guided
masking is registered here too once it lands (see docs/concepts.md).
"""

from __future__ import annotations

import torch
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
