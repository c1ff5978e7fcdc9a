"""A hyperkd student as a TerraTorch backbone: ``import hyperkd.integrations.terratorch``.

Importing this module registers ``hyperkd_mae`` in TerraTorch's backbone registry (its
``terratorch`` source), so a saved student (a model folder, a run folder or a Hub repo, as
:func:`hyperkd.create_model` takes them) goes wherever TerraTorch takes a backbone::

    import hyperkd.integrations.terratorch  # noqa: F401  (registers the backbone)
    from terratorch.models import EncoderDecoderFactory

    model = EncoderDecoderFactory().build_model(
        task="segmentation", backbone="hyperkd_mae", backbone_model="runs/kd",
        decoder="FCNDecoder", num_classes=6,
    )

:class:`HyperKDBackbone` is the student's encoder (its MAE decoder dropped). ``forward`` takes
``(B, bands, H, W)`` surface reflectance (the student's band order, see ``pretrained_cfg`` in
its config.json) and returns one feature map ``(B, embed_dim, H/p, W/p)`` per encoder block,
shallow to deep (the last one after the final norm, as hyperkd's own heads read it);
``out_channels`` lists their widths, which is what TerraTorch's necks and decoders are built
from. Feature maps are images already: use ``SelectIndices`` / ``LearnedInterpolateToPyramidal``
necks as for any ViT, but no ``ReshapeTokensToImage``. H and W may be any multiple of the patch
size (TerraTorch pads inputs to one): the fixed sin-cos positions are computed for the grid.

``terratorch fit/validate/test/predict`` with a YAML config:
``python -m hyperkd.integrations.terratorch fit --config CONFIG.yaml`` (TerraTorch's own CLI,
with the backbone registered first); the plain ``terratorch`` command works too with
``custom_modules_path`` naming a folder whose ``__init__.py`` imports this module.

The student standardises its input with its own per-band mean/std; if a TerraTorch datamodule
already normalises with the same statistics, pass ``standardize=False``
(``backbone_standardize: false``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from hyperkd.core.errors import HyperKDError

try:
    from terratorch.registry import BACKBONE_REGISTRY, TERRATORCH_BACKBONE_REGISTRY
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "hyperkd.integrations.terratorch needs TerraTorch: pip install 'hyperkd[terratorch]'"
    ) from exc

log = logging.getLogger(__name__)

BACKBONE_NAME = "hyperkd_mae"
"""The name the backbone is registered under (``backbone="hyperkd_mae"``)."""


class HyperKDBackbone(nn.Module):
    """The encoder of a hyperkd student, as TerraTorch backbones are: ``forward`` returns a list
    of feature maps, ``out_channels`` their widths.

    ``student``: a :class:`~hyperkd.models.mae.HyperspectralMAE` (its decoder is dropped).
    ``out_indices``: the encoder blocks whose outputs are returned (default: every block).
    ``standardize``: apply the student's per-band mean/std to the input (turn it off only when
    the data are already standardised with the same statistics).
    """

    def __init__(
        self, student: Any, out_indices: Sequence[int] | None = None, standardize: bool = True
    ) -> None:
        super().__init__()
        from hyperkd.models.mae import HyperspectralMAE
        from hyperkd.models.pixel import strip_decoder

        if not isinstance(student, HyperspectralMAE):
            raise HyperKDError(
                f"a hyperkd_mae backbone needs a hyperspectral MAE student, got {type(student).__name__}"
            )
        depth = student.depth
        indices = list(range(depth)) if out_indices is None else [int(i) for i in out_indices]
        bad = [i for i in indices if not -depth <= i < depth]
        if not indices or bad:
            raise HyperKDError(
                f"out_indices {list(out_indices or [])} must name encoder blocks of this student "
                f"(0..{depth - 1}, or negative from the end)"
            )
        self.student = strip_decoder(student)
        self.out_indices = [i % depth for i in indices]
        self.standardize = bool(standardize)
        self.patch_size = student.patch_size
        self.embed_dim = student.embed_dim
        self.in_chans = student.in_chans
        self.out_channels = [student.embed_dim] * len(self.out_indices)
        self._pos: dict[tuple[int, int], Tensor] = {}
        self.train()  # a loaded student is in eval mode; a fresh backbone is in training mode, as others

    @property
    def sensor(self) -> Any:
        """The student's :class:`~hyperkd.core.sensors.Sensor` (band names, wavelengths, statistics)."""
        return self.student.sensor

    def _positions(self, gh: int, gw: int, like: Tensor) -> Tensor:
        """The student's fixed 2-D sin-cos table for a ``gh x gw`` grid (cls row first)."""
        from hyperkd.models.layers import sincos_2d

        if (gh, gw) == tuple(self.student.grid):
            return cast(Tensor, self.student.pos_embed).to(like)
        if (gh, gw) not in self._pos:
            self._pos[(gh, gw)] = sincos_2d(self.embed_dim, gh, gw)
        return self._pos[(gh, gw)].to(like)

    def forward(self, x: Tensor, **kwargs: Any) -> list[Tensor]:
        """``(B, bands, H, W)`` reflectance -> one ``(B, embed_dim, H/p, W/p)`` map per selected block.
        ``kwargs``: what TerraTorch's models pass on to every encoder (unused here)."""
        s = self.student
        p = self.patch_size
        if x.ndim != 4 or x.shape[1] != self.in_chans or x.shape[2] % p or x.shape[3] % p:
            raise HyperKDError(
                f"the hyperkd_mae backbone ({s.sensor.name}) expects (B, {self.in_chans}, H, W) reflectance "
                f"with H and W multiples of {p}, got {tuple(x.shape)}; check the datamodule's bands"
            )
        if self.standardize:
            x = s.standardize(x)
        gh, gw = x.shape[2] // p, x.shape[3] // p
        pos = self._positions(gh, gw, x)
        h = s.patch_embed(x) + pos[:, 1:, :]
        cls = (s.cls_token + pos[:, :1, :]).expand(x.shape[0], -1, -1)
        h = torch.cat([cls, h], dim=1)
        want = set(self.out_indices)
        maps: dict[int, Tensor] = {}
        for i, blk in enumerate(s.blocks[: max(want) + 1]):  # (blocks past the last wanted one: no need)
            h = blk(h)
            if i in want:
                tokens = s.norm(h) if i == s.depth - 1 else h
                maps[i] = tokens[:, 1:].transpose(1, 2).reshape(x.shape[0], self.embed_dim, gh, gw)
        return [maps[i] for i in self.out_indices]


def hyperkd_mae(
    model: str | os.PathLike[str] | None = None,
    out_indices: Sequence[int] | None = None,
    standardize: bool = True,
    pretrained: bool = True,
    **load_options: Any,
) -> HyperKDBackbone:
    """Build the ``hyperkd_mae`` backbone from ``model``: a saved student folder, a run folder or a
    Hub repo (``org/name[@rev]``, ``hf-hub:...``); an architecture name (``enmap-mae-small``)
    builds it untrained. ``load_options`` are :func:`hyperkd.create_model`'s (``revision``,
    ``token``, ``cache_dir``...). ``pretrained=False`` keeps the saved architecture but starts
    from random weights."""
    from hyperkd.models.factory import create_model, resolve_spec
    from hyperkd.models.mae import HyperspectralMAE

    if model is None:
        raise HyperKDError(
            "the hyperkd_mae backbone needs model=FOLDER_OR_REPO (backbone_model: in a TerraTorch "
            "config): a saved student folder, a run folder or a Hugging Face repo id"
        )
    try:  # TerraTorch's registry reports a KeyError raised while building as "model not found"
        spec = resolve_spec(model)
        student = create_model(spec, **load_options)
        if not pretrained and spec.trained and isinstance(student, HyperspectralMAE):
            student = HyperspectralMAE(**getattr(student, "_hub_mixin_config", None) or {})  # built afresh
    except KeyError as exc:
        raise HyperKDError(str(exc)) from None
    return HyperKDBackbone(student, out_indices=out_indices, standardize=standardize)


def register() -> None:
    """Register :func:`hyperkd_mae` in TerraTorch's backbone registry (done on import; idempotent)."""
    if BACKBONE_NAME not in TERRATORCH_BACKBONE_REGISTRY:
        TERRATORCH_BACKBONE_REGISTRY.register(hyperkd_mae)
        log.debug("registered TerraTorch backbone %s", BACKBONE_NAME)


if __name__ != "__main__":  # run as a script, the block at the end imports (and so registers) the module
    register()


def main(args: Sequence[str] | None = None) -> Any:
    """``terratorch`` with the ``hyperkd_mae`` backbone registered:
    ``python -m hyperkd.integrations.terratorch fit --config CONFIG.yaml`` (any TerraTorch
    subcommand and option; ``args`` default to the command line). Returns TerraTorch's
    ``LightningCLI`` (its ``trainer`` and ``model``)."""
    from terratorch.cli_tools import build_lightning_cli

    return build_lightning_cli(list(args) if args is not None else None)


if __name__ == "__main__":
    from hyperkd.integrations.terratorch import main as _main  # the registered module, not __main__

    _main()

__all__ = ["BACKBONE_NAME", "BACKBONE_REGISTRY", "HyperKDBackbone", "hyperkd_mae", "main", "register"]
