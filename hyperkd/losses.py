"""Loss terms, registered and weighted by the recipe.

A term is built with its parameters (``create("loss", "mse")``) and called with the
student's :class:`~hyperkd.models.mae.MAEOutput` plus a context dict (the batch, the
student, teacher features when distilling). The engine sums ``weight * term``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from hyperkd.metrics import masked_mse
from hyperkd.registry import register


class LossTerm:
    """Base class: ``term(out, ctx) -> scalar``; ``needs_teacher`` marks distillation terms."""

    needs_teacher: bool = False

    def __call__(self, out: Any, ctx: dict[str, Any]) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


@register("loss", "mse")
class MSELoss(LossTerm):
    """Mean squared error over the valid pixels of masked patches (MAE reconstruction)."""

    def __call__(self, out: Any, ctx: dict[str, Any]) -> Tensor:
        return masked_mse(out.pred, out.target, out.weight)
