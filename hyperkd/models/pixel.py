"""Fine-tuned per-pixel models: an encoder (or none) plus a head, saved as safetensors + config.json.

:class:`PixelModel` is a plain ``nn.Module`` whose whole construction is one JSON-able
config, so it can be saved, shared and rebuilt without pickles (:meth:`PixelModel.save` /
:meth:`PixelModel.load`; ``config.json`` carries ``"model_type": "hyperkd-pixel"``).

Protocols (how the encoder is used):

``frozen`` (the HyperKD paper's)
    encoder weights fixed; a small CNN head (:class:`TokenCNNHead`) reads the token grid,
    upsamples it to pixels in x2 steps with 3x3 convolutions, and predicts per pixel.
``linear``
    encoder fixed; one linear map per token, bilinearly upsampled to pixels
    (:class:`LinearHead`). Linear-then-upsample equals upsample-then-linear (bilinear
    weights sum to one) at a fraction of the cost: a linear probe of upsampled tokens.
``full``
    the CNN head, with the encoder trained too (at a lower learning rate).

Controls for honest comparisons:

* **raw spectra** (``encoder=None``): no encoder at all; the head reads the standardised
  pixel spectra. With ``protocol="linear"`` a per-pixel linear classifier; otherwise
  :class:`PixelCNNHead` (1x1 spectral reduction, two 3x3 layers: a 5x5 px receptive field,
  as wide as the token head is at pixel resolution);
* **untrained encoder**: the student's architecture with random weights (``init="random"``
  in :func:`hyperkd.evaluation.finetune.finetune`), fine-tuned exactly as a trained one.

Build one from plain arguments with :meth:`PixelModel.build` (a bound task, an encoder or a
sensor); :class:`hyperkd.training.finetune.FinetuneModule` trains it.

The MAE decoder is not kept: only the encoder's weights are saved.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hyperkd.core.errors import HyperKDError, WeightsError
from hyperkd.core.sensors import Sensor
from hyperkd.evaluation.tasks import Task, task_from_dict
from hyperkd.hub import HyperKDHubMixin
from hyperkd.models.mae import HyperspectralMAE

MODEL_TYPE = "hyperkd-pixel"
FORMAT_VERSION = 1
PROTOCOLS = ("frozen", "linear", "full")


def _conv_norm_relu(cin: int, cout: int, k: int) -> list[nn.Module]:
    """Conv, BatchNorm, ReLU.

    BatchNorm normalises each channel over the batch's pixels, which turns the small
    differences between neighbouring tokens of a frozen encoder into usable signal (a
    per-sample GroupNorm learnt far more slowly in our tests). Fine-tunes are short,
    so its running statistics are recomputed exactly after training
    (:func:`recompute_batchnorm`) instead of being left as a moving average that is still
    close to its initial values.
    """
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def recompute_batchnorm(model: nn.Module, batches: Iterable[Tensor], forward: Callable[[Tensor], Any]) -> int:
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


class TokenCNNHead(nn.Module):
    """Token grid ``(B, D, h, w)`` -> per-pixel outputs ``(B, K, H, W)``.

    A 3x3 layer at token resolution mixes neighbouring tokens; then ``ceil(log2(patch))``
    stages of (x2 bilinear upsampling, 3x3 conv, BN, ReLU) halve the width down to 32
    channels; a final resize (for patch sizes that are not powers of two) and a 1x1
    classifier.
    """

    def __init__(self, in_dim: int, out_channels: int, patch_size: int, hidden: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = _conv_norm_relu(in_dim, hidden, 3)
        c = hidden
        for _ in range(max(math.ceil(math.log2(patch_size)), 0)):
            nxt = max(c // 2, 32)
            layers += [
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                *_conv_norm_relu(c, nxt, 3),
            ]
            c = nxt
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(c, out_channels, 1)

    def forward(self, tokens: Tensor, size: tuple[int, int]) -> Tensor:
        x = self.body(tokens)
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.classifier(x)


class LinearHead(nn.Module):
    """Linear probe: ``(B, D, h, w)`` -> 1x1 linear map -> bilinear upsampling to ``size``."""

    def __init__(self, in_dim: int, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Conv2d(in_dim, out_channels, 1)

    def forward(self, tokens: Tensor, size: tuple[int, int]) -> Tensor:
        return F.interpolate(self.linear(tokens), size=size, mode="bilinear", align_corners=False)


class PixelCNNHead(nn.Module):
    """Raw-spectra baseline: ``(B, C, H, W)`` standardised spectra -> ``(B, K, H, W)``.

    1x1 spectral reduction to ``hidden`` channels, two 3x3 layers (5x5 px receptive field),
    1x1 classifier. :class:`PixelModel` gives it the width the token head has at pixel
    resolution (32 by default), so the control does not win by spending more compute at
    full resolution than the encoder heads do.
    """

    def __init__(self, in_chans: int, out_channels: int, hidden: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_norm_relu(in_chans, hidden, 1),
            *_conv_norm_relu(hidden, hidden, 3),
            *_conv_norm_relu(hidden, hidden, 3),
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
    ``img_size``, ``layers`` (encoder layers whose tokens are concatenated), ``hidden``
    (head width), and provenance (``student``, ``init``) that does not affect the weights.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.config = json.loads(json.dumps(dict(config)))  # a private, JSON-clean copy
        cfg = self.config
        self.task: Task = task_from_dict(cfg["task"])
        self.protocol = str(cfg.get("protocol", "frozen"))
        if self.protocol not in PROTOCOLS:
            raise HyperKDError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        self.img_size = int(cfg["img_size"])
        self.layers = tuple(int(i) for i in cfg.get("layers", (-1,)))
        hidden = int(cfg.get("hidden", 128))
        k = self.task.out_channels
        self.encoder: HyperspectralMAE | None
        if cfg.get("encoder") is not None:
            self.encoder = strip_decoder(HyperspectralMAE(**cfg["encoder"]))
            self.sensor = self.encoder.sensor
            dim = self.encoder.embed_dim * len(self.layers)
            if self.protocol == "linear":
                self.head: nn.Module = LinearHead(dim, k)
            else:
                self.head = TokenCNNHead(dim, k, self.encoder.patch_size, hidden)
            if self.protocol != "full":
                self.encoder.requires_grad_(False)
                self.encoder.eval()
        else:
            self.encoder = None
            self.sensor = Sensor.from_dict(cfg["sensor"])
            c = self.sensor.num_bands
            self.register_buffer("band_mean", torch.tensor(self.sensor.means or [0.0] * c).view(1, c, 1, 1))
            self.register_buffer("band_std", torch.tensor(self.sensor.stds or [1.0] * c).view(1, c, 1, 1))
            # width at pixel resolution = the token head's width there (>= 32): comparable compute
            self.head = (
                PixelLinearHead(c, k)
                if self.protocol == "linear"
                else PixelCNNHead(c, k, max(hidden // 4, 32))
            )

    @classmethod
    def build(
        cls,
        task: Task,
        *,
        encoder: HyperspectralMAE | None = None,
        sensor: Sensor | None = None,
        img_size: int | None = None,
        protocol: str = "frozen",
        layers: Sequence[int] | int = (-1,),
        hidden: int = 128,
        student: str | None = None,
        init: str | None = None,
    ) -> PixelModel:
        """A model for a *bound* ``task`` from plain arguments (the notebook way to make one).

        With ``encoder`` (a student MAE) the head reads its tokens and its weights are copied
        (decoder left out); without one the head reads ``sensor``'s standardised raw spectra
        (``img_size`` required then). ``student``/``init`` only record provenance.
        """
        if protocol not in PROTOCOLS:
            raise HyperKDError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        if encoder is None and (sensor is None or img_size is None):
            raise HyperKDError("a raw-spectra model (no encoder) needs the sensor and img_size of its chips")
        cfg: dict[str, Any] = {
            "task": task.to_dict(),
            "protocol": protocol,
            "img_size": int(img_size if img_size is not None else encoder.img_size),  # type: ignore[union-attr]
            "layers": list(layers_tuple(layers)),
            "hidden": int(hidden),
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
        """Whether the encoder's features are fixed (cacheable): frozen / linear, or no encoder."""
        return self.encoder is None or self.protocol != "full"

    @property
    def in_chans(self) -> int:
        return self.sensor.num_bands

    def train(self, mode: bool = True) -> PixelModel:
        super().train(mode)
        if self.encoder is not None and self.protocol != "full":
            self.encoder.eval()  # a fixed encoder stays in eval mode (no dropout / norm updates)
        return self

    def features(self, x: Tensor) -> Tensor:
        """What the head reads: ``(B, D*len(layers), h, w)`` tokens, or standardised spectra."""
        if (
            x.ndim != 4
            or x.shape[1] != self.in_chans
            or tuple(x.shape[-2:]) != (self.img_size, self.img_size)
        ):
            raise HyperKDError(
                f"this model expects (B, {self.in_chans}, {self.img_size}, {self.img_size}) reflectance, "
                f"got {tuple(x.shape)}; check the chip size and band selection of the data"
            )
        if self.encoder is None:
            return (x - self.band_mean) / self.band_std
        enc = self.encoder
        feats = (
            enc.encode(x, self.layers) if self.protocol == "full" else enc.forward_features(x, self.layers)
        )
        t = torch.cat(feats, dim=-1)
        gh, gw = enc.grid
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], gh, gw)

    def head_forward(self, features: Tensor) -> Tensor:
        """Raw outputs ``(B, K, H, W)`` from :meth:`features` (cached features skip the encoder)."""
        return self.head(features, (self.img_size, self.img_size))

    def forward(self, x: Tensor) -> Tensor:
        """Raw outputs (logits, or standardised values for regression) ``(B, K, H, W)``."""
        return self.head_forward(self.features(x))

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
    "MODEL_TYPE",
    "PROTOCOLS",
    "LinearHead",
    "PixelCNNHead",
    "PixelLinearHead",
    "PixelModel",
    "TokenCNNHead",
    "encoder_config",
    "recompute_batchnorm",
    "strip_decoder",
]
