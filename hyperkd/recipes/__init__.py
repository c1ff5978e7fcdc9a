"""Recipes: declarative YAML files naming registry entries and their parameters.

A recipe is a nested mapping. ``base: NAME`` inherits another recipe (deep-merged, the
child wins). ``--set a.b=value`` overrides one field; the value is parsed as YAML
(``--set optim.lr=1e-3``, ``--set masker.name=random``, ``--set losses.ssim.weight=0``).
Every run saves its fully resolved recipe as ``recipe.yaml`` in the run folder, so a run
can be repeated exactly with ``--recipe RUN/recipe.yaml``.

Built-in recipes ship in this package; plugins add folders through the
``hyperkd_recipe_dirs`` hook.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hyperkd.core.errors import RecipeError


def recipe_dirs() -> list[Path]:
    """Folders searched for named recipes: built-ins first, then plugins'."""
    from hyperkd.core.plugins import plugin_manager

    dirs = [Path(str(resources.files("hyperkd.recipes")))]
    for result in plugin_manager().hook.hyperkd_recipe_dirs():
        dirs.extend(Path(d) for d in (result or []))
    return dirs


def available() -> dict[str, Path]:
    """Recipe name -> file, over every recipe folder."""
    found: dict[str, Path] = {}
    for d in recipe_dirs():
        for f in sorted(d.glob("*.yaml")):
            found.setdefault(f.stem, f)
    return found


def yaml_problem(exc: yaml.YAMLError) -> tuple[str, str]:
    """``(":line:col", "problem (context)")`` of a YAML error, for one-line messages."""
    mark = getattr(exc, "problem_mark", None)
    where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    return where, f"{problem} ({context})" if context else str(problem)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        where, problem = yaml_problem(exc)
        raise RecipeError(f"{path}{where}: YAML syntax error: {problem}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path} must be a mapping at the top level")
    return data


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_recipe(spec: str | Path, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a recipe by name or path, resolving ``base:`` inheritance."""
    path = Path(spec)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        named = available()
        if str(spec) not in named:
            close = difflib.get_close_matches(str(spec), list(named), n=2)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise RecipeError(
                f"unknown recipe {str(spec)!r}.{hint} Known: {', '.join(named)}; or pass a .yaml path"
            )
        path = named[str(spec)]
    key = str(path.resolve())
    if key in _seen:
        raise RecipeError(f"recipe {path} inherits from itself (base chain {' -> '.join(_seen)})")
    data = _read(path)
    base = data.pop("base", None)
    if base:
        data = deep_merge(load_recipe(base, (*_seen, key)), data)
    return data


def apply_overrides(recipe: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML)."""
    out = copy.deepcopy(dict(recipe))
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise RecipeError(
                f"--set {key}: cannot parse value {raw!r} as YAML: {yaml_problem(exc)[1]}"
            ) from None
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                raise RecipeError(f"--set {key}: {p!r} is a value, not a section")
            node = node[p]
        node[parts[-1]] = value
    return out


def resolve(
    spec: str | Path, overrides: Iterable[str] = (), fields: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Load ``spec``, apply ``--set`` ``overrides``, then explicit ``fields`` (dotted keys), validate."""
    recipe = apply_overrides(load_recipe(spec), overrides)
    return resolve_mapping(recipe, fields or {})


def resolve_for_run(
    recipe: str | Path | Mapping[str, Any],
    overrides: Iterable[str] = (),
    fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What ``pretrain``/``distill`` train on: a recipe name, file or mapping, then ``--set``
    ``overrides``, then keyword ``fields`` (dotted keys, ``__`` standing for ``.``; ``None``
    skipped), validated."""
    base = dict(recipe) if isinstance(recipe, Mapping) else load_recipe(recipe)
    named = {k.replace("__", "."): v for k, v in (fields or {}).items()}
    return resolve_mapping(apply_overrides(base, overrides), named)


def resolve_mapping(recipe: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """Set dotted-key ``fields`` (values as Python objects, ``None`` skipped) and validate."""
    out = copy.deepcopy(dict(recipe))
    for key, value in fields.items():
        if value is None:
            continue
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    validate(out)
    return out


KNOWN_SECTIONS = {
    "name",
    "description",
    "mode",
    "student",
    "teacher",
    "aligner",
    "masker",
    "losses",
    "distill",
    "data",
    "optim",
    "trainer",
    "seed",
    "notes",
}


#: Keys of the sections whose keys do not depend on a component (the others: student, masker,
#: losses, aligner, teacher, trainer are checked against the component's own signature when the
#: run assembles it, :mod:`hyperkd.training.checks`).
SECTION_KEYS: dict[str, frozenset[str]] = {
    "data": frozenset(
        {
            "store",
            "synthetic",
            "val_fraction",
            "val_store",
            "train_list",
            "val_list",
            "test_list",
            "batch_size",
            "num_workers",
            "augment",
            "mix",
            "band_dropout",
        }
    ),
    "data.synthetic": frozenset({"chips", "size", "seed"}),
    "optim": frozenset({"lr", "weight_decay", "betas", "warmup_steps", "fused"}),
    "distill": frozenset(
        {"pairs", "projector", "mask_on", "cache_teacher", "cache_max_mb", "teacher_img_size", "ground_match"}
    ),
}

#: Names people write for a key that has another name here (suggested when difflib finds nothing).
SYNONYMS = {
    "learning_rate": "lr",
    "epochs": "max_epochs",
    "steps": "max_steps",
    "mask_ratio": "ratio",
    "batchsize": "batch_size",
    "workers": "num_workers",
    "wd": "weight_decay",
}


def nearest_key(key: str, valid: Iterable[str]) -> str | None:
    """The valid key closest to ``key`` (difflib, then :data:`SYNONYMS`), or None."""
    valid = list(valid)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return close[0]
    alias = SYNONYMS.get(key.lower())
    return alias if alias in valid else None


def unknown_key_error(where: str, key: str, valid: Iterable[str]) -> RecipeError:
    """One line: ``where.key`` is unknown, and the nearest valid key (or every valid key)."""
    valid = sorted(valid)
    near = nearest_key(key, valid)
    hint = f"did you mean {where}.{near}?" if near else f"{where} takes: {', '.join(valid) or 'nothing'}"
    return RecipeError(f"unknown recipe key {where}.{key} ({hint}); nothing was run or written")


def check_keys(where: str, section: Any, valid: Iterable[str]) -> None:
    """Refuse keys of ``section`` (the recipe's ``where``) that are not in ``valid``."""
    if section is None:
        return
    if not isinstance(section, Mapping):
        raise RecipeError(f"recipe key {where} must be a section (key: value lines), got {section!r}")
    valid = set(valid)
    for key in section:
        if key not in valid:
            raise unknown_key_error(where, str(key), valid)


def _number(where: str, value: Any, integer: bool) -> int | float:
    """``value`` as an int or a float (YAML reads ``1e-3`` as text: such text is accepted)."""
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or value is None or isinstance(value, list | dict):
        raise RecipeError(f"recipe key {where} must be {kind}, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RecipeError(
            f"recipe key {where} must be {kind}, got {value!r} (e.g. --set {where}=...)"
        ) from None
    if not math.isfinite(number):
        raise RecipeError(f"recipe key {where} must be a finite number, got {value!r}")
    if integer:
        if number != int(number):
            raise RecipeError(f"recipe key {where} must be a whole number, got {value!r}")
        return int(number)
    return number


#: ``dotted key -> (whole number?, lowest, highest or None, lowest allowed itself?, null allowed?)``.
VALUE_RULES: dict[str, tuple[bool, float, float | None, bool, bool]] = {
    "seed": (True, 0, None, True, False),
    "data.batch_size": (True, 1, None, True, False),
    "data.num_workers": (True, 0, None, True, False),
    "data.val_fraction": (False, 0, 1, True, False),
    "data.band_dropout": (False, 0, 1, True, False),
    "data.synthetic.chips": (True, 1, None, True, False),
    "data.synthetic.size": (True, 1, None, True, False),
    "data.synthetic.seed": (True, 0, None, True, False),
    "optim.lr": (False, 0, None, False, False),
    "optim.weight_decay": (False, 0, None, True, False),
    "optim.warmup_steps": (True, 0, None, True, False),
    "masker.ratio": (False, 0, 1, False, False),
    "trainer.max_epochs": (True, -1, None, True, True),
    "trainer.max_steps": (True, -1, None, True, True),
    "trainer.log_every_n_steps": (True, 1, None, True, False),
    "trainer.checkpoint_every_n_steps": (True, 1, None, True, False),
    "trainer.num_nodes": (True, 1, None, True, False),
    "distill.cache_max_mb": (False, 0, None, True, False),
    "distill.teacher_img_size": (True, 1, None, True, True),
}


#: ``dotted key -> the values it takes`` (speed settings, :mod:`hyperkd.training.optim` and
#: :mod:`hyperkd.training.parts`; ``true``/``false`` are YAML booleans).
CHOICES: dict[str, tuple[bool | str, ...]] = {
    "optim.fused": ("auto", True, False),
    "trainer.channels_last": ("auto", True, False),
    "trainer.compile": (
        False,
        True,
        "default",
        "reduce-overhead",
        "max-autotune",
        "max-autotune-no-cudagraphs",
    ),
}


def _get(recipe: Mapping[str, Any], dotted: str) -> tuple[Mapping[str, Any] | None, str]:
    """The section holding ``dotted`` (None if absent) and its last key."""
    *parents, last = dotted.split(".")
    node: Any = recipe
    for p in parents:
        node = node.get(p) if isinstance(node, Mapping) else None
    return (node if isinstance(node, Mapping) else None), last


def check_values(recipe: dict[str, Any]) -> None:
    """Check the types and ranges of :data:`VALUE_RULES` keys, in place (numbers given as text,
    ``1e-3``, become numbers), and the settings that only fail together."""
    for dotted, (integer, lo, hi, lo_ok, nullable) in VALUE_RULES.items():
        section, key = _get(recipe, dotted)
        if section is None or key not in section:
            continue
        value = section[key]
        if value is None and nullable:
            continue
        number = _number(dotted, value, integer)
        low_bad = number < lo or (number == lo and not lo_ok)
        if low_bad or (hi is not None and number >= hi):
            span = f"{'at least' if lo_ok else 'above'} {lo:g}" + (
                f" and below {hi:g}" if hi is not None else ""
            )
            raise RecipeError(f"recipe key {dotted} is {value!r}; it must be {span}")
        section[key] = number  # type: ignore[index]  # sections are plain dicts here
    betas = (recipe.get("optim") or {}).get("betas")
    if betas is not None:
        if not isinstance(betas, list | tuple) or len(betas) != 2:
            raise RecipeError(f"recipe key optim.betas must be a list of two numbers, got {betas!r}")
        values = [_number("optim.betas", b, False) for b in betas]
        if not all(0 <= b < 1 for b in values):
            raise RecipeError(f"recipe key optim.betas {betas!r}: each must be at least 0 and below 1")
        recipe["optim"]["betas"] = values
    check_store(recipe)
    for dotted, allowed in CHOICES.items():
        section, key = _get(recipe, dotted)
        value = section.get(key) if section is not None else None
        if value is not None and not any(value is a or (isinstance(a, str) and value == a) for a in allowed):
            names = ", ".join(str(a).lower() if isinstance(a, bool) else a for a in allowed)
            raise RecipeError(f"recipe key {dotted} is {value!r}; use one of {names}")
    for dotted in ("data.augment", "trainer.figures"):
        section, key = _get(recipe, dotted)
        if section is not None and key in section and not isinstance(section[key], bool):
            raise RecipeError(f"recipe key {dotted} must be true or false, got {section[key]!r}")
    trainer = recipe.get("trainer") or {}
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    if epochs == -1 and steps in (-1, None):
        raise RecipeError(
            "recipe keys trainer.max_epochs -1 and trainer.max_steps -1 would train forever (the learning "
            "rate schedule needs a length); set trainer.max_epochs or trainer.max_steps"
        )
    losses = recipe.get("losses") or {}
    for name, term in losses.items():
        if term is not None and not isinstance(term, dict):
            raise RecipeError(
                f"recipe key losses.{name} must be a section like {{weight: 1.0}}, got {term!r}"
            )
        if term and "weight" in term:
            weight = _number(f"losses.{name}.weight", term["weight"], False)
            if weight < 0:
                raise RecipeError(f"recipe key losses.{name}.weight is {weight:g}; it must be at least 0")
            term["weight"] = weight


def check_store(recipe: Mapping[str, Any]) -> None:
    """``data.store`` is one chip store (a path, or ``synthetic``) or a list of chip-store paths
    (several stores in one run, :mod:`hyperkd.data.multistore`, which checks ``data.mix``), each
    named once."""
    data = recipe.get("data")
    if not isinstance(data, Mapping):
        return
    store = data.get("store", "synthetic")
    if not isinstance(store, list | tuple):
        if not isinstance(store, str | os.PathLike) or not str(store):
            raise RecipeError(
                f"recipe key data.store must be a chip-store folder, 'synthetic' or a list of folders, got {store!r}"
            )
        return
    bad = [s for s in store if not isinstance(s, str) or not s or s == "synthetic"]
    if not store or bad:
        raise RecipeError(
            f"recipe key data.store lists {list(store)!r}; a list names chip-store folders (not 'synthetic'), "
            "e.g. --data A --data B"
        )
    twice = sorted({s for s in store if list(store).count(s) > 1})
    if twice:
        raise RecipeError(f"recipe key data.store names {twice[0]} twice; give each chip store once")


def validate(recipe: Mapping[str, Any]) -> None:
    """Catch typos and bad values before anything runs: unknown sections and keys (named with the
    nearest valid one), missing essentials, and values of the wrong type or range
    (:func:`check_values`, which turns numbers given as text into numbers in place)."""
    unknown = sorted(set(recipe) - KNOWN_SECTIONS)
    if unknown:
        close = {u: difflib.get_close_matches(u, KNOWN_SECTIONS, n=1) for u in unknown}
        hints = "; ".join(f"{u!r} (did you mean {c[0]!r}?)" if c else repr(u) for u, c in close.items())
        raise RecipeError(
            f"recipe has unknown section(s) {hints}. Sections: {', '.join(sorted(KNOWN_SECTIONS))}"
        )
    for name in ("student", "data", "masker", "losses", "trainer"):
        if name not in recipe:
            raise RecipeError(f"recipe lacks the {name!r} section")
    if not recipe["losses"]:
        raise RecipeError("recipe has no loss terms under 'losses'")
    for where, valid in SECTION_KEYS.items():
        section, key = _get(recipe, where)
        if section is not None:
            check_keys(where, section.get(key), valid)
    if isinstance(recipe, dict):
        check_values(recipe)


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two recipes (sections compared key by key)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for k in list(old) + [k for k in new if k not in old]:
            out += differences(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def dump(recipe: Mapping[str, Any]) -> str:
    """YAML text of a recipe (stable key order)."""
    return yaml.safe_dump(dict(recipe), sort_keys=False)
