"""A sensor-only plugin, made here, works end to end; bad band tables fail that plugin alone."""

from __future__ import annotations

import json
import logging

import pytest

from hyperkd.cli import main
from hyperkd.core.plugins import load_plugins, plugin_infos
from hyperkd.data.store import ChipStore

from .helpers.threads import one_thread  # noqa: F401 - autouse fixture
from .helpers.toy import TINY_STUDENT
from .test_plugins import make_dist

WIDE = """
from hyperkd.core.plugins import hookimpl
from hyperkd.core.registry import register
from hyperkd.core.sensors import Band, Sensor

def wide() -> Sensor:
    \"\"\"A made-up imaging spectrometer, 86 bands every ~25 nm from 381 to 2500 nm.\"\"\"
    centres = [381 + i * (2500 - 381) / 85 for i in range(86)]
    bands = tuple(Band(f"W{i + 1}", c, 25.0) for i, c in enumerate(centres))
    return Sensor(name="wide", bands=bands, gsd_m=30.0)

@hookimpl
def hyperkd_register():
    register("sensor", "wide")(wide)
"""


def _sets(*extra: str) -> list[str]:
    sets = [*TINY_STUDENT, "trainer.figures=false", "trainer.checkpoint_every_n_steps=1000", *extra]
    return [a for s in sets for a in ("--set", s)]


def test_sensor_only_plugin_reaching_381_to_2500_nm_synth_pretrain_distill_finetune(
    tmp_path, plugin_env, caplog, capsys
):
    make_dist(tmp_path, "hyperkd-wide", "wide", "hkd_wide", WIDE)
    plugin_env.syspath_prepend(str(tmp_path))
    load_plugins(force=True)
    store = tmp_path / "store"
    with caplog.at_level(logging.WARNING, logger="hyperkd.synth.write"):
        code = main(
            ["data", "synth", "--out", str(store), "--sensor", "wide", "--chips", "8", "--size", "16"]
        )
    assert code == 0, capsys.readouterr().err
    s = ChipStore(store)
    assert s.sensor.name == "wide" and s.sensor.num_bands == 86  # no band dropped or selected away
    extended = [r.getMessage() for r in caplog.records if "outside the spectral library" in r.getMessage()]
    assert len(extended) == 1 and "4 band(s) of wide (W1, W84, W85, W86)" in extended[0], extended
    assert s.manifest["attrs"]["extended_bands"] == ["W1", "W84", "W85", "W86"]
    first = s[0]["image"]
    assert first.shape[0] == 86 and float(abs(first).max()) > 0

    pre = tmp_path / "pre"
    code = main(
        [
            "pretrain",
            "--student",
            "wide",
            "--data",
            str(store),
            "--out",
            str(pre),
            *_sets("trainer.max_steps=1"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    cfg = json.loads((pre / "student" / "config.json").read_text())
    assert cfg["sensor"]["name"] == "wide" and len(cfg["sensor"]["bands"]) == 86
    needs = {r["kind"]: r for r in cfg["requires"]}
    assert needs["sensor"]["plugin"] == "wide" and needs["sensor"]["distribution"] == "hyperkd-wide"

    from hyperkd_prithvi.testing import write_tiny_checkpoint

    teacher = write_tiny_checkpoint(tmp_path / "teacher.pt", seed=1)
    kd = tmp_path / "kd"
    code = main(
        [
            "distill",
            "--teacher",
            "prithvi-eo-tiny",
            "--teacher-weights",
            str(teacher),
            "--student",
            "wide",
            "--data",
            str(store),
            "--out",
            str(kd),
            *_sets("trainer.max_steps=1"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert json.loads((kd / "student" / "config.json").read_text())["sensor"]["name"] == "wide"

    ft = tmp_path / "ft"
    code = main(
        [
            "finetune",
            "--task",
            "landcover",
            "--student",
            str(kd),
            "--data",
            str(store),
            "--epochs",
            "1",
            "--out",
            str(ft),
        ]
    )
    assert code == 0, capsys.readouterr().err


SENSORS = """
from hyperkd import ComponentSpec
from hyperkd.core.plugins import hookimpl
from hyperkd.core.registry import register
from hyperkd.core.sensors import Band, Sensor

def table(name, centres, fwhm=10.0, **kw):
    return Sensor(name=name, bands=tuple(Band(f"B{i + 1}", c, fwhm) for i, c in enumerate(centres)),
                  gsd_m=30.0, **kw)

@hookimpl
def hyperkd_register():
    register("sensor", "{name}")(lambda: {body})
"""


def _plugin(site, name: str, body: str) -> None:
    make_dist(
        site,
        f"hyperkd-{name}",
        name,
        f"hkd_{name.replace('-', '_')}",
        SENSORS.replace("{name}", name).replace("{body}", body),
    )


def test_bad_band_tables_fail_their_plugin_alone_and_are_named_when_asked_for(
    tmp_path, plugin_env, caplog, capsys
):
    from hyperkd import get_sensor
    from hyperkd.core.errors import HyperKDError

    _plugin(tmp_path, "zero-fwhm", 'table("zero-fwhm", [500, 600], fwhm=0.0)')
    _plugin(tmp_path, "bad-bad", 'table("bad-bad", [500, 600], bad_bands=("B9",))')
    _plugin(tmp_path, "messy", 'table("messy", [600, 500, 500, 700])')
    make_dist(tmp_path, "hyperkd-gone", "gone", "hkd_gone", "raise ImportError('no module named foo')\n")
    # a declared (lazy) sensor whose table is only built on first use
    make_dist(
        tmp_path,
        "hyperkd-lazybad",
        "lazybad",
        "hkd_lazybad",
        """
        from hyperkd import ComponentSpec, hookimpl

        @hookimpl
        def hyperkd_components():
            return [ComponentSpec("sensor", "lazybad", "hkd_lazybad_impl:lazybad", description="lazy")]
        """,
    )
    (tmp_path / "hkd_lazybad_impl.py").write_text(
        "from hyperkd import Band, Sensor\n\n"
        "def lazybad():\n    return Sensor(name='lazybad', bands=(Band('a', 500, -3.0),), gsd_m=10)\n"
    )
    plugin_env.syspath_prepend(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="hyperkd.core.plugins"):
        load_plugins(force=True)
    infos = {i.name: i for i in plugin_infos()}
    assert infos["zero-fwhm"].status == "failed"
    assert "plugin 'zero-fwhm'" in infos["zero-fwhm"].error and "FWHM must be > 0" in infos["zero-fwhm"].error
    assert (
        infos["bad-bad"].status == "failed"
        and "bad_bands names bands the table lacks" in infos["bad-bad"].error
    )
    assert infos["messy"].status == "loaded" and infos["lazybad"].status == "loaded"
    warned = [r.getMessage() for r in caplog.records]
    assert any(
        "plugin 'messy'" in w and "not in increasing order" in w and "B1 600 nm then B2 500 nm" in w
        for w in warned
    )
    assert any("plugin 'messy'" in w and "share a centre wavelength (B2/B3 at 500 nm)" in w for w in warned)
    assert get_sensor("messy").num_bands == 4  # warned, still usable
    # asking for the failed plugin's sensor names the plugin and why, not "unknown sensor"
    with pytest.raises(
        HyperKDError, match=r"sensor 'zero-fwhm' comes from plugin 'zero-fwhm', which failed: .*FWHM"
    ):
        get_sensor("zero-fwhm")
    with pytest.raises(
        HyperKDError, match=r"unknown sensor 'gone'.*Plugins that failed to load: .*gone \(ImportError"
    ):
        get_sensor("gone")
    # the lazy one fails on first build, naming plugin and sensor; the others keep working
    code = main(["sensors", "list", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    names = {r["name"] for r in json.loads(out)}
    assert {"enmap", "hls", "messy"} <= names and not names & {"zero-fwhm", "bad-bad", "lazybad"}
    assert "plugin 'lazybad': sensor 'lazybad'" in err and "FWHM must be > 0" in err
    assert {i.name: i for i in plugin_infos()}["lazybad"].status == "failed"
    with pytest.raises(HyperKDError, match="comes from plugin 'lazybad'"):
        get_sensor("lazybad")
    assert get_sensor("enmap").num_bands == 202


def test_bad_bands_are_left_out_of_the_default_selection_and_shown(tmp_path, plugin_env, capsys):
    from hyperkd import get_sensor

    _plugin(tmp_path, "withbad", 'table("withbad", [450, 550, 650, 750, 1400], bad_bands=("B5",))')
    _plugin(
        tmp_path,
        "badindefault",
        'table("badindefault", [450, 550], bad_bands=("B2",), selections={"vis": ("B1", "B2")}, default_selection="vis")',
    )
    plugin_env.syspath_prepend(str(tmp_path))
    load_plugins(force=True)
    s = get_sensor("withbad")
    assert s.band_names == ["B1", "B2", "B3", "B4"] and s.selection == "good-bands"
    assert get_sensor("withbad", selection="all").num_bands == 5
    assert get_sensor("withbad", selection=s.selection).band_names == s.band_names  # the label rebuilds it
    code = main(["sensors", "show", "withbad", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert code == 0 and d["bad_bands"] == ["B5"] and d["default_selection_bands"] == ["B1", "B2", "B3", "B4"]
    code = main(["sensors", "show", "withbad"])
    out = capsys.readouterr().out
    assert code == 0 and "bad bands: B5" in out and "default selection: good-bands" in out
    assert {i.name: i for i in plugin_infos()}["badindefault"].status == "failed"
    assert (
        "default selection 'vis' keeps bad bands ['B2']"
        in {i.name: i for i in plugin_infos()}["badindefault"].error
    )


def test_a_teacher_band_the_student_cannot_see_is_refused_or_dropped_and_recorded(
    tmp_path, plugin_env, capsys
):
    """A DESIS-like student (400-1000 nm) under Prithvi (SWIR1, SWIR2): refused by default in
    one line with nothing written; with aligner.missing=drop the run records and reports it."""
    import yaml
    from hyperkd_prithvi.testing import write_tiny_checkpoint

    from .helpers.toy import toy_store

    _plugin(tmp_path, "vnir", 'table("vnir", [400 + 10 * i for i in range(61)], fwhm=10.0)')
    plugin_env.syspath_prepend(str(tmp_path))
    load_plugins(force=True)
    from hyperkd import get_sensor

    store = toy_store(tmp_path / "store", sensor=get_sensor("vnir"), chips=8, size=16)
    teacher = write_tiny_checkpoint(tmp_path / "teacher.pt", seed=1)
    run = tmp_path / "kd"
    args = ["distill", "--teacher", "prithvi-eo-tiny", "--teacher-weights", str(teacher), "--student", "vnir"]
    args += ["--data", str(store.root), "--out", str(run), *_sets("trainer.max_steps=1")]
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and "hls band B06 (1570-1650 nm) contains no vnir band" in err and "missing=drop" in err
    assert not run.exists()
    code = main([*args, "--set", "aligner.missing=drop"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = " ".join(out.split())  # rich wraps long lines
    assert "aligner: teacher band(s) B06, B07 covered by no student band, aligner.missing=drop" in summary
    info = json.loads((run / "distill.json").read_text())
    assert info["aligner_bands"] == {"missing": "drop", "missing_bands": ["B06", "B07"]}
    assert yaml.safe_load((run / "recipe.yaml").read_text())["aligner"]["missing"] == "drop"
