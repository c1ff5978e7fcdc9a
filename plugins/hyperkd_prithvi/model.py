"""A faithful re-implementation of the Prithvi-EO masked autoencoder (NASA/IBM).

Why re-implement instead of depending on TerraTorch: hyperkd needs only the encoder, the
MAE decoder (so that a *whole* official checkpoint loads strictly, every tensor checked)
and exact control over position embeddings; TerraTorch would pull in a large dependency
tree with its own pins. Parameter names and shapes are the official ones, so
``PrithviMAE.state_dict()`` has exactly the keys of ``Prithvi_EO_V1_100M.pt`` /
``Prithvi_EO_V2_*.pt`` (``encoder.*`` / ``decoder.*``).

Architecture (matching the public ``prithvi_mae.py`` reference code):

* 3-D patch embedding: ``Conv3d(in_chans, D, kernel=stride=(1, p, p))`` (tubelet 1);
* a fixed 3-D sin-cos position table ``[1, 1 + T*h*w, D]`` (zero row for the cls token);
  per patch token it is ``concat(w-emb, h-emb, t-emb)`` with 6/16, 6/16 and 4/16 of the
  channels, each 1-D embedding ``concat(sin(p*w_k), cos(p*w_k))``, ``w_k = 10000^(-k/(d/2))``;
  patch tokens are ordered ``(t, h, w)``;
* timm ``Block`` transformer layers with qkv bias, ``nn.LayerNorm`` (eps 1e-5, not timm's
  1e-6) and attention through ``F.scaled_dot_product_attention``;
* for the -TL variants, temporal (year, day-of-year) and location (lat, lon) sin-cos encoders
  whose output is added to the patch tokens with a learned scale (``*.scale``, init 0.1);
* the MAE decoder: ``decoder_embed`` to 512 wide, ``mask_token``, 8 blocks of 16 heads,
  ``decoder_norm`` and ``decoder_pred`` back to pixels of one patch.

Inputs are ``(B, C, T, H, W)``; a ``(B, C, H, W)`` tensor is taken as ``T = 1``. Position
tables follow the reference rules for other inputs than the configured grid: a different
frame count recomputes the sin-cos table; a different image size interpolates the table
bicubically (``pos_embed_mode="interpolate"``, the reference behaviour) or recomputes it
exactly for the new grid (``pos_embed_mode="recompute"``).

Everything here builds on the meta device (``with torch.device("meta"): PrithviMAE(cfg)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hyperkd.models.layers import init_linear_and_norm, sincos_1d

PosEmbedMode = Literal["interpolate", "recompute"]
COORD_ENCODINGS = ("time", "location")


@dataclass(frozen=True)
class PrithviConfig:
    """Architecture of one Prithvi-EO MAE; field names follow the official ``pretrained_cfg``.

    ``img_size`` and ``num_frames`` only set the *stored* position tables (the grid the
    model was pretrained on); inputs of other sizes and frame counts are accepted at run time.
    """

    img_size: int = 224
    patch_size: tuple[int, int, int] = (1, 16, 16)
    num_frames: int = 3
    in_chans: int = 6
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    coords_encoding: tuple[str, ...] = ()
    coords_scale_learn: bool = False
    mask_ratio: float = 0.75
    norm_pix_loss: bool = False
    norm_eps: float = 1e-5
    pos_embed_mode: PosEmbedMode = "interpolate"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        ps = self.patch_size
        if isinstance(ps, int):
            object.__setattr__(self, "patch_size", (1, int(ps), int(ps)))
        else:
            object.__setattr__(self, "patch_size", tuple(int(p) for p in ps))
        object.__setattr__(self, "coords_encoding", tuple(self.coords_encoding))
        if len(self.patch_size) != 3:
            raise ValueError(f"patch_size must be an int or (t, h, w), got {self.patch_size}")
        if self.patch_size[0] != 1:
            raise ValueError(f"Prithvi-EO uses tubelet size 1; got patch_size {self.patch_size}")
        for dim, heads, what in (
            (self.embed_dim, self.num_heads, "embed_dim"),
            (self.decoder_embed_dim, self.decoder_num_heads, "decoder_embed_dim"),
        ):
            if dim % 16:
                raise ValueError(f"{what} must be a multiple of 16 for the 3-D sin-cos table, got {dim}")
            if dim % heads:
                raise ValueError(f"{what}={dim} is not divisible by its {heads} heads")
        unknown = set(self.coords_encoding) - set(COORD_ENCODINGS)
        if unknown:
            raise ValueError(f"coords_encoding may hold {COORD_ENCODINGS}, got {sorted(unknown)}")
        if self.pos_embed_mode not in ("interpolate", "recompute"):
            raise ValueError(
                f"pos_embed_mode must be 'interpolate' or 'recompute', got {self.pos_embed_mode!r}"
            )
        if self.img_size % self.patch_size[1] or self.img_size % self.patch_size[2]:
            raise ValueError(
                f"img_size {self.img_size} is not a multiple of patch size {self.patch_size[1:]}"
            )

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """The pretraining token grid ``(t, h, w)``."""
        t, p, q = self.patch_size
        return (self.num_frames // t, self.img_size // p, self.img_size // q)

    @property
    def num_patches(self) -> int:
        """Patch tokens on the pretraining grid (no cls token)."""
        t, h, w = self.grid_size
        return t * h * w

    def replace(self, **changes: Any) -> PrithviConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (lists instead of tuples); ``extra`` is left out."""
        d = asdict(self)
        d.pop("extra")
        d["patch_size"] = list(self.patch_size)
        d["coords_encoding"] = list(self.coords_encoding)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PrithviConfig:
        """Build from a dict such as an official ``pretrained_cfg``; unknown keys go to ``extra``."""
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        if "patch_size" in known and not isinstance(known["patch_size"], int):
            known["patch_size"] = tuple(known["patch_size"])
        if "coords_encoding" in known:
            known["coords_encoding"] = tuple(known["coords_encoding"] or ())
        return cls(**known, extra=extra)

    def shape_fields(self) -> dict[str, Any]:
        """The fields that decide parameter names and shapes (not img_size/num_frames)."""
        return {
            k: v
            for k, v in self.to_dict().items()
            if k
            in (
                "patch_size",
                "in_chans",
                "embed_dim",
                "depth",
                "num_heads",
                "mlp_ratio",
                "decoder_embed_dim",
                "decoder_depth",
                "decoder_num_heads",
                "coords_encoding",
                "coords_scale_learn",
            )
        }


# -- position embeddings -------------------------------------------------------------------


def sincos_3d(
    embed_dim: int,
    grid: Sequence[int],
    *,
    cls_token: bool = True,
    device: torch.device | str | None = None,
) -> Tensor:
    """The fixed 3-D position table ``[1, (1 +) t*h*w, embed_dim]`` (float32).

    Channels per token: w-embedding (6/16), h-embedding (6/16), t-embedding (4/16); tokens
    in ``(t, h, w)`` order; the optional cls row is zeros.
    """
    if embed_dim % 16:
        raise ValueError(f"embed_dim must be a multiple of 16, got {embed_dim}")
    t, h, w = (int(g) for g in grid)
    kw = {"dtype": torch.float64, "device": device}
    tt, hh, ww = torch.meshgrid(
        torch.arange(t, **kw), torch.arange(h, **kw), torch.arange(w, **kw), indexing="ij"
    )
    d_sp, d_t = embed_dim // 16 * 6, embed_dim // 16 * 4
    table = torch.cat([sincos_1d(d_sp, ww), sincos_1d(d_sp, hh), sincos_1d(d_t, tt)], dim=1)
    if cls_token:
        table = torch.cat([torch.zeros(1, embed_dim, **kw), table], dim=0)
    return table.to(torch.float32).unsqueeze(0)


def pos_embed_for_grid(
    embed_dim: int,
    base_grid: Sequence[int],
    grid: Sequence[int],
    *,
    mode: PosEmbedMode = "interpolate",
    device: torch.device | str | None = None,
) -> Tensor:
    """Position table (with cls row) for an input token ``grid`` of a model pretrained on ``base_grid``.

    * same grid: the pretraining table;
    * other frame count: the sin-cos table is recomputed for the new ``t`` (reference rule);
    * other ``(h, w)``: ``mode="interpolate"`` resizes the ``(h0, w0)`` table of every frame
      bicubically with ``align_corners=True`` (what the reference code does, so features
      match TerraTorch); ``mode="recompute"`` evaluates the sin-cos formula on the new grid,
      i.e. treats a smaller chip as a crop at the same ground resolution.
    """
    t, h, w = (int(g) for g in grid)
    _, h0, w0 = (int(g) for g in base_grid)
    if mode == "recompute" or (h, w) == (h0, w0):
        return sincos_3d(embed_dim, (t, h, w), device=device)
    base = sincos_3d(embed_dim, (t, h0, w0), device=device)
    cls_row, patches = base[:, :1], base[:, 1:]
    patches = patches.reshape(t, h0, w0, embed_dim).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(h, w), mode="bicubic", align_corners=True)
    patches = patches.permute(0, 2, 3, 1).reshape(1, t * h * w, embed_dim)
    return torch.cat([cls_row, patches], dim=1)


class _PosEmbedCache:
    """A few recent position tables per (grid, device, dtype): they are constants."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.items: dict[tuple[Any, ...], Tensor] = {}

    def get(self, key: tuple[Any, ...], make: Any) -> Tensor:
        if key not in self.items:
            if len(self.items) >= self.size:
                self.items.pop(next(iter(self.items)))
            self.items[key] = make()
        return self.items[key]


# -- building blocks -------------------------------------------------------------------------


class PatchEmbed3D(nn.Module):
    """``(B, C, T, H, W) -> (B, T*h*w, D)`` with a Conv3d of kernel = stride = patch size."""

    def __init__(self, patch_size: tuple[int, int, int], in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TemporalEncoder(nn.Module):
    """Sin-cos encoding of (year, day-of-year), half the channels each, times ``scale``.

    ``scale`` is a parameter (init 0.1) when learned, as in the official -TL checkpoints,
    otherwise a constant buffer of 1 (still saved, as in the reference code).
    """

    def __init__(self, embed_dim: int, trainable_scale: bool) -> None:
        super().__init__()
        self.year_dim = embed_dim // 2
        self.day_dim = embed_dim - self.year_dim
        if trainable_scale:
            self.scale = nn.Parameter(torch.full((1,), 0.1))
        else:
            self.register_buffer("scale", torch.ones(1))

    def forward(self, coords: Tensor, tokens_per_frame: int) -> Tensor:
        """``coords (B, T, 2)`` -> ``(B, T * tokens_per_frame, D)``."""
        b, t = coords.shape[:2]
        coords = coords.float()
        year = sincos_1d(self.year_dim, coords[:, :, 0]).reshape(b, t, -1)
        day = sincos_1d(self.day_dim, coords[:, :, 1]).reshape(b, t, -1)
        emb = self.scale * torch.cat([year, day], dim=-1).to(self.scale.dtype)
        return emb.repeat_interleave(tokens_per_frame, dim=1)


class LocationEncoder(nn.Module):
    """Sin-cos encoding of (lat, lon), half the channels each, times ``scale``."""

    def __init__(self, embed_dim: int, trainable_scale: bool) -> None:
        super().__init__()
        self.lat_dim = embed_dim // 2
        self.lon_dim = embed_dim - self.lat_dim
        if trainable_scale:
            self.scale = nn.Parameter(torch.full((1,), 0.1))
        else:
            self.register_buffer("scale", torch.ones(1))

    def forward(self, coords: Tensor) -> Tensor:
        """``coords (B, 2)`` -> ``(B, 1, D)`` (broadcast over tokens)."""
        b = coords.shape[0]
        coords = coords.float()
        lat = sincos_1d(self.lat_dim, coords[:, 0]).reshape(b, 1, -1)
        lon = sincos_1d(self.lon_dim, coords[:, 1]).reshape(b, 1, -1)
        return self.scale * torch.cat([lat, lon], dim=-1).to(self.scale.dtype)


def _blocks(dim: int, depth: int, heads: int, mlp_ratio: float, eps: float) -> nn.ModuleList:
    # timm is imported here, not at module import: importing it costs ~2 s and every
    # ``hyperkd`` command loads this plugin's registrations.
    from timm.models.vision_transformer import Block

    blocks = nn.ModuleList(
        Block(dim, heads, mlp_ratio, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=eps))
        for _ in range(depth)
    )
    for blk in blocks:
        # timm decides per process (TIMM_FUSED_ATTN); Prithvi runs through SDPA always.
        blk.attn.fused_attn = True
    return blocks


def as_5d(x: Tensor, in_chans: int) -> Tensor:
    """Accept ``(B, C, H, W)`` (taken as ``T = 1``) or ``(B, C, T, H, W)``; check channels."""
    if x.ndim == 4:
        x = x.unsqueeze(2)
    if x.ndim != 5:
        raise ValueError(f"expected (B, C, H, W) or (B, C, T, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise ValueError(f"expected {in_chans} channels (HLS B02-B07), got {x.shape[1]} in {tuple(x.shape)}")
    return x


# -- encoder / decoder / MAE -----------------------------------------------------------------


class PrithviViT(nn.Module):
    """The Prithvi-EO encoder (keys ``encoder.*`` in the official checkpoints)."""

    def __init__(self, cfg: PrithviConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_dim = cfg.embed_dim
        self.patch_embed = PatchEmbed3D(cfg.patch_size, cfg.in_chans, cfg.embed_dim)
        self.temporal_encoding = "time" in cfg.coords_encoding
        self.location_encoding = "location" in cfg.coords_encoding
        if self.temporal_encoding:
            self.temporal_embed_enc = TemporalEncoder(cfg.embed_dim, cfg.coords_scale_learn)
        if self.location_encoding:
            self.location_embed_enc = LocationEncoder(cfg.embed_dim, cfg.coords_scale_learn)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        # Saved like the reference (so state dicts match the official key set) but never
        # trusted from a file: loaders replace it with this freshly computed table.
        self.register_buffer("pos_embed", sincos_3d(cfg.embed_dim, cfg.grid_size))
        self.blocks = _blocks(cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio, cfg.norm_eps)
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self._pe_cache = _PosEmbedCache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference initialisation (used for random-init teachers, e.g. the control run)."""
        w = self.patch_embed.proj.weight
        with torch.no_grad():
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
            nn.init.zeros_(self.patch_embed.proj.bias)
            nn.init.normal_(self.cls_token, std=0.02)
        self.apply(init_linear_and_norm)

    def grid_of(self, x: Tensor) -> tuple[int, int, int]:
        """Token grid ``(t, h, w)`` of a 5-D input; sizes must divide by the patch size."""
        _, _, t, h, w = x.shape
        pt, ph, pw = self.cfg.patch_size
        if t % pt or h % ph or w % pw:
            raise ValueError(
                f"input (T, H, W) = {(t, h, w)} is not a multiple of the patch size {self.cfg.patch_size}; "
                "crop or pad the chips to a multiple of the patch size"
            )
        return (t // pt, h // ph, w // pw)

    def pos_embed_for(self, grid: Sequence[int], device: torch.device, dtype: torch.dtype) -> Tensor:
        """Position table ``[1, 1 + t*h*w, D]`` for an input grid (see :func:`pos_embed_for_grid`)."""
        key = (tuple(grid), str(device), dtype, self.cfg.pos_embed_mode)
        return self._pe_cache.get(
            key,
            lambda: pos_embed_for_grid(
                self.embed_dim, self.cfg.grid_size, grid, mode=self.cfg.pos_embed_mode, device=device
            ).to(dtype),
        )

    def embed(
        self,
        x: Tensor,
        temporal_coords: Tensor | None = None,
        location_coords: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Patch tokens with position (and optional time/location) encodings, and the table.

        Returns ``(tokens (B, t*h*w, D), pos_embed (1, 1 + t*h*w, D))``; no cls token yet.
        """
        x = as_5d(x, self.cfg.in_chans)
        grid = self.grid_of(x)
        tokens = self.patch_embed(x)
        pos = self.pos_embed_for(grid, tokens.device, tokens.dtype)
        tokens = tokens + pos[:, 1:, :]
        if self.temporal_encoding and temporal_coords is not None:
            tokens = tokens + self.temporal_embed_enc(temporal_coords, grid[1] * grid[2]).to(tokens.dtype)
        if self.location_encoding and location_coords is not None:
            tokens = tokens + self.location_embed_enc(location_coords).to(tokens.dtype)
        return tokens, pos

    def _with_cls(self, tokens: Tensor, pos: Tensor) -> Tensor:
        cls = (self.cls_token + pos[:, :1, :]).expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1)

    def forward_features(
        self,
        x: Tensor,
        layers: Sequence[int] | None = None,
        *,
        temporal_coords: Tensor | None = None,
        location_coords: Tensor | None = None,
    ) -> list[Tensor]:
        """Token features ``(B, 1 + t*h*w, D)`` (cls first) of the chosen blocks.

        ``layers`` index the blocks (negative from the end; default ``[-1]``). Like the
        reference, the last block's output is taken *after* the final norm and every other
        block's output is the raw residual stream. Blocks after the deepest one asked for
        are not run.
        """
        idx = normalise_layers(layers, self.cfg.depth)
        tokens, pos = self.embed(x, temporal_coords, location_coords)
        h = self._with_cls(tokens, pos)
        wanted = set(idx)
        outs: dict[int, Tensor] = {}
        for i, block in enumerate(self.blocks[: max(idx) + 1]):
            h = block(h)
            if i == self.cfg.depth - 1:
                h = self.norm(h)
            if i in wanted:
                outs[i] = h
        return [outs[i] for i in idx]

    def forward(
        self,
        x: Tensor,
        temporal_coords: Tensor | None = None,
        location_coords: Tensor | None = None,
        mask_ratio: float = 0.75,
        noise: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """MAE encoder pass: keep a random ``1 - mask_ratio`` of the tokens.

        Returns ``(latent (B, 1 + kept, D), mask (B, N) with 1 = masked, ids_restore (B, N))``.
        """
        tokens, pos = self.embed(x, temporal_coords, location_coords)
        kept, mask, ids_restore = random_masking(tokens, mask_ratio, noise)
        h = self._with_cls(kept, pos)
        for block in self.blocks:
            h = block(h)
        return self.norm(h), mask, ids_restore


class MAEDecoder(nn.Module):
    """The Prithvi-EO MAE decoder (keys ``decoder.*`` in the official checkpoints)."""

    def __init__(self, cfg: PrithviConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.decoder_embed_dim
        self.decoder_embed = nn.Linear(cfg.embed_dim, d, bias=True)
        self.temporal_encoding = "time" in cfg.coords_encoding
        self.location_encoding = "location" in cfg.coords_encoding
        if self.temporal_encoding:
            self.temporal_embed_dec = TemporalEncoder(d, cfg.coords_scale_learn)
        if self.location_encoding:
            self.location_embed_dec = LocationEncoder(d, cfg.coords_scale_learn)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.register_buffer("decoder_pos_embed", sincos_3d(d, cfg.grid_size))
        self.decoder_blocks = _blocks(
            d, cfg.decoder_depth, cfg.decoder_num_heads, cfg.mlp_ratio, cfg.norm_eps
        )
        self.decoder_norm = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.decoder_pred = nn.Linear(d, math.prod(cfg.patch_size) * cfg.in_chans, bias=True)
        self._pe_cache = _PosEmbedCache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference initialisation."""
        with torch.no_grad():
            nn.init.normal_(self.mask_token, std=0.02)
        self.apply(init_linear_and_norm)

    def forward(
        self,
        latent: Tensor,
        ids_restore: Tensor,
        grid: Sequence[int],
        temporal_coords: Tensor | None = None,
        location_coords: Tensor | None = None,
    ) -> Tensor:
        """Predict every patch: ``(B, t*h*w, prod(patch) * C)`` (cls prediction dropped)."""
        x = self.decoder_embed(latent)
        cls, visible = x[:, :1], x[:, 1:]
        b, n = ids_restore.shape
        masks = self.mask_token.expand(b, n - visible.shape[1], -1)
        x = torch.cat([visible, masks], dim=1)
        x = torch.gather(x, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        key = (tuple(grid), str(x.device), x.dtype, self.cfg.pos_embed_mode)
        pos = self._pe_cache.get(
            key,
            lambda: pos_embed_for_grid(
                self.cfg.decoder_embed_dim,
                self.cfg.grid_size,
                grid,
                mode=self.cfg.pos_embed_mode,
                device=x.device,
            ).to(x.dtype),
        )
        cls = cls + pos[:, :1]
        x = x + pos[:, 1:]
        if self.temporal_encoding and temporal_coords is not None:
            x = x + self.temporal_embed_dec(temporal_coords, grid[1] * grid[2]).to(x.dtype)
        if self.location_encoding and location_coords is not None:
            x = x + self.location_embed_dec(location_coords).to(x.dtype)
        x = torch.cat([cls, x], dim=1)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]


class PrithviMAE(nn.Module):
    """Encoder + MAE decoder: the unit an official Prithvi-EO checkpoint describes."""

    def __init__(self, cfg: PrithviConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = PrithviViT(cfg)
        self.decoder = MAEDecoder(cfg)

    def patchify(self, x: Tensor) -> Tensor:
        """``(B, C, T, H, W) -> (B, t*h*w, s*p*q*C)`` (pixels of a patch, channels last)."""
        b, c, t, h, w = x.shape
        s, p, q = self.cfg.patch_size
        x = x.reshape(b, c, t // s, s, h // p, p, w // q, q)
        x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)
        return x.reshape(b, (t // s) * (h // p) * (w // q), s * p * q * c)

    def unpatchify(self, patches: Tensor, grid: Sequence[int]) -> Tensor:
        """Inverse of :meth:`patchify` for a token ``grid`` ``(t, h, w)``."""
        b = patches.shape[0]
        gt, gh, gw = grid
        s, p, q = self.cfg.patch_size
        c = self.cfg.in_chans
        x = patches.reshape(b, gt, gh, gw, s, p, q, c).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, c, gt * s, gh * p, gw * q)

    def forward(
        self,
        pixel_values: Tensor,
        temporal_coords: Tensor | None = None,
        location_coords: Tensor | None = None,
        mask_ratio: float | None = None,
        noise: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """MAE pass on normalised inputs: ``(loss, pred (B, N, s*p*q*C), mask (B, N))``.

        The loss is the MSE on masked patches (per-patch normalised targets if
        ``norm_pix_loss``), as in the reference.
        """
        x = as_5d(pixel_values, self.cfg.in_chans)
        grid = self.encoder.grid_of(x)
        ratio = self.cfg.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore = self.encoder(x, temporal_coords, location_coords, ratio, noise)
        pred = self.decoder(latent, ids_restore, grid, temporal_coords, location_coords)
        target = self.patchify(x)
        if self.cfg.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(dim=-1)
        loss = (loss * mask).sum() / mask.sum().clamp_min(1.0)
        return loss, pred, mask


def random_masking(
    tokens: Tensor, mask_ratio: float, noise: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample random masking by argsort of noise (the MAE recipe).

    Returns ``(kept tokens, mask (1 = masked), ids_restore)``.
    """
    b, n, d = tokens.shape
    keep = int(n * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(b, n, device=tokens.device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    kept = torch.gather(tokens, 1, ids_shuffle[:, :keep].unsqueeze(-1).expand(-1, -1, d))
    mask = torch.ones(b, n, device=tokens.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return kept, mask, ids_restore


def normalise_layers(layers: Sequence[int] | int | None, depth: int) -> list[int]:
    """Block indices as non-negative ints (negative count from the end); default the last."""
    if layers is None:
        return [depth - 1]
    if isinstance(layers, int):
        layers = [layers]
    out = []
    for i in layers:
        j = int(i) + depth if int(i) < 0 else int(i)
        if not 0 <= j < depth:
            raise ValueError(
                f"layer {i} is out of range for a {depth}-block encoder (use 0..{depth - 1} or -1..-{depth})"
            )
        out.append(j)
    if not out:
        raise ValueError("layers must name at least one block")
    return out


def build_mae(cfg: PrithviConfig, device: torch.device | str | None = None) -> PrithviMAE:
    """Build a :class:`PrithviMAE`; ``device="meta"`` allocates nothing (shape checks, counts)."""
    if device is None:
        return PrithviMAE(cfg)
    with torch.device(device):
        return PrithviMAE(cfg)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (works on the meta device)."""
    return sum(p.numel() for p in module.parameters())
