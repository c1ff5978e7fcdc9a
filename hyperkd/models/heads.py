"""Downstream heads of :class:`~hyperkd.models.pixel.PixelModel`: token heads and pixel-resolution heads.

Token heads read only the encoder's token grid ``(B, D, h, w)`` and upsample their output
to pixels: :class:`TokenCNNHead` (the HyperKD paper's frozen-encoder CNN head) and
:class:`LinearHead` (a linear probe). On small chips they cannot draw an edge finer than a
patch, and a patch-constant predictor loses to the pixel spectra (the issue that made the
heads below: on 32 px EnMAP tiles with 8 px patches the grid is 4 x 4).

Pixel-resolution heads read each pixel's standardised spectrum *and* the encoder's
features, so an encoder can only add to what the spectra already give:

* :class:`FusedHead` — the raw-spectra head (the pixel's spectrum through a 1x1 conv and its
  3x3 neighbourhood through a 3x3 conv, a 1x1 fusion, one 3x3 layer of context, a 1x1
  classifier) plus a zero-initialised *residual* correction from the features of several
  encoder blocks, each squeezed by a 1x1 conv at token resolution (a 1x1 conv commutes with
  bilinear upsampling, so this costs a fraction of upsampling first), dropped channel-wise and
  upsampled to pixels (``fusion="concat"``: the first design, features concatenated with the
  spectra before the fusion layers).
* :class:`UPerNetHead` — an FPN / UPerNet-style multi-level decoder (Xiao et al. 2018, as
  TerraTorch's ``UperNetDecoder`` uses on ViT features): a ViT's blocks all come at one
  token resolution, so shallower blocks are resized to finer levels (stride ``patch``,
  ``patch/2``, ... down to 1 px), the deepest passes through a pyramid-pooling module
  (global context), lateral 1x1 convs and a top-down pathway (upsample + add) fuse the
  levels, 3x3 convs smooth each, and all are upsampled to pixels, concatenated and fused.
  The pixel spectra (the same stem as :class:`FusedHead`) are its finest level.

With no encoder features both heads reduce to their spectral part: that *is* the
raw-spectra control, so "pretraining helps" means exactly "the encoder adds to the spectra".
:class:`PixelCNNHead` / :class:`PixelLinearHead` are the raw-spectra heads of the token
protocols (kept so saved models of those protocols load unchanged).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_norm_relu(cin: int, cout: int, k: int) -> list[nn.Module]:
    """Conv, BatchNorm, ReLU.

    BatchNorm normalises each channel over the batch's pixels, which turns the small
    differences between neighbouring tokens of a frozen encoder into usable signal (a
    per-sample GroupNorm learnt far more slowly in our tests). Fine-tunes are short,
    so its running statistics are recomputed exactly after training
    (:func:`recompute_batchnorm`) instead of being left as a moving average that is still
    close to its initial values.
    """
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def recompute_batchnorm(model: nn.Module, batches: Iterable[Any], forward: Callable[[Any], Any]) -> int:
    """Set every BatchNorm's running mean/variance to the exact average over ``batches``.

    ``forward`` runs the model on one batch (in training mode, without gradients); the
    statistics are the cumulative average of the per-batch statistics (``momentum=None``),
    i.e. the statistics of the final weights rather than a moving average over weights
    that kept changing ("precise BN"). Returns the number of batches used.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    n = 0
    with torch.no_grad():
        for batch in batches:
            forward(batch)
            n += 1
    for m, mom in zip(norms, momenta, strict=True):
        m.momentum = mom
    model.train(was_training)
    return n


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------------------------
# Token heads (the encoder's token grid only)
# ----------------------------------------------------------------------------------------------


class TokenCNNHead(nn.Module):
    """Token grid ``(B, D, h, w)`` -> per-pixel outputs ``(B, K, H, W)``.

    A 3x3 layer at token resolution mixes neighbouring tokens; then ``ceil(log2(patch))``
    stages of (x2 bilinear upsampling, 3x3 conv, BN, ReLU) halve the width down to 32
    channels; a final resize (for patch sizes that are not powers of two) and a 1x1
    classifier.
    """

    def __init__(self, in_dim: int, out_channels: int, patch_size: int, hidden: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = conv_norm_relu(in_dim, hidden, 3)
        c = hidden
        for _ in range(max(math.ceil(math.log2(patch_size)), 0)):
            nxt = max(c // 2, 32)
            layers += [
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                *conv_norm_relu(c, nxt, 3),
            ]
            c = nxt
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(c, out_channels, 1)

    def forward(self, tokens: Tensor, size: tuple[int, int]) -> Tensor:
        return self.classifier(_resize(self.body(tokens), size))


class LinearHead(nn.Module):
    """Linear probe: ``(B, D, h, w)`` -> 1x1 linear map -> bilinear upsampling to ``size``."""

    def __init__(self, in_dim: int, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Conv2d(in_dim, out_channels, 1)

    def forward(self, tokens: Tensor, size: tuple[int, int]) -> Tensor:
        return _resize(self.linear(tokens), size)


class PixelCNNHead(nn.Module):
    """Raw-spectra head of the token protocols: ``(B, C, H, W)`` standardised spectra -> ``(B, K, H, W)``.

    1x1 spectral reduction to ``hidden`` channels, two 3x3 layers (5x5 px receptive field),
    1x1 classifier. :class:`PixelModel` gives it the width the token head has at pixel
    resolution (32 by default), so the control does not win by spending more compute at
    full resolution than the token heads do.
    """

    def __init__(self, in_chans: int, out_channels: int, hidden: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *conv_norm_relu(in_chans, hidden, 1),
            *conv_norm_relu(hidden, hidden, 3),
            *conv_norm_relu(hidden, hidden, 3),
        )
        self.classifier = nn.Conv2d(hidden, out_channels, 1)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return self.classifier(self.body(x))


class PixelLinearHead(nn.Module):
    """Raw-spectra linear baseline: one linear map per pixel spectrum."""

    def __init__(self, in_chans: int, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Conv2d(in_chans, out_channels, 1)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return self.linear(x)


# ----------------------------------------------------------------------------------------------
# Pixel-resolution heads (spectra + encoder features)
# ----------------------------------------------------------------------------------------------


class SpectralStem(nn.Module):
    """Standardised spectra ``(B, C, H, W)`` -> ``(B, 2 * width, H, W)``: each pixel's own
    spectrum (1x1 conv) next to its 3x3 neighbourhood (3x3 conv), both BN + ReLU."""

    def __init__(self, in_chans: int, width: int) -> None:
        super().__init__()
        self.pixel = nn.Sequential(*conv_norm_relu(in_chans, width, 1))
        self.neighbourhood = nn.Sequential(*conv_norm_relu(in_chans, width, 3))
        self.out_channels = 2 * width

    def forward(self, spectra: Tensor) -> Tensor:
        return torch.cat([self.pixel(spectra), self.neighbourhood(spectra)], dim=1)


FUSIONS = ("residual", "concat")
"""How :class:`FusedHead` joins encoder features to the spectra (the first is the default)."""
FEATURE_WIDTH = 8
FEATURE_DROPOUT = 0.5


class FusedHead(nn.Module):
    """Spectra + multi-block encoder features, fused per pixel (see the module docstring).

    ``feature_dim`` is the channel count of the concatenated token grids (0: no encoder,
    the raw-spectra control). ``forward(spectra, tokens, size)``: standardised spectra
    ``(B, C, H, W)``, tokens ``(B, feature_dim, h, w)`` or ``None``.

    The spectra path (:class:`SpectralStem`, a 1x1 and a 3x3 layer, a 1x1 classifier) is the
    whole raw-spectra head. ``fusion`` says how encoder features join it:

    ``residual`` (the default)
        the features are squeezed to ``feature_width`` channels (1x1, BN, ReLU) with channel
        dropout ``feature_dropout``, upsampled to pixels, and a small correction network reads
        them next to the stem's output; its logits are *added* to the spectra path's, and its last
        layer starts at zero. So training starts from exactly the raw-spectra head, and the
        features can only move it where they help on the training labels. On the real EnMAP tiles
        this kept an untrained encoder from costing anything against raw spectra, where the
        concatenation lost to them (docs/real-data.md; docs/tasks.md, "Why these defaults").
    ``concat``
        the features (1x1 to ``width`` channels) are concatenated with the stem's output before
        the fusion layers (the first fused head; saved models without ``fusion`` in their config).
    """

    def __init__(
        self,
        in_chans: int,
        out_channels: int,
        feature_dim: int = 0,
        width: int = 64,
        fusion: str = "residual",
        feature_width: int = FEATURE_WIDTH,
        feature_dropout: float = FEATURE_DROPOUT,
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        self.stem = SpectralStem(in_chans, width)
        self.feature_dim = int(feature_dim)
        self.fusion = fusion
        residual = fusion == "residual" and bool(feature_dim)
        fw = feature_width if residual else width
        self.features: nn.Module | None = None
        if feature_dim:
            layers = [*conv_norm_relu(feature_dim, fw, 1)]
            if residual and feature_dropout > 0:
                layers.append(nn.Dropout2d(feature_dropout))
            self.features = nn.Sequential(*layers)
        cin = self.stem.out_channels + (fw if feature_dim and not residual else 0)
        self.fuse = nn.Sequential(*conv_norm_relu(cin, width, 1), *conv_norm_relu(width, width, 3))
        self.classifier = nn.Conv2d(width, out_channels, 1)
        self.correction: nn.Sequential | None = None
        if residual:
            last = nn.Conv2d(width, out_channels, 1)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(cast(Tensor, last.bias))
            self.correction = nn.Sequential(*conv_norm_relu(self.stem.out_channels + fw, width, 1), last)

    crop_margin = 2
    """How far a pixel's output reaches into the spectra (two 3x3 layers): a window's outputs
    more than this many pixels from its cut edges equal those of the whole chip."""

    def forward(
        self,
        spectra: Tensor,
        tokens: Tensor | None,
        size: tuple[int, int],
        window: tuple[int, int, int, int] | None = None,
    ) -> Tensor:
        """Logits ``(B, K, H, W)`` for ``spectra`` of a chip of ``size``; with ``window``
        ``(y0, y1, x0, x1)``, ``spectra`` is only that window of the chip (training on crops:
        the token features are upsampled to the whole chip and then cut to the same window)."""
        stem = self.stem(spectra)
        if self.features is None:
            return self.classifier(self.fuse(stem))
        if tokens is None:
            raise ValueError("this head was built for encoder features but got none")
        feats = _resize(self.features(tokens), size)
        if window is not None:
            y0, y1, x0, x1 = window
            feats = feats[..., y0:y1, x0:x1]
        if self.correction is None:  # concat
            return self.classifier(self.fuse(torch.cat([stem, feats], dim=1)))
        return self.classifier(self.fuse(stem)) + self.correction(torch.cat([stem, feats], dim=1))


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling: average-pool to ``s x s`` for each scale, 1x1 conv, upsample,
    concatenate with the input, 3x3 bottleneck. Scales larger than the grid are skipped."""

    def __init__(self, cin: int, width: int, grid: int, scales: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.scales = [s for s in scales if s <= max(grid, 1)] or [1]
        self.pools = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), nn.Conv2d(cin, width, 1), nn.ReLU(inplace=True))
            for s in self.scales
        )  # no BN: a 1x1 pooled map has one value per sample, BatchNorm of batch 1 would fail
        self.bottleneck = nn.Sequential(*conv_norm_relu(cin + len(self.scales) * width, width, 3))

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        return self.bottleneck(torch.cat([x, *(_resize(p(x), size) for p in self.pools)], dim=1))


class UPerNetHead(nn.Module):
    """UPerNet / FPN decoder over ``levels`` encoder blocks plus the pixel spectra (module docstring).

    ``feature_dim`` is one block's width ``D``; ``forward`` gets the blocks concatenated
    ``(B, levels * D, h, w)`` (shallow first, as :class:`PixelModel` orders ``layers``).
    Level ``j`` of ``levels`` sits at stride ``max(patch / 2**(levels-1-j), 1)`` px: the
    deepest at token resolution, each shallower one twice as fine, the spectra at 1 px.
    """

    def __init__(
        self,
        in_chans: int,
        out_channels: int,
        feature_dim: int = 0,
        levels: int = 0,
        patch_size: int = 1,
        grid: int = 1,
        width: int = 64,
    ) -> None:
        super().__init__()
        self.levels, self.feature_dim, self.patch_size = int(levels), int(feature_dim), int(patch_size)
        self.stem = SpectralStem(in_chans, width)
        self.laterals = nn.ModuleList(
            nn.Sequential(*conv_norm_relu(feature_dim, width, 1)) for _ in range(max(self.levels - 1, 0))
        )
        # the deepest block goes through pyramid pooling; with no encoder the spectra do
        deepest = feature_dim if self.levels else self.stem.out_channels
        self.ppm = PyramidPooling(deepest, width, grid if self.levels else 8)
        self.spectral_lateral = (
            nn.Sequential(*conv_norm_relu(self.stem.out_channels, width, 1)) if self.levels else None
        )
        n = self.levels + 1  # the blocks + the spectral level (the only one, through the ppm, without blocks)
        self.smooth = nn.ModuleList(nn.Sequential(*conv_norm_relu(width, width, 3)) for _ in range(n - 1))
        self.fuse = nn.Sequential(*conv_norm_relu(n * width, width, 3))
        self.classifier = nn.Conv2d(width, out_channels, 1)

    def _stride(self, j: int) -> float:
        return max(self.patch_size / 2 ** (self.levels - 1 - j), 1.0)

    def forward(self, spectra: Tensor, tokens: Tensor | None, size: tuple[int, int]) -> Tensor:
        stem = self.stem(spectra)
        if not self.levels:
            return self.classifier(self.fuse(self.ppm(stem)))
        if tokens is None:
            raise ValueError("this head was built for encoder features but got none")
        blocks = tokens.split(self.feature_dim, dim=1)
        sizes = [tuple(max(round(s / self._stride(j)), 1) for s in size) for j in range(self.levels)]
        # lateral maps, finest first: the spectra, then the blocks shallow -> deep
        lat = [self.spectral_lateral(stem)]  # type: ignore[misc]  # built whenever there are levels
        lat += [_resize(self.laterals[j](blocks[j]), sizes[j]) for j in range(self.levels - 1)]
        lat.append(self.ppm(blocks[-1]))
        for j in range(len(lat) - 2, -1, -1):  # top-down pathway: add the coarser map, upsampled
            lat[j] = lat[j] + _resize(lat[j + 1], lat[j].shape[-2:])
        outs = [self.smooth[j](lat[j]) for j in range(len(lat) - 1)] + [lat[-1]]
        return self.classifier(self.fuse(torch.cat([_resize(o, size) for o in outs], dim=1)))


__all__ = [
    "FEATURE_DROPOUT",
    "FEATURE_WIDTH",
    "FUSIONS",
    "FusedHead",
    "LinearHead",
    "PixelCNNHead",
    "PixelLinearHead",
    "PyramidPooling",
    "SpectralStem",
    "TokenCNNHead",
    "UPerNetHead",
    "conv_norm_relu",
    "recompute_batchnorm",
]
