"""One optimiser recipe for every hyperkd LightningModule.

AdamW with decoupled weight decay, stepped per optimiser step with a linear warmup and
a cosine decay to zero over the run (``trainer.estimated_stepping_batches``). Parameter
grouping comes from timm (:func:`timm.optim.param_groups_weight_decay`): biases, norms
and other 1-D parameters, plus the MAE's ``cls_token``/``mask_token``, are not decayed.
The schedule is a plain :class:`torch.optim.lr_scheduler.LambdaLR`, so Lightning steps,
checkpoints and resumes it like any torch scheduler.

The ``optim`` section of a recipe holds the same keys as :class:`OptimConfig`. ``fused``
(:func:`fused_flag`) picks torch's fused AdamW kernel: ``auto`` (the default) on an accelerator
(CUDA, MPS, XPU...) when every parameter is there and the torch build has the kernel, the
plain implementation (foreach on CUDA, a loop on CPU) otherwise; ``true`` insists (refused in
one line where the kernel is missing); ``false`` never.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from hyperkd.core.errors import RecipeError

#: Parameters never decayed besides 1-D ones (fnmatch patterns on ``named_parameters`` names).
NO_DECAY_NAMES: tuple[str, ...] = ("cls_token", "mask_token")


@dataclass(frozen=True)
class OptimConfig:
    """The ``optim`` section of a recipe: AdamW settings and the warmup length in steps."""

    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 0
    fused: bool | str = "auto"

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None, where: str = "optim") -> OptimConfig:
        """Build from a recipe section; an unknown key raises one line naming it."""
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise RecipeError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        try:
            out = cls(
                lr=float(cfg.get("lr", cls.lr)),
                weight_decay=float(cfg.get("weight_decay", cls.weight_decay)),
                betas=tuple(float(b) for b in cfg.get("betas", cls.betas)),  # type: ignore[arg-type]
                warmup_steps=int(cfg.get("warmup_steps", cls.warmup_steps)),
                fused=fused_setting(cfg.get("fused", cls.fused), f"{where}.fused"),
            )
        except (TypeError, ValueError) as err:
            raise RecipeError(f"{where}: {err}; use numbers (betas: a list of two)") from err
        if len(out.betas) != 2:
            raise RecipeError(f"{where}.betas: expected two numbers, got {list(out.betas)}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (YAML/JSON friendly, betas as a list)."""
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


def fused_setting(value: Any, where: str = "optim.fused") -> bool | str:
    """``auto``, ``True`` or ``False`` (YAML's true/false); anything else is refused in one line."""
    if value is None:
        return "auto"
    if isinstance(value, bool) or value == "auto":
        return value  # type: ignore[no-any-return]
    raise RecipeError(f"recipe key {where} is {value!r}; use auto, true or false")


def fused_devices() -> set[str]:
    """Device types this torch build has a fused AdamW kernel for."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # pragma: no cover - torch < 2.1: CUDA only
        return {"cuda"}
    return set(_get_fused_kernels_supported_devices())


def fused_flag(params: Iterable[Any], fused: bool | str = "auto") -> bool | None:
    """The ``fused`` argument for :class:`torch.optim.AdamW` over ``params`` (tensors or groups).

    ``auto``: ``True`` when every floating-point parameter is on one accelerator type that this
    torch build has a fused kernel for, else ``None`` (torch's default: foreach on CUDA, a loop
    on CPU). The CPU is left on its loop, the reference, so CPU runs stay comparable with earlier
    ones (the fused kernel rounds differently). ``True``: fused (the CPU included, where torch
    has the kernel), or a one-line :class:`RecipeError` naming the device that has none.
    ``False``: ``None``.
    """
    fused = fused_setting(fused)
    if fused is False:
        return None
    tensors = [t for p in params for t in (p["params"] if isinstance(p, Mapping) else [p])]
    kinds = {t.device.type for t in tensors}
    supported = fused_devices()
    floating = all(torch.is_floating_point(t) for t in tensors)
    if fused is True:
        missing = sorted(kinds - supported)
        if missing or not floating:
            raise RecipeError(
                f"optim.fused is true but this torch {torch.__version__} has no fused AdamW kernel for "
                f"{'parameters on ' + ', '.join(missing) if missing else 'non-float parameters'} "
                f"(fused on: {', '.join(sorted(supported))}); set optim.fused=auto"
            )
        return True if tensors else None
    on_accelerator = len(kinds) == 1 and kinds <= supported - {"cpu"}
    return True if tensors and floating and on_accelerator else None


def decay_groups(
    module: nn.Module, weight_decay: float, no_decay: Sequence[str] = NO_DECAY_NAMES
) -> list[dict[str, Any]]:
    """Trainable parameters of ``module`` split into decayed and not-decayed groups.

    Parameters whose own name (last dotted part) is in ``no_decay`` join the not-decayed group.
    Decayed group first (the order optimiser states are saved in), empty groups dropped.
    """
    from timm.optim import param_groups_weight_decay  # timm is heavy: import on use

    # exact parameter names (every timm 1.0 matches those; name patterns need timm >= 1.0.21)
    skip = [n for n, _ in module.named_parameters() if n.rsplit(".", 1)[-1] in no_decay]
    groups = param_groups_weight_decay(module, weight_decay=weight_decay, no_weight_decay_list=skip)
    return sorted(groups, key=lambda g: g["weight_decay"] == 0.0)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR factor at ``step``: linear warmup to 1 over ``warmup_steps``, then cosine to 0 at ``total_steps``."""
    total = max(int(total_steps), 1)
    warmup = min(int(warmup_steps), max(total - 1, 0))
    if step < warmup:
        return (step + 1) / max(warmup, 1)
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """:func:`warmup_cosine` as a per-step torch scheduler."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps)
    )


def adamw_warmup_cosine(
    params: Iterable[Any],
    total_steps: int,
    *,
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    warmup_steps: int = 0,
    fused: bool | str = "auto",
) -> dict[str, Any]:
    """AdamW over ``params`` (tensors or param-group dicts) with the warmup-cosine schedule.

    Returns what :meth:`lightning.LightningModule.configure_optimizers` returns; call it as
    ``adamw_warmup_cosine(groups, int(self.trainer.estimated_stepping_batches), lr=...)``.
    Groups keep their own ``lr``/``weight_decay`` when they set them. ``fused``: :func:`fused_flag`.
    """
    params = list(params)
    opt = torch.optim.AdamW(
        params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), fused=fused_flag(params, fused)
    )
    sched = warmup_cosine_scheduler(opt, total_steps, warmup_steps)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def configure_optimizers(
    module: nn.Module, cfg: OptimConfig | Mapping[str, Any] | None, total_steps: int
) -> dict[str, Any]:
    """The whole recipe for a module: timm decay groups over its trainable parameters + AdamW + schedule."""
    oc = cfg if isinstance(cfg, OptimConfig) else OptimConfig.from_mapping(cfg)
    return adamw_warmup_cosine(
        decay_groups(module, oc.weight_decay),
        total_steps,
        lr=oc.lr,
        weight_decay=oc.weight_decay,
        betas=oc.betas,
        warmup_steps=oc.warmup_steps,
        fused=oc.fused,
    )
