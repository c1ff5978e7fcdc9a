"""Loss terms, registered and weighted by the recipe.

A term is built with its parameters (``create("loss", "mse")``) and called with the
student's :class:`~hyperkd.models.mae.MAEOutput` plus a context dict. The engine sums
``weight * term``. The context always holds ``batch`` (``image`` reflectance, ``valid``)
and ``student``; when distilling (:mod:`hyperkd.training.distill`) it also holds ``kd_pairs``: one
``(student, teacher)`` pair of ``(B, N_keep, D_teacher)`` token tensors per paired layer
-- the student's visible tokens already projected to the teacher's width, and the
teacher's tokens at the same patch positions (:func:`teacher_tokens_at`).

Reconstruction terms: ``mse`` (masked, standardised units), ``ssim`` and ``sam`` (on the
reconstructed reflectance image, masked patches only). Distillation terms (``needs_teacher``):
``kld`` (the HyperKD paper's KL divergence between feature distributions) and ``cosine``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from hyperkd.components.metrics import masked_mse, spectral_angle, ssim_map
from hyperkd.core.errors import HyperKDError
from hyperkd.core.registry import register


class LossTerm:
    """Base class: ``term(out, ctx) -> scalar``; ``needs_teacher`` marks distillation terms."""

    needs_teacher: bool = False

    def __call__(self, out: Any, ctx: dict[str, Any]) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


@register("loss", "mse")
class MSELoss(LossTerm):
    """Mean squared error over the valid pixels of masked patches (MAE reconstruction)."""

    def __call__(self, out: Any, ctx: dict[str, Any]) -> Tensor:
        return masked_mse(out.pred, out.target, out.weight)


def teacher_tokens_at(
    tokens: Tensor, teacher_grid: tuple[int, int], student_grid: tuple[int, int], ids_keep: Tensor
) -> Tensor:
    """Teacher tokens ``(B, Ht*Wt, D)`` resampled to the student's grid and gathered at the
    student's visible patches ``ids_keep`` ``(B, N_keep)``: ``(B, N_keep, D)``.

    Grids of different size (other patch or image size) are matched by interpolating the
    token map: bilinear when the student grid is finer, area averaging when coarser.
    """
    b, n, d = tokens.shape
    th, tw = teacher_grid
    if n != th * tw:
        raise HyperKDError(f"teacher gave {n} tokens, expected a {th}x{tw} grid ({th * tw})")
    if tuple(teacher_grid) != tuple(student_grid):
        sh, sw = student_grid
        fmap = tokens.transpose(1, 2).reshape(b, d, th, tw)
        if sh >= th and sw >= tw:
            fmap = F.interpolate(fmap, size=(sh, sw), mode="bilinear", align_corners=False)
        else:
            fmap = F.interpolate(fmap, size=(sh, sw), mode="area")
        tokens = fmap.flatten(2).transpose(1, 2)
    return torch.gather(tokens, 1, ids_keep[..., None].expand(-1, -1, d))


def _kd_pairs(ctx: dict[str, Any], term: str) -> list[tuple[Tensor, Tensor]]:
    pairs = ctx.get("kd_pairs")
    if not pairs:
        raise HyperKDError(f"loss {term!r} compares with a teacher; run it with `hyperkd distill`")
    return pairs


def _masked_pixels(out: Any, ctx: dict[str, Any]) -> Tensor:
    """``(B, 1, H, W)`` float: 1 on valid pixels of masked patches."""
    student = ctx["student"]
    return student.unpatchify(out.weight)[:, :1].float()


def _reconstruction(out: Any, ctx: dict[str, Any]) -> tuple[Tensor, Tensor]:
    image = ctx["batch"]["image"]
    return ctx["student"].reconstruct(image, out).float(), image.float()


@register("loss", "ssim")
class SSIMLoss(LossTerm):
    """``1 - SSIM`` of the reconstructed reflectance image against the input.

    The image is the input with masked patches replaced by the prediction
    (:meth:`HyperspectralMAE.reconstruct`); per-band SSIM maps (Gaussian 7x7 window,
    ``data_range`` in reflectance) are averaged with weights = the share of masked, valid
    pixels in each window, and windows touching invalid pixels are left out. Visible patches
    equal the input, so this measures the structure of what was reconstructed, in float32
    (variances cancel badly in half precision).

    ``band_stride`` > 1 scores every n-th band only. Per-band SSIM over 200+ bands is the
    most expensive part of a distillation step on a CPU (see docs/distillation.md), and
    neighbouring hyperspectral bands are strongly correlated, so a stride of 2-4 changes
    the loss little for a large saving.
    """

    def __init__(self, data_range: float = 1.0, window: int = 7, band_stride: int = 1) -> None:
        if int(band_stride) < 1:
            raise HyperKDError(f"loss ssim: band_stride must be >= 1, got {band_stride}")
        self.data_range, self.window, self.band_stride = float(data_range), int(window), int(band_stride)

    def __call__(self, out: Any, ctx: dict[str, Any]) -> Tensor:
        recon, image = _reconstruction(out, ctx)
        if self.band_stride > 1:
            recon, image = recon[:, :: self.band_stride], image[:, :: self.band_stride]
        masked = _masked_pixels(out, ctx)
        with torch.autocast(recon.device.type, enabled=False):
            smap = ssim_map(recon, image, self.data_range, self.window)
            w = F.avg_pool2d(masked, self.window, stride=1)
            valid = ctx["batch"].get("valid")
            if valid is not None:
                full = F.avg_pool2d(valid[:, None].float(), self.window, stride=1)
                w = w * (full > 1 - 1e-6)
            return 1.0 - (smap * w).sum() / (w.sum() * smap.shape[1]).clamp_min(1e-8)


@register("loss", "sam")
class SAMLoss(LossTerm):
    """Mean spectral angle (radians) between reconstructed and input spectra, masked pixels."""

    def __call__(self, out: Any, ctx: dict[str, Any]) -> Tensor:
        recon, image = _reconstruction(out, ctx)
        m = _masked_pixels(out, ctx)[:, 0]
        angle = spectral_angle(recon, image)
        return (angle * m).sum() / m.sum().clamp_min(1.0)


@register("loss", "kld")
class KLDLoss(LossTerm):
    """KL(teacher || student) between per-token feature distributions (HyperKD's term).

    For each paired layer and each visible token, ``p = softmax(teacher / T)`` and
    ``q = softmax(projected student / T)`` over the feature dimension;
    ``KL(p || q)`` is averaged over tokens and pairs and multiplied by ``T^2`` (Hinton's
    scaling, which keeps gradient size independent of ``T``). ``teacher_norm`` applies a
    parameter-free LayerNorm to teacher tokens first, so intermediate blocks (raw residual
    stream, large and layer-dependent scale) and the last block give comparable targets.
    """

    needs_teacher = True

    def __init__(self, temperature: float = 1.0, teacher_norm: bool = True) -> None:
        if not temperature > 0:
            raise HyperKDError(f"loss kld: temperature must be > 0, got {temperature}")
        self.temperature, self.teacher_norm = float(temperature), bool(teacher_norm)

    def __call__(self, out: Any, ctx: dict[str, Any]) -> Tensor:
        t_ = self.temperature
        total = []
        for s, t in _kd_pairs(ctx, "kld"):
            s, t = s.float(), t.float()
            if self.teacher_norm:
                t = F.layer_norm(t, t.shape[-1:])
            log_p = F.log_softmax(t / t_, dim=-1)
            log_q = F.log_softmax(s / t_, dim=-1)
            total.append((log_p.exp() * (log_p - log_q)).sum(-1).mean() * t_**2)
        return torch.stack(total).mean()


@register("loss", "cosine")
class CosineLoss(LossTerm):
    """``1 - cosine similarity`` of projected student and teacher tokens, averaged."""

    needs_teacher = True

    def __call__(self, out: Any, ctx: dict[str, Any]) -> Tensor:
        vals = [
            1.0 - F.cosine_similarity(s.float(), t.float(), dim=-1).mean()
            for s, t in _kd_pairs(ctx, "cosine")
        ]
        return torch.stack(vals).mean()
