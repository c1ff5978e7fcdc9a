"""Sharing models: save -> folder / HF cache / push -> load with identical outputs; model card; refusals.

The Hub is unreachable here, so pushes are checked at the ``HfApi`` boundary (the files and
card that would be uploaded) and pulls go through a local HF cache layout under
``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import hyperkd
from hyperkd import hub
from hyperkd.cli import main
from hyperkd.core.errors import HyperKDError, WeightsError
from hyperkd.core.plugins import load_plugins
from hyperkd.models.mae import HyperspectralMAE, build_student

from .helpers.toy import toy_store

TINY_ARCH = dict(
    img_size=16,
    patch_size=4,
    embed_dim=32,
    depth=1,
    num_heads=2,
    decoder_embed_dim=16,
    decoder_depth=1,
    decoder_num_heads=2,
    spectral_dim=8,
)
TINY = [
    "student.patch_size=4",
    "student.embed_dim=32",
    "student.depth=1",
    "student.num_heads=2",
    "student.decoder_embed_dim=16",
    "student.decoder_depth=1",
    "student.decoder_num_heads=2",
    "student.spectral_dim=8",
    "data.batch_size=8",
    "trainer.log_every_n_steps=1",
    "trainer.checkpoint_every_n_steps=1000",
    "trainer.max_epochs=2",
    "trainer.figures=false",
]


def outputs(model: HyperspectralMAE, seed: int = 0) -> list[torch.Tensor]:
    """Reconstruction under a fixed mask plus unmasked features of every layer, for one fixed input."""
    g = torch.Generator().manual_seed(seed)
    x = 0.05 + 0.4 * torch.rand(2, model.in_chans, model.img_size, model.img_size, generator=g)
    mask = torch.zeros(2, model.num_patches, dtype=torch.bool)
    mask[:, ::2] = True
    with torch.no_grad():
        out = model.eval()(x, mask)
    return [out.pred, *model.forward_features(x, layers=list(range(model.depth)), with_cls=True)]


def assert_same_outputs(a: HyperspectralMAE, b: HyperspectralMAE) -> None:
    for ta, tb in zip(outputs(a), outputs(b), strict=True):
        assert torch.equal(ta, tb)


def install_folder_in_cache(
    cache: Path, repo_id: str, folder: Path, revision: str = "main", commit: str = "a" * 40
) -> None:
    """Lay out every file of ``folder`` as one commit of ``repo_id`` in an HF cache."""
    from hyperkd_prithvi.testing import install_in_hf_cache

    for f in sorted(folder.iterdir()):
        install_in_hf_cache(cache, repo_id, f.name, source=f, revision=revision, commit=commit)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def save_tiny_student(parent: Path, **overrides: Any) -> tuple[HyperspectralMAE, Path]:
    """A tiny random enmap student (``TINY_ARCH`` with ``overrides``), saved as ``parent/student``."""
    load_plugins()
    torch.manual_seed(0)
    model = build_student("enmap", **{**TINY_ARCH, **overrides}).eval()
    folder = parent / "student"
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[HyperspectralMAE, Path]:
    """A tiny random student and its saved folder."""
    return save_tiny_student(tmp_path_factory.mktemp("saved"))


class FakeHub:
    """Stands in for the Hub at the ``HfApi`` boundary: records calls and committed files."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.files: dict[str, bytes] = {}

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
        import huggingface_hub
        from huggingface_hub import CommitInfo, RepoUrl

        fake = self

        def create_repo(self, repo_id, **kw):
            fake.calls.append(("create_repo", {"repo_id": repo_id, **kw}))
            return RepoUrl(f"https://huggingface.co/{repo_id}")

        def create_branch(self, repo_id, **kw):
            fake.calls.append(("create_branch", {"repo_id": repo_id, **kw}))

        def create_commit(self, repo_id, operations, **kw):
            fake.calls.append(("create_commit", {"repo_id": repo_id, **kw}))
            for op in operations:
                with op.as_file() as fh:
                    fake.files[op.path_in_repo] = fh.read()
            url = f"https://huggingface.co/{repo_id}/commit/{'b' * 40}"
            return CommitInfo(
                commit_url=url,
                commit_message=kw.get("commit_message", ""),
                commit_description="",
                oid="b" * 40,
            )

        def upload_folder(self, repo_id, folder_path, **kw):
            fake.calls.append(("upload_folder", {"repo_id": repo_id, **kw}))
            for f in Path(folder_path).iterdir():
                fake.files[f.name] = f.read_bytes()
            return CommitInfo(
                commit_url=f"https://huggingface.co/{repo_id}/commit/{'c' * 40}",
                commit_message="",
                commit_description="",
                oid="c" * 40,
            )

        def no_network(self, *a, **kw):
            raise AssertionError("unexpected Hub call")

        monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
        for name in ("upload_file", "list_repo_files"):
            monkeypatch.setattr(huggingface_hub.HfApi, name, no_network)
        monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
        monkeypatch.setattr(huggingface_hub.HfApi, "create_branch", create_branch)
        monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", create_commit)
        return self

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (folder / name).write_bytes(data)
        return folder


# -- round trips --------------------------------------------------------------------------------
def test_local_folder_round_trip_is_exact_and_typed(saved):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "hyperspectral-mae" and cfg["hyperkd_version"] == hyperkd.__version__
    assert cfg["hyperkd_format"] == hub.FORMAT_VERSION and cfg["architecture"] == "mae-tiny"
    assert len(cfg["sensor"]["bands"]) == model.in_chans == 202 and cfg["embed_dim"] == 32
    assert {r["kind"]: r["plugin"] for r in cfg["requires"]} == {"model_type": "hyperkd", "sensor": "enmap"}
    loaded = hyperkd.from_pretrained(folder)
    assert type(loaded) is HyperspectralMAE and not loaded.training
    assert_same_outputs(model, loaded)
    # a run folder stands for its student/
    run = folder.parent / "run"
    shutil.copytree(folder, run / "student")
    assert_same_outputs(model, hyperkd.from_pretrained(str(run)))


def test_hf_cache_round_trip_offline_with_revisions(saved, offline_cache):
    model, folder = saved
    install_folder_in_cache(offline_cache, "someone/enmap-mae", folder, revision="main", commit="c" * 40)
    install_folder_in_cache(offline_cache, "someone/enmap-mae", folder, revision="v1", commit="c" * 40)
    for spec, rev in (
        ("someone/enmap-mae", None),
        ("someone/enmap-mae@v1", None),
        ("someone/enmap-mae", "v1"),
        ("hf://someone/enmap-mae", "c" * 40),
    ):
        loaded = hyperkd.from_pretrained(spec, revision=rev)
        assert type(loaded) is HyperspectralMAE
        assert_same_outputs(model, loaded)
    with pytest.raises(WeightsError, match=r"someone/enmap-mae@v9.*HF_HUB_OFFLINE.*not in the local cache"):
        hyperkd.from_pretrained("someone/enmap-mae@v9")
    with pytest.raises(HyperKDError, match="neither a model folder nor a Hugging Face repo id"):
        hyperkd.from_pretrained("no/such/folder")


def test_distilled_student_round_trips_through_push_and_pull(tmp_path, offline_cache, monkeypatch, capsys):
    load_plugins()
    from hyperkd_prithvi.testing import write_tiny_checkpoint

    from hyperkd.training.distill import distill

    teacher = write_tiny_checkpoint(tmp_path / "prithvi_tiny.pt", seed=1)
    store = toy_store(tmp_path / "store", chips=16, size=16)
    run = tmp_path / "run"
    distill(
        "hyperkd",
        run,
        teacher="prithvi-eo-tiny",
        teacher_weights=str(teacher),
        student="enmap",
        data=str(store.root),
        overrides=TINY,
    )
    trained = hyperkd.from_pretrained(run / "student")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and "val/loss" in metrics

    fake = FakeHub().install(monkeypatch)
    code = main(["hub", "push", str(run), "--repo-id", "me/enmap-kd", "--private", "--revision", "v1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "me/enmap-kd@v1" in out and "commit" in out
    names = [c[0] for c in fake.calls]
    assert names == ["create_repo", "create_branch", "create_commit"]
    assert fake.calls[0][1]["private"] is True and fake.calls[1][1]["branch"] == "v1"
    assert fake.calls[2][1]["revision"] == "v1"
    assert sorted(fake.files) == ["README.md", "config.json", "model.safetensors"]
    assert fake.files["model.safetensors"] == (run / "student" / "model.safetensors").read_bytes()
    assert fake.files["config.json"] == (run / "student" / "config.json").read_bytes()

    # the card: the run's real metrics, band table, recipe, synthetic-or-not, licence, citations, repo id
    card = fake.files["README.md"].decode()
    assert card.startswith("---\n") and "library_name: hyperkd" in card and "license: apache-2.0" in card
    for key in ("val/loss", "val/mse", "global_step"):
        value = metrics[key]
        assert (
            f"| {key} | {value:.4g} |" in card if isinstance(value, float) else f"| {key} | {value} |" in card
        )
    sensor = trained.sensor
    first, last = sensor.bands[0], sensor.bands[-1]
    assert f"| 1 | {first.name} | {first.center_nm:.2f} | {first.fwhm_nm:.2f} |" in card
    assert f"| {sensor.num_bands} | {last.name} | {last.center_nm:.2f} |" in card
    assert card.count("\n| ") >= sensor.num_bands + len(metrics)
    assert "distilled with HyperKD" in card and "prithvi-eo-tiny" in card and "spatial-feature" in card
    assert "16 chips of 16×16 px" in card and "Synthetic data" not in card
    assert "arXiv:2508.09453" in card and "2310.18660" in card and "2412.02732" in card
    assert 'hyperkd.from_pretrained("me/enmap-kd")' in card
    cfg = json.loads(fake.files["config.json"])
    assert cfg["recipe"] == yaml.safe_load((run / "recipe.yaml").read_text())
    assert cfg["training"]["metrics"] == metrics and cfg["training"]["data"]["num_chips"] == 16

    # pull what was pushed from an (offline) HF cache and load it: identical outputs
    install_folder_in_cache(offline_cache, "me/enmap-kd", fake.write(tmp_path / "remote"), revision="v1")
    pulled = tmp_path / "pulled"
    assert main(["hub", "pull", "me/enmap-kd", "--revision", "v1", "--out", str(pulled)]) == 0
    assert "pulled" in capsys.readouterr().out
    assert_same_outputs(trained, hyperkd.from_pretrained(pulled))
    assert_same_outputs(trained, hyperkd.from_pretrained("me/enmap-kd@v1"))


def test_student_and_init_from_accept_a_repo_id(saved, offline_cache, tmp_path):
    from hyperkd import recipes
    from hyperkd.training.runner import build_student_for, student_sensor

    model, folder = saved
    install_folder_in_cache(offline_cache, "someone/enmap-mae", folder)
    store = toy_store(tmp_path / "store", chips=8, size=16)
    assert student_sensor("someone/enmap-mae") == "enmap"
    rec = recipes.resolve("mae", ["student.name=someone/enmap-mae"])
    assert_same_outputs(model, build_student_for(rec, store))
    rec = recipes.resolve("mae", [*TINY, "student.name=enmap", "student.init_from=someone/enmap-mae"])
    fresh = build_student_for(rec, store)
    assert_same_outputs(model, fresh)


def test_push_keeps_an_edited_card_and_uploads_only_the_shared_files(saved, tmp_path, monkeypatch):
    _, folder = saved
    edited = tmp_path / "edited"
    shutil.copytree(folder, edited)
    (edited / "README.md").write_text("# my own card\n")
    (edited / "notes.txt").write_text("local notes")
    fake = FakeHub().install(monkeypatch)
    res = hub.push(edited, "me/edited")
    assert not res.card_rendered and res.revision is None
    assert sorted(fake.files) == ["README.md", "config.json", "model.safetensors"]
    assert fake.files["README.md"] == b"# my own card\n"
    assert [c[0] for c in fake.calls] == ["create_repo", "create_commit"]


# -- refusals -----------------------------------------------------------------------------------
def _no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a, **kw):
        raise AssertionError("torch.load must not be called on repo files")

    monkeypatch.setattr(torch, "load", boom)


def test_refuses_a_pickle_only_repo_without_unpickling(saved, offline_cache, tmp_path, monkeypatch):
    model, folder = saved
    bad = tmp_path / "pickled"
    bad.mkdir()
    shutil.copyfile(folder / "config.json", bad / "config.json")
    torch.save(model.state_dict(), bad / "pytorch_model.bin")
    install_folder_in_cache(offline_cache, "evil/pickled", bad)
    _no_unpickling(monkeypatch)
    for spec in ("evil/pickled", str(bad)):
        with pytest.raises(
            WeightsError, match=r"no model\.safetensors, only pickle weights \(pytorch_model\.bin\)"
        ):
            hyperkd.from_pretrained(spec)
    with pytest.raises(WeightsError, match="never unpickles"):
        HyperspectralMAE.from_pretrained(str(bad))  # the class's own loader has no pickle fallback either
    with pytest.raises(WeightsError, match="only pickle weights"):
        hub.pull("evil/pickled")
    # a cached config without cached weights (and no pickles) is a cache miss, not a broken repo
    from hyperkd_prithvi.testing import install_in_hf_cache

    install_in_hf_cache(offline_cache, "someone/config-only", "config.json", source=folder / "config.json")
    with pytest.raises(
        WeightsError, match=r"model\.safetensors not found .*HF_HUB_OFFLINE is set and it is not in"
    ):
        hyperkd.from_pretrained("someone/config-only")


def _edited_copy(folder: Path, dest: Path, **changes: Any) -> Path:
    shutil.copytree(folder, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg.update(changes)
    (dest / "config.json").write_text(json.dumps(cfg))
    (dest / "model.safetensors").write_bytes(b"not read")  # the config check comes first
    return dest


def test_refuses_a_config_from_a_newer_hyperkd(saved, tmp_path):
    _, folder = saved
    newer = _edited_copy(folder, tmp_path / "newer", hyperkd_version="9.1.0", min_hyperkd_version="9.0.0")
    with pytest.raises(
        HyperKDError,
        match=r"saved by hyperkd 9\.1\.0.*needs hyperkd >= 9\.0\.0.*this is hyperkd "
        r"0\.1\.0.*pip install -U 'hyperkd>=9\.0\.0'",
    ):
        hyperkd.from_pretrained(newer)
    fmt = _edited_copy(folder, tmp_path / "format", hyperkd_format=hub.FORMAT_VERSION + 1)
    with pytest.raises(HyperKDError, match=f"folder format {hub.FORMAT_VERSION + 1}"):
        hyperkd.from_pretrained(fmt)
    # a newer writer that declares it is readable by this version loads fine
    ok = tmp_path / "ok"
    shutil.copytree(folder, ok)
    cfg = json.loads((ok / "config.json").read_text())
    (ok / "config.json").write_text(json.dumps({**cfg, "hyperkd_version": "0.9.0"}))
    assert isinstance(hyperkd.from_pretrained(ok), HyperspectralMAE)


def test_refuses_unknown_sensor_or_model_type_naming_the_plugin(saved, tmp_path, capsys):
    _, folder = saved
    cfg = json.loads((folder / "config.json").read_text())
    sensor = {**cfg["sensor"], "name": "prisma"}
    reqs = [
        r
        if r["kind"] != "sensor"
        else {**r, "name": "prisma", "plugin": "prisma", "distribution": "hyperkd-prisma", "version": "0.2.0"}
        for r in cfg["requires"]
    ]
    prisma = _edited_copy(folder, tmp_path / "prisma", sensor=sensor, requires=reqs)
    with pytest.raises(
        HyperKDError,
        match=r"sensor 'prisma', which no installed plugin provides; install the "
        r"hyperkd plugin 'prisma' \(pip install 'hyperkd-prisma>=0\.2\.0'\)",
    ):
        hyperkd.from_pretrained(prisma)
    reqs = [
        r
        if r["kind"] != "sensor"
        else {**r, "name": "my-lab-sensor", "plugin": "user", "distribution": None, "version": None}
        for r in cfg["requires"]
    ]
    mine = _edited_copy(
        folder, tmp_path / "mine", sensor={**cfg["sensor"], "name": "my-lab-sensor"}, requires=reqs
    )
    with pytest.raises(HyperKDError, match="register the sensor 'my-lab-sensor' yourself"):
        hyperkd.from_pretrained(mine)
    reqs = [
        {
            "kind": "model_type",
            "name": "crop-segmentation",
            "plugin": "tasks",
            "distribution": "hyperkd-tasks",
            "version": "1.0",
        }
    ]
    seg = _edited_copy(folder, tmp_path / "seg", model_type="crop-segmentation", requires=reqs)
    assert main(["hub", "push", str(seg), "--repo-id", "me/seg"]) == 1
    err = capsys.readouterr().err
    assert "'crop-segmentation' model, a model type no installed plugin provides" in err
    assert "pip install 'hyperkd-tasks>=1.0'" in err and len(err.strip().splitlines()) == 1
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(HyperKDError, match="not a hyperkd model config"):
        hyperkd.from_pretrained(foreign)


def test_model_types_dispatch_and_refuse_duplicates(saved, tmp_path):
    from torch import nn

    class Probe(nn.Module, hub.HyperKDHubMixin, model_type="test-probe"):
        def __init__(self, width: int = 3) -> None:
            super().__init__()
            self.lin = nn.Linear(width, 1)

    try:
        assert hub.model_type_class("test-probe") is Probe
        probe = Probe(width=5)
        probe.save_pretrained(tmp_path / "probe")
        back = hyperkd.from_pretrained(tmp_path / "probe")
        assert type(back) is Probe and back.lin.in_features == 5
        assert torch.equal(back.lin.weight, probe.lin.weight)
        with pytest.raises(HyperKDError, match=r"is a 'test-probe' model .*not a HyperspectralMAE"):
            HyperspectralMAE.from_pretrained(str(tmp_path / "probe"))
        with pytest.raises(HyperKDError, match=r"is a 'hyperspectral-mae' model .*not a Probe"):
            Probe.from_pretrained(str(saved[1]))
        with pytest.raises(HyperKDError, match="already provided"):
            type("Other", (nn.Module, hub.HyperKDHubMixin), {}, model_type="test-probe")
    finally:
        hub.MODEL_TYPES.pop("test-probe", None)
    with pytest.raises(HyperKDError, match="known: any-sensor-mae, hyperkd-pixel, hyperspectral-mae"):
        hub.model_type_class("test-probe")


def test_card_says_synthetic_when_the_run_trained_on_synthetic_chips(saved, tmp_path):
    import copy

    import numpy as np

    from hyperkd.core.io import atomic_write_json
    from hyperkd.data.store import ChipStoreWriter

    model = copy.deepcopy(
        saved[0]
    )  # saving with provenance records it on the model: keep the shared one clean
    note = "SYNTHETIC DATA made by a test; not real imagery"
    w = ChipStoreWriter(
        tmp_path / "syn", model.sensor, 16, shard_size=4, synthetic=True, attrs={"synthetic": note}
    )
    for i in range(3):
        w.add(np.full((model.in_chans, 16, 16), 0.2, np.float32), source=f"s{i}")
    w.close()
    run = tmp_path / "run"
    run.mkdir()
    from hyperkd import recipes

    (run / "recipe.yaml").write_text(recipes.dump(recipes.resolve("mae", [f"data.store={tmp_path / 'syn'}"])))
    atomic_write_json(run / "metrics.json", {"global_step": 7, "val/loss": 0.123456})
    prov = hub.run_provenance(run)
    assert prov["training"]["data"] == {
        "store": str(tmp_path / "syn"),
        "synthetic": True,
        "num_chips": 3,
        "chip_size": 16,
        "description": note,
    }
    model.save_pretrained(tmp_path / "out", provenance=prov, config={"license": "cc-by-4.0"})
    card = (tmp_path / "out" / "README.md").read_text()
    assert "**Synthetic data.** Trained on 3 chips of 16×16 px" in card and note in card
    assert "- synthetic-data" in card and "MAE-pretrained without distillation" in card
    assert "| val/loss | 0.1235 |" in card and "| global_step | 7 |" in card and "license: cc-by-4.0" in card


def test_teacher_weights_accept_a_repo_id_of_a_converted_teacher(offline_cache, tmp_path):
    load_plugins()
    from hyperkd_prithvi.convert import convert_prithvi
    from hyperkd_prithvi.testing import write_tiny_checkpoint

    ckpt = write_tiny_checkpoint(tmp_path / "tiny.pt", seed=3)
    folder = tmp_path / "converted"
    convert_prithvi(ckpt, folder)
    install_folder_in_cache(offline_cache, "lab/prithvi-tiny", folder, revision="v2")
    teacher = hyperkd.create("teacher", "prithvi-eo-tiny", weights="lab/prithvi-tiny@v2")
    local = hyperkd.create("teacher", "prithvi-eo-tiny", weights=str(folder))
    for (k, a), (_, b) in zip(teacher.state_dict().items(), local.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(HyperKDError, match=r"converted Prithvi-EO teacher.*--teacher-weights"):
        hyperkd.from_pretrained("lab/prithvi-tiny@v2")


def test_push_offline_fails_in_one_line(saved, capsys):
    _, folder = saved
    assert main(["hub", "push", str(folder), "--repo-id", "me/offline"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "could not push" in err and "HF_HUB_OFFLINE is set" in err


def test_a_student_saved_before_the_folder_format_still_loads(saved, tmp_path):
    model, folder = saved
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    shutil.copyfile(folder / "model.safetensors", legacy / "model.safetensors")
    (legacy / "config.json").write_text(
        json.dumps(model._hub_mixin_config, sort_keys=True)
    )  # the old mixin config
    assert hub.read_config(legacy)["hyperkd_format"] == 0
    assert_same_outputs(model, hyperkd.from_pretrained(legacy))
    assert_same_outputs(model, HyperspectralMAE.from_pretrained(str(legacy)))
    (legacy / "config.json").write_text(
        json.dumps(
            {**model._hub_mixin_config, "sensor": {**model._hub_mixin_config["sensor"], "name": "ghost"}}
        )
    )
    with pytest.raises(
        HyperKDError, match="sensor 'ghost', which no installed plugin provides; install the plugin"
    ):
        hyperkd.from_pretrained(legacy)


def test_push_to_hub_from_python_uploads_the_same_folder(saved, tmp_path, monkeypatch):
    model, folder = saved
    fake = FakeHub().install(monkeypatch)
    model.push_to_hub("me/from-python", private=True)
    assert [c[0] for c in fake.calls] == ["create_repo", "upload_folder"]
    assert sorted(fake.files) == ["README.md", "config.json", "model.safetensors"]
    assert fake.files["config.json"] == (folder / "config.json").read_bytes()
    assert 'hyperkd.from_pretrained("me/from-python")' in fake.files["README.md"].decode()
    assert_same_outputs(model, hyperkd.from_pretrained(fake.write(tmp_path / "remote")))


# -- timm-style config fields (issue 15) ----------------------------------------------------------
def test_config_carries_timm_style_fields_that_rebuild_the_architecture(saved):
    model, folder = saved
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architecture"] == "mae-tiny"  # a name hyperkd.create_model builds, as in timm
    assert cfg["model_args"]["embed_dim"] == 32 and "sensor" not in cfg["model_args"]
    pcfg = cfg["pretrained_cfg"]
    c = model.in_chans
    assert pcfg["input_size"] == [c, 16, 16] and pcfg["fixed_input_size"] and pcfg["standardizes_input"]
    assert pcfg["mean"] == model.band_mean.flatten().tolist() and len(pcfg["std"]) == c
    assert pcfg["wavelengths_nm"] == model.sensor.centers_nm and pcfg["band_names"][0] == "B1"
    assert len(pcfg["fwhm_nm"]) == c and pcfg["sensor"] == "enmap"
    # the architecture from the timm fields alone, untrained; the saved weights fit it strictly
    rebuilt = hyperkd.create_model(cfg["architecture"], sensor=cfg["sensor"], **cfg["model_args"])
    rebuilt.load_state_dict(hub.read_safetensors(folder / "model.safetensors"))
    assert_same_outputs(model, rebuilt.eval())
    # a student built without a size preset still gets a buildable name
    direct = HyperspectralMAE(sensor=model.sensor.to_dict(), **TINY_ARCH)
    name, args = direct.hub_architecture()
    assert name == "mae-tiny" and args["embed_dim"] == 32 and "size" not in args


def test_a_config_without_the_timm_fields_still_loads(saved, tmp_path):
    model, folder = saved
    older = tmp_path / "older"
    shutil.copytree(folder, older)
    cfg = json.loads((older / "config.json").read_text())
    for key in ("model_args", "pretrained_cfg"):
        del cfg[key]
    (older / "config.json").write_text(json.dumps({**cfg, "architecture": "HyperspectralMAE"}))
    assert_same_outputs(model, hyperkd.create_model(older))


def test_create_model_loads_a_hub_repo_in_one_call(saved, tmp_path, monkeypatch):
    """Online (HF_HUB_OFFLINE=0) with hf_hub_download answering from files in the official cache
    layout: ``hf-hub:`` loads in one call and only config.json + model.safetensors are asked for."""
    import huggingface_hub
    from huggingface_hub import hub_mixin

    model, folder = saved
    cache = tmp_path / "cache"
    install_folder_in_cache(cache, "me/enmap-mae", folder, revision="v1", commit="b" * 40)
    asked: list[str] = []

    def download(repo_id, filename, *, revision=None, **kw):
        asked.append(filename)
        assert repo_id == "me/enmap-mae" and revision == "v1"
        snap = cache / "models--me--enmap-mae" / "snapshots" / ("b" * 40) / filename
        if not snap.exists():
            from huggingface_hub.errors import EntryNotFoundError

            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(snap)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(hub_mixin, "hf_hub_download", download)
    loaded = hyperkd.create_model("hf-hub:me/enmap-mae@v1")
    assert type(loaded) is HyperspectralMAE and not loaded.training
    assert_same_outputs(model, loaded)
    assert set(asked) == {"config.json", "model.safetensors"}


# -- weight files: one line each (issue 14) -------------------------------------------------------
def test_a_truncated_weights_file_is_one_line_naming_it(saved, tmp_path, offline_cache):
    _, folder = saved
    bad = tmp_path / "truncated"
    shutil.copytree(folder, bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError) as info:
        hyperkd.from_pretrained(bad)
    msg = str(info.value)
    assert "\n" not in msg and f"{bad / 'model.safetensors'} is not a readable safetensors file" in msg
    assert "truncated or corrupt" in msg and "SafetensorError" not in msg
    (bad / "model.safetensors").write_bytes(b"\x00" * 64)  # not safetensors at all
    with pytest.raises(WeightsError, match="is not a readable safetensors file"):
        hyperkd.create_model(str(bad))
    install_folder_in_cache(offline_cache, "me/broken", bad)  # the same from the HF cache
    with pytest.raises(WeightsError, match=r"snapshots/.*model\.safetensors is not a readable"):
        hyperkd.from_pretrained("me/broken")


def test_weights_of_another_architecture_are_one_line_with_counts(saved, tmp_path):
    _, folder = saved
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "depth": 2}))  # config of a deeper model
    with pytest.raises(WeightsError) as info:
        hyperkd.from_pretrained(other)
    msg = str(info.value)
    assert "\n" not in msg and f"folder {other}: model.safetensors does not fit the model" in msg
    assert (
        "12 missing (blocks.1.attn.proj.bias, blocks.1.attn.proj.weight, blocks.1.attn.qkv.bias, ... (9 more))"
        in msg
    )
    assert "save the folder again with save_pretrained" in msg
    (other / "config.json").write_text(json.dumps({**cfg, "embed_dim": 64, "num_heads": 2}))
    with pytest.raises(
        WeightsError,
        match=r"18 of another shape, file vs model \(blocks.0.attn.proj.bias \(32,\) vs \(64,\), ",
    ):
        hyperkd.from_pretrained(other)
    assert hub.mismatch_message({"a": torch.zeros(1)}, {"a": torch.zeros(1)}) is None
    assert (
        hub.mismatch_message({"a": torch.zeros(1)}, {"b": torch.zeros(1)})
        == "1 missing (a); 1 unexpected (b)"
    )


def test_the_card_of_a_run_over_several_stores_names_each_and_counts_their_chips(tmp_path):
    from hyperkd.hub.card import _training_data, training_data_info

    from .helpers.toy import toy_store

    a = toy_store(tmp_path / "enmap-a", chips=3, size=16)
    b = toy_store(tmp_path / "enmap-b", chips=5, size=16)
    info = training_data_info({"data": {"store": [str(a.root), str(b.root)]}}, tmp_path)
    assert info == {"store": [str(a.root), str(b.root)], "synthetic": False, "num_chips": 8, "chip_size": 16}
    text = _training_data(info, "enmap")
    assert "8 chips of 16×16 px" in text and "`enmap-a`, `enmap-b`" in text and "[" not in text
    # one store, as before
    one = training_data_info({"data": {"store": str(a.root)}}, tmp_path)
    assert one is not None and one["num_chips"] == 3 and "`enmap-a`" in _training_data(one, "enmap")
