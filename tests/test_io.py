"""Atomic writes keep the user's umask: files come out as a plain ``open(..., "w")`` would make them.

``tempfile.mkstemp`` creates its file with mode 0600; without care every file hyperkd writes
(chip store shards, manifests, saved models) would be private to its owner whatever the umask.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from hyperkd.core.io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text
from hyperkd.core.sensors import Band, Sensor
from hyperkd.data.store import ChipStoreWriter

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask() -> Iterator[callable]:
    """Set the process umask for the test; the original comes back afterwards."""
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_writers_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    want = 0o666 & ~mask
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    atomic_write_text(tmp_path / "b.txt", "x")
    atomic_write_json(tmp_path / "c.json", {"x": 1})
    with atomic_path(tmp_path / "d.npy") as tmp:
        np.save(tmp, np.zeros(3))
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what the OS gives an ordinary write: the reference
    assert mode(plain) == want
    for name in ("a.bin", "b.txt", "c.json", "d.npy"):
        assert mode(tmp_path / name) == want, name
    assert not list(tmp_path.glob(".*.tmp*")), "temporaries left behind"


def test_replacing_a_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "shared.json"
    target.write_text("{}")
    target.chmod(0o664)
    atomic_write_json(target, {"x": 1})
    assert mode(target) == 0o664
    assert target.read_text().startswith("{")


def test_chip_store_files_are_group_and_other_readable(tmp_path, umask):
    umask(0o022)
    sensor = Sensor(name="toy", bands=tuple(Band(f"b{i}", 450.0 + 50 * i, 10.0) for i in range(3)), gsd_m=30)
    w = ChipStoreWriter(tmp_path / "store", sensor, 4, shard_size=2)
    rng = np.random.default_rng(0)
    for i in range(3):
        w.add(rng.uniform(0, 0.5, (3, 4, 4)).astype(np.float32), np.ones((4, 4), bool), {}, source=f"s{i}")
    w.close()
    files = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert any(p.suffix == ".npy" for p in files) and any(p.suffix == ".json" for p in files)
    for p in files:
        assert mode(p) & 0o044 == 0o044, f"{p.name}: {oct(mode(p))}"


def test_saved_model_folder_is_group_and_other_readable(tmp_path, umask):
    from hyperkd.core.plugins import load_plugins
    from hyperkd.models.mae import build_student

    umask(0o022)
    load_plugins()
    torch.manual_seed(0)
    model = build_student(
        "enmap",
        img_size=16,
        patch_size=4,
        embed_dim=32,
        depth=1,
        num_heads=2,
        decoder_embed_dim=16,
        decoder_depth=1,
        decoder_num_heads=2,
    )
    model.save_pretrained(tmp_path / "student")
    files = [p for p in (tmp_path / "student").rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)
    for p in files:
        assert mode(p) & 0o044 == 0o044, f"{p.name}: {oct(mode(p))}"


def test_atomic_folder_swaps_in_whole_or_leaves_the_old_folder(tmp_path):
    from hyperkd.core.io import atomic_folder

    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary left behind
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    with atomic_folder(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
