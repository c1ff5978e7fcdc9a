"""Training parts from names: student, masker and loss terms as a recipe (or a notebook) names them.

Every builder also accepts the already built object, so the LightningModules take either
form: ``MAEModule(student="enmap-mae-tiny", masker="random", losses={"mse": {"weight": 1}})``
in a notebook, pre-built parts from the runner (which builds the student for its chip
store's statistics). :func:`plain_hparams` keeps only the name form, for
``save_hyperparameters`` and ``load_from_checkpoint``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from hyperkd.components.losses import LossTerm
from hyperkd.core.errors import RecipeError
from hyperkd.core.registry import create
from hyperkd.models.mae import HyperspectralMAE

Spec = str | Mapping[str, Any]
"""A component by name (``"random"``) or as a recipe section (``{"name": "random", "ratio": 0.6}``)."""


def split_spec(spec: Spec, what: str) -> tuple[str, dict[str, Any]]:
    """``(name, keyword arguments)`` of a name or a recipe section with a ``name`` key."""
    if isinstance(spec, str):
        return spec, {}
    cfg = dict(spec)
    name = cfg.pop("name", None)
    if not name:
        raise RecipeError(f"{what}: give a name (e.g. {what}: {{name: ...}}), got {dict(spec)!r}")
    return str(name), cfg


def build_student(spec: HyperspectralMAE | Spec) -> HyperspectralMAE:
    """A student from a name (``enmap-mae-tiny``, a saved folder, a Hub repo: one resolver,
    :mod:`hyperkd.models.factory`) or a recipe ``student`` section (``name`` + architecture
    keywords, ``selection``, ``init_from``: trained weights to start from)."""
    if isinstance(spec, HyperspectralMAE):
        return spec
    from hyperkd.models.mae import build_student as build_named

    name, cfg = split_spec(spec, "student")
    init_from = cfg.pop("init_from", None)
    model = build_named(name, **cfg)
    if not isinstance(model, HyperspectralMAE):
        raise RecipeError(f"student {name!r} is a {type(model).__name__}, not a hyperspectral MAE student")
    if init_from:
        from hyperkd.hub import load_state
        from hyperkd.models.factory import create_model

        load_state(
            model,
            create_model(str(init_from)).state_dict(),
            where=f"student.init_from {init_from!r}",
            advice="give the recipe the same student architecture, or pass those weights as --student "
            "(which keeps their architecture)",
        )
    return model


def build_masker(spec: Any, mask_ratio: float | None = None) -> tuple[Any, float]:
    """``(masker, ratio)`` from a masker, a name or a recipe ``masker`` section (its ``ratio``
    key is the mask ratio). ``mask_ratio`` given too must agree; default 0.75."""
    if not isinstance(spec, str | Mapping):
        return spec, 0.75 if mask_ratio is None else float(mask_ratio)
    name, cfg = split_spec(spec, "masker")
    ratio = cfg.pop("ratio", None)
    if ratio is not None and mask_ratio is not None and float(ratio) != float(mask_ratio):
        raise RecipeError(f"masker.ratio {ratio} and mask_ratio {mask_ratio} disagree; give one of them")
    chosen = ratio if ratio is not None else mask_ratio
    return create("masker", name, **cfg), 0.75 if chosen is None else float(chosen)


def _is_built_term(value: Any) -> bool:
    return isinstance(value, tuple | list) and len(value) == 2 and isinstance(value[1], LossTerm)


def build_losses(section: Mapping[str, Any] | None) -> dict[str, tuple[float, LossTerm]]:
    """``{name: (weight, term)}`` from a recipe ``losses`` section (``{name: {weight, term, **kw}}``;
    ``term`` defaults to the name) or from already built ``(weight, term)`` pairs."""
    out: dict[str, tuple[float, LossTerm]] = {}
    for name, params in (section or {}).items():
        if _is_built_term(params):
            out[name] = (float(params[0]), params[1])
            continue
        if params is not None and not isinstance(params, Mapping):
            raise RecipeError(f"losses.{name}: expected a mapping like {{weight: 1.0}}, got {params!r}")
        cfg = dict(params or {})
        weight = float(cfg.pop("weight", 1.0))
        term_name = cfg.pop("term", name)
        out[name] = (weight, create("loss", term_name, **cfg))
    return out


def is_prebuilt(value: Any) -> bool:
    """True for objects a checkpoint's hyperparameters cannot rebuild (modules, maskers, terms)."""
    if value is None or isinstance(value, str | int | float | bool | os.PathLike):
        return False
    if isinstance(value, nn.Module):
        return True
    if isinstance(value, Mapping):
        return any(is_prebuilt(v) for v in value.values())
    if isinstance(value, tuple | list):
        return any(is_prebuilt(v) for v in value)
    return True


def plain_hparams(**arguments: Any) -> dict[str, Any]:
    """The constructor arguments given by name or value (pre-built objects left out)."""
    return {k: v for k, v in arguments.items() if not is_prebuilt(v)}
