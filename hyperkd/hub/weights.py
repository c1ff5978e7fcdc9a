"""Reading ``model.safetensors`` into a model, with one-line errors instead of tracebacks.

Two things go wrong with weight files in practice: the file itself is unreadable (a download or
copy that was cut short leaves a truncated file, and safetensors raises a ``SafetensorError``
about its header), or it is readable but holds another model's tensors (a ``config.json`` from
one run next to the weights of another; ``student.init_from`` naming a student of a different
size), where torch prints every missing and unexpected key over a dozen lines. Both become a
:class:`~hyperkd.core.errors.WeightsError` of one line that names the file, counts the keys,
shows the first few and says what to do (:func:`read_safetensors`, :func:`mismatch_message`,
:func:`load_state`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from hyperkd.core.errors import WeightsError
from hyperkd.hub.sources import first_line

SHOWN_KEYS = 3
"""How many key names a mismatch message lists per kind (missing, unexpected, other shape)."""


def read_safetensors(path: str | os.PathLike[str], *, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors file ``path``; an unreadable file (truncated, corrupt,
    not safetensors at all) raises a one-line :class:`WeightsError` naming it."""
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file {p} does not exist")
    if p.stat().st_size == 0:
        raise WeightsError(f"weights file {p} is empty (an interrupted download or copy?); fetch it again")
    try:
        return load_file(str(p), device=device)
    except Exception as exc:  # safetensors raises SafetensorError (not an OSError) for bad headers
        raise WeightsError(
            f"weights file {p} is not a readable safetensors file ({first_line(exc)}): it is probably "
            "truncated or corrupt; copy or download it again (a Hub file: delete it from the HF cache "
            "or pass force_download=True)"
        ) from None


def _names(keys: Iterable[str]) -> str:
    ordered = sorted(keys)
    shown = ", ".join(ordered[:SHOWN_KEYS])
    return shown + (f", ... ({len(ordered) - SHOWN_KEYS} more)" if len(ordered) > SHOWN_KEYS else "")


def _diff(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], tied: Iterable[str]
) -> tuple[list[str], list[str], list[str]]:
    """Missing keys, unexpected keys and ``key (file shape) vs (model shape)`` texts."""
    skip = set(tied)
    missing = [k for k in expected if k not in found and k not in skip]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k} {tuple(found[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in found and tuple(found[k].shape) != tuple(expected[k].shape)
    ]
    return missing, unexpected, shapes


def mismatch_message(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], *, tied: Iterable[str] = ()
) -> str | None:
    """What differs between a model's ``expected`` state dict and the ``found`` tensors, in one
    line (counts and the first :data:`SHOWN_KEYS` names of each kind), or ``None`` when they fit.

    ``tied``: keys of ``expected`` that may be absent because they share storage with another
    key (safetensors saves shared tensors once)."""
    missing, unexpected, shapes = _diff(expected, found, tied)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_names(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} of another shape, file vs model ({_names(shapes)})")
    return "; ".join(parts) or None


def _tied_keys(model: nn.Module) -> set[str]:
    """State-dict keys whose storage another key shares (all but the first of each group)."""
    seen: dict[tuple[int, int], str] = {}
    tied = set()
    for name, tensor in model.state_dict(keep_vars=False).items():
        if tensor.device.type == "meta" or tensor.numel() == 0:
            continue
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:
            tied.add(name)
        else:
            seen[key] = name
    return tied


def load_state(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    where: str,
    advice: str = "the weights come from another model than the one described; load them into a "
    "model built with the same architecture",
    strict: bool = True,
) -> None:
    """Load ``state`` into ``model``; a mismatch raises one :class:`WeightsError` line that starts
    with ``where`` (what was read), counts and names the keys, and ends with ``advice``.
    ``strict=False`` accepts missing and unexpected keys but never tensors of another shape."""
    expected, tied = model.state_dict(), _tied_keys(model)
    problem = mismatch_message(expected, state, tied=tied)
    if problem is not None and (strict or _diff(expected, state, tied)[2]):  # (shapes never load)
        raise WeightsError(
            f"{where} does not fit the model: tensors {problem}. {advice[0].upper()}{advice[1:]}"
        )
    model.load_state_dict(dict(state), strict=False)


def load_weights_file(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    where: str,
    device: str = "cpu",
    strict: bool = True,
) -> None:
    """Read ``model.safetensors`` at ``path`` and load it into ``model`` (one-line errors for an
    unreadable file and for tensors that do not fit the model its ``config.json`` describes)."""
    state = read_safetensors(path, device=device)
    load_state(
        model,
        state,
        where=f"{where}: {Path(path).name}",
        advice="its config.json describes another architecture than the weights were saved with; "
        "save the folder again with save_pretrained (or download it again) so both come from one model",
        strict=strict,
    )


__all__ = ["SHOWN_KEYS", "load_state", "load_weights_file", "mismatch_message", "read_safetensors"]
