"""The one model factory: every spec form (registry name, <sensor>-mae-<size>, sensor, model folder,
run folder, Hub repo), the ``local-dir:`` / ``hf-hub:`` prefixes, the callers that delegate to it,
and its one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import hyperkd
from hyperkd.cli import main
from hyperkd.core.errors import HyperKDError, RecipeError, UnknownComponentError, WeightsError
from hyperkd.core.plugins import load_plugins
from hyperkd.core.sensors import get_sensor
from hyperkd.models.factory import ModelSpec, create_model, resolve_spec
from hyperkd.models.mae import HyperspectralMAE, build_student, load_student

from . import test_hub
from .helpers.toy import toy_store
from .test_hub import TINY, TINY_ARCH, assert_same_outputs, install_folder_in_cache

saved = test_hub.saved  # fixture: a tiny random student and its saved folder
offline_cache = test_hub.offline_cache  # fixture: an empty HF cache, HF_HUB_OFFLINE=1


@pytest.fixture
def run_folder(saved, tmp_path) -> Path:
    """A run folder as pretrain/distill leave it: the exported student lives in RUN/student/."""
    run = tmp_path / "run"
    shutil.copytree(saved[1], run / "student")
    (run / "metrics.json").write_text("{}")
    return run


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


# -- architectures ------------------------------------------------------------------------------
def test_architecture_forms_resolve_and_build():
    load_plugins()
    assert resolve_spec("mae-small") == ModelSpec("mae-small", "student", "registry", name="mae-small")
    assert resolve_spec("hls-mae-tiny") == ModelSpec(
        "hls-mae-tiny", "student", "sensor-size", name="mae-tiny", sensor="hls"
    )
    assert resolve_spec("enmap") == ModelSpec("enmap", "student", "sensor", name="mae-tiny", sensor="enmap")
    assert not resolve_spec("enmap").trained and resolve_spec("hls-mae-tiny").sensor_name() == "hls"
    hls = create_model("hls-mae-tiny", img_size=32)
    assert isinstance(hls, HyperspectralMAE) and hls.in_chans == 6 and hls.img_size == 32
    assert create_model("enmap", **TINY_ARCH).embed_dim == 32
    # a registered student takes the sensor it is given (a store's, with its statistics)
    sensor = get_sensor("hls")
    m = create_model("mae-tiny", sensor=sensor, img_size=16, patch_size=4)
    assert m.sensor.name == "hls" and m.in_chans == 6
    assert build_student(sensor, img_size=16, patch_size=4).in_chans == 6
    assert hyperkd.create_model is create_model


def test_a_sensor_that_only_the_caller_knows_counts_as_known():
    sensor = get_sensor("hls").to_dict()
    sensor["name"] = "lab-camera"
    from hyperkd.core.sensors import Sensor

    cam = Sensor.from_dict(sensor)
    with pytest.raises(UnknownComponentError):
        resolve_spec("lab-camera")
    spec = resolve_spec("lab-camera-mae-tiny", sensor=cam)
    assert (spec.form, spec.sensor) == ("sensor-size", "lab-camera")
    assert create_model(spec, sensor=cam, img_size=16, patch_size=4).in_chans == 6


def test_teachers_resolve_through_the_same_function():
    load_plugins()
    spec = resolve_spec("prithvi-eo-tiny", kind="teacher")
    assert (spec.form, spec.name) == ("registry", "prithvi-eo-tiny")
    teacher = create_model("prithvi-eo-tiny", kind="teacher", weights=None)
    assert teacher.embed_dim == 64
    with pytest.raises(UnknownComponentError, match=r"unknown teacher 'enmap-mae-tiny'.*registered teacher"):
        resolve_spec("enmap-mae-tiny", kind="teacher")


# -- trained models -----------------------------------------------------------------------------
def test_model_folder_and_run_folder_load_the_same_weights(saved, run_folder):
    model, folder = saved
    spec = resolve_spec(folder)
    assert spec.form == "folder" and spec.trained and spec.source.folder == folder
    assert_same_outputs(model, create_model(folder))
    run = resolve_spec(str(run_folder))
    assert run.form == "folder" and run.source.folder == run_folder / "student"
    assert run.sensor_name() == "enmap"
    assert_same_outputs(model, create_model(str(run_folder)))
    assert_same_outputs(model, load_student(str(run_folder)))
    assert_same_outputs(model, build_student(str(run_folder)))


def test_hub_repo_ids_with_and_without_the_prefix(saved, offline_cache):
    model, folder = saved
    install_folder_in_cache(offline_cache, "lab/enmap-mae", folder, revision="v1")
    for text in ("lab/enmap-mae@v1", "hf-hub:lab/enmap-mae@v1", "hf://lab/enmap-mae@v1"):
        spec = resolve_spec(text)
        assert spec.form == "hub" and spec.source.repo_id == "lab/enmap-mae" and spec.source.revision == "v1"
        assert spec.source.explicit == (text != "lab/enmap-mae@v1")
        assert_same_outputs(model, create_model(text))
    assert_same_outputs(model, create_model("lab/enmap-mae", revision="v1"))
    assert resolve_spec("lab/enmap-mae@v1").sensor_name() == "enmap"


def test_prefixes_choose_the_reading_when_both_exist(saved, tmp_path, monkeypatch):
    _, folder = saved
    monkeypatch.chdir(tmp_path)
    shutil.copytree(folder, tmp_path / "lab" / "enmap-mae")  # a local folder spelled like a repo id
    assert resolve_spec("lab/enmap-mae").form == "folder"  # unprefixed: the existing path wins
    assert resolve_spec("local-dir:lab/enmap-mae").form == "folder"
    hub_spec = resolve_spec("hf-hub:lab/enmap-mae")
    assert hub_spec.form == "hub" and hub_spec.source.repo_id == "lab/enmap-mae"
    # a folder named like a registry name is still that name unless it holds a model ...
    (tmp_path / "enmap").mkdir()
    assert resolve_spec("enmap").form == "sensor"
    # ... or the prefix says it is a folder
    with pytest.raises(WeightsError, match="enmap holds no student"):
        create_model("local-dir:enmap")
    shutil.copytree(folder, tmp_path / "mae-tiny")
    assert resolve_spec("mae-tiny").form == "folder"


# -- the callers --------------------------------------------------------------------------------
def test_pretrain_cli_continues_from_a_run_folder(saved, run_folder, tmp_path, capsys):
    model, _ = saved
    out = tmp_path / "again"
    sets = [
        "data.synthetic.chips=8",
        "data.synthetic.size=16",
        "data.batch_size=4",
        "trainer.max_epochs=1",
        "trainer.figures=false",
        "trainer.log_every_n_steps=1",
    ]
    code = main(
        [
            "pretrain",
            "--student",
            str(run_folder),
            "--out",
            str(out),
            *[a for s in sets for a in ("--set", s)],
        ]
    )
    assert code == 0, capsys.readouterr()
    cfg = json.loads((out / "student" / "config.json").read_text())
    assert (
        cfg["embed_dim"] == 32 and cfg["sensor"]["name"] == "enmap"
    )  # the run's architecture, not the recipe's
    trained = hyperkd.from_pretrained(out)
    assert not torch.equal(trained.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)  # it trained


def test_build_student_for_and_init_from(saved, run_folder, tmp_path):
    from hyperkd import recipes
    from hyperkd.training.runner import build_student_for, student_sensor

    model, _ = saved
    store = toy_store(tmp_path / "store", chips=8, size=16)
    assert student_sensor(str(run_folder)) == "enmap" and student_sensor("enmap-mae-small") == "enmap"
    assert_same_outputs(
        model, build_student_for(recipes.resolve("mae", [f"student.name={run_folder}"]), store)
    )
    rec = recipes.resolve("mae", [*TINY, "student.name=enmap", f"student.init_from={run_folder}"])
    assert_same_outputs(model, build_student_for(rec, store))
    with pytest.raises(RecipeError, match="init_from 'enmap-mae-tiny' names an architecture"):
        build_student_for(recipes.resolve("mae", [*TINY, "student.init_from=enmap-mae-tiny"]), store)
    with pytest.raises(RecipeError, match=r"student 'hls-mae-tiny' is for sensor 'hls'.*--student enmap"):
        build_student_for(recipes.resolve("mae", ["student.name=hls-mae-tiny"]), store)


def test_finetune_resolves_students_through_the_factory(saved, run_folder, tmp_path):
    from hyperkd.evaluation.finetune import resolve_student

    model, _ = saved
    store = toy_store(tmp_path / "store", chips=8, size=16)
    assert_same_outputs(model, resolve_student(str(run_folder), store))
    fresh = resolve_student("enmap-mae-tiny", store, init="random")
    assert fresh.img_size == store.chip_size and fresh.sensor.name == "enmap"
    with pytest.raises(HyperKDError, match="is an architecture, not trained weights"):
        resolve_student("mae-tiny", store)


# -- errors -------------------------------------------------------------------------------------
def test_a_missing_repo_shaped_path_names_both_readings_and_the_prefixes(
    offline_cache, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    spec = resolve_spec("runs/kd")
    assert spec.form == "hub" and not spec.source.explicit
    with pytest.raises(WeightsError) as info:
        create_model("runs/kd")
    msg = one_line(info)
    assert (
        "Hugging Face repo runs/kd" in msg and "no local file or folder named 'runs/kd' exists either" in msg
    )
    assert "local-dir:PATH" in msg and "hf-hub:ORG/NAME" in msg and "HF_HUB_OFFLINE" in msg
    with pytest.raises(WeightsError) as info:
        create_model("hf-hub:runs/kd")
    assert "no local file or folder" not in one_line(info)  # the prefix already said which


def test_a_repo_that_does_not_exist_online_names_both_readings(monkeypatch, tmp_path):
    httpx2 = pytest.importorskip("httpx2")
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    def not_found(*a, **kw):
        resp = httpx2.Response(404, request=httpx2.Request("GET", "https://huggingface.co"))
        raise RepositoryNotFoundError("404 Client Error: Repository Not Found", response=resp)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", not_found)
    with pytest.raises(WeightsError) as info:
        create_model("nobody/nothing")
    msg = one_line(info)
    assert "Hugging Face repo nobody/nothing does not exist" in msg and "local-dir:PATH" in msg


def test_bad_specs_fail_in_one_clear_line(saved, tmp_path):
    load_plugins()
    with pytest.raises(UnknownComponentError) as info:
        resolve_spec("nope-mae-huge")
    msg = one_line(info)
    assert "unknown student 'nope-mae-huge'" in msg and "<sensor>-mae-<size>" in msg and "hf-hub:" in msg
    with pytest.raises(UnknownComponentError, match="no installed plugin provides sensor 'nope'"):
        resolve_spec("nope-mae-tiny")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match=r"empty holds no student \(no config.json"):
        resolve_spec(tmp_path / "empty")
    with pytest.raises(HyperKDError, match="no such folder"):
        resolve_spec(f"local-dir:{tmp_path / 'missing'}")
    with pytest.raises(HyperKDError, match=r"is a trained model.*img_size cannot be set"):
        create_model(saved[1], img_size=32)
    with pytest.raises(HyperKDError, match="is for sensor 'hls', but sensor='enmap' was given"):
        create_model("hls-mae-tiny", sensor=get_sensor("enmap"))
    with pytest.raises(HyperKDError, match="is an architecture name, not a saved student"):
        load_student("enmap-mae-tiny")


def test_init_from_weights_of_another_architecture_is_one_line(saved, run_folder, tmp_path):
    from hyperkd import recipes
    from hyperkd.training.parts import build_student as build_part
    from hyperkd.training.runner import build_student_for

    store = toy_store(tmp_path / "store", chips=8, size=16)
    deeper = [*TINY, "student.depth=2", "student.name=enmap", f"student.init_from={run_folder}"]
    with pytest.raises(WeightsError) as info:
        build_student_for(recipes.resolve("mae", deeper), store)
    msg = one_line(info)
    assert msg.startswith(
        f"student.init_from '{run_folder}' does not fit the model: tensors 12 missing (blocks.1."
    )
    assert "pass those weights as --student" in msg
    with pytest.raises(WeightsError, match=r"init_from .* of another shape, file vs model \(band_mean"):
        build_part({"name": "hls-mae-tiny", "init_from": str(run_folder), **TINY_ARCH})
