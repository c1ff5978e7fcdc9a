"""The hyperspectral masked-autoencoder student, generic over sensors.

A student is built from a sensor's band table alone, so any registered sensor (EnMAP,
PRISMA, a plugin's) gets a working student: ``build_student("enmap")``,
``build_student("enmap-mae-small")``, ``build_student("prisma-mae-tiny")``.

Architecture: ViT encoder (timm blocks, fixed 2-D sin-cos positions, a cls token) over the
visible patches, a light transformer decoder over all patches that predicts every selected
band of every pixel of the masked patches (MAE, He et al. 2022).

The patch embedding is the cost centre with 200+ bands: a plain ``Conv2d(C, D, p, p)`` has
``C*p*p*D`` weights (202 bands, p=16, D=768: 39.7M, more than the rest of a ViT-B/16 block
stack's first layers combined). ``embedding="factorized"`` first mixes the C bands into
``spectral_dim`` learned components per pixel (a 1x1 convolution, ``C*k`` weights) and then
patchifies those (``k*p*p*D``): 202 -> 32 components cuts the embedding 6x. The decoder
still predicts all C bands. ``benchmarks/train_step.py`` measures the speed trade-off.
``embedding="spectral-conv"`` replaces that 1x1 reduction with a spectral 1-D convolution stem
(:class:`~hyperkd.models.layers.SpectralConvStem`: filters shared along each pixel's
spectrum, non-linear) before patching; ``stem_channels`` sets its width.

Patch size: the named sizes carry a preferred patch (8 for ``tiny``, 16 above), but a student
built through the factory without an explicit ``patch_size`` (or with ``patch_size="auto"``)
gets one that gives at least an 8 x 8 token grid on its chips (:func:`chip_patch_size`: 32 px
chips get 4 px patches, not a 4 x 4 grid that no head can turn back into field edges;
``min_grid=16`` asks for a finer grid, as the ``mae-small-data`` recipe does); the choice is
logged and saved in ``config.json`` like any other argument (``min_grid`` itself is not: it
only picks the patch size).

Inputs are ``(B, C, H, W)`` surface reflectance; the model standardises them with the
sensor's per-band mean/std (from the chip store's statistics) stored as buffers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from hyperkd.core.errors import HyperKDError
from hyperkd.core.registry import register
from hyperkd.core.sensors import Sensor
from hyperkd.hub import HyperKDHubMixin
from hyperkd.models.layers import SpectralConvStem, init_linear_and_norm, sincos_2d

log = logging.getLogger(__name__)

EMBEDDINGS = ("plain", "factorized", "spectral-conv")
"""Patch embeddings a student can use (``embedding=``)."""
MIN_GRID = 8
"""Token grid side an automatically chosen patch size aims for (:func:`chip_patch_size`)."""
DEFAULT_IMG_SIZE = 64
"""Chip size a student is built for when none is given."""

SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        embed_dim=128,
        depth=4,
        num_heads=4,
        decoder_embed_dim=64,
        decoder_depth=2,
        decoder_num_heads=4,
        patch_size=8,
    ),
    "small": dict(
        embed_dim=384,
        depth=12,
        num_heads=6,
        decoder_embed_dim=256,
        decoder_depth=4,
        decoder_num_heads=8,
        patch_size=16,
    ),
    "base": dict(
        embed_dim=768,
        depth=12,
        num_heads=12,
        decoder_embed_dim=512,
        decoder_depth=8,
        decoder_num_heads=16,
        patch_size=16,
    ),
    "large": dict(
        embed_dim=1024,
        depth=24,
        num_heads=16,
        decoder_embed_dim=512,
        decoder_depth=8,
        decoder_num_heads=16,
        patch_size=16,
    ),
}
"""Named student sizes (ViT-Ti-ish for CPU work up to ViT-L)."""


class SpectralPatchEmbed(nn.Module):
    """``(B, C, H, W) -> (B, N, D)``: plain, spectrally factorised or spectral-conv patch embedding."""

    def __init__(
        self,
        in_chans: int,
        embed_dim: int,
        patch_size: int,
        kind: str = "factorized",
        spectral_dim: int = 32,
        stem_channels: int = 16,
    ) -> None:
        super().__init__()
        if kind not in EMBEDDINGS:
            raise HyperKDError(f"student embedding must be one of {', '.join(EMBEDDINGS)}, got {kind!r}")
        self.kind = kind
        self.patch_size = patch_size
        self.spectral: nn.Module
        if kind == "factorized":
            k = min(spectral_dim, in_chans)
            self.spectral = nn.Conv2d(in_chans, k, kernel_size=1, bias=False)
        elif kind == "spectral-conv":
            k = spectral_dim
            self.spectral = SpectralConvStem(in_chans, k, stem_channels)
        else:
            k = in_chans
            self.spectral = nn.Identity()
        self.proj = nn.Conv2d(k, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.spectral(x)).flatten(2).transpose(1, 2)


def chip_patch_size(img_size: int, preferred: int, min_grid: int = MIN_GRID) -> int:
    """The patch size for ``img_size`` px chips: ``preferred`` if it tiles the chip into at least a
    ``min_grid`` x ``min_grid`` grid, else the largest smaller divisor of ``img_size`` that does
    (32 px with preferred 8 -> 4); chips under ``min_grid`` px get 1 px patches."""
    if img_size < 1 or preferred < 1:
        raise HyperKDError(f"img_size and patch_size must be positive, got {img_size} and {preferred}")
    for p in range(preferred, 0, -1):
        if img_size % p == 0 and img_size // p >= min_grid:
            return p
    return 1


@dataclass
class MAEOutput:
    """What one forward pass returns.

    ``pred``/``target``: ``(B, N, p*p*C)`` in standardised units (target per-patch
    normalised if ``norm_pix_loss``); ``mask``: ``(B, N)`` True = masked;
    ``weight``: ``(B, N, p*p*C)`` 1 on valid pixels of masked patches; ``features``: the
    requested encoder layers' visible tokens ``(B, N_keep, D)`` (no cls);
    ``ids_keep``: ``(B, N_keep)`` patch indices of those tokens.
    """

    pred: Tensor
    target: Tensor
    mask: Tensor
    weight: Tensor
    features: list[Tensor]
    ids_keep: Tensor


class HyperspectralMAE(
    nn.Module, HyperKDHubMixin, model_type="hyperspectral-mae", tags=["hyperspectral", "mae"]
):
    """Masked autoencoder for one sensor's band table.

    Build it with :func:`build_student`; the constructor's arguments are the model's
    ``config.json`` (the sensor goes in as its full band-table dict). Saving, loading and
    sharing (model type ``hyperspectral-mae``) come from :class:`hyperkd.hub.HyperKDHubMixin`.
    """

    def __init__(
        self,
        sensor: dict[str, Any],
        img_size: int = 64,
        patch_size: int = 8,
        embed_dim: int = 128,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        decoder_embed_dim: int = 64,
        decoder_depth: int = 2,
        decoder_num_heads: int = 4,
        embedding: str = "factorized",
        spectral_dim: int = 32,
        stem_channels: int = 16,
        norm_pix_loss: bool = False,
        size: str | None = None,
    ) -> None:
        super().__init__()
        self.sensor = Sensor.from_dict(sensor)
        if img_size % patch_size:
            raise HyperKDError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.img_size, self.patch_size = img_size, patch_size
        self.in_chans = c = self.sensor.num_bands
        self.embed_dim, self.depth = embed_dim, depth
        self.norm_pix_loss = norm_pix_loss
        self.size = size
        g = img_size // patch_size
        self.grid = (g, g)
        means, stds = self.sensor.means, self.sensor.stds
        self.register_buffer("band_mean", torch.tensor(means or [0.0] * c).view(1, c, 1, 1))
        self.register_buffer("band_std", torch.tensor(stds or [1.0] * c).view(1, c, 1, 1))

        self.patch_embed = SpectralPatchEmbed(
            c, embed_dim, patch_size, embedding, spectral_dim, stem_channels
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer("pos_embed", sincos_2d(embed_dim, g, g), persistent=False)
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(embed_dim)

        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.register_buffer("decoder_pos_embed", sincos_2d(decoder_embed_dim, g, g), persistent=False)
        self.decoder_blocks = nn.ModuleList(
            [
                Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True)
                for _ in range(decoder_depth)
            ]
        )
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size * patch_size * c)
        self._init_weights()

    def hub_architecture(self) -> tuple[str, dict[str, Any]]:
        """``("mae-<size>", model_args)`` for config.json: ``hyperkd.create_model(name,
        sensor=..., **model_args)`` rebuilds this architecture (a student built without a size
        gets ``mae-tiny``, whose every field ``model_args`` then overrides)."""
        config = getattr(self, "_hub_mixin_config", None) or {}  # the constructor's arguments
        args = {k: v for k, v in config.items() if k not in ("sensor", "size")}
        return f"mae-{self.size if self.size in SIZES else 'tiny'}", args

    # -- init ---------------------------------------------------------------------------
    def _init_weights(self) -> None:
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(init_linear_and_norm)

    # -- helpers --------------------------------------------------------------------------
    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def standardize(self, x: Tensor) -> Tensor:
        """Reflectance -> per-band standardised units."""
        return (x - self.band_mean) / self.band_std

    def destandardize(self, x: Tensor) -> Tensor:
        return x * self.band_std + self.band_mean

    def patchify(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, N, p*p*C)`` with pixel-major, band-minor patch vectors."""
        b, c, h, w = x.shape
        p = self.patch_size
        x = x.reshape(b, c, h // p, p, w // p, p)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)

    def unpatchify(self, x: Tensor, c: int | None = None) -> Tensor:
        """Inverse of :meth:`patchify`."""
        c = c or self.in_chans
        p = self.patch_size
        gh, gw = self.grid
        b = x.shape[0]
        x = x.reshape(b, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, c, gh * p, gw * p)

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_chans or tuple(x.shape[2:]) != (self.img_size, self.img_size):
            raise HyperKDError(
                f"student {self.sensor.name} expects (B, {self.in_chans}, {self.img_size}, {self.img_size}) "
                f"reflectance, got {tuple(x.shape)}; check the chip size and band selection of the data"
            )

    # -- encoder / decoder ----------------------------------------------------------------
    def forward_encoder(
        self, x: Tensor, mask: Tensor | None, layers: Sequence[int] = ()
    ) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
        """Encode the visible patches of standardised ``x``.

        Returns ``latent (B, 1+N_keep, D)`` (after the final norm), ``ids_keep``,
        ``ids_restore`` and the requested layers' token outputs (cls dropped; the last
        layer's after the final norm).
        """
        b = x.shape[0]
        tokens = self.patch_embed(x) + self.pos_embed[:, 1:, :]
        n = tokens.shape[1]
        if mask is None:
            ids_shuffle = torch.arange(n, device=x.device).expand(b, n)
            n_keep = n
        else:
            counts = mask.sum(1)
            if not bool((counts == counts[0]).all()):
                raise HyperKDError("masks must hide the same number of patches in every sample")
            n_keep = n - int(counts[0])
            ids_shuffle = torch.argsort(mask.to(torch.int8), dim=1, stable=True)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :n_keep]
        tokens = torch.gather(tokens, 1, ids_keep[..., None].expand(-1, -1, tokens.shape[2]))
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(b, -1, -1)
        h = torch.cat([cls, tokens], dim=1)
        want = {i % self.depth for i in layers}
        feats: dict[int, Tensor] = {}
        for i, blk in enumerate(self.blocks):
            h = blk(h)
            if i in want and i != self.depth - 1:
                feats[i] = h[:, 1:]
        h = self.norm(h)
        if self.depth - 1 in want:
            feats[self.depth - 1] = h[:, 1:]
        return h, ids_keep, ids_restore, [feats[i % self.depth] for i in layers]

    def forward_decoder(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """Predict every patch from the visible tokens: ``(B, N, p*p*C)``."""
        x = self.decoder_embed(latent)
        b, n = ids_restore.shape
        n_vis = x.shape[1] - 1
        masks = self.mask_token.expand(b, n - n_vis, -1)
        x_ = torch.cat([x[:, 1:], masks], dim=1)
        x_ = torch.gather(x_, 1, ids_restore[..., None].expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward(
        self, x: Tensor, mask: Tensor, valid: Tensor | None = None, layers: Sequence[int] = ()
    ) -> MAEOutput:
        """Masked reconstruction of reflectance ``x`` under ``mask`` ``(B, N)`` (True = hidden)."""
        self._check_input(x)
        xs = self.standardize(x)
        latent, ids_keep, ids_restore, feats = self.forward_encoder(xs, mask, layers)
        pred = self.forward_decoder(latent, ids_restore)
        target = self.patchify(xs)
        if self.norm_pix_loss:
            mu = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mu) / (var + 1e-6) ** 0.5
        weight = self.loss_weight(mask, valid, target.dtype)
        return MAEOutput(
            pred=pred, target=target, mask=mask, weight=weight, features=feats, ids_keep=ids_keep
        )

    def loss_weight(self, mask: Tensor, valid: Tensor | None, dtype: torch.dtype) -> Tensor:
        """``(B, N, p*p*C)``: 1 on the valid pixels of masked patches, else 0. Built on the
        ``(B, N, p*p)`` pixel grid and repeated over the bands in one contiguous write (patch
        vectors are band-minor), not by patchifying a ``(B, C, H, W)`` copy of the valid mask."""
        b, n = mask.shape
        pp = self.patch_size**2
        w = mask[..., None].to(dtype).expand(b, n, pp)
        if valid is not None:
            w = w * self.patchify(valid[:, None].to(dtype))
        return w[..., None].expand(b, n, pp, self.in_chans).reshape(b, n, pp * self.in_chans)

    def reconstruct(self, x: Tensor, out: MAEOutput) -> Tensor:
        """Reflectance image with the masked patches replaced by the prediction."""
        pred = out.pred
        if self.norm_pix_loss:  # undo per-patch normalisation with the input's own patch stats
            t = self.patchify(self.standardize(x))
            pred = pred * (t.var(dim=-1, keepdim=True) + 1e-6) ** 0.5 + t.mean(dim=-1, keepdim=True)
        merged = torch.where(out.mask[..., None], pred, self.patchify(self.standardize(x)))
        return self.destandardize(self.unpatchify(merged))

    @torch.no_grad()
    def forward_features(
        self, x: Tensor, layers: Sequence[int] = (-1,), with_cls: bool = False
    ) -> list[Tensor]:
        """Unmasked encoder features ``(B, N[+1], D)`` of the chosen layers (for fine-tuning)."""
        self._check_input(x)
        latent, _, _, feats = self.forward_encoder(self.standardize(x), None, layers)
        if with_cls:
            return [torch.cat([latent[:, :1], f], dim=1) for f in feats]
        return feats

    def encode(self, x: Tensor, layers: Sequence[int] = (-1,)) -> list[Tensor]:
        """Like :meth:`forward_features` but keeps gradients (full fine-tuning)."""
        self._check_input(x)
        return self.forward_encoder(self.standardize(x), None, layers)[3]

    def num_parameters(self, part: str = "all") -> int:
        """Parameter count of ``all``, ``encoder``, ``decoder`` or ``embedding``."""
        mods: dict[str, list[nn.Module]] = {
            "embedding": [self.patch_embed],
            "encoder": [self.patch_embed, self.blocks, self.norm],
            "decoder": [self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred],
        }
        if part == "all":
            return sum(p.numel() for p in self.parameters())
        extra = (
            self.cls_token.numel()
            if part == "encoder"
            else (self.mask_token.numel() if part == "decoder" else 0)
        )
        return sum(p.numel() for m in mods[part] for p in m.parameters()) + extra


def _sensor_dict(sensor: str | Sensor | dict[str, Any], selection: str | None) -> dict[str, Any]:
    if isinstance(sensor, dict):
        return sensor
    if isinstance(sensor, Sensor):
        return sensor.to_dict()
    from hyperkd.core.sensors import get_sensor

    return get_sensor(sensor, selection=selection or "default").to_dict()


def sized_config(name: str, preset: Mapping[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A size preset with ``overrides`` applied and the patch size chosen for the chip.

    ``overrides`` may carry ``min_grid`` (consumed here) and ``patch_size`` (``None`` or
    ``"auto"``: the preset's patch, or a smaller one for a ``min_grid`` x ``min_grid`` token
    grid, :func:`chip_patch_size`). ``name`` (``mae-tiny``...) only labels the log line. Every
    size factory of a student family builds its constructor arguments this way.
    """
    min_grid = int(overrides.pop("min_grid", None) or MIN_GRID)
    cfg = {**preset, **overrides}
    if overrides.get("patch_size") in (None, "auto"):
        img = int(cfg.get("img_size", DEFAULT_IMG_SIZE))
        cfg["patch_size"] = chip_patch_size(img, int(preset["patch_size"]), min_grid)
        g = img // cfg["patch_size"]
        log.info(
            "student %s: %d px patches for %d px chips (token grid %dx%d); set "
            "student.patch_size to choose another",
            name,
            cfg["patch_size"],
            img,
            g,
            g,
        )
    return cfg


def _factory(size: str):
    def make(
        sensor: str | Sensor | dict[str, Any] = "enmap", selection: str | None = None, **overrides: Any
    ) -> HyperspectralMAE:
        cfg = sized_config(f"mae-{size}", SIZES[size], overrides)
        return HyperspectralMAE(sensor=_sensor_dict(sensor, selection), size=size, **cfg)

    make.__name__ = f"mae_{size}"
    d = SIZES[size]
    make.__doc__ = (
        f"Hyperspectral MAE, {size}: D={d['embed_dim']}, depth {d['depth']}, {d['num_heads']} heads, "
        f"patch {d['patch_size']} or smaller for an 8x8 token grid (any sensor: <sensor>-mae-{size})."
    )
    return make


for _size in SIZES:
    register("student", f"mae-{_size}")(_factory(_size))


def build_student(spec: str | Sensor, **kwargs: Any) -> HyperspectralMAE:
    """Build (or load) a student by name, through the one model factory.

    ``spec`` may be a registered student (``mae-small``; pass ``sensor=``), a sensor name
    (``enmap``: that sensor's ``tiny`` student), ``<sensor>-mae-<size>`` (``enmap-mae-small``,
    ``prisma-mae-base``), a :class:`Sensor`, or a saved model / run folder or Hub repo id
    (see :func:`hyperkd.models.factory.resolve_spec`). Keyword arguments override the
    architecture (``img_size=224``, ``embedding="plain"``...).
    """
    return _as_student(spec, _create_model(spec, **kwargs))


def load_student(path: str, **kwargs: Any) -> HyperspectralMAE:
    """Load a saved student: a model folder, a run folder or a Hub repo id (``org/name[@rev]``);
    ``kwargs`` are loading options (``revision``, ``map_location``...)."""
    from hyperkd.models.factory import resolve_spec

    spec = resolve_spec(path)
    if not spec.trained:
        raise HyperKDError(
            f"{path!r} is an architecture name, not a saved student; build it with "
            "build_student, or pass a model folder, run folder or Hub repo id"
        )
    return _as_student(path, _create_model(spec, **kwargs))


def _create_model(spec: Any, **kwargs: Any) -> Any:
    from hyperkd.models.factory import create_model

    return create_model(spec, **kwargs)


def _as_student(spec: Any, model: Any) -> HyperspectralMAE:
    if not isinstance(model, HyperspectralMAE):
        raise HyperKDError(f"{spec!r} is a {type(model).__name__}, not a hyperspectral MAE student")
    return model


def flops_per_chip(model: HyperspectralMAE, mask_ratio: float = 0.75) -> float:
    """Approximate forward FLOPs for one chip (matmuls only; 2 FLOPs per MAC)."""
    n = model.num_patches
    n_vis = n - round(mask_ratio * n)
    d = model.embed_dim
    c = model.in_chans
    p2 = model.patch_size**2
    emb = model.patch_embed
    if emb.kind == "factorized":
        k = emb.proj.in_channels
        embed = n * p2 * c * k + n * p2 * k * d
    elif isinstance(emb.spectral, SpectralConvStem):
        embed = n * p2 * emb.spectral.macs_per_pixel() + n * p2 * emb.proj.in_channels * d
    else:
        embed = n * p2 * c * d

    def blocks(tokens: int, width: int, depth: int, mlp: float = 4.0) -> float:
        per = 4 * tokens * width * width + 2 * tokens * tokens * width + 2 * mlp * tokens * width * width
        return depth * per

    dd = model.decoder_embed.out_features
    dec_depth = len(model.decoder_blocks)
    total = embed + blocks(n_vis + 1, d, model.depth) + (n_vis + 1) * d * dd
    total += blocks(n + 1, dd, dec_depth) + n * dd * p2 * c
    return 2.0 * total
