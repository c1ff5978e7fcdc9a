"""Building blocks shared by hyperkd's students and the teacher plugins.

Fixed sin-cos position embeddings (MAE / Prithvi style) and the MAE weight initialisation
(xavier-uniform linears, unit LayerNorms), so a plugin's ViT and the student start alike; and
the spectral 1-D convolution stem a student can embed its bands with (``embedding="spectral-conv"``).
"""

from __future__ import annotations

import torch
from torch import nn


def init_linear_and_norm(module: nn.Module) -> None:
    """MAE initialisation of one module (use with ``model.apply``): xavier-uniform linear
    weights with zero bias, LayerNorm weight 1 and bias 0; other modules are left alone."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """``(len(pos), dim)``: concat(sin(p*w_k), cos(p*w_k)), w_k = 10000^(-k/(dim/2)).

    Computed in float64 (as MAE's and Prithvi's reference numpy code is), on ``pos``'s device.
    """
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.reshape(-1).to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int, cls_token: bool = True) -> torch.Tensor:
    """``(1, [1+] h*w, dim)`` table; half the dims encode the column (w), half the row (h).

    Tokens are ordered row-major (h, w); the cls row (if any) is zeros.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a dimension divisible by 4, got {dim}")
    gh, gw = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64), indexing="ij"
    )
    emb = torch.cat([sincos_1d(dim // 2, gw), sincos_1d(dim // 2, gh)], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=torch.float64), emb], dim=0)
    return emb.float().unsqueeze(0)


class SpectralConvStem(nn.Module):
    """``(B, C, H, W) -> (B, out_dim, H, W)``: a 1-D convolution over each pixel's spectrum.

    The bands (in wavelength order) are a sequence per pixel: two strided ``Conv1d`` layers
    (kernel 7 then 5, stride 2 each, GELU) share their weights along the spectrum, so one
    small filter bank detects an absorption or an edge wherever it lies, then a linear map
    mixes the ``channels x ceil(C/4)`` responses into ``out_dim`` features per pixel. It has
    few weights (about ``C/4 * channels * out_dim``) and is non-linear, where a 1x1 spectral
    reduction (``C * out_dim`` weights) is neither shared nor non-linear.
    """

    def __init__(self, in_chans: int, out_dim: int, channels: int = 16) -> None:
        super().__init__()
        half = max(channels // 2, 1)
        self.conv = nn.Sequential(
            nn.Conv1d(1, half, kernel_size=7, stride=2, padding=3),
            nn.GELU(),
            nn.Conv1d(half, channels, kernel_size=5, stride=2, padding=2),
            nn.GELU(),
        )
        self.lengths = ((in_chans - 1) // 2 + 1, ((in_chans - 1) // 2) // 2 + 1)
        self.mix = nn.Linear(channels * self.lengths[1], out_dim)
        self.out_dim = out_dim

    def macs_per_pixel(self) -> int:
        """Multiply-accumulates per pixel (for FLOP estimates)."""
        c1, c2 = self.conv[0], self.conv[2]
        assert isinstance(c1, nn.Conv1d) and isinstance(c2, nn.Conv1d)
        return (
            self.lengths[0] * c1.weight.numel()
            + self.lengths[1] * c2.weight.numel()
            + self.mix.weight.numel()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        z = self.conv(x.permute(0, 2, 3, 1).reshape(b * h * w, 1, c))
        z = self.mix(z.flatten(1))
        return z.view(b, h, w, self.out_dim).permute(0, 3, 1, 2)
