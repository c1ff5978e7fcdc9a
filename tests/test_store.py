"""The chip store: round trip, streaming statistics, atomic shards, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hyperkd.core.errors import DataError
from hyperkd.core.sensors import Band, Sensor
from hyperkd.data.store import ChipStore, ChipStoreWriter, LabelSpec

SENSOR = Sensor(name="toy", bands=tuple(Band(f"b{i}", 450.0 + 50 * i, 10.0) for i in range(5)), gsd_m=30)
LABELS = {"lc": LabelSpec("class", classes=("a", "b")), "soc": LabelSpec("continuous", unit="g/kg")}


def chips(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = rng.uniform(0, 0.6, size=(5, 8, 8)).astype(np.float32)
        valid = rng.uniform(size=(8, 8)) > 0.2
        yield img, valid, {"lc": rng.integers(0, 2, (8, 8)), "soc": rng.normal(size=(8, 8))}, f"src{i // 3}"


def test_round_trip_and_stats_match_numpy(tmp_path):
    w = ChipStoreWriter(tmp_path / "s", SENSOR, 8, labels=LABELS, shard_size=4, synthetic=True)
    data = list(chips(10))
    for img, valid, lab, src in data:
        w.add(img, valid, lab, source=src, window=[0, 0, 8, 8])
    store = w.close()
    assert len(store) == 10 and store.synthetic
    assert len(store.manifest["shards"]) == 3  # 4 + 4 + 2
    for i, (img, valid, lab, _) in enumerate(data):
        item = store[i]
        np.testing.assert_allclose(item["image"], img.astype(np.float16).astype(np.float32))
        assert (item["valid"] == valid).all()
        assert (item["lc"] == lab["lc"]).all()
        np.testing.assert_allclose(item["soc"], lab["soc"].astype(np.float32))
    pix = np.concatenate([img.astype(np.float16).astype(np.float64)[:, v] for img, v, _, _ in data], axis=1)
    np.testing.assert_allclose(store.stats["mean"], pix.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(store.stats["std"], pix.std(axis=1, ddof=1), rtol=1e-9)
    assert store.stats["count"] == pix.shape[1]
    assert store.sensor.means == pytest.approx(list(pix.mean(axis=1)))


def test_resume_forgets_unfinished_sources(tmp_path):
    root = tmp_path / "s"
    w = ChipStoreWriter(root, SENSOR, 8, labels=LABELS, shard_size=2)
    data = list(chips(9))  # sources src0, src1, src2 with 3 chips each
    for img, valid, lab, src in data[:3]:
        w.add(img, valid, lab, source=src)
    w.mark_source_done("src0")
    for img, valid, lab, src in data[3:5]:  # src1 half written, one shard flushed, then a "crash"
        w.add(img, valid, lab, source=src)
    del w
    with pytest.raises(DataError, match="unfinished chip store"):
        ChipStore(root)
    with pytest.raises(DataError, match="--resume"):
        ChipStoreWriter(root, SENSOR, 8, labels=LABELS)
    w = ChipStoreWriter(root, SENSOR, 8, labels=LABELS, shard_size=2, resume=True)
    assert w.sources_done == {"src0"}
    for img, valid, lab, src in data[3:]:
        if src not in w.sources_done:
            w.add(img, valid, lab, source=src)
    w.mark_source_done("src1")
    w.mark_source_done("src2")
    store = w.close()
    assert len(store) == 9
    assert [c["source"] for c in store.chips] == [f"src{i // 3}" for i in range(9)]
    for i in range(9):
        np.testing.assert_allclose(store[i]["image"], data[i][0].astype(np.float16).astype(np.float32))


def test_bad_chips_and_empty_store(tmp_path):
    w = ChipStoreWriter(tmp_path / "s", SENSOR, 8)
    with pytest.raises(DataError, match="expects"):
        w.add(np.zeros((4, 8, 8), np.float32))
    with pytest.raises(DataError, match="no chips were written"):
        w.close()
    with pytest.raises(DataError, match="not a chip store"):
        ChipStore(tmp_path / "nothing")
    m = tmp_path / "s" / "manifest.json"
    d = json.loads(m.read_text())
    d["version"] = 99
    d["complete"] = True
    m.write_text(json.dumps(d))
    with pytest.raises(DataError, match="newer than this hyperkd"):
        ChipStore(tmp_path / "s")


def test_no_temporary_files_left(tmp_path):
    w = ChipStoreWriter(tmp_path / "s", SENSOR, 8, shard_size=3)
    for img, valid, _, src in chips(5):
        w.add(img, valid, source=src)
    w.close()
    assert not [p for p in (tmp_path / "s").iterdir() if ".tmp" in p.name]
