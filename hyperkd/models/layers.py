"""Building blocks shared by hyperkd's students and the teacher plugins.

Fixed sin-cos position embeddings (MAE / Prithvi style) and the MAE weight initialisation
(xavier-uniform linears, unit LayerNorms), so a plugin's ViT and the student start alike.
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
