"""Reconstruction metrics: MSE, PSNR, SSIM and spectral angle (SAM).

All operate on surface reflectance. SSIM uses a Gaussian window (sigma 1.5, 7x7 here for
small chips), per band, averaged — the Wang et al. (2004) definition with
``data_range=1`` (reflectance). The same differentiable SSIM serves as a loss term.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def masked_mse(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Weighted mean squared error (``weight`` 1 where the error counts)."""
    return ((pred - target) ** 2 * weight).sum() / weight.sum().clamp_min(1.0)


def psnr(mse: Tensor | float, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB for a given MSE."""
    mse = torch.as_tensor(mse, dtype=torch.float64)
    return 10.0 * torch.log10(data_range**2 / mse.clamp_min(1e-12))


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> Tensor:
    ax = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    w = g[:, None] * g[None, :]
    return w.expand(channels, 1, size, size).contiguous()


def ssim_map(x: Tensor, y: Tensor, data_range: float = 1.0, window: int = 7, sigma: float = 1.5) -> Tensor:
    """Per-pixel, per-band SSIM ``(B, C, H', W')`` (valid convolution, no padding)."""
    c = x.shape[1]
    w = _gaussian_window(window, sigma, c, x.device, x.dtype)
    mu_x = F.conv2d(x, w, groups=c)
    mu_y = F.conv2d(y, w, groups=c)
    sxx = F.conv2d(x * x, w, groups=c) - mu_x**2
    syy = F.conv2d(y * y, w, groups=c) - mu_y**2
    sxy = F.conv2d(x * y, w, groups=c) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0, window: int = 7) -> Tensor:
    """Mean SSIM over batch, bands and pixels."""
    return ssim_map(x, y, data_range, window).mean()


def spectral_angle(x: Tensor, y: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """Angle (radians) between spectra along ``dim``."""
    cos = (x * y).sum(dim) / (x.norm(dim=dim) * y.norm(dim=dim)).clamp_min(eps)
    return torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))


def reconstruction_metrics(recon: Tensor, target: Tensor, pixel_mask: Tensor) -> dict[str, float]:
    """MSE, PSNR (dB), SSIM and SAM (degrees) of ``recon`` vs ``target`` reflectance.

    MSE/PSNR/SAM count only pixels where ``pixel_mask`` ``(B, H, W)`` is true (masked and
    valid); SSIM is computed on the whole image, in which visible patches equal the input.
    """
    m = pixel_mask[:, None].to(recon.dtype)
    n = m.sum() * recon.shape[1]
    mse = float(((recon - target) ** 2 * m).sum() / n.clamp_min(1.0))
    sam = spectral_angle(recon, target)[pixel_mask]
    return {
        "mse": mse,
        "psnr": float(psnr(mse)),
        "ssim": float(ssim(recon.float(), target.float())),
        "sam_deg": float(torch.rad2deg(sam).mean()) if sam.numel() else math.nan,
    }
