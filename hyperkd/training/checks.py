"""Recipe keys checked against the components they configure, before a run builds anything.

:func:`hyperkd.recipes.validate` checks the sections whose keys are fixed (``data``, ``optim``,
``distill``) and the types and ranges of known values without importing torch. The other
sections hold a component's own keyword arguments: ``masker`` (the registered masker's),
``losses.NAME`` (the loss term's), ``aligner`` (the aligner's, besides the two band tables),
``teacher`` (the teacher factory's), ``student`` (:class:`~hyperkd.models.mae.HyperspectralMAE`'s)
and ``trainer`` (``lightning.Trainer``'s). :func:`check_components` compares every key with
the real signature, so ``masker.ratoi`` or ``trainer.max_epoch`` is refused in one line that
names the nearest valid key, instead of reaching a constructor as a ``TypeError`` (or, for a
component that takes ``**kwargs``, being ignored while ``recipe.yaml`` records it).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

from hyperkd.core.errors import RecipeError
from hyperkd.core.registry import registry
from hyperkd.recipes import check_keys

#: Keys of the ``student`` section that are not architecture arguments.
STUDENT_EXTRA = frozenset({"name", "selection", "init_from", "min_grid"})

#: ``trainer`` keys hyperkd handles itself (not passed to Lightning).
TRAINER_EXTRA = frozenset({"checkpoint_every_n_steps", "figures", "compile", "channels_last"})

#: Trainer arguments the runner sets itself: a recipe may not give them.
TRAINER_RESERVED = frozenset(
    {
        "callbacks",
        "logger",
        "plugins",
        "enable_progress_bar",
        "enable_model_summary",
        "default_root_dir",
        "num_sanity_val_steps",
    }
)


def accepted_keys(obj: Any, skip: Iterable[str] = ()) -> set[str] | None:
    """Keyword names a class or factory accepts (``None``: it takes ``**kwargs``, so any)."""
    if inspect.isclass(obj):
        owner = next(c for c in obj.__mro__ if "__init__" in vars(c))
        if owner is object:
            return set()
        target = obj.__init__
    else:
        target = obj
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    drop = {"self", *skip}
    return {
        p.name for p in params if p.name not in drop and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _component_keys(kind: str, name: str, extra: Iterable[str], skip: Iterable[str] = ()) -> set[str] | None:
    """What a ``kind`` section naming ``name`` may hold: ``extra`` + the component's arguments."""
    keys = accepted_keys(registry(kind).get(name).resolve(), skip)
    return None if keys is None else keys | set(extra)


def _check_component(
    where: str, section: Any, kind: str, extra: Iterable[str], skip: Iterable[str] = ()
) -> None:
    if section is None or isinstance(section, str):
        return
    if not isinstance(section, Mapping):
        raise RecipeError(
            f"recipe key {where} must be a section (name: ..., and its settings), got {section!r}"
        )
    name = section.get("name")
    if not name:
        raise RecipeError(f"recipe section {where} needs a name (e.g. --set {where}.name=...)")
    keys = _component_keys(kind, str(name), extra, skip)
    if keys is not None:
        check_keys(where, section, keys)


def student_keys() -> set[str]:
    """Keys a recipe's ``student`` section may hold."""
    from hyperkd.models.mae import HyperspectralMAE

    return (accepted_keys(HyperspectralMAE, skip=("sensor", "size")) or set()) | STUDENT_EXTRA


def trainer_keys() -> set[str]:
    """Keys a recipe's ``trainer`` section may hold (Lightning's, minus those the runner sets)."""
    import lightning as L

    return ((accepted_keys(L.Trainer) or set()) - TRAINER_RESERVED) | TRAINER_EXTRA


def check_components(recipe: Mapping[str, Any], *, teacher: bool = False) -> None:
    """Every key of ``student``, ``masker``, ``losses``, ``trainer`` (and, with ``teacher``, of
    ``aligner`` and ``teacher``) against the signature of what it configures."""
    student = recipe.get("student")
    if isinstance(student, Mapping):
        check_keys("student", student, student_keys())
    _check_component("masker", recipe.get("masker"), "masker", ("name", "ratio"))
    for name, term in (recipe.get("losses") or {}).items():
        if isinstance(term, Mapping):
            term_name = str(term.get("term", name))
            keys = _component_keys("loss", term_name, ("weight", "term"))
            if keys is not None:
                check_keys(f"losses.{name}", term, keys)
    check_keys("trainer", recipe.get("trainer"), trainer_keys())
    if teacher:
        _check_component("aligner", recipe.get("aligner"), "aligner", ("name",), skip=("source", "target"))
