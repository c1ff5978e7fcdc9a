"""The CLI: listings, JSON output, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import hyperkd
from hyperkd.cli import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"hyperkd {hyperkd.__version__}"


def test_plugins_list_json(capsys):
    code, out, _ = run(capsys, "plugins", "list", "--json")
    assert code == 0
    names = {p["name"]: p for p in json.loads(out)}
    assert names["prithvi"]["status"] == "loaded" and names["enmap"]["status"] == "loaded"
    assert names["prithvi"]["module"] == "hyperkd_prithvi"


def test_sensors_show_enmap_json(capsys):
    code, out, _ = run(capsys, "sensors", "show", "enmap", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["num_bands"] == 224 and len(d["bands"]) == 224
    assert d["default_selection"] == "torchgeo-202"
    assert len(d["default_selection_bands"]) == 202
    b1 = d["bands"][0]
    assert b1["name"] == "B1" and b1["center_nm"] == pytest.approx(418.2) and b1["fwhm_nm"] > 0


def test_sensors_list_and_human_output(capsys):
    code, out, _ = run(capsys, "sensors", "list", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["hls"]["num_bands"] == 6 and rows["enmap"]["num_bands"] == 224
    code, out, _ = run(capsys, "sensors", "show", "hls")
    assert code == 0 and "B07" in out and "2200.00" in out


def test_list_components(capsys):
    code, out, _ = run(capsys, "list", "sensor", "--json")
    assert code == 0
    entries = {e["name"]: e for e in json.loads(out)}
    assert entries["enmap"]["provider"] == "enmap" and entries["enmap"]["description"]


def test_user_error_is_one_line(capsys):
    code, _out, err = run(capsys, "sensors", "show", "enmapp")
    assert code == 1
    assert "Traceback" not in err
    assert err.startswith("error: unknown sensor 'enmapp'")
    assert "Did you mean 'enmap'" in err


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(hyperkd.HyperKDError):
        main(["--debug", "sensors", "show", "enmapp"])


def test_usage_error_exits_2(capsys):
    code, _, err = run(capsys, "sensors", "show")
    assert code == 2 and "Missing argument" in err


def test_error_text_with_brackets_is_printed_verbatim(capsys):
    code, _, err = run(capsys, "sensors", "show", "[/bad]")
    assert code == 1 and "unknown sensor '[/bad]'" in err


HEAVY = (
    "torch",
    "lightning",
    "torchgeo",
    "timm",
    "rasterio",
    "hyperkd_prithvi.model",
    "hyperkd_prithvi.teacher",
)
"""Modules the quick commands must not import (a registry lookup imports only what it builds)."""


def _modules_after(code: str, tmp_path) -> set[str]:
    """The modules a fresh interpreter has imported after running ``code``."""
    out = tmp_path / "modules.json"
    script = f"{code}\nimport json, sys\nopen({str(out)!r}, 'w').write(json.dumps(sorted(sys.modules)))\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(out.read_text()))


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["plugins", "list"], ["data", "--help"]])
def test_quick_commands_do_not_import_torch(tmp_path, args):
    code = f"from hyperkd.cli.app import main\nassert main({args!r}) == 0"
    loaded = _modules_after(code, tmp_path)
    assert not [m for m in HEAVY if m in loaded]
    if args[0] != "--version":  # plugins were discovered (their light modules and CLI hooks)
        assert {"hyperkd_prithvi", "hyperkd_enmap", "hyperkd_prithvi.cli"} <= loaded


def test_a_registry_lookup_imports_only_what_it_builds(tmp_path):
    loaded = _modules_after("import hyperkd; hyperkd.create('masker', 'random')", tmp_path)
    assert "hyperkd.components.maskers" in loaded and "torch" in loaded
    assert not [m for m in (*HEAVY[1:], "hyperkd.models.mae", "hyperkd_enmap.l2a") if m in loaded]
