"""A sensor-agnostic student: the MAE whose band-dependent weights are generated from wavelengths.

``any-mae-<size>`` (tiny, small, base, large) is :class:`~hyperkd.models.mae.HyperspectralMAE`
with its two band-shaped parts replaced by hypernetworks over the band table (DOFA, Xiong et
al. 2024, generates a patch embedding from wavelengths the same way):

* **encoder**: each band's centre wavelength and spectral width (FWHM, or the explicit range
  of a multispectral band) are encoded with sin-cos features and a small MLP maps them to
  that band's patch-embedding kernel. The MLP's last layer has ``spectral_dim`` (k) outputs
  that weight a shared bank of k patch kernels, so band *i*'s kernel is
  ``W_i = sum_k h_ik P_k`` and the embedding ``sum_i W_i * x_i`` is computed as a generated
  1x1 spectral mixing (``C -> k``) followed by one ``Conv2d(k, D, p, p)``: the ``C x p x p x D``
  per-band kernels are never materialised. Each band's contribution is weighted by the
  spectral width it integrates (width / 100 nm), so a spectrum read through many narrow bands or
  fewer wide ones gives components of a similar scale.
* **decoder**: a linear map gives k spectral components per pixel of each patch, and a second
  MLP over the same band encoding gives each band's read-out weights and bias, so the decoder
  predicts exactly the bands the input had, in its order.

No weight has a band dimension: the same ``model.safetensors`` reads EnMAP (224 or 218 bands),
PRISMA, EMIT, HLS or a band table never seen. The per-band mean/std that standardise the input
and the band encodings are buffers rebuilt from the band table (not saved with the weights);
:meth:`AnyMAE.bind` points a model at another band table (and chip size) in place, which is
what fine-tuning on a store of another sensor does. Saved models say ``"sensor_agnostic":
true`` in ``config.json`` and require no sensor plugin to load.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from hyperkd.core.errors import HyperKDError
from hyperkd.core.registry import register
from hyperkd.core.sensors import Band, Sensor
from hyperkd.models.layers import init_linear_and_norm, sincos_1d, sincos_2d
from hyperkd.models.mae import SIZES, HyperspectralMAE, _sensor_dict, sized_config

log = logging.getLogger(__name__)

WAVELENGTH = "wavelength"
"""The ``embedding`` of an any-sensor student (what tells its config from a per-sensor one's)."""
MODEL_TYPE = "any-sensor-mae"
WIDTH_REF_NM = 100.0
"""A band's input weight is its spectral width in units of this many nm."""

ANY_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {**SIZES["tiny"], "spectral_dim": 32, "hyper_dim": 128},
    "small": {**SIZES["small"], "spectral_dim": 64, "hyper_dim": 128},
    "base": {**SIZES["base"], "spectral_dim": 128, "hyper_dim": 256},
    "large": {**SIZES["large"], "spectral_dim": 128, "hyper_dim": 256},
}
"""Named any-sensor sizes: the MAE sizes plus the number of generated spectral components (k)
and the hypernetworks' width."""

_PLACEHOLDER = Sensor(name="placeholder", bands=(Band("b1", 500.0, 10.0),), gsd_m=30.0).to_dict()


def band_table(sensor: Sensor) -> Tensor:
    """``(C, 2)`` float64: each band's centre wavelength and spectral width in nm (the explicit
    range's width where a band has one, else its FWHM)."""
    return torch.tensor([[b.center_nm, b.range[1] - b.range[0]] for b in sensor.bands], dtype=torch.float64)


class BandHyperNet(nn.Module):
    """``(C, 2)`` band table -> ``(C, out)``: sin-cos features of the centre wavelength and of the
    width (``wave_dim`` / 2 each), then a two-hidden-layer MLP. The band table is a buffer that
    :meth:`set_bands` replaces; it is not saved (the model's config holds the band table)."""

    bands: Tensor

    def __init__(self, out_dim: int, wave_dim: int = 64, hidden: int = 128) -> None:
        super().__init__()
        if wave_dim % 4:
            raise HyperKDError(f"wave_dim must be a multiple of 4, got {wave_dim}")
        self.wave_dim = wave_dim
        self.mlp = nn.Sequential(
            nn.Linear(wave_dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, out_dim),
        )
        self.register_buffer("bands", torch.zeros(1, 2, dtype=torch.float64), persistent=False)

    def set_bands(self, bands: Tensor) -> None:
        """Use band table ``bands`` ``(C, 2)`` (centre, width in nm) from now on."""
        self.register_buffer("bands", bands.to(self.bands.device), persistent=False)

    def encode(self) -> Tensor:
        """``(C, wave_dim)`` sin-cos features of the current band table."""
        half = self.wave_dim // 2
        code = torch.cat([sincos_1d(half, self.bands[:, 0]), sincos_1d(half, self.bands[:, 1])], dim=1)
        return code.to(self.dtype)

    def forward(self) -> Tensor:
        return self.mlp(self.encode())

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype (what the band features are cast to)."""
        return next(self.mlp.parameters()).dtype

    @property
    def widths(self) -> Tensor:
        """``(C,)`` each band's width / :data:`WIDTH_REF_NM`, in the weights' dtype."""
        return (self.bands[:, 1] / WIDTH_REF_NM).to(self.dtype)


class WavelengthMixer(nn.Module):
    """``(B, C, H, W) -> (B, k, H, W)``: the generated spectral mixing of the patch embedding
    (band *i* weighs ``width_i * h_i``, ``h = BandHyperNet(band table)``)."""

    def __init__(self, spectral_dim: int, wave_dim: int = 64, hidden: int = 128) -> None:
        super().__init__()
        self.net = BandHyperNet(spectral_dim, wave_dim, hidden)

    def forward(self, x: Tensor) -> Tensor:
        w = self.net() * self.net.widths[:, None]  # (C, k)
        return torch.einsum("bchw,ck->bkhw", x, w)


class WavelengthDecoderPred(nn.Module):
    """``(B, T, D_dec) -> (B, T, p*p*C)``: k spectral components per pixel of each patch (one
    linear map), read out into the current band table's C bands with generated per-band weights
    and bias; pixel-major, band-minor, as :meth:`HyperspectralMAE.patchify` orders targets."""

    def __init__(
        self, decoder_dim: int, patch_size: int, spectral_dim: int, wave_dim: int = 64, hidden: int = 128
    ) -> None:
        super().__init__()
        self.p2, self.k = patch_size * patch_size, spectral_dim
        self.pixels = nn.Linear(decoder_dim, self.p2 * spectral_dim)
        self.net = BandHyperNet(spectral_dim + 1, wave_dim, hidden)

    def forward(self, t: Tensor) -> Tensor:
        b, n, _ = t.shape
        u = self.pixels(t).view(b, n, self.p2, self.k)
        g = self.net()  # (C, k + 1): read-out weights and bias per band
        out = u @ g[:, : self.k].T + g[:, self.k]
        return out.reshape(b, n, -1)


class AnyMAE(HyperspectralMAE, model_type=MODEL_TYPE, tags=["hyperspectral", "mae", "sensor-agnostic"]):
    """Masked autoencoder whose band-dependent weights come from each band's wavelength and width.

    Build it with ``hyperkd.create_model("any-mae-tiny", sensor=...)``; the constructor's
    arguments are the model's ``config.json``. ``sensor`` is the band table it is *bound* to
    now (its bands and the mean/std it standardises with); :meth:`bind` changes it without
    touching a weight. Everything else (masking, encoder and decoder blocks, features for
    fine-tuning, the MAE targets) is :class:`HyperspectralMAE`'s.
    """

    sensor_agnostic: ClassVar[bool] = True
    """Reads any band table (`finetune` and `pretrain` check this attribute, not the class)."""

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
        embedding: str = WAVELENGTH,
        spectral_dim: int = 32,
        wave_dim: int = 64,
        hyper_dim: int = 128,
        norm_pix_loss: bool = False,
        size: str | None = None,
    ) -> None:
        if embedding != WAVELENGTH:
            raise HyperKDError(
                f"an any-sensor student's embedding is {WAVELENGTH!r}, got {embedding!r}; use "
                "mae-<size> or <sensor>-mae-<size> for a per-sensor embedding"
            )
        # the shared parts (blocks, norms, positions, the bank of k patch kernels) are built by
        # the parent for a one-band placeholder; every band-shaped part is replaced below
        super().__init__(
            sensor=_PLACEHOLDER,
            img_size=img_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            decoder_embed_dim=decoder_embed_dim,
            decoder_depth=decoder_depth,
            decoder_num_heads=decoder_num_heads,
            embedding="factorized",
            spectral_dim=spectral_dim,
            norm_pix_loss=norm_pix_loss,
            size=size,
        )
        self.patch_embed.proj = nn.Conv2d(spectral_dim, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.patch_embed.spectral = WavelengthMixer(spectral_dim, wave_dim, hyper_dim)
        self.decoder_pred = WavelengthDecoderPred(  # type: ignore[assignment]  # (was a Linear)
            decoder_embed_dim, patch_size, spectral_dim, wave_dim, hyper_dim
        )
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        self.patch_embed.spectral.apply(init_linear_and_norm)
        self.decoder_pred.apply(init_linear_and_norm)
        self.bind(sensor)

    # -- the band table ---------------------------------------------------------------------
    def bind(self, sensor: Sensor | Mapping[str, Any] | str, img_size: int | None = None) -> AnyMAE:
        """Read ``sensor``'s band table (and standardise with its mean/std) from now on; with
        ``img_size``, also take chips of that size (the fixed sin-cos positions are rebuilt).
        In place, no weight changes; the recorded config (what :meth:`save_pretrained` and
        fine-tuning write) follows. Returns ``self``."""
        s = Sensor.from_dict(dict(sensor) if isinstance(sensor, Mapping) else _sensor_dict(sensor, None))
        c = s.num_bands
        dev = self.cls_token.device
        self.sensor, self.in_chans = s, c
        mean = torch.tensor(s.means or [0.0] * c, device=dev).view(1, c, 1, 1)
        std = torch.tensor(s.stds or [1.0] * c, device=dev).view(1, c, 1, 1)
        self.register_buffer("band_mean", mean, persistent=False)
        self.register_buffer("band_std", std, persistent=False)
        bands = band_table(s)
        cast(WavelengthMixer, self.patch_embed.spectral).net.set_bands(bands)
        if isinstance(self.decoder_pred, WavelengthDecoderPred):  # (fine-tuning strips the decoder)
            self.decoder_pred.net.set_bands(bands)
        if img_size is not None and int(img_size) != self.img_size:
            self._resize(int(img_size))
        config = dict(getattr(self, "_hub_mixin_config", None) or {})
        config.update(sensor=s.to_dict(), img_size=self.img_size)
        self._hub_mixin_config = config
        return self

    def adapt_to(self, sensor: Sensor, img_size: int | None = None) -> AnyMAE:
        """Take chips of ``sensor`` (a chip store's, with its statistics) at ``img_size`` px: a
        band table other than the bound one is bound with the store's mean/std; the same band
        table keeps the statistics the model was trained with. In place; returns ``self``."""
        same = self.in_chans == sensor.num_bands and torch.equal(band_table(self.sensor), band_table(sensor))
        return self.bind(self.sensor if same else sensor, img_size=img_size)

    def _resize(self, img_size: int) -> None:
        p = self.patch_size
        if img_size % p:
            raise HyperKDError(
                f"this any-sensor student has {p} px patches; {img_size} px chips are not a multiple of {p}"
            )
        g = img_size // p
        self.img_size, self.grid = img_size, (g, g)
        dev = self.cls_token.device
        self.register_buffer("pos_embed", sincos_2d(self.embed_dim, g, g).to(dev), persistent=False)
        old = self._buffers.get("decoder_pos_embed")
        if old is not None:  # (fine-tuning strips the decoder)
            dd = int(old.shape[-1])
            self.register_buffer("decoder_pos_embed", sincos_2d(dd, g, g).to(dev), persistent=False)

    # -- sharing ----------------------------------------------------------------------------
    def hub_architecture(self) -> tuple[str, dict[str, Any]]:
        """``("any-mae-<size>", model_args)``: ``hyperkd.create_model(name, sensor=...,
        **model_args)`` rebuilds this architecture for any band table."""
        config = getattr(self, "_hub_mixin_config", None) or {}
        args = {k: v for k, v in config.items() if k not in ("sensor", "size")}
        return f"any-mae-{self.size if self.size in ANY_SIZES else 'tiny'}", args

    def hub_requirements(self) -> list[dict[str, Any]]:
        """Only the model type's plugin: the band table it was saved with is in config.json, and
        it reads any other, so no sensor plugin is needed to load it."""
        return [r for r in super().hub_requirements() if r.get("kind") != "sensor"]

    def hub_config(self) -> dict[str, Any]:
        """The student's ``config.json`` plus ``"sensor_agnostic": true``."""
        return {**super().hub_config(), "sensor_agnostic": True}


def student_from_config(config: Mapping[str, Any]) -> HyperspectralMAE:
    """Rebuild a student from its recorded constructor arguments (a fine-tuned model's
    ``encoder`` config): an :class:`AnyMAE` for ``embedding="wavelength"``, else a
    :class:`HyperspectralMAE`."""
    cls = AnyMAE if config.get("embedding") == WAVELENGTH else HyperspectralMAE
    return cls(**config)


def _factory(size: str):
    def make(
        sensor: str | Sensor | dict[str, Any] = "enmap", selection: str | None = None, **overrides: Any
    ) -> AnyMAE:
        embedding = overrides.pop("embedding", WAVELENGTH)
        dropped = [k for k in ("stem_channels",) if overrides.pop(k, None) is not None]
        if embedding != WAVELENGTH or dropped:
            log.warning(
                "student any-mae-%s embeds bands from their wavelengths: embedding=%s%s ignored",
                size,
                embedding,
                "".join(f", {k}" for k in dropped),
            )
        cfg = sized_config(f"any-mae-{size}", ANY_SIZES[size], overrides)
        return AnyMAE(sensor=_sensor_dict(sensor, selection), size=size, **cfg)

    make.__name__ = f"any_mae_{size}"
    d = ANY_SIZES[size]
    make.__doc__ = (
        f"Sensor-agnostic MAE, {size}: band weights generated from wavelength and FWHM "
        f"(k={d['spectral_dim']}), D={d['embed_dim']}, depth {d['depth']}; reads any band table."
    )
    return make


for _size in ANY_SIZES:
    register("student", f"any-mae-{_size}")(_factory(_size))


__all__ = [
    "ANY_SIZES",
    "MODEL_TYPE",
    "WAVELENGTH",
    "AnyMAE",
    "BandHyperNet",
    "WavelengthDecoderPred",
    "WavelengthMixer",
    "band_table",
    "student_from_config",
]
