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

from collections.abc import Sequence
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
    student = ctx["student"]  # patch vectors are band-minor: every C-th entry is one pixel's weight
    return student.unpatchify(out.weight[..., :: student.in_chans], 1).float()


def _reconstruction(out: Any, ctx: dict[str, Any]) -> tuple[Tensor, Tensor]:
    image = ctx["batch"]["image"]
    return ctx["student"].reconstruct(image, out).float(), image.float()


SSIM_BANDS = ("subset", "groups", "all")


def wavelength_order(num_bands: int, centers_nm: Sequence[float] | None = None) -> Tensor:
    """Band indices sorted by centre wavelength (index order without a matching band table)."""
    if centers_nm is not None and len(centers_nm) == num_bands:
        return torch.argsort(torch.as_tensor(list(centers_nm), dtype=torch.float64), stable=True)
    return torch.arange(num_bands)


def band_groups(num_bands: int, groups: int, centers_nm: Sequence[float] | None = None) -> Tensor:
    """``(C, K)`` averaging matrix: column ``k`` is the mean of the ``k``-th of ``K`` runs of
    adjacent bands (near-equal size, in wavelength order when ``centers_nm`` is given).

    Group means stay reflectance, so the SSIM constants (``data_range``) keep their meaning.
    """
    c, k = int(num_bands), max(1, min(int(groups), int(num_bands)))
    member = torch.div(torch.arange(c) * k, c, rounding_mode="floor")  # run of each sorted band
    mat = torch.zeros(c, k)
    mat[wavelength_order(c, centers_nm), member] = 1.0
    return mat / mat.sum(0, keepdim=True)


def band_subset(
    num_bands: int, stride: int, offset: int = 0, centers_nm: Sequence[float] | None = None
) -> Tensor:
    """``(C, K)`` selection matrix of every ``stride``-th band in wavelength order, from ``offset``."""
    order = wavelength_order(int(num_bands), centers_nm)[int(offset) % int(stride) :: int(stride)]
    mat = torch.zeros(int(num_bands), len(order))
    mat[order, torch.arange(len(order))] = 1.0
    return mat


@register("loss", "ssim")
class SSIMLoss(LossTerm):
    """``1 - SSIM`` of the reconstructed reflectance image against the input.

    The image is the input with masked patches replaced by the prediction
    (:meth:`HyperspectralMAE.reconstruct`); SSIM maps (Gaussian 7x7 window, ``data_range`` in
    reflectance) are averaged over bands and over windows weighted by their share of masked,
    valid pixels; windows touching invalid pixels are left out. Visible patches equal the
    input, so this measures the structure of what was reconstructed, in float32 (variances
    cancel badly in half precision).

    ``bands`` says which bands are scored:

    - ``"subset"`` (default): every ``band_stride``-th band (default 8) in wavelength order,
      a sample of the per-band mean. The start band advances by one at each call
      that records gradients (training steps), so every band is scored once every
      ``band_stride`` steps and the average over those steps is the all-band term (exactly
      when the band count is a multiple of ``band_stride``, closely otherwise);
      evaluation calls (no gradient) always use the first subset, so validation values are
      comparable between epochs. ``rotate=False`` keeps the first subset always.
    - ``"all"``: every band (the full term; ``band_stride`` > 1 keeps every n-th band).
    - ``"groups"``: the SSIM of ``groups`` band-group means (adjacent bands averaged).

    Why: per-band SSIM over 200+ bands was most of a distillation step (element-wise work
    on the full cube, forward and backward); neighbouring bands are strongly correlated, and
    on real EnMAP reconstructions the subset's value tracks the all-band value almost exactly
    while band groups do not (``benchmarks/ssim_choice.py``, docs/training.md). ``subset``
    and ``groups`` select or average the bands in patch space, on the prediction, before it
    is unpatchified (a ``(C, K)`` matmul that also undoes the standardisation), so no
    full-band reconstruction is built.
    """

    def __init__(
        self,
        data_range: float = 1.0,
        window: int = 7,
        band_stride: int | None = None,
        bands: str = "subset",
        groups: int = 16,
        rotate: bool = True,
    ) -> None:
        if bands not in SSIM_BANDS:
            raise HyperKDError(f"loss ssim: bands must be one of {', '.join(SSIM_BANDS)}, got {bands!r}")
        stride = int(band_stride) if band_stride is not None else (8 if bands == "subset" else 1)
        if stride < 1:
            raise HyperKDError(f"loss ssim: band_stride must be >= 1, got {band_stride}")
        if int(groups) < 1:
            raise HyperKDError(f"loss ssim: groups must be >= 1, got {groups}")
        self.data_range, self.window, self.band_stride = float(data_range), int(window), stride
        self.bands, self.groups, self.rotate = bands, int(groups), bool(rotate)
        self.calls = 0  # training calls so far: the subset's start band
        self._proj: dict[tuple[Any, ...], Tensor] = {}

    def projection(self, student: Any, device: torch.device, offset: int = 0) -> Tensor:
        """The scored bands' indices ``(K,)`` (``subset``) or the ``(C, K)`` group-mean matrix."""
        c = int(student.in_chans)
        key = (c, str(device), offset)
        if key not in self._proj:
            centers = getattr(getattr(student, "sensor", None), "centers_nm", None)
            if self.bands == "subset":  # indices: selecting is cheaper than a one-hot matmul
                mat = band_subset(c, self.band_stride, offset, centers).argmax(0)
            else:
                kept = list(range(0, c, self.band_stride))
                sub = [centers[i] for i in kept] if centers is not None and len(centers) == c else None
                mat = torch.zeros(c, min(self.groups, len(kept)))
                mat[kept] = band_groups(len(kept), self.groups, sub)
            self._proj[key] = mat.to(device)
        return self._proj[key]

    def __call__(self, out: Any, ctx: dict[str, Any]) -> Tensor:
        student, image = ctx["student"], ctx["batch"]["image"]
        with torch.autocast(image.device.type, enabled=False):
            if self.bands == "all":
                recon, target = student.reconstruct(image, out).float(), image.float()
                if self.band_stride > 1:
                    recon, target = recon[:, :: self.band_stride], target[:, :: self.band_stride]
            else:
                offset = 0
                if self.bands == "subset" and self.rotate and torch.is_grad_enabled():
                    offset, self.calls = self.calls % self.band_stride, self.calls + 1
                proj = self.projection(student, image.device, offset)
                recon, target = project_reconstruction(out, student, image.float(), proj)
            smap = ssim_map(recon, target, self.data_range, self.window)
            w = F.avg_pool2d(_masked_pixels(out, ctx), self.window, stride=1)
            valid = ctx["batch"].get("valid")
            if valid is not None:
                full = F.avg_pool2d(valid[:, None].float(), self.window, stride=1)
                w = w * (full > 1 - 1e-6)
            return 1.0 - (smap * w).sum() / (w.sum() * smap.shape[1]).clamp_min(1e-8)


def project_reconstruction(out: Any, student: Any, image: Tensor, bands: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, K, H, W)`` band selections or projections of the reconstruction and of ``image``.

    ``bands``: band indices ``(K,)`` (``subset``) or a ``(C, K)`` matrix (``groups``). Equal to
    selecting or projecting :meth:`HyperspectralMAE.reconstruct`, without building it: the
    standardised prediction is selected (or projected, one matmul) and destandardised on its
    ``(B, N, p*p, C)`` patch vectors, then only ``K`` bands are unpatchified.
    """
    b, c, h, w = image.shape
    select = bands.ndim == 1
    k = bands.shape[-1]

    def project(cube: Tensor) -> Tensor:  # (B, C, H, W) -> (B, K, H, W)
        return cube[:, bands] if select else (bands.T @ cube.reshape(b, c, h * w)).reshape(b, k, h, w)

    target = project(image)
    if getattr(student, "norm_pix_loss", False):  # per-patch statistics: undo on the full cube
        return project(student.reconstruct(image, out).float()), target
    std, mean = student.band_std.flatten().float(), student.band_mean.flatten().float()
    pred = out.pred.reshape(b, out.pred.shape[1], -1, c)
    if select:
        pix = pred[..., bands].float() * std[bands] + mean[bands]
    else:
        pix = pred.float() @ (std[:, None] * bands) + mean @ bands
    n = pix.shape[1]
    pred_img = student.unpatchify(pix.reshape(b, n, -1), k)
    hidden = student.unpatchify(out.mask[..., None].expand(b, n, pix.shape[2]), 1)
    return torch.where(hidden, pred_img, target), target


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
