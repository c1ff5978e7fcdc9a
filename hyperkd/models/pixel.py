"""Fine-tuned per-pixel models: an encoder (or none) plus a head, saved as safetensors + config.json.

:class:`PixelModel` is a plain ``nn.Module`` whose whole construction is one JSON-able
config, so it can be saved, shared and rebuilt without pickles (:meth:`PixelModel.save` /
:meth:`PixelModel.load`; ``config.json`` carries ``"model_type": "hyperkd-pixel"``). The
heads themselves live in :mod:`hyperkd.models.heads`.

Protocols (how the encoder is used; :data:`DEFAULT_PROTOCOL` is the default):

``fused`` (the default)
    encoder fixed; :class:`~hyperkd.models.heads.FusedHead` reads each pixel's standardised
    spectrum and 3x3 neighbourhood *and* the features of several encoder blocks, upsampled
    to pixels, as a zero-initialised residual on the raw-spectra head (config ``fusion``:
    ``residual``; ``concat`` for the first design and for saved models without the key). The
    encoder can only add to the spectra.
``fused-full``
    the fused head, with the encoder trained too (at a lower learning rate).
``upernet``
    encoder fixed; :class:`~hyperkd.models.heads.UPerNetHead`, a multi-level FPN/UPerNet
    decoder over several blocks with the pixel spectra as its finest level.
``frozen`` (the HyperKD paper's)
    encoder fixed; a small CNN head (:class:`~hyperkd.models.heads.TokenCNNHead`) reads the
    token grid, upsamples it to pixels in x2 steps with 3x3 convolutions, predicts per pixel.
``linear``
    encoder fixed; one linear map per token, bilinearly upsampled to pixels
    (:class:`~hyperkd.models.heads.LinearHead`): a linear probe of upsampled tokens.
``full``
    the token CNN head, with the encoder trained too (at a lower learning rate).

The pixel-resolution protocols (``fused``, ``fused-full``, ``upernet``) read blocks spread
over the encoder's depth by default (:func:`default_layers`); the token protocols read the
last block.

Controls for honest comparisons:

* **raw spectra** (``encoder=None``): no encoder at all. With a pixel-resolution protocol
  it is *the same head without encoder features* (so "pretraining helps" means "the
  encoder adds to the spectra"); with ``linear`` a per-pixel linear classifier; with
  ``frozen``/``full`` :class:`~hyperkd.models.heads.PixelCNNHead` (1x1 spectral reduction,
  two 3x3 layers), the control the paper's protocol had;
* **untrained encoder**: the student's architecture with random weights (``init="random"``
  in :func:`hyperkd.evaluation.finetune.finetune`), fine-tuned exactly as a trained one.

Build one from plain arguments with :meth:`PixelModel.build` (a bound task, an encoder or a
sensor); :class:`hyperkd.training.finetune.FinetuneModule` trains it.

The MAE decoder is not kept: only the encoder's weights are saved.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hyperkd.core.errors import HyperKDError, WeightsError
from hyperkd.core.sensors import Sensor
from hyperkd.evaluation.tasks import Task, task_from_dict
from hyperkd.hub import HyperKDHubMixin
from hyperkd.models.anymae import student_from_config
from hyperkd.models.heads import (
    FUSIONS,
    FusedHead,
    LinearHead,
    PixelCNNHead,
    PixelLinearHead,
    TokenCNNHead,
    UPerNetHead,
    recompute_batchnorm,
)
from hyperkd.models.mae import HyperspectralMAE

MODEL_TYPE = "hyperkd-pixel"
FORMAT_VERSION = 1
PROTOCOLS = ("fused", "fused-full", "upernet", "frozen", "linear", "full")
"""Every protocol :class:`PixelModel` builds (the first is the default)."""
DEFAULT_PROTOCOL = "fused"
DEFAULT_FUSION = FUSIONS[0]
PIXEL_PROTOCOLS = ("fused", "fused-full", "upernet")
"""Protocols whose head reads the pixel spectra next to the encoder's features."""
CROP_PROTOCOLS = ("fused", "fused-full")
"""Protocols whose head (:class:`~hyperkd.models.heads.FusedHead`) can train on crops of the chips."""
TRAIN_ENCODER = ("full", "fused-full")
"""Protocols that train the encoder (at ``lr * encoder_lr_scale``)."""


def check_protocol(protocol: str) -> str:
    """``protocol`` if known, else a :class:`HyperKDError` listing the choices."""
    if protocol not in PROTOCOLS:
        raise HyperKDError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    return protocol


def check_fusion(fusion: str) -> str:
    """``fusion`` if known (:data:`~hyperkd.models.heads.FUSIONS`), else a one-line :class:`HyperKDError`."""
    if fusion not in FUSIONS:
        raise HyperKDError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    return fusion


def default_layers(protocol: str, depth: int, n: int = 4) -> tuple[int, ...]:
    """Encoder blocks a protocol reads by default: the last for the token protocols; for the
    pixel-resolution ones ``min(n, depth)`` blocks spread evenly over the depth, ending with
    the last (depth 4 -> 0,1,2,3; depth 12 -> 2,5,8,11)."""
    if protocol not in PIXEL_PROTOCOLS:
        return (-1,)
    k = max(min(n, depth), 1)
    return tuple(sorted({max(round((i + 1) * depth / k) - 1, 0) for i in range(k)}))


def strip_decoder(mae: HyperspectralMAE) -> HyperspectralMAE:
    """Drop the MAE decoder in place (fine-tuning only uses the encoder); returns ``mae``."""
    mae.decoder_embed = nn.Identity()
    mae.decoder_blocks = nn.ModuleList()
    mae.decoder_norm = nn.Identity()
    mae.decoder_pred = nn.Identity()
    del mae.mask_token
    mae.register_parameter("mask_token", None)
    if "decoder_pos_embed" in mae._buffers:
        del mae._buffers["decoder_pos_embed"]
    return mae


class PixelModel(nn.Module, HyperKDHubMixin, model_type=MODEL_TYPE):
    """Encoder (or raw spectra) + head for one task; built from a JSON-able ``config``.

    ``config`` keys: ``task`` (:meth:`Task.to_dict`), ``protocol``, ``encoder`` (the
    student's ``HyperspectralMAE`` config, or ``None`` for raw spectra), ``sensor`` (band
    table with the mean/std that standardise raw spectra; the encoder has its own),
    ``img_size``, ``layers`` (encoder blocks whose tokens are concatenated; a saved config
    without it means the last), ``hidden`` (head width: the token heads' at token
    resolution; the pixel-resolution heads use half of it, at least 32), ``fusion`` (how
    :class:`~hyperkd.models.heads.FusedHead` joins encoder features: ``residual``, or
    ``concat`` when absent, as in configs saved before it existed), and provenance
    (``student``, ``init``) that does not affect the weights.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = json.loads(json.dumps(dict(config)))  # a private, JSON-clean copy
        cfg = self.config
        self.task: Task = task_from_dict(cfg["task"])
        self.protocol = check_protocol(str(cfg.get("protocol", "frozen")))
        self.img_size = int(cfg["img_size"])
        self.layers = tuple(int(i) for i in cfg.get("layers", (-1,)))
        hidden = int(cfg.get("hidden", 128))
        width = max(hidden // 2, 32)  # pixel-resolution heads
        k = self.task.out_channels
        self.encoder: HyperspectralMAE | None
        if cfg.get("encoder") is not None:
            self.encoder = strip_decoder(student_from_config(cfg["encoder"]))
            self.sensor = self.encoder.sensor
            enc = self.encoder
            dim = enc.embed_dim * len(self.layers)
            if self.protocol == "upernet":  # levels go shallow -> deep
                self.layers = tuple(sorted(self.layers, key=lambda i: i % enc.depth))
                self.head: nn.Module = UPerNetHead(
                    enc.in_chans, k, enc.embed_dim, len(self.layers), enc.patch_size, enc.grid[0], width
                )
            elif self.protocol in PIXEL_PROTOCOLS:
                self.head = FusedHead(enc.in_chans, k, dim, width, fusion=str(cfg.get("fusion", "concat")))
            elif self.protocol == "linear":
                self.head = LinearHead(dim, k)
            else:
                self.head = TokenCNNHead(dim, k, enc.patch_size, hidden)
            if self.protocol not in TRAIN_ENCODER:
                enc.requires_grad_(False)
                enc.eval()
        else:
            self.encoder = None
            self.sensor = Sensor.from_dict(cfg["sensor"])
            c = self.sensor.num_bands
            self.register_buffer("band_mean", torch.tensor(self.sensor.means or [0.0] * c).view(1, c, 1, 1))
            self.register_buffer("band_std", torch.tensor(self.sensor.stds or [1.0] * c).view(1, c, 1, 1))
            if self.protocol == "upernet":
                self.head = UPerNetHead(c, k, width=width)
            elif self.protocol in PIXEL_PROTOCOLS:
                self.head = FusedHead(c, k, 0, width)  # the same head, without encoder features
            elif self.protocol == "linear":
                self.head = PixelLinearHead(c, k)
            else:
                # width at pixel resolution = the token head's width there (>= 32): comparable compute
                self.head = PixelCNNHead(c, k, max(hidden // 4, 32))

    @classmethod
    def build(
        cls,
        task: Task,
        *,
        encoder: HyperspectralMAE | None = None,
        sensor: Sensor | None = None,
        img_size: int | None = None,
        protocol: str = DEFAULT_PROTOCOL,
        layers: Sequence[int] | int | None = None,
        hidden: int = 128,
        fusion: str = DEFAULT_FUSION,
        student: str | None = None,
        init: str | None = None,
    ) -> PixelModel:
        """A model for a *bound* ``task`` from plain arguments (the notebook way to make one).

        With ``encoder`` (a student MAE) the head reads its features and its weights are
        copied (decoder left out); without one the head reads ``sensor``'s standardised raw
        spectra (``img_size`` required then). ``layers=None``: the protocol's default
        (:func:`default_layers`). ``fusion``: how the fused head joins encoder features
        (:data:`~hyperkd.models.heads.FUSIONS`). ``student``/``init`` only record provenance.
        """
        check_protocol(protocol)
        check_fusion(fusion)
        if encoder is None and (sensor is None or img_size is None):
            raise HyperKDError("a raw-spectra model (no encoder) needs the sensor and img_size of its chips")
        if layers is None:
            layers = default_layers(protocol, encoder.depth) if encoder is not None else (-1,)
        cfg: dict[str, Any] = {
            "task": task.to_dict(),
            "protocol": protocol,
            "img_size": int(img_size if img_size is not None else encoder.img_size),  # type: ignore[union-attr]
            "layers": list(layers_tuple(layers)),
            "hidden": int(hidden),
            "fusion": fusion,
            "encoder": encoder_config(encoder) if encoder is not None else None,
            "sensor": sensor.to_dict() if encoder is None else None,  # type: ignore[union-attr]
            "student": student or ("raw" if encoder is None else f"<{type(encoder).__name__} object>"),
            "init": init or ("none" if encoder is None else "pretrained"),
        }
        model = cls(cfg)
        if encoder is not None:
            state = {
                k: v for k, v in encoder.state_dict().items() if not k.startswith(("decoder", "mask_token"))
            }
            missing, unexpected = model.encoder.load_state_dict(state, strict=False)  # type: ignore[union-attr]
            if missing or unexpected:
                raise WeightsError(
                    f"student weights do not fit its encoder (missing {missing[:3]}, "
                    f"unexpected {unexpected[:3]})"
                )
        return model

    # -- behaviour -----------------------------------------------------------------------------
    @property
    def encoder_frozen(self) -> bool:
        """Whether the encoder's features are fixed (cacheable): every protocol but ``full`` /
        ``fused-full``, or no encoder."""
        return self.encoder is None or self.protocol not in TRAIN_ENCODER

    @property
    def reads_spectra(self) -> bool:
        """Whether the head reads the pixel spectra next to the encoder's features (then
        :meth:`head_forward` needs the image too)."""
        return self.protocol in PIXEL_PROTOCOLS

    @property
    def in_chans(self) -> int:
        return self.sensor.num_bands

    def train(self, mode: bool = True) -> PixelModel:
        super().train(mode)
        if self.encoder is not None and self.protocol not in TRAIN_ENCODER:
            self.encoder.eval()  # a fixed encoder stays in eval mode (no dropout / norm updates)
        return self

    def _check(self, x: Tensor, window: tuple[int, int, int, int] | None = None) -> None:
        size = (
            (self.img_size, self.img_size)
            if window is None
            else (window[1] - window[0], window[3] - window[2])
        )
        if x.ndim != 4 or x.shape[1] != self.in_chans or tuple(x.shape[-2:]) != size:
            raise HyperKDError(
                f"this model expects (B, {self.in_chans}, {self.img_size}, {self.img_size}) reflectance, "
                f"got {tuple(x.shape)}; check the chip size and band selection of the data"
            )

    def spectra(self, x: Tensor, window: tuple[int, int, int, int] | None = None) -> Tensor:
        """Standardised pixel spectra of reflectance ``x`` (the encoder's statistics if there is one);
        ``x`` is the ``window`` ``(y0, y1, x0, x1)`` of the chips if one is given."""
        self._check(x, window)
        if self.encoder is not None:
            return self.encoder.standardize(x)
        return (x - self.band_mean) / self.band_std

    def features(self, x: Tensor) -> Tensor | None:
        """The encoder's part of the head's input, cacheable while the encoder is fixed:
        ``(B, D*len(layers), h, w)`` tokens; without an encoder the standardised spectra
        (token protocols) or ``None`` (pixel-resolution protocols read the spectra themselves)."""
        self._check(x)
        if self.encoder is None:
            return None if self.reads_spectra else self.spectra(x)
        enc = self.encoder
        train = self.protocol in TRAIN_ENCODER
        feats = enc.encode(x, self.layers) if train else enc.forward_features(x, self.layers)
        t = torch.cat(feats, dim=-1)
        gh, gw = enc.grid
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], gh, gw)

    def head_forward(
        self,
        features: Tensor | None,
        x: Tensor | None = None,
        window: tuple[int, int, int, int] | None = None,
    ) -> Tensor:
        """Raw outputs ``(B, K, H, W)`` from :meth:`features` (cached features skip the encoder);
        the pixel-resolution heads also need the reflectance ``x`` of the same chips. With
        ``window`` ``(y0, y1, x0, x1)`` (heads with a :attr:`crop_margin` only), ``x`` is that
        window of the chips and the outputs are the window's."""
        size = (self.img_size, self.img_size)
        if window is not None and self.crop_margin is None:
            raise HyperKDError(f"the {self.protocol!r} head cannot train on crops")
        if self.reads_spectra:
            if x is None:
                raise HyperKDError(f"the {self.protocol!r} head reads the pixel spectra: pass the image too")
            if window is not None:
                return self.head(self.spectra(x, window), features, size, window)
            return self.head(self.spectra(x), features, size)
        return self.head(features, size)

    @property
    def crop_margin(self) -> int | None:
        """Pixels of context the head needs around a training crop for its outputs inside the
        crop to equal the whole chip's (:class:`~hyperkd.models.heads.FusedHead`); ``None``:
        this head trains on whole chips only."""
        return int(self.head.crop_margin) if isinstance(self.head, FusedHead) else None

    def forward(self, x: Tensor) -> Tensor:
        """Raw outputs (logits, or standardised values for regression) ``(B, K, H, W)``."""
        return self.head_forward(self.features(x), x)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """``(B, H, W)`` class ids or values in the label's unit."""
        return self.task.predict(self.forward(x))

    def trainable_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(head parameters, encoder parameters that train)."""
        enc = [p for p in self.encoder.parameters() if p.requires_grad] if self.encoder is not None else []
        return list(self.head.parameters()), enc

    # -- persistence ---------------------------------------------------------------------------
    def hub_config(self) -> dict[str, Any]:
        """``config.json``: hyperkd's fields around this model's config, with the *bound* task
        (its target statistics decide how regression outputs are de-standardised)."""
        cfg = super().hub_config()
        cfg.update({k: v for k, v in self.config.items() if k not in ("model_type", "format_version")})
        cfg["task"] = self.task.to_dict()
        cfg["format_version"] = FORMAT_VERSION
        return cfg

    def save(self, folder: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors`` and a model card into ``folder``
        (:meth:`save_pretrained`: shareable with ``hyperkd hub push``)."""
        folder = Path(folder)
        self.save_pretrained(folder)
        return folder

    @classmethod
    def load(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> PixelModel:
        """Rebuild a saved model (a model folder or a fine-tune run folder)."""
        folder = Path(folder)
        if (folder / "model" / "config.json").exists():
            folder = folder / "model"
        cfg_path = folder / "config.json"
        if not cfg_path.exists():
            raise WeightsError(
                f"{folder} holds no fine-tuned model (no config.json); pass a "
                "`hyperkd finetune` run folder or its model/ folder"
            )
        cfg = json.loads(cfg_path.read_text())
        if cfg.get("model_type") != MODEL_TYPE:
            raise WeightsError(
                f"{cfg_path} describes a {cfg.get('model_type') or 'different'} model, "
                f"not a fine-tuned {MODEL_TYPE} model"
            )
        if int(cfg.get("format_version", 1)) > FORMAT_VERSION:
            raise WeightsError(
                f"{cfg_path}: format version {cfg['format_version']} is newer than this "
                "hyperkd reads; upgrade hyperkd"
            )
        return cls.from_pretrained(str(folder), map_location=str(map_location))


def encoder_config(student: HyperspectralMAE) -> dict[str, Any]:
    """The JSON-able constructor arguments of a student (what rebuilds its architecture)."""
    cfg = getattr(student, "_hub_mixin_config", None)
    if not cfg:
        raise HyperKDError(
            "this student has no recorded config; build it with build_student or "
            "HyperspectralMAE.from_pretrained"
        )
    out = json.loads(json.dumps(cfg, default=lambda o: o.to_dict() if hasattr(o, "to_dict") else str(o)))
    return out


def layers_tuple(layers: Sequence[int] | int) -> tuple[int, ...]:
    """Normalise a ``layers`` argument to a tuple of ints."""
    return (int(layers),) if isinstance(layers, int) else tuple(int(i) for i in layers)


__all__ = [
    "CROP_PROTOCOLS",
    "DEFAULT_PROTOCOL",
    "MODEL_TYPE",
    "PIXEL_PROTOCOLS",
    "PROTOCOLS",
    "TRAIN_ENCODER",
    "FusedHead",
    "LinearHead",
    "PixelCNNHead",
    "PixelLinearHead",
    "PixelModel",
    "TokenCNNHead",
    "UPerNetHead",
    "check_protocol",
    "default_layers",
    "encoder_config",
    "recompute_batchnorm",
    "strip_decoder",
]
