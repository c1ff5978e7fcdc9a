"""``hyperkd data prepare``: products -> chip store round trip, statistics, resume, bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from hyperkd.cli import main
from hyperkd.core.errors import DataError
from hyperkd.core.plugins import load_plugins
from hyperkd.data.prepare import chip_windows, parse_selection, prepare, store_products
from hyperkd.data.store import ChipStore, read_index

load_plugins()

from hyperkd_enmap.l2a import L2AProduct  # noqa: E402

# rasterio 1.4 multiplies Affine objects with `*`, which affine 2.4+ flags as pending deprecation
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:rasterio.*")

_spec = importlib.util.spec_from_file_location("enmap_fixtures", Path(__file__).parent / "data/enmap/data.py")
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)  # type: ignore[union-attr]

H, W, S = 40, 48, 16
BAD = fx.PRODUCT.replace("DT0000004242", "DT0000009999")  # a third product, distinct name
TG202 = [i - 1 for i in [*range(1, 127), *range(142, 161), *range(168, 225)]]  # 0-based torchgeo-202


def _masks() -> tuple[np.ndarray, np.ndarray]:
    pm = np.zeros((224, H, W), dtype=bool)
    pm[5, 3, 40] = True  # B6 defective at one pixel of window (col 32, row 0)
    pm[130, 20, 20] = True  # B131 is not in torchgeo-202: must not matter
    cloud = np.zeros((H, W), dtype=bool)
    cloud[16:32, 16:32] = True  # exactly the window at (col 16, row 16) ...
    cloud[24:28, 0:8] = True  # ... and a little of the bottom-left ones
    return pm, cloud


@pytest.fixture
def products(tmp_path: Path) -> list[Path]:
    pm, cloud = _masks()
    a = fx.write_l2a_product(tmp_path / "in", width=W, height=H, corner=12, pixelmask=pm, cloud=cloud)
    b = fx.write_l2a_product(
        tmp_path / "in",
        product=fx.PRODUCT_B,
        width=W,
        height=H,
        seed=3,
        corner=30,
        as_zip=True,
        origin=(fx.ORIGIN[0], fx.ORIGIN[1] - 30.0 * H),
    )
    return [a, b]


def expected_chips(product: Path, zipped: bool, max_nodata: float, max_cloud: float) -> list[tuple[int, int]]:
    """Kept window corners, computed from the raw files with numpy only."""
    pm, cloud = _masks()
    if zipped:
        name = product.stem
        img = f"/vsizip/{product}/{name}/{name}-SPECTRAL_IMAGE.TIF"
        pm, cloud = np.zeros_like(pm), np.zeros_like(cloud)
    else:
        img = str(next(product.glob("*-SPECTRAL_IMAGE.TIF")))
    with rasterio.open(img) as src:
        dn = src.read()[TG202]
    nodata = (dn == -32768).any(axis=0) | pm[TG202].any(axis=0)
    kept = []
    for r in (0, 16, 24):
        for c in (0, 16, 32):
            nd = nodata[r : r + S, c : c + S]
            data = ~nd
            cl = (cloud[r : r + S, c : c + S] & data).sum() / max(data.sum(), 1)
            if nd.mean() <= max_nodata and cl <= max_cloud:
                kept.append((c, r))
    return kept


def test_chip_windows_and_selection_parsing():
    wins = chip_windows(48, 40, 16, 16)
    assert [(w.col_off, w.row_off) for w in wins] == [(c, r) for r in (0, 16, 24) for c in (0, 16, 32)]
    assert chip_windows(10, 40, 16, 8) == []
    assert [(w.col_off, w.row_off) for w in chip_windows(20, 16, 16, 8)] == [(0, 0), (4, 0)]
    assert parse_selection("B1-B3,B10") == ["B1", "B2", "B3", "B10"]
    assert parse_selection("B7-9") == ["B7", "B8", "B9"]
    assert parse_selection("torchgeo-202") == "torchgeo-202" and parse_selection("all") == "all"
    with pytest.raises(DataError, match="runs backwards"):
        parse_selection("B9-B7")


def test_prepare_round_trip(products, tmp_path):
    out = tmp_path / "store"
    store = prepare(products, out, size=S, max_nodata=0.1, max_cloud=0.2, progress=False)
    assert isinstance(store, ChipStore) and store.chip_size == S
    assert (
        store.sensor.name == "enmap"
        and store.sensor.selection == "torchgeo-202"
        and store.sensor.num_bands == 202
    )
    want = [(fx.PRODUCT, c, r) for c, r in expected_chips(products[0], False, 0.1, 0.2)]
    want += [(fx.PRODUCT_B, c, r) for c, r in expected_chips(products[1], True, 0.1, 0.2)]
    got = [(m["source"], m["window"][0], m["window"][1]) for m in store.chips]
    assert got == want and 0 < len(got) < 18  # some dropped for no data, some for cloud, most kept
    readers = {fx.PRODUCT: L2AProduct(products[0]), fx.PRODUCT_B: L2AProduct(products[1])}
    for i, meta in enumerate(store.chips):
        p = readers[meta["source"]]
        win = Window(*meta["window"])
        ref = p.read(win, store.sensor.band_names)
        item = store[i]
        np.testing.assert_array_equal(item["image"], ref.image.astype(np.float16).astype(np.float32))
        np.testing.assert_array_equal(item["valid"], ref.valid)
        assert meta["crs"] == "EPSG:32632" and meta["path"] == str(p.path)
        assert meta["transform"] == list(rasterio.windows.transform(win, p.transform))[:6]
        assert meta["window"][2:] == [S, S]
    info = store_products(store)
    assert info[fx.PRODUCT]["chips"] + info[fx.PRODUCT_B]["chips"] == len(store)
    assert info[fx.PRODUCT]["dropped_cloud"] >= 1 and info[fx.PRODUCT]["dropped_nodata"] >= 1
    assert info[fx.PRODUCT]["pixelmask"] and info[fx.PRODUCT_B]["cloud_layers"] == []
    assert store.manifest["attrs"]["selection"] == "torchgeo-202" and store.manifest["attrs"]["stride"] == S
    with pytest.raises(DataError, match="already holds a complete chip store"):
        prepare(products, out, size=S, progress=False)


def test_store_statistics_match_numpy_over_valid_pixels(products, tmp_path):
    store = prepare(products, tmp_path / "store", size=S, max_nodata=0.5, max_cloud=1.0, progress=False)
    pix = np.concatenate([it["image"][:, it["valid"]] for it in store], axis=1).astype(np.float64)
    assert store.stats["count"] == pix.shape[1]
    np.testing.assert_allclose(store.stats["mean"], pix.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(store.stats["std"], pix.std(axis=1, ddof=1), rtol=1e-9)
    # and against reflectance straight from the DNs (float16 storage costs ~1e-3 relative)
    direct = []
    for meta in store.chips:
        p = L2AProduct(products[0] if meta["source"] == fx.PRODUCT else products[1])
        w = p.read(Window(*meta["window"]), store.sensor.band_names)
        direct.append(w.image[:, w.valid].astype(np.float64))
    direct_pix = np.concatenate(direct, axis=1)
    np.testing.assert_allclose(store.stats["mean"], direct_pix.mean(axis=1), rtol=2e-3)
    assert store.sensor.means == pytest.approx(store.stats["mean"])


def test_resume_after_interruption_equals_uninterrupted_run(products, tmp_path, monkeypatch):
    ref = prepare(products, tmp_path / "ref", size=S, shard_size=2, progress=False)
    out = tmp_path / "store"
    real_read = L2AProduct.read
    calls = {"n": 0}

    def interrupted(self, window=None, bands=None):
        if self.name == fx.PRODUCT_B:
            calls["n"] += 1
            if calls["n"] == 6:  # B's first chips are already flushed to shards
                raise KeyboardInterrupt
        return real_read(self, window, bands)

    monkeypatch.setattr(L2AProduct, "read", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(products, out, size=S, shard_size=2, progress=False)
    manifest = read_index(out)  # header + shard index files
    assert not manifest["complete"] and manifest["sources_done"] == [fx.PRODUCT]
    assert any(c["source"] == fx.PRODUCT_B for c in manifest["chips"])  # flushed, not yet done
    with pytest.raises(DataError, match="pass --resume"):
        prepare(products, out, size=S, shard_size=2, progress=False)

    reads = {"n": 0}

    def counting(self, window=None, bands=None):
        reads["n"] += 1
        return real_read(self, window, bands)

    monkeypatch.setattr(L2AProduct, "read", counting)
    store = prepare(products, out, size=S, shard_size=2, resume=True, progress=False)
    assert reads["n"] == 9  # only product B's windows were read again
    assert len(store) == len(ref)
    keys = [(m["source"], tuple(m["window"])) for m in store.chips]
    assert len(set(keys)) == len(keys)  # no duplicates
    strip = ("shard", "row")
    assert [{k: v for k, v in m.items() if k not in strip} for m in store.chips] == [
        {k: v for k, v in m.items() if k not in strip} for m in ref.chips
    ]
    for i in range(len(ref)):
        np.testing.assert_array_equal(store[i]["image"], ref[i]["image"])
        np.testing.assert_array_equal(store[i]["valid"], ref[i]["valid"])
    assert store.stats == ref.stats


# -- bad input: one clear error naming the file, nothing half-written ---------------------------------
def _truncated(root: Path) -> tuple[Path, str]:
    folder = fx.write_l2a_product(root, product=BAD)
    img = next(folder.glob("*-SPECTRAL_IMAGE.TIF"))
    img.write_bytes(img.read_bytes()[: img.stat().st_size * 2 // 3])
    return folder, f"{img.name}: cannot read pixels"


def _missing_field(root: Path) -> tuple[Path, str]:
    return fx.write_l2a_product(
        root, product=BAD, drop=(5, "FWHMOfBand")
    ), "-METADATA.XML: bandCharacterisation/bandID number=5 has no <FWHMOfBand>"


def _count_mismatch(root: Path) -> tuple[Path, str]:
    return fx.write_l2a_product(
        root, product=BAD, xml_bands=226
    ), "SPECTRAL_IMAGE.TIF: the image has 224 bands but its METADATA.XML describes 226"


def _all_nodata(root: Path) -> tuple[Path, str]:
    dn = np.full((224, H, W), -32768, dtype=np.int16)
    return fx.write_l2a_product(
        root, product=BAD, dn=dn
    ), "SPECTRAL_IMAGE.TIF: no pixel holds data in the selected bands"


def _unexpected_name(root: Path) -> tuple[Path, str]:
    folder = fx.write_l2a_product(root, product=BAD)
    next(folder.glob("*-SPECTRAL_IMAGE.TIF")).rename(folder / "ENMAP_spectral_image.tif")
    return (
        folder,
        f"{folder}: has a METADATA.XML but no ...-SPECTRAL_IMAGE.TIF (unexpected file names here: ENMAP_spectral_image.tif)",
    )


@pytest.mark.parametrize(
    "make_bad", [_truncated, _missing_field, _count_mismatch, _all_nodata, _unexpected_name]
)
def test_bad_input_is_one_clear_error_and_writes_nothing(make_bad, products, tmp_path, capsys):
    bad, expected = make_bad(tmp_path / "bad")
    out = tmp_path / "store"
    with pytest.raises(DataError) as err:
        prepare([bad, *products], out, size=S, progress=False)
    msg = str(err.value)
    assert expected in msg and "\n" not in msg
    assert not out.exists()
    capsys.readouterr()
    code = main(["data", "prepare", str(bad), "--out", str(out), "--size", str(S)])
    stderr = capsys.readouterr().err
    assert code == 1 and stderr.startswith("error: ") and expected in " ".join(stderr.split())
    assert not out.exists()


def test_product_failing_half_way_is_rolled_back_and_resume_finishes(products, tmp_path):
    good = products[0]
    broken = fx.write_l2a_product(
        tmp_path / "broken",
        product=fx.PRODUCT_B,
        width=W,
        height=H,
        corner=0,
        compress="deflate",
        tiled=True,
        blockxsize=16,
        blockysize=16,
    )
    img = next(broken.glob("*-SPECTRAL_IMAGE.TIF"))
    with rasterio.open(img) as src:  # corrupt the tile at (col 16, row 16): found only while tiling
        off = int(src.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        size = int(src.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    data = bytearray(img.read_bytes())
    data[off : off + size] = b"\xff" * size
    img.write_bytes(bytes(data))

    out = tmp_path / "store"
    with pytest.raises(
        DataError, match=r"cannot read pixels at column 16, row 16 .*keeps the 1 product\(s\) finished"
    ):
        prepare([good, broken], out, size=S, shard_size=1, progress=False)
    manifest = read_index(out)  # header + shard index files
    assert not manifest["complete"] and manifest["sources_done"] == [fx.PRODUCT]
    assert {c["source"] for c in manifest["chips"]} == {fx.PRODUCT}
    referenced = {manifest["shards"][c["shard"]]["stem"] for c in manifest["chips"]}
    on_disk = {p.name.split(".")[0] for p in out.glob("shard-*.npy")}
    assert on_disk == referenced and not list(out.glob(".*"))  # no orphan shards, no temp files
    store = prepare([good], out, size=S, resume=True, progress=False)
    fresh = prepare([good], tmp_path / "fresh", size=S, progress=False)
    assert [m["window"] for m in store.chips] == [m["window"] for m in fresh.chips]
    assert store.stats == fresh.stats


def test_prelaunch_218_band_product_keeps_all_bands_or_a_named_subset(tmp_path):
    folder = fx.write_prelaunch_product(tmp_path / "in", width=40, height=36)
    store = prepare([folder], tmp_path / "all", size=S, progress=False)
    assert (
        store.sensor.name == "enmap-218" and store.sensor.num_bands == 218 and store.sensor.selection == "all"
    )
    assert store.sensor.centers_nm[0] == 423.03 and store.chips[0]["source"] == fx.PRELAUNCH_NAME
    sub = prepare([folder], tmp_path / "sub", size=S, selection="B1-B10", progress=False)
    assert sub.sensor.band_names == [f"B{i}" for i in range(1, 11)] and sub.sensor.selection == "custom"
    np.testing.assert_array_equal(sub[0]["image"], store[0]["image"][:10])
    with pytest.raises(DataError, match="no band selection 'torchgeo-202'"):
        prepare([folder], tmp_path / "tg", size=S, selection="torchgeo-202", progress=False)
    assert not (tmp_path / "tg").exists()


def test_cli_prepare_json(products, tmp_path, capsys):
    out = tmp_path / "store"
    code = main(
        [
            "data",
            "prepare",
            "--sensor",
            "enmap",
            str(products[0].parent),
            "--out",
            str(out),
            "--size",
            str(S),
            "--stride",
            "12",
            "--max-nodata",
            "0.2",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["chips"] == len(ChipStore(out)) > 0
    assert set(report["products"]) == {fx.PRODUCT, fx.PRODUCT_B}
    assert ChipStore(out).manifest["attrs"]["stride"] == 12


def test_readers_are_their_own_registry_kind(capsys):
    from hyperkd_enmap.l2a import FORMAT

    from hyperkd.core.registry import registry
    from hyperkd.data.products import product_format_for, product_formats

    load_plugins()
    entry = registry("reader").get("enmap-l2a")
    assert entry.provider == "enmap" and entry.obj is FORMAT
    assert FORMAT in product_formats()
    assert product_format_for("enmap") is FORMAT and product_format_for("enmap-218", "enmap-l2a") is FORMAT
    with pytest.raises(DataError, match="no product reader named 'nope'; installed readers: enmap-l2a"):
        product_format_for("enmap", "nope")
    with pytest.raises(DataError, match="reads enmap, enmap-218 products, not 'hls'"):
        product_format_for("hls", "enmap-l2a")
    with pytest.raises(DataError, match=r"no installed plugin reads 'hls' products.*hyperkd list reader"):
        product_format_for("hls")
    # the torchgeo dataset is its own entry and carries no reader metadata any more
    assert "product_format" not in registry("dataset").get("enmap-l2a").metadata
    assert main(["list", "reader", "--json"]) == 0
    listed = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert listed["enmap-l2a"]["provider"] == "enmap" and "EnMAP L2A" in listed["enmap-l2a"]["description"]


def test_reader_entries_must_hold_a_product_format(monkeypatch):
    from hyperkd.core import registry as reg
    from hyperkd.core.errors import PluginError
    from hyperkd.data.products import ProductFormat, product_format_for

    load_plugins()
    fresh = reg.Registry("reader")
    monkeypatch.setitem(reg.REGISTRIES, "reader", fresh)
    fresh.add("broken", object(), provider="someplugin")
    with pytest.raises(PluginError, match=r"reader 'broken' .*plugin 'someplugin'.* not a .*ProductFormat"):
        product_format_for("enmap")
    fresh = reg.Registry("reader")
    monkeypatch.setitem(reg.REGISTRIES, "reader", fresh)
    fmt = ProductFormat(name="other-name", sensors=("enmap",), open=lambda p: None, find=lambda p: [])
    fresh.add("l2x", fmt, provider="someplugin")
    with pytest.raises(PluginError, match="holds the ProductFormat named 'other-name'"):
        product_format_for("enmap", "l2x")


def test_prepare_reports_each_product_through_logging(products, tmp_path, caplog):
    with caplog.at_level("INFO", logger="hyperkd.data.prepare"):
        store = prepare(products, tmp_path / "store", size=S, max_nodata=0.1, max_cloud=0.2, progress=False)
    info = store_products(store)
    lines = [r.getMessage() for r in caplog.records if r.name == "hyperkd.data.prepare"]
    assert f"{fx.PRODUCT}: {info[fx.PRODUCT]['chips']} of 9 windows kept as chips" in "\n".join(lines)
    assert len(lines) == 2
