"""The contracts each kind of component fulfils.

Implementations live in plugins (``plugins/``) or in the core's built-in modules and are
registered by name (see :mod:`hyperkd.core.registry`). Tensors follow one convention:
images are ``(B, C, H, W)`` **surface reflectance** (float, 0..~1), in the band order of
the component's :class:`~hyperkd.core.sensors.Sensor`; token features are ``(B, N, D)`` with
patch tokens in row-major (h, w) order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hyperkd.core.sensors import Sensor


class Teacher(nn.Module, ABC):
    """A frozen pretrained encoder for one sensor.

    ``input_unit`` says what :meth:`forward_features` expects; hyperkd teachers take
    ``"reflectance"`` and apply their own normalisation (e.g. Prithvi's HLS DN mean/std),
    so an aligner can hand them surface reflectance from any sensor.
    """

    sensor: Sensor
    input_unit: str = "reflectance"
    embed_dim: int
    patch_size: int
    depth: int

    @abstractmethod
    def forward_features(
        self, x: Tensor, layers: Sequence[int] | None = None, *, with_cls: bool = False
    ) -> list[Tensor]:
        """Token features of the chosen blocks (default: the last, after the final norm).

        ``x`` is ``(B, C, H, W)`` reflectance in ``self.sensor``'s band order. Returns one
        ``(B, N(+1), D)`` tensor per requested layer; negative layer indices count from the end.
        """

    def mae_loss(self, x: Tensor, mask_ratio: float = 0.75) -> Tensor:
        """Masked-reconstruction loss on reflectance ``x``, for pretraining a small teacher.

        Optional: teachers built with their MAE decoder implement it (the quickstart trains
        a tiny Prithvi-architecture teacher on a multispectral set this way).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot be pretrained by hyperkd")

    def save_weights(self, path: str) -> None:
        """Write the teacher's weights as safetensors that its ``weights=`` option loads back."""
        raise NotImplementedError(f"{type(self).__name__} cannot export its weights")

    def freeze(self) -> Teacher:
        """Eval mode, no gradients: a teacher is never trained by distillation."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self


class Aligner(nn.Module, ABC):
    """Maps a student-sensor cube to the teacher's bands: ``(B, Cs, H, W) -> (B, Ct, H, W)``."""

    source: Sensor
    target: Sensor

    @abstractmethod
    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        ...


class Masker(ABC):
    """Chooses which patches a masked autoencoder hides.

    Returns a boolean ``(B, N)`` mask (True = masked) over the ``grid`` of patches, with
    the same number of masked patches in every sample so batches stay dense.
    """

    @abstractmethod
    def __call__(
        self,
        images: Tensor,
        grid: tuple[int, int],
        ratio: float,
        generator: torch.Generator | None = None,
    ) -> Tensor:  # pragma: no cover - interface
        ...
