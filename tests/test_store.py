"""The chip store: round trip, streaming statistics, atomic shards, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hyperkd.cli import main
from hyperkd.core.errors import DataError
from hyperkd.core.sensors import Band, Sensor
from hyperkd.data.info import store_info
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


# -- an index that scales: per-shard index files, lazy workers, format 1 still read ---------------------
def _write(root, n, shard_size=2, **kw):
    w = ChipStoreWriter(root, SENSOR, 8, labels=LABELS, shard_size=shard_size, **kw)
    for img, valid, lab, src in chips(n):
        w.add(img, valid, lab, source=src, window=[0, 0, 8, 8])
        if src != f"src{len(w) // 3}":
            w.mark_source_done(src)
    return w.close()


def test_manifest_is_written_twice_and_each_shard_index_once(tmp_path, monkeypatch):
    import hyperkd.data.store as store_mod

    writes: list[str] = []
    real = store_mod.atomic_write_text

    def counting(path, text):
        writes.append(path.name)
        real(path, text)

    monkeypatch.setattr(store_mod, "atomic_write_text", counting)
    manifests = []
    monkeypatch.setattr(
        store_mod,
        "atomic_write_json",
        lambda p, o: (manifests.append(p.name), store_mod.atomic_write_text(p, json.dumps(o))),
    )
    store = _write(tmp_path / "s", 40, shard_size=3)
    shards = sorted(p.name for p in (tmp_path / "s").glob("shard-*.index.json"))
    assert manifests == ["manifest.json", "manifest.json"]  # started, sealed: never per shard
    assert sorted(w for w in writes if w != "manifest.json") == shards and len(shards) == 14
    assert len(store) == 40 and store.stats["count"] > 0


def test_index_bytes_per_chip_and_pickled_store_do_not_grow_with_the_store(tmp_path):
    import pickle

    small, big = _write(tmp_path / "a", 12), _write(tmp_path / "b", 240)

    def index_bytes(store):
        root = store.root
        return sum(
            p.stat().st_size for p in [root / "manifest.json", root / "index.npy", *root.glob("*.index.json")]
        )

    per_chip = index_bytes(small) / len(small), index_bytes(big) / len(big)
    assert per_chip[1] < per_chip[0]  # the header is amortised; the per-chip part is constant
    assert (index_bytes(big) - index_bytes(small)) / 228 < 200
    assert big.chips[5]["source"] == "src1"  # metadata read on demand ...
    sizes = [len(pickle.dumps(s)) for s in (small, big)]
    assert abs(sizes[1] - sizes[0]) < 64  # ... and never sent to a worker
    clone = pickle.loads(pickle.dumps(big))
    np.testing.assert_array_equal(clone[239]["image"], big[239]["image"])


def test_format_1_store_is_still_read(tmp_path):
    store = _write(tmp_path / "s", 7)
    root = store.root
    m = json.loads((root / "manifest.json").read_text())
    m.update(version=1, chips=store.chips)
    del m["num_chips"]
    (root / "manifest.json").write_text(json.dumps(m))
    for p in [root / "index.npy", *root.glob("*.index.json")]:
        p.unlink()
    old = ChipStore(root)
    assert old.version == 1 and len(old) == 7 and old.chips == store.chips
    for i in range(7):
        np.testing.assert_array_equal(old[i]["image"], store[i]["image"])
    assert store_info(old)["chips"] == 7
    with pytest.raises(DataError, match="older hyperkd"):
        m["complete"] = False
        (root / "manifest.json").write_text(json.dumps(m))
        ChipStoreWriter(root, SENSOR, 8, labels=LABELS, resume=True)


def test_two_crashes_and_two_resumes_store_each_chip_once(tmp_path):
    root = tmp_path / "s"
    data = list(chips(12))  # src0..src3, 3 chips each

    def run(upto, resume):
        w = ChipStoreWriter(root, SENSOR, 8, labels=LABELS, shard_size=2, resume=resume)
        for k in range(upto):
            img, valid, lab, src = data[k]
            if src in w.sources_done:
                continue
            w.add(img, valid, lab, source=src, k=k)
            if k % 3 == 2:
                w.mark_source_done(src)
        return w

    run(8, False)  # crash inside src2 (src0, src1 done)
    run(7, True)  # resumed, crashes again inside src2
    store = run(12, True).close()
    assert [c["k"] for c in store.chips] == list(range(12))
    for i in range(12):
        np.testing.assert_allclose(store[i]["image"], data[i][0].astype(np.float16).astype(np.float32))


# -- bad stores: one line naming the file, nothing blamed on the model ---------------------------------
def _one_line(exc_info, *parts):
    msg = str(exc_info.value)
    assert "\n" not in msg and all(p in msg for p in parts), msg


@pytest.mark.parametrize("key", ["sensor", "chip_size", "num_chips", "stats"])
def test_manifest_missing_a_key_is_named(tmp_path, key, capsys):
    root = _write(tmp_path / "s", 4).root
    m = json.loads((root / "manifest.json").read_text())
    del m[key]
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError) as err:
        ChipStore(root)
    _one_line(err, "manifest.json", repr(key), "re-create")
    capsys.readouterr()
    assert main(["data", "info", str(root)]) == 1
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert err_lines[0].startswith("error: ") and "Traceback" not in " ".join(err_lines)


def test_truncated_shard_and_wrong_band_count_blame_the_shard(tmp_path):
    root = _write(tmp_path / "s", 6, shard_size=3).root
    shard = root / "shard-00001.valid.npy"
    np.save(shard, np.load(shard)[:1])
    store = ChipStore(root)
    store[0]
    with pytest.raises(DataError) as err:
        store[4]
    _one_line(err, "shard-00001.valid.npy", "holds 1 chips", "lists 3", "truncated")
    img = root / "shard-00000.image.npy"
    np.save(img, np.load(img)[:, :4])
    with pytest.raises(DataError) as err:
        ChipStore(root)[0]
    _one_line(err, "shard-00000.image.npy", "chips of 4 bands", "says 5", "does not belong to this store")


def test_nan_is_masked_at_write_and_at_read_with_one_warning_naming_the_chip(tmp_path, caplog, capsys):
    w = ChipStoreWriter(tmp_path / "s", SENSOR, 8, shard_size=4)
    data = list(chips(6))
    for k, (img, _, _, src) in enumerate(data):
        img = img.copy()
        if k in (1, 2):
            img[2, 3, 4] = np.nan if k == 1 else np.inf
        w.add(img, np.ones((8, 8), bool), source=src, window=[k, 0, 8, 8])
    with caplog.at_level("WARNING"):
        store = w.close()
    said = [r.getMessage() for r in caplog.records if "NaN/inf" in r.getMessage()]
    assert len(said) == 1 and "chip 1 (source src0, window [1, 0, 8, 8])" in said[0]
    assert store.manifest["attrs"]["nonfinite_chips"] == 2
    item = store[1]
    assert not item["valid"][3, 4] and item["valid"].sum() == 63 and np.isfinite(store.stats["mean"]).all()
    with pytest.raises(DataError, match="too large for the store's float16"):
        ChipStoreWriter(tmp_path / "t", SENSOR, 8).add(np.full((5, 8, 8), 7e4, np.float32), source="x")

    arr = np.load(tmp_path / "s" / "shard-00001.image.npy")  # a store holding NaN (written by other means)
    arr[1, 0, 0, 0] = np.nan
    np.save(tmp_path / "s" / "shard-00001.image.npy", arr)
    store = ChipStore(tmp_path / "s")
    caplog.clear()
    with caplog.at_level("WARNING"):
        a = store[5]
        store[5]  # said once, not per read
    said = [r.getMessage() for r in caplog.records if "NaN/inf" in r.getMessage()]
    assert len(said) == 1 and "shard-00001.image.npy: chip 5 (row 1)" in said[0]
    assert np.isfinite(a["image"]).all() and not a["valid"][0, 0] and a["valid"].sum() == 63
    assert store.nonfinite_chips() == [{"chip": 5, "shard": "shard-00001.image.npy", "row": 1, "pixels": 1}]
    assert store_info(store)["nonfinite"][0]["chip"] == 5
    capsys.readouterr()
    assert main(["data", "info", str(store.root)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "1 chip(s) hold NaN/inf (read as no data; re-create the store): first chip 5, shard-00001.image.npy row 1"
        in out
    )


def test_read_batch_equals_chip_reads_and_batch_loader_sees_every_chip_once(tmp_path):
    from hyperkd.data.loader import batch_loader

    store = _write(tmp_path / "s", 11, shard_size=4)
    asked = [9, 2, 5, 2, -1, 0]
    b = store.read_batch(asked, dtype=np.float16)
    assert sorted(b["index"].tolist()) == sorted(i % 11 for i in asked)
    assert b["image"].dtype == np.float16 and b["lc"].dtype == np.int16
    for j, i in enumerate(b["index"].tolist()):
        ref = store[i]
        np.testing.assert_array_equal(b["image"][j].astype(np.float32), ref["image"])
        assert (b["valid"][j] == ref["valid"]).all() and (b["soc"][j] == ref["soc"]).all()
    seen = [int(i) for batch in batch_loader(store, 4, generator=None) for i in batch["index"]]
    assert sorted(seen) == list(range(11))
    with pytest.raises(IndexError):
        store.read_batch([11])
    shard = store.root / "shard-00002.image.npy"
    np.save(shard, np.load(shard)[:1])
    with pytest.raises(
        DataError, match=r"shard-00002\.image\.npy: the shard holds 1 chips but the store's index lists 3"
    ):
        ChipStore(store.root).read_batch([0, 10])
