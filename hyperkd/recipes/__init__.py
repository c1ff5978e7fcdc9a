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


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc}") from None
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
            raise RecipeError(f"--set {key}: cannot parse value {raw!r}: {exc}") from None
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


def validate(recipe: Mapping[str, Any]) -> None:
    """Catch typos early: unknown top-level sections and missing essentials."""
    unknown = sorted(set(recipe) - KNOWN_SECTIONS)
    if unknown:
        close = {u: difflib.get_close_matches(u, KNOWN_SECTIONS, n=1) for u in unknown}
        hints = "; ".join(f"{u!r} (did you mean {c[0]!r}?)" if c else repr(u) for u, c in close.items())
        raise RecipeError(
            f"recipe has unknown section(s) {hints}. Sections: {', '.join(sorted(KNOWN_SECTIONS))}"
        )
    for section in ("student", "data", "masker", "losses", "trainer"):
        if section not in recipe:
            raise RecipeError(f"recipe lacks the {section!r} section")
    if not recipe["losses"]:
        raise RecipeError("recipe has no loss terms under 'losses'")


def dump(recipe: Mapping[str, Any]) -> str:
    """YAML text of a recipe (stable key order)."""
    return yaml.safe_dump(dict(recipe), sort_keys=False)
