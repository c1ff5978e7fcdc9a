"""The package layout: rooms by pipeline stage, old import paths kept for plugins, a light top level."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import hyperkd


def test_old_plugin_paths_are_the_same_modules_and_keep_the_registry_function():
    from hyperkd.plugins import hookimpl  # the 0.1 plugin API
    from hyperkd.registry import register
    from hyperkd.sensors import Sensor

    import hyperkd.core.registry as new_registry
    import hyperkd.core.sensors as new_sensors

    assert sys.modules["hyperkd.registry"] is new_registry
    assert register is new_registry.register
    assert Sensor is new_sensors.Sensor
    assert hookimpl is hyperkd.hookimpl
    assert callable(hyperkd.registry) and hyperkd.registry("masker").kind == "masker"


def test_moved_heavy_modules_import_under_their_old_name_with_a_deprecation_warning():
    code = (
        "import sys, warnings\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        "try:\n"
        "    import hyperkd.aligners\n"
        "except DeprecationWarning as w:\n"
        "    print(w)\n"
        "warnings.simplefilter('ignore')\n"
        "from hyperkd.aligners import spectral_range\n"
        "import hyperkd.components.aligners as new\n"
        "assert sys.modules['hyperkd.aligners'] is new and spectral_range is new.spectral_range\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "moved to hyperkd.components.aligners" in out.stdout


def test_old_module_paths_of_the_workflow_functions_keep_working_and_keep_the_functions():
    code = (
        "import warnings; warnings.simplefilter('ignore')\n"
        "import hyperkd\n"
        "from hyperkd.distill import distill\n"
        "from hyperkd.finetune import evaluate, finetune\n"
        "from hyperkd.train import pretrain\n"
        "import hyperkd.distill\n"
        "assert hyperkd.distill is distill and callable(hyperkd.distill), hyperkd.distill\n"
        "assert hyperkd.finetune is finetune and hyperkd.evaluate is evaluate and hyperkd.pretrain is pretrain\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_notebook_api_is_exported_lazily():
    for name in ("pretrain", "distill", "finetune", "evaluate", "prepare", "synthesize", "from_pretrained"):
        assert name in dir(hyperkd)
    out = subprocess.run(
        [sys.executable, "-c", "import sys, hyperkd; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False", "importing hyperkd must not import torch"
    assert callable(hyperkd.finetune) and hyperkd.finetune.__module__.startswith("hyperkd.evaluation")


def test_unknown_top_level_attribute_is_an_attribute_error():
    try:
        hyperkd.no_such_thing  # noqa: B018
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("expected AttributeError")


ROOT = Path(__file__).resolve().parents[1]
HYPERKD_IMPORT = re.compile(r"^\s*(?:from|import)\s+(hyperkd(?:\.\w+)?|hyperkd_\w+)", re.MULTILINE)

# room -> the rooms it may import from (docs/concepts.md, "Layout"): data flows one way.
WALLS = {
    "core": {"core"},
    "data": {"core", "data"},
    "synth": {"core", "data", "synth"},
}


def _imports(path: Path) -> set[str]:
    return set(HYPERKD_IMPORT.findall(path.read_text(encoding="utf-8")))


def test_rooms_import_only_the_rooms_below_them():
    broken = []
    for room, allowed in WALLS.items():
        for path in sorted((ROOT / "hyperkd" / room).rglob("*.py")):
            for name in _imports(path):
                if name == "hyperkd":  # the light top level (__version__, the public API)
                    continue
                target = name.split(".")[1] if name.startswith("hyperkd.") else name
                if target not in allowed:
                    broken.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not broken, "\n".join(broken)


def test_the_library_never_imports_the_cli_or_a_plugin():
    broken = []
    for path in sorted((ROOT / "hyperkd").rglob("*.py")):
        if path.relative_to(ROOT / "hyperkd").parts[0] == "cli":
            continue
        for name in _imports(path):
            if name == "hyperkd.cli" or name.startswith("hyperkd_"):
                broken.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not broken, "\n".join(broken)


def test_no_module_is_over_700_lines():
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
        for folder in ("hyperkd", "plugins")
        for p in (ROOT / folder).rglob("*.py")
    }
    assert sizes and not {p: n for p, n in sizes.items() if n > 700}
