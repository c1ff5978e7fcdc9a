"""Loading Prithvi weights: sources, both key layouts, the HF cache offline, and clear errors."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch
from hyperkd_prithvi.model import sincos_3d
from hyperkd_prithvi.testing import (
    install_in_hf_cache,
    tiny_overrides,
    tiny_state_dict,
    write_tiny_checkpoint,
)
from hyperkd_prithvi.weights import parse_source, read_state_dict

import hyperkd
from hyperkd.core.errors import WeightsError

V1_REPO = "ibm-nasa-geospatial/Prithvi-EO-1.0-100M"
V1_FILE = "Prithvi_EO_V1_100M.pt"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty HF cache in tmp_path, offline; HF_HOME points elsewhere so it cannot leak in."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def tiny(weights, **kw):
    return hyperkd.create("teacher", "prithvi-eo-tiny", weights=weights, **kw)


def assert_encoder_equals(teacher, state):
    flat = not any(k.startswith("encoder.") for k in state)
    for k, v in teacher.encoder.state_dict().items():
        if k == "pos_embed":
            continue
        want = state[k] if flat else state["encoder." + k]
        torch.testing.assert_close(v, want, rtol=0, atol=0, msg=k)


# -- sources and layouts -----------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["prefixed", "flat"])
def test_tiny_pt_loads_exactly_in_both_layouts(tmp_path, layout):
    path = write_tiny_checkpoint(tmp_path / f"tiny-{layout}.pt", layout=layout, seed=3)
    teacher = tiny(str(path))
    assert_encoder_equals(teacher, torch.load(path, weights_only=True))
    assert teacher.weights_info["layout"] == layout
    assert teacher.decoder is None  # dropped after a strict load of the whole MAE
    kept = tiny(path, keep_decoder=True)
    want = tiny_state_dict(layout="prefixed", seed=3)
    torch.testing.assert_close(kept.decoder.mask_token, want["decoder.mask_token"], rtol=0, atol=0)


def test_safetensors_file_and_folder(tmp_path):
    st = write_tiny_checkpoint(tmp_path / "w" / "model.safetensors", seed=5)
    want = tiny_state_dict(seed=5)
    assert_encoder_equals(tiny(st), want)
    assert_encoder_equals(tiny(tmp_path / "w"), want)
    assert tiny(tmp_path / "w").weights_info["path"] == str(st)


def test_state_dict_nested_under_model_loads(tmp_path):
    state = tiny_state_dict(seed=1)
    torch.save({"model": state, "epoch": 399}, tmp_path / "mae-train.pt")
    assert_encoder_equals(tiny(tmp_path / "mae-train.pt"), state)


def test_stored_position_tables_are_ignored(tmp_path):
    state = tiny_state_dict(seed=2)
    state["encoder.pos_embed"] = torch.randn(1, 1 + 3 * 4, 64)  # wrong values and shape
    state["decoder.decoder_pos_embed"] = torch.full((1, 5, 32), 7.0)
    torch.save(state, tmp_path / "odd-tables.pt")
    teacher = tiny(tmp_path / "odd-tables.pt")
    torch.testing.assert_close(teacher.encoder.pos_embed, sincos_3d(64, (1, 2, 2)))


def test_random_init_control_and_kwargs():
    a, b = tiny(None), tiny(None)
    assert a.weights_info == {"source": "random init"}
    assert not torch.equal(a.encoder.blocks[0].attn.qkv.weight, b.encoder.blocks[0].attn.qkv.weight)
    t = tiny(None, layers=[0, 1], depth=3, embed_dim=32, num_heads=2)
    assert t.depth == 3 and t.embed_dim == 32 and t.layers == [0, 1]
    assert len(t.forward_features(torch.rand(1, 6, 32, 32))) == 2


# -- Hugging Face cache ----------------------------------------------------------------------------


def test_default_weights_load_from_hf_cache_offline(hub):
    """The tiny file sits at the official repo/file in an HF cache: the default path finds it."""
    snap = install_in_hf_cache(hub, V1_REPO, V1_FILE, layout="flat", seed=7)
    assert (
        snap.is_file()
        and (hub / "models--ibm-nasa-geospatial--Prithvi-EO-1.0-100M" / "refs" / "main").is_file()
    )
    teacher = hyperkd.create("teacher", "prithvi", weights="default", **tiny_overrides())
    assert teacher.variant.name == "prithvi-eo-1.0-100m"
    assert Path(teacher.weights_info["path"]).resolve() == snap.resolve()
    assert teacher.weights_info["layout"] == "flat"
    assert_encoder_equals(teacher, tiny_state_dict(layout="flat", seed=7))


def test_repo_at_revision_with_a_path_through_hf_home(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    install_in_hf_cache(tmp_path / "hf" / "hub", "me/prithvi-tiny", "ckpt/tiny.pt", revision="v2", seed=11)
    teacher = tiny("me/prithvi-tiny@v2/ckpt/tiny.pt")
    assert_encoder_equals(teacher, tiny_state_dict(seed=11))
    with pytest.raises(WeightsError, match="me/prithvi-tiny@v1"):
        tiny("me/prithvi-tiny@v1/ckpt/tiny.pt")


def test_offline_with_nothing_cached_names_repo_file_and_the_flag(hub):
    with pytest.raises(WeightsError) as info:
        hyperkd.create("teacher", "prithvi-eo-2.0-300m")
    msg = str(info.value)
    assert "ibm-nasa-geospatial/Prithvi-EO-2.0-300M" in msg and "Prithvi_EO_V2_300M.pt" in msg
    assert "HF_HUB_OFFLINE" in msg and "--teacher-weights PATH" in msg and str(hub) in msg
    assert "\n" not in msg


def test_tiny_has_no_official_weights():
    with pytest.raises(WeightsError, match="no official weights"):
        tiny("default")


# -- clear errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty", "safetensors"])
def test_corrupt_files_name_the_file(tmp_path, kind):
    if kind == "garbage":
        path = tmp_path / "w.pt"
        path.write_bytes(os.urandom(2048))
    elif kind == "truncated":
        good = write_tiny_checkpoint(tmp_path / "good.pt")
        path = tmp_path / "half.pt"
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "empty":
        path = tmp_path / "w.pt"
        path.write_bytes(b"")
    else:
        good = write_tiny_checkpoint(tmp_path / "good.safetensors")
        path = tmp_path / "bad.safetensors"
        path.write_bytes(good.read_bytes()[:100])
    with pytest.raises(WeightsError) as info:
        tiny(path)
    msg = str(info.value)
    assert str(path) in msg
    assert any(w in msg for w in ("corrupt", "truncated", "empty"))


def test_pickled_python_objects_are_refused(tmp_path):
    torch.save({"model": tiny_state_dict(), "args": argparse.Namespace(lr=1e-4)}, tmp_path / "full.pt")
    with pytest.raises(WeightsError, match=r"weights_only=True"):
        tiny(tmp_path / "full.pt")


def test_wrong_shapes_are_listed_with_what_the_file_looks_like(tmp_path):
    path = write_tiny_checkpoint(tmp_path / "wide.pt", embed_dim=128)
    with pytest.raises(WeightsError) as info:
        tiny(path)
    msg = str(info.value)
    assert "shape mismatch" in msg and "prithvi-eo-tiny" in msg and str(path) in msg
    assert "encoder.patch_embed.proj.weight file [128, 6, 1, 16, 16] vs model [64, 6, 1, 16, 16]" in msg
    assert "embed_dim=128" in msg


def test_full_size_name_with_a_tiny_file_fails_fast_and_clearly(hub):
    install_in_hf_cache(hub, V1_REPO, V1_FILE)
    with pytest.raises(WeightsError) as info:
        hyperkd.create("teacher", "prithvi")  # full-size model on meta: nothing allocated
    msg = str(info.value)
    assert "do not match prithvi-eo-1.0-100m" in msg and "missing key(s)" in msg and "embed_dim=64" in msg


def test_missing_and_unexpected_keys_are_listed_and_truncated(tmp_path):
    state = tiny_state_dict()
    dropped = sorted(k for k in state if k.startswith("encoder.blocks.1."))
    assert len(dropped) == 12
    for k in dropped:
        del state[k]
    del state["decoder.mask_token"]
    state["encoder.head.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(WeightsError) as info:
        tiny(tmp_path / "partial.pt")
    msg = str(info.value)
    assert "13 missing key(s)" in msg and "(+5 more)" in msg
    assert "encoder.blocks.1.attn.proj.bias" in msg  # module order: block 1's keys first
    assert "1 unexpected key(s): encoder.head.weight" in msg


def test_flat_missing_keys_are_reported_with_prefixes(tmp_path):
    state = tiny_state_dict(layout="flat")
    del state["norm.weight"]
    torch.save(state, tmp_path / "flat.pt")
    with pytest.raises(WeightsError, match=r"flat v1 keys.*1 missing key\(s\): encoder\.norm\.weight"):
        tiny(tmp_path / "flat.pt")


# -- parsing sources ---------------------------------------------------------------------------------


def test_parse_source_forms(tmp_path):
    off = {"official_repo": V1_REPO, "official_filename": V1_FILE}
    s = parse_source("default", **off)
    assert (s.kind, s.repo_id, s.filenames, s.revision) == ("hub", V1_REPO, (V1_FILE,), None)
    s = parse_source(f"{V1_REPO}@abc123", **off)
    assert (s.repo_id, s.filenames, s.revision) == (V1_REPO, (V1_FILE,), "abc123")
    s = parse_source("hf://me/mine@refs%2Fpr%2F1/sub/w.safetensors", **off)
    assert (s.repo_id, s.filenames, s.revision) == ("me/mine", ("sub/w.safetensors",), "refs/pr/1")
    assert parse_source("me/mine", **off).filenames == ("model.safetensors", V1_FILE)
    assert parse_source(tmp_path).kind == "folder"
    for missing in ("./nope.pt", "weights/nope.pt", str(tmp_path / "nope.pt"), "nope"):
        with pytest.raises(WeightsError, match="no such file or folder"):
            parse_source(missing, **off)


def test_prefixes_say_whether_weights_are_local_or_on_the_hub(tmp_path, monkeypatch, hub):
    monkeypatch.chdir(tmp_path)
    write_tiny_checkpoint(tmp_path / "me" / "w.pt")
    assert parse_source("me/w.pt").kind == "file"  # unprefixed: the existing path wins
    assert parse_source("local-dir:me").kind == "folder"
    s = parse_source("hf-hub:me/w.pt")
    assert (s.kind, s.repo_id, s.explicit) == ("hub", "me/w.pt", True)
    with pytest.raises(WeightsError, match="no such file or folder"):
        parse_source("local-dir:nope/x.pt")
    with pytest.raises(WeightsError) as info:  # an unprefixed repo id that is in neither place says both
        tiny("someone/prithvi-ish")
    msg = str(info.value)
    assert (
        "someone/prithvi-ish" in msg and "no local file or folder named" in msg and "hf-hub:ORG/NAME" in msg
    )
    with pytest.raises(WeightsError) as info:
        tiny("hf-hub:someone/prithvi-ish")
    assert "no local file or folder" not in str(info.value)


def test_read_state_dict_rejects_non_state_dicts(tmp_path):
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="holds a list, not a state dict"):
        read_state_dict(tmp_path / "list.pt")


def test_loaded_teacher_is_frozen_float32_and_off_the_meta_device(tmp_path):
    torch.save({k: v.half() for k, v in tiny_state_dict(seed=9).items()}, tmp_path / "half.pt")
    teacher = tiny(tmp_path / "half.pt")
    params = list(teacher.parameters())
    assert {p.dtype for p in params} == {torch.float32}
    assert not any(p.is_meta or p.requires_grad for p in params) and not teacher.training
    want = tiny_state_dict(seed=9)["encoder.cls_token"].half().float()
    torch.testing.assert_close(teacher.encoder.cls_token, want, rtol=0, atol=0)
