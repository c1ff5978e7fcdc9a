"""pyproject.toml tells the truth: every third-party import is a declared dependency, and
every declared dependency is imported (or has a stated reason), so installs do not break on a
module that happened to come along with something else."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = {"hyperkd", "hyperkd_prithvi", "hyperkd_enmap"}
NOT_IMPORTED = {
    "tensorboard",  # used through Lightning's TensorBoardLogger, which every run creates
    "requests",  # torchgeo 0.8 imports it (datasets.openstreetmap) without declaring it
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_modules() -> dict[str, str]:
    """Top-level module -> first file importing it, over hyperkd/ and plugins/."""
    found: dict[str, str] = {}
    for folder in ("hyperkd", "plugins"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_declared_and_nothing_more():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_norm(re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0]) for d in project["dependencies"]}
    extras = {  # optional modules (hyperkd.integrations.terratorch, hyperkd.data.streaming) import these
        _norm(re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0])
        for deps in project.get("optional-dependencies", {}).values()
        for d in deps
    }
    dists = md.packages_distributions()
    third_party = {
        mod: where
        for mod, where in _imported_modules().items()
        if mod not in sys.stdlib_module_names and mod not in FIRST_PARTY and mod != "__future__"
    }
    used: set[str] = set()
    missing = []
    for mod, where in sorted(third_party.items()):
        names = {_norm(d) for d in dists.get(mod, [mod])}
        used |= names
        if not names & (declared | extras):
            missing.append(f"{mod} (imported in {where}; distribution {', '.join(sorted(names))})")
    assert not missing, "undeclared in pyproject.toml dependencies: " + "; ".join(missing)
    unused = declared - used - NOT_IMPORTED
    assert not unused, f"declared but never imported by hyperkd/ or plugins/: {sorted(unused)}"
