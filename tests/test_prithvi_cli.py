"""``hyperkd teachers list|show`` and ``hyperkd convert prithvi``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hyperkd_prithvi.testing import install_in_hf_cache, tiny_state_dict, write_tiny_checkpoint
from safetensors.torch import load_file

import hyperkd
from hyperkd.cli import main
from hyperkd.cli.app import app

NAMES = {
    "prithvi-eo-1.0-100m",
    "prithvi-eo-2.0-300m",
    "prithvi-eo-2.0-300m-tl",
    "prithvi-eo-2.0-600m",
    "prithvi-eo-2.0-600m-tl",
    "prithvi-eo-tiny",
}


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def hub(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_teachers_list_json(capsys):
    code, out, _ = run(capsys, "teachers", "list", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) >= NAMES
    v1 = rows["prithvi-eo-1.0-100m"]
    assert v1["aliases"] == ["prithvi"] and v1["plugin"] == "prithvi"
    assert (v1["embed_dim"], v1["depth"], v1["num_heads"], v1["patch_size"], v1["num_frames"]) == (
        768,
        12,
        12,
        16,
        3,
    )
    assert v1["encoder_parameters"] == 86_237_184
    assert rows["prithvi-eo-2.0-600m-tl"]["coords_encoding"] == ["time", "location"]
    assert rows["prithvi-eo-tiny"]["default_weights"] == "random init"
    # Listing the commands twice must not register the groups twice.
    run(capsys, "teachers", "list", "--json")
    assert [g.name for g in app.registered_groups].count("teachers") == 1


def test_teachers_show_json(capsys, hub):
    code, out, _ = run(capsys, "teachers", "show", "prithvi", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["name"] == "prithvi-eo-1.0-100m" and d["plugin"] == "prithvi"
    assert d["parameters"] == {"encoder": 86_237_184, "decoder": 26_402_304, "total": 112_639_488}
    assert d["config"]["embed_dim"] == 768 and d["config"]["patch_size"] == [1, 16, 16]
    assert [b["name"] for b in d["bands"]] == ["B02", "B03", "B04", "B05", "B06", "B07"]
    assert d["bands"][3]["mean_dn"] == pytest.approx(2497.2022620507532)
    assert d["repo_id"] == "ibm-nasa-geospatial/Prithvi-EO-1.0-100M"
    assert d["default_weights"] == "ibm-nasa-geospatial/Prithvi-EO-1.0-100M / Prithvi_EO_V1_100M.pt"
    assert d["default_weights_cached"] is False
    assert d["features"]["without_cls"] == "(B, (H/16)*(W/16), 768)"
    install_in_hf_cache(hub, d["repo_id"], d["filename"])
    code, out, _ = run(capsys, "teachers", "show", "prithvi-eo-1.0-100m", "--json")
    assert json.loads(out)["default_weights_cached"] is True


def test_the_packaged_teacher_is_listed_with_its_packaged_weights(capsys):
    code, out, _ = run(capsys, "teachers", "show", "prithvi-tiny-synth", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["default_weights"] == "packaged: hyperkd_prithvi/assets/prithvi-tiny-synth"
    assert d["config"]["patch_size"] == [1, 4, 4] and d["repo_id"] is None
    assert "NOT NASA/IBM" in d["description"]
    code, out, _ = run(capsys, "teachers", "list", "--json")
    row = next(r for r in json.loads(out) if r["name"] == "prithvi-tiny-synth")
    assert code == 0 and row["default_weights"] == d["default_weights"] and row["embed_dim"] == 128


def test_teachers_show_human_and_v2_stats(capsys):
    code, out, _ = run(capsys, "teachers", "show", "prithvi-eo-2.0-600m")
    assert code == 0
    flat = " ".join(out.split())  # rich wraps to the terminal width
    assert "Prithvi_EO_V2_600M.pt" in flat and "encoder 631.2M" in flat and "v2 statistics" in flat
    assert "1087.00" in flat  # v2 blue mean (DN)


def test_teachers_show_unknown_is_one_line(capsys):
    code, _, err = run(capsys, "teachers", "show", "prithvi-eo-3")
    assert code == 1 and err.startswith("error: unknown teacher 'prithvi-eo-3'") and "Traceback" not in err


@pytest.mark.parametrize("layout", ["flat", "prefixed"])
def test_convert_writes_safetensors_and_config_that_load_back(capsys, tmp_path, layout):
    src = write_tiny_checkpoint(tmp_path / "tiny.pt", layout=layout, seed=4)
    out_dir = tmp_path / "converted"
    code, out, err = run(capsys, "convert", "prithvi", str(src), str(out_dir), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["variant"] == "prithvi-eo-tiny" and summary["layout"] == layout  # detected from shapes
    assert sorted(p.name for p in out_dir.iterdir()) == ["config.json", "model.safetensors"]  # no temp files
    tensors = load_file(out_dir / "model.safetensors")
    want = tiny_state_dict(layout="prefixed", seed=4)
    assert set(tensors) == set(want)
    for k, v in want.items():
        if not k.endswith("pos_embed"):
            torch.testing.assert_close(tensors[k], v, rtol=0, atol=0, msg=k)
    cfg = json.loads((out_dir / "config.json").read_text())
    assert cfg["variant"] == "prithvi-eo-tiny" and cfg["architecture"]["embed_dim"] == 64
    assert cfg["pretrained_cfg"]["mean"] == cfg["mean"] and cfg["source"]["layout"] == layout
    assert len(cfg["source"]["sha256"]) == 64
    a = hyperkd.create("teacher", "prithvi-eo-tiny", weights=str(out_dir))
    b = hyperkd.create("teacher", "prithvi-eo-tiny", weights=str(src))
    x = torch.rand(1, 6, 32, 32) * 0.3
    torch.testing.assert_close(a.forward_features(x)[0], b.forward_features(x)[0], rtol=0, atol=0)


def test_converted_folder_refuses_another_variant(capsys, tmp_path):
    src = write_tiny_checkpoint(tmp_path / "tiny.pt")
    assert run(capsys, "convert", "prithvi", str(src), str(tmp_path / "out"))[0] == 0
    with pytest.raises(
        hyperkd.HyperKDError, match=r"holds weights for prithvi-eo-tiny, not prithvi-eo-2\.0-300m"
    ):
        hyperkd.create("teacher", "prithvi-eo-2.0-300m", weights=str(tmp_path / "out"))


def test_convert_errors_are_one_line(capsys, tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"\x80\x02not really a checkpoint")
    code, _, err = run(capsys, "convert", "prithvi", str(bad), str(tmp_path / "out"))
    assert code == 1 and err.startswith("error: weights file") and str(bad) in err.replace("\n", "")
    assert not (tmp_path / "out" / "model.safetensors").exists()
    src = write_tiny_checkpoint(tmp_path / "tiny.pt")
    code, _, err = run(
        capsys, "convert", "prithvi", str(src), str(tmp_path / "out"), "--variant", "prithvi-eo-1.0-100m"
    )
    assert code == 1 and "do not match prithvi-eo-1.0-100m" in err and "shape mismatch" in err
    code, _, err = run(
        capsys, "convert", "prithvi", str(src), str(tmp_path / "out"), "--variant", "prithvi-x"
    )
    assert code == 1 and "unknown Prithvi variant 'prithvi-x'" in err
    assert not Path(tmp_path / "out" / "config.json").exists()
