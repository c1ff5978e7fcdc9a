"""Registered Prithvi-EO teachers: frozen encoders that take surface reflectance.

Names (``hyperkd.create("teacher", NAME, ...)``):

========================  ======  =====  =====  =====  ======  ============================
name                      embed   depth  heads  patch  frames  weights
========================  ======  =====  =====  =====  ======  ============================
prithvi-eo-1.0-100m       768     12     12     16     3       ibm-nasa-geospatial/Prithvi-EO-1.0-100M
(alias ``prithvi``, the HyperKD paper's teacher)
prithvi-eo-2.0-300m       1024    24     16     16     4       .../Prithvi-EO-2.0-300M
prithvi-eo-2.0-300m-tl    1024    24     16     16     4       .../Prithvi-EO-2.0-300M-TL
prithvi-eo-2.0-600m       1280    32     16     14     4       .../Prithvi-EO-2.0-600M
prithvi-eo-2.0-600m-tl    1280    32     16     14     4       .../Prithvi-EO-2.0-600M-TL
prithvi-eo-tiny           64      2      4      16     1       none: random init (tests, CPU demos)
prithvi-tiny-synth        128     4      4      4      1       packaged (assets/, trained by hyperkd)
========================  ======  =====  =====  =====  ======  ============================

``prithvi-eo-tiny`` has the Prithvi architecture at toy widths. It is **not** a NASA/IBM
model and has no official weights; it exists so tests and CPU demos can exercise the exact
code path of the real teachers in seconds. ``prithvi-tiny-synth`` is the same architecture
trained by ``hyperkd teacher pretrain`` on synthetic HLS scenes; its weights ship inside
the package (``hyperkd_prithvi/assets/prithvi-tiny-synth/``, with a model card saying how
they were made), so it works offline. It is not NASA/IBM's Prithvi either.

Factory keywords: ``weights`` (``"default"`` = official file through the HF cache; ``None`` =
random init, the random-teacher control; or a file / folder / ``org/name[@rev][/file]``),
``layers`` (blocks :meth:`PrithviTeacher.forward_features` returns by default),
``keep_decoder`` (keep the MAE decoder after loading; default False saves its memory), and
any :class:`~hyperkd_prithvi.model.PrithviConfig` field as an architecture override
(``img_size``, ``num_frames``, ``embed_dim``, ``depth``, ``num_heads``,
``decoder_embed_dim``, ``decoder_depth``, ``decoder_num_heads``, ``patch_size``,
``pos_embed_mode``, ...).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hyperkd.core.errors import WeightsError
from hyperkd.core.interfaces import Teacher
from hyperkd.core.registry import register
from hyperkd.core.sensors import Sensor, get_sensor
from hyperkd_prithvi import TEACHERS
from hyperkd_prithvi.model import (
    MAEDecoder,
    PrithviConfig,
    PrithviMAE,
    PrithviViT,
    build_mae,
    count_parameters,
    normalise_layers,
)
from hyperkd_prithvi.weights import load_weights

WeightsSpec = str | os.PathLike[str] | None

HLS_SCALE = 10000.0
"""HLS digital numbers are surface reflectance times this (as in ``hyperkd_prithvi.sensor``)."""


@lru_cache(maxsize=1)
def prithvi_reference() -> dict[str, Any]:
    """The Prithvi constants shipped with the plugin (``data/prithvi.json``).

    Read here rather than imported from ``hyperkd_prithvi.sensor``: that module registers the
    ``hls`` sensor when imported, and importing it outside the plugin hook would attribute
    the sensor to the wrong provider.
    """
    text = resources.files("hyperkd_prithvi").joinpath("data/prithvi.json").read_text()
    return json.loads(text)


@dataclass(frozen=True)
class PrithviVariant:
    """A named Prithvi-EO configuration plus its normalisation and official weights."""

    name: str
    config: PrithviConfig
    mean: tuple[float, ...]
    std: tuple[float, ...]
    stats: str
    repo_id: str | None
    filename: str | None
    description: str
    default_weights: str | None = "default"
    asset: str | None = None
    """Folder under ``hyperkd_prithvi/assets/`` whose weights ``weights="default"`` loads
    (a packaged teacher); ``None``: the default is the Hugging Face file (or random init)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (``hyperkd teachers show --json``)."""
        return {
            "name": self.name,
            "description": self.description,
            "config": self.config.to_dict(),
            "mean_dn": list(self.mean),
            "std_dn": list(self.std),
            "stats": self.stats,
            "repo_id": self.repo_id,
            "filename": self.filename,
            "default_weights": self.default_weights_text(),
        }

    def default_weights_text(self) -> str:
        """Where ``weights="default"`` comes from, in words."""
        if self.asset:
            return f"packaged: hyperkd_prithvi/assets/{self.asset}"
        return f"{self.repo_id} / {self.filename}" if self.default_weights == "default" else "random init"


def _variants() -> dict[str, PrithviVariant]:
    ref = prithvi_reference()
    v1, v2 = ref["v1"], ref["v2"]
    decoder = {k: v1[k] for k in ("decoder_embed_dim", "decoder_depth", "decoder_num_heads")}
    out = {
        "prithvi-eo-1.0-100m": PrithviVariant(
            name="prithvi-eo-1.0-100m",
            config=PrithviConfig(
                img_size=v1["img_size"],
                patch_size=tuple(v1["patch_size"]),
                num_frames=v1["num_frames"],
                in_chans=v1["in_chans"],
                embed_dim=v1["embed_dim"],
                depth=v1["depth"],
                num_heads=v1["num_heads"],
                mlp_ratio=v1["mlp_ratio"],
                mask_ratio=v1["mask_ratio"],
                **decoder,
            ),
            mean=tuple(v1["mean"]),
            std=tuple(v1["std"]),
            stats="v1",
            repo_id=v1["repo_id"],
            filename=v1["filename"],
            description="Prithvi-EO-1.0-100M (NASA/IBM; ViT-B/16, 3 frames): the HyperKD paper's teacher",
        )
    }
    for name, v in v2["variants"].items():
        coords = ("time", "location") if v["coords"] else ()
        size = name.removeprefix("prithvi-eo-2.0-").upper()
        out[name] = PrithviVariant(
            name=name,
            config=PrithviConfig(
                img_size=v1["img_size"],
                patch_size=tuple(v["patch_size"]),
                num_frames=v["num_frames"],
                in_chans=v1["in_chans"],
                embed_dim=v["embed_dim"],
                depth=v["depth"],
                num_heads=v["num_heads"],
                mlp_ratio=v1["mlp_ratio"],
                mask_ratio=v1["mask_ratio"],
                coords_encoding=coords,
                coords_scale_learn=bool(v["coords"]),
                **decoder,
            ),
            mean=tuple(float(m) for m in v2["mean"]),
            std=tuple(float(s) for s in v2["std"]),
            stats="v2",
            repo_id=v["repo_id"],
            filename=v["filename"],
            description=f"Prithvi-EO-2.0-{size} (NASA/IBM; patch {v['patch_size'][1]}, "
            f"{v['embed_dim']} wide, {v['depth']} blocks"
            + (", temporal + location encoders)" if v["coords"] else ")"),
        )
    out["prithvi-eo-tiny"] = PrithviVariant(
        name="prithvi-eo-tiny",
        config=PrithviConfig(
            img_size=32,
            patch_size=(1, 16, 16),
            num_frames=1,
            in_chans=6,
            embed_dim=64,
            depth=2,
            num_heads=4,
            decoder_embed_dim=32,
            decoder_depth=1,
            decoder_num_heads=4,
        ),
        mean=tuple(v1["mean"]),
        std=tuple(v1["std"]),
        stats="v1",
        repo_id=None,
        filename=None,
        default_weights=None,
        description="tiny Prithvi-architecture teacher for tests and CPU demos; NOT NASA/IBM weights "
        "(random init unless given a checkpoint)",
    )
    for name, description in PACKAGED.items():
        path = asset_dir(name) / CONFIG_JSON
        if not path.is_file():  # pragma: no cover - a broken install; tests check the asset ships
            continue
        cfg = json.loads(path.read_text())
        out[name] = PrithviVariant(
            name=name,
            config=PrithviConfig.from_dict(cfg["architecture"]),
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
            stats=cfg["stats"],
            repo_id=None,
            filename=None,
            asset=name,
            description=description,
        )
    return out


CONFIG_JSON = "config.json"
PACKAGED: dict[str, str] = {
    "prithvi-tiny-synth": "small Prithvi-architecture teacher trained by hyperkd on synthetic HLS scenes, "
    "weights packaged (offline); NOT NASA/IBM weights",
}
"""Teachers whose weights ship in ``hyperkd_prithvi/assets/NAME/`` (config.json, model.safetensors
and a README.md model card), by name, with their one-line descriptions."""


def asset_dir(name: str) -> Path:
    """The packaged folder of teacher ``name`` (a real folder: the package is installed unzipped)."""
    return Path(str(resources.files("hyperkd_prithvi").joinpath("assets", name)))


VARIANTS: dict[str, PrithviVariant] = _variants()
"""Every built-in Prithvi variant by registry name."""


class PrithviTeacher(Teacher):
    """A frozen Prithvi-EO encoder that takes surface reflectance.

    :meth:`forward_features` takes ``(B, 6, H, W)`` (or ``(B, 6, T, H, W)``) surface
    reflectance in HLS band order B02..B07, converts it to HLS digital numbers (x 10000),
    applies the variant's own mean/std (v1 or v2 statistics) and runs the encoder.
    ``H`` and ``W`` must be multiples of the patch size (16, or 14 for the 600M models).
    """

    input_unit = "reflectance"

    def __init__(
        self,
        variant: PrithviVariant,
        encoder: PrithviViT,
        decoder: MAEDecoder | None = None,
        *,
        layers: Sequence[int] | int | None = None,
        weights_info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.variant = variant
        self.config = encoder.cfg
        self.encoder = encoder
        self.decoder = decoder
        self.embed_dim = self.config.embed_dim
        self.patch_size = self.config.patch_size[1]
        self.depth = self.config.depth
        self.layers = normalise_layers(layers, self.depth)
        self.weights_info = dict(weights_info or {"source": "random init"})
        self.sensor = _sensor_with_stats(variant)
        mean = torch.tensor(variant.mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
        std = torch.tensor(variant.std, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self.register_buffer("mean_dn", mean, persistent=False)
        self.register_buffer("std_dn", std, persistent=False)
        self._frozen = False

    # -- frozen by default ---------------------------------------------------------------------
    def freeze(self) -> PrithviTeacher:
        """Eval mode and no gradients; later ``.train()`` calls keep it in eval mode."""
        super().freeze()
        self._frozen = True
        return self

    def unfreeze(self) -> PrithviTeacher:
        """Undo :meth:`freeze` (for fine-tuning experiments; distillation never needs it)."""
        self._frozen = False
        for p in self.parameters():
            p.requires_grad_(True)
        return self

    def train(self, mode: bool = True) -> PrithviTeacher:
        """Respect the freeze: a frozen teacher stays in eval mode (e.g. under Lightning)."""
        return super().train(mode and not self._frozen)

    # -- features -------------------------------------------------------------------------------
    def normalize(self, x: Tensor) -> Tensor:
        """Reflectance ``(B, 6, [T,] H, W)`` -> Prithvi's normalised HLS DN, 5-D."""
        if x.ndim == 4:
            x = x.unsqueeze(2)
        if x.ndim != 5 or x.shape[1] != self.config.in_chans:
            raise ValueError(
                f"{self.variant.name} expects (B, {self.config.in_chans}, H, W) reflectance in HLS band order "
                f"{', '.join(self.sensor.band_names)}; got shape {tuple(x.shape)}"
            )
        return (x * HLS_SCALE - self.mean_dn.to(x.dtype)) / self.std_dn.to(x.dtype)

    def forward_features(
        self,
        x: Tensor,
        layers: Sequence[int] | int | None = None,
        *,
        with_cls: bool = False,
        temporal_coords: Tensor | None = None,
        location_coords: Tensor | None = None,
    ) -> list[Tensor]:
        """Token features of the chosen blocks, one tensor per layer.

        ``x``: ``(B, 6, H, W)`` reflectance (``T = 1``) or ``(B, 6, T, H, W)``. ``layers``:
        block indices, negative from the end (default: the teacher's ``layers``, normally
        ``[-1]``). The last block's output is taken after the final LayerNorm; earlier
        blocks' outputs are the raw residual stream (as in the reference code).

        Returns ``(B, N, D)`` tensors with ``N = T * (H/p) * (W/p)`` patch tokens in
        ``(t, h, w)`` row-major order — for ``T = 1`` simply ``(h, w)`` — or
        ``(B, 1 + N, D)`` with the cls token first when ``with_cls=True``. -TL variants
        accept ``temporal_coords (B, T, 2)`` = (year, day-of-year) and ``location_coords
        (B, 2)`` = (lat, lon); without them those encodings are left out, which the models
        were pretrained to handle.
        """
        idx = self.layers if layers is None else normalise_layers(layers, self.depth)
        feats = self.encoder.forward_features(
            self.normalize(x), idx, temporal_coords=temporal_coords, location_coords=location_coords
        )
        return feats if with_cls else [f[:, 1:, :] for f in feats]

    def forward(self, x: Tensor) -> Tensor:
        """Patch-token features of the teacher's first default layer, ``(B, N, D)``."""
        return self.forward_features(x)[0]

    def mae_loss(self, x: Tensor, mask_ratio: float = 0.75) -> Tensor:
        """Prithvi's own MAE objective on reflectance ``x`` (needs ``keep_decoder=True``).

        Same computation as :meth:`PrithviMAE.forward`: random masking, MSE over masked
        patches of the normalised input (per-patch normalised if ``norm_pix_loss``).
        """
        if self.decoder is None:
            raise WeightsError(f"{self.variant.name}: built without its decoder; pass keep_decoder=True")
        x5 = self.normalize(x)
        grid = self.encoder.grid_of(x5)
        latent, mask, ids_restore = self.encoder(x5, None, None, mask_ratio)
        pred = self.decoder(latent, ids_restore, grid)
        b, c, t, h, w = x5.shape
        s, p, q = self.config.patch_size
        target = x5.reshape(b, c, t // s, s, h // p, p, w // q, q).permute(0, 2, 4, 6, 3, 5, 7, 1)
        target = target.reshape(b, -1, s * p * q * c)
        if self.config.norm_pix_loss:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum().clamp_min(1.0)

    def save_weights(self, path: str) -> None:
        """Write encoder (+ decoder) in the official ``encoder.``/``decoder.`` key layout as
        safetensors, atomically; ``weights=path`` with the same architecture loads it back."""
        from safetensors.torch import save_file

        from hyperkd.core.io import atomic_path

        state = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        if self.decoder is not None:
            state.update({f"decoder.{k}": v for k, v in self.decoder.state_dict().items()})
        state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "variant": self.variant.name})

    def folder_config(self, source: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``config.json`` of a folder holding this teacher's :meth:`save_weights` file:
        its variant, full architecture (factory overrides that rebuild it), bands and
        normalisation (what ``hyperkd teacher pretrain`` writes, see :func:`folder_config`)."""
        return folder_config(self.variant, self.config, source or dict(self.weights_info))

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Token grid ``(h, w)`` of an ``H x W`` input."""
        return (height // self.config.patch_size[1], width // self.config.patch_size[2])

    def num_parameters(self) -> int:
        """Parameters held (encoder, plus decoder if kept)."""
        return count_parameters(self)

    def extra_repr(self) -> str:
        return f"variant={self.variant.name!r}, weights={self.weights_info.get('source')!r}, layers={self.layers}"


def _sensor_with_stats(variant: PrithviVariant) -> Sensor:
    """The ``hls`` sensor carrying this variant's own mean/std (reflectance units)."""
    hls = get_sensor("hls", selection="all")
    bands = tuple(
        replace(b, mean=m / HLS_SCALE, std=s / HLS_SCALE)
        for b, m, s in zip(hls.bands, variant.mean, variant.std, strict=True)
    )
    return replace(hls, bands=bands, source=f"{hls.source}; mean/std: Prithvi {variant.stats} statistics")


FOLDER_FORMAT = 1
"""Version of the teacher folder's ``config.json`` (``hyperkd_format``)."""


def folder_config(variant: PrithviVariant, cfg: PrithviConfig, source: dict[str, Any]) -> dict[str, Any]:
    """``config.json`` of a teacher folder (``hyperkd convert prithvi``, ``hyperkd teacher
    pretrain``): variant, architecture ``cfg``, bands, normalisation, parameter counts and
    ``source`` (where the weights came from). ``pretrained_cfg`` repeats the fields under the
    names of the official config.json, for other tools."""
    ref = prithvi_reference()
    mae = build_mae(cfg, device="meta")
    enc, dec = count_parameters(mae.encoder), count_parameters(mae.decoder)
    pretrained_cfg = {
        **{k: v for k, v in cfg.to_dict().items() if k not in ("norm_eps", "pos_embed_mode")},
        "bands": list(ref["bands"]),
        "mean": list(variant.mean),
        "std": list(variant.std),
    }
    return {
        "hyperkd_format": FOLDER_FORMAT,
        "family": "prithvi-eo",
        "variant": variant.name,
        "architecture": cfg.to_dict(),
        "pretrained_cfg": pretrained_cfg,
        "bands": list(ref["bands"]),
        "band_names": list(ref["band_names"]),
        "mean": list(variant.mean),
        "std": list(variant.std),
        "stats": variant.stats,
        "input_unit": "HLS digital numbers (surface reflectance x 10000); hyperkd teachers take "
        "reflectance and scale it themselves",
        "key_layout": "prefixed (encoder./decoder.)",
        "num_parameters": {"encoder": enc, "decoder": dec, "total": enc + dec},
        "source": source,
    }


def variant_config(name: str, **overrides: Any) -> PrithviConfig:
    """The configuration of a variant with architecture overrides applied (validated)."""
    cfg = VARIANTS[name].config
    if not overrides:
        return cfg
    try:
        return cfg.replace(**overrides)
    except TypeError as exc:
        raise TypeError(f"{name}: unknown architecture override ({exc})") from None


def build_teacher(
    name: str,
    *,
    weights: WeightsSpec = "default",
    layers: Sequence[int] | int | None = None,
    keep_decoder: bool = False,
    frozen: bool = True,
    **overrides: Any,
) -> PrithviTeacher:
    """Build variant ``name`` with ``weights`` loaded strictly (see module docs).

    Why the whole MAE is built and loaded even though only the encoder is used: a strict
    load of the full official checkpoint proves every tensor in the file was understood.
    The decoder is dropped afterwards unless ``keep_decoder``.
    """
    variant = VARIANTS[name]
    cfg = variant_config(name, **overrides)
    info: dict[str, Any] = {"source": "random init"}
    packaged = variant.asset is not None and weights is not None and str(weights) == "default"
    if packaged:
        assert variant.asset is not None
        weights = asset_dir(variant.asset)
    if weights is None:
        mae: PrithviMAE = build_mae(cfg)
    else:
        # Built on the meta device and filled from the file (assign): no time is spent on a
        # random init that the weights would overwrite, and nothing is allocated before the
        # file has been found and read.
        mae = build_mae(cfg, device="meta")
        try:
            info = load_weights(
                mae, weights, official_repo=variant.repo_id, official_filename=variant.filename, variant=name
            )
        except WeightsError as exc:
            if overrides and str(weights) == "default":
                shape = set(overrides) & set(cfg.shape_fields())
                if shape:
                    raise WeightsError(
                        f"{exc}. Note: architecture overrides {sorted(shape)} change parameter shapes, "
                        "so the official weights cannot fit; pass weights=None or a matching checkpoint"
                    ) from exc
            raise
        if packaged:
            info["source"] = f"packaged {name} ({info['path']})"
    teacher = PrithviTeacher(
        variant, mae.encoder, mae.decoder if keep_decoder else None, layers=layers, weights_info=info
    )
    return teacher.freeze() if frozen else teacher


def _factory(name: str) -> Any:
    variant = VARIANTS[name]
    default = variant.default_weights

    def factory(
        weights: WeightsSpec = default,
        layers: Sequence[int] | int | None = None,
        keep_decoder: bool = False,
        frozen: bool = True,
        **overrides: Any,
    ) -> PrithviTeacher:
        return build_teacher(
            name, weights=weights, layers=layers, keep_decoder=keep_decoder, frozen=frozen, **overrides
        )

    factory.__name__ = name.replace("-", "_").replace(".", "_")
    factory.__qualname__ = factory.__name__
    factory.__doc__ = variant.description
    return factory


def register_teachers() -> None:
    """Register every variant (run once, on import: it fills the teachers the plugin declares
    in ``hyperkd_prithvi.TEACHERS``, with their aliases)."""
    for name, variant in VARIANTS.items():
        register(
            "teacher",
            name,
            aliases=TEACHERS.get(name, ()),
            description=variant.description,
            family="prithvi-eo",
        )(_factory(name))


def parameter_counts(name: str, **overrides: Any) -> dict[str, int]:
    """Encoder / decoder / total parameter counts of a variant, computed on the meta device."""
    mae = build_mae(variant_config(name, **overrides), device="meta")
    enc, dec = count_parameters(mae.encoder), count_parameters(mae.decoder)
    return {"encoder": enc, "decoder": dec, "total": enc + dec}


register_teachers()
