"""The EnMAP L2A reader: band tables from METADATA.XML, reflectance, masks, bad input.

Products are written by ``tests/data/enmap/data.py`` in the official file layout; one of
them carries the real DLR pre-launch METADATA.XML (218 bands, schema 00-02-00).
"""

from __future__ import annotations

import csv
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from hyperkd.core.errors import DataError
from hyperkd.core.plugins import load_plugins

load_plugins()  # register the plugin's components before importing its modules directly

from hyperkd_enmap.l2a import find_l2a_products, open_l2a, parse_l2a_metadata  # noqa: E402

# rasterio 1.4 multiplies Affine objects with `*`, which affine 2.4+ flags as pending deprecation
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:rasterio.*")

_spec = importlib.util.spec_from_file_location("enmap_fixtures", Path(__file__).parent / "data/enmap/data.py")
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)  # type: ignore[union-attr]

PRELAUNCH_CSV = Path(__file__).parents[1] / "plugins/hyperkd_enmap/data/prelaunch_l2a_218_bands.csv"
N = 224
GAINS = [1e-4 * (1 + 0.01 * (i % 5)) for i in range(N)]  # not 1e-4 everywhere: proves they are read
OFFSETS = [0.0005 * (i % 3) - 0.0005 for i in range(N)]


def image_of(folder: Path) -> Path:
    return next(folder.glob("*-SPECTRAL_IMAGE*.TIF"))


def raw_dn(folder: Path) -> np.ndarray:
    with rasterio.open(image_of(folder)) as src:
        return src.read()


def expected_reflectance(dn: np.ndarray, gains, offsets, nodata: float) -> np.ndarray:
    g = np.asarray(gains)[:, None, None]
    o = np.asarray(offsets)[:, None, None]
    refl = (dn.astype(np.float64) * g + o).astype(np.float32)
    refl[dn == nodata] = 0.0
    return refl


@pytest.fixture
def inflight(tmp_path: Path) -> Path:
    return fx.write_l2a_product(tmp_path, gains=GAINS, offsets=OFFSETS)


def test_inflight_product_band_table_from_xml(inflight):
    centers, fwhms = fx.inflight_table()
    with open_l2a(inflight) as p:
        s = p.sensor
        assert p.name == fx.PRODUCT and s.name == "enmap" and s.num_bands == N
        assert s.centers_nm == centers and s.fwhms_nm == fwhms
        assert [b.gain for b in s.bands] == GAINS and [b.offset for b in s.bands] == OFFSETS
        det = [b.detector for b in s.bands]
        assert det.count("VNIR") == 91 and det.count("SWIR") == 133
        assert (det[78], det[79], det[80]) == ("VNIR", "SWIR", "VNIR")  # B79 VNIR, B80 SWIR, B81 VNIR
        assert p.nodata == -32768 and p.nodata_source == "geotiff" and s.nodata == -32768
        assert p.crs.to_epsg() == 32632 and p.transform == from_origin(*fx.ORIGIN, 30.0, 30.0)
        assert (p.width, p.height) == (48, 40)
        sel = s.select("default")
        want = [f"B{i}" for i in [*range(1, 127), *range(142, 161), *range(168, 225)]]
        assert sel.selection == "torchgeo-202" and sel.band_names == want


def test_reflectance_is_dn_times_gain_plus_offset_and_nodata_is_masked(inflight):
    dn = raw_dn(inflight)
    with open_l2a(inflight) as p:
        w = p.read()
    np.testing.assert_array_equal(w.image, expected_reflectance(dn, GAINS, OFFSETS, -32768))
    background = fx.footprint_mask(40, 48, 12)
    assert background.any() and (~background).any()
    np.testing.assert_array_equal(w.nodata, background)
    np.testing.assert_array_equal(w.valid, ~background)
    assert w.cloud is None and w.cloud_fraction == 0.0
    assert w.nodata_fraction == pytest.approx(background.mean())


def test_windowed_reads_match_the_full_read_and_carry_their_transform(inflight):
    with open_l2a(inflight) as p:
        full = p.read()
        bands = ["B3", "B100", "B224"]
        win = Window(5, 7, 16, 12)
        w = p.read(win, bands)
    idx = [2, 99, 223]
    np.testing.assert_array_equal(w.image, full.image[idx, 7:19, 5:21])
    np.testing.assert_array_equal(w.valid, full.valid[7:19, 5:21])
    assert w.bands == tuple(bands)
    assert w.transform == from_origin(fx.ORIGIN[0] + 5 * 30, fx.ORIGIN[1] - 7 * 30, 30.0, 30.0)
    with pytest.raises(ValueError, match="outside"):
        open_l2a(inflight).read(Window(40, 0, 16, 16))


def test_real_prelaunch_metadata_xml_reads_its_218_bands(tmp_path):
    with PRELAUNCH_CSV.open() as fh:
        rows = list(csv.DictReader(fh))
    folder = fx.write_prelaunch_product(tmp_path)
    dn = raw_dn(folder)
    with open_l2a(folder) as p:
        s = p.sensor
        assert p.name == fx.PRELAUNCH_NAME and s.name == "enmap-218" and s.num_bands == 218
        assert s.centers_nm == [float(r["wavelength_center_nm"]) for r in rows]
        assert s.fwhms_nm == [float(r["fwhm_nm"]) for r in rows]
        assert (s.centers_nm[0], s.fwhms_nm[0], s.centers_nm[-1]) == (423.03, 6.93, 2438.6)
        assert {b.gain for b in s.bands} == {0.0001} and {b.offset for b in s.bands} == {0.0}
        det = [b.detector for b in s.bands]
        assert det.count("VNIR") == 88 and det.count("SWIR") == 130
        assert (det[77], det[78], det[79]) == (
            "VNIR",
            "SWIR",
            "VNIR",
        )  # expectedChannelsList: 78, 79 SWIR, 80
        assert p.nodata == 0 and p.nodata_source == "xml"  # the image has no nodata tag
        assert p.meta.schema_version == "00.02.00" and p.meta.mission_phase == "pre-launch"
        sel = s.select("default")  # documented: 218-band products keep all bands, as in the paper
        assert sel.num_bands == 218 and sel.selection == "all"
        w = p.read()
    np.testing.assert_array_equal(w.image, expected_reflectance(dn, [1e-4] * 218, [0.0] * 218, 0))
    np.testing.assert_array_equal(w.valid, ~fx.footprint_mask(36, 40, 10))


def test_prelaunch_nodata_tag_wins_over_xml(tmp_path):
    folder = fx.write_prelaunch_product(tmp_path, nodata_tag=True)
    with open_l2a(folder) as p:
        assert p.nodata == 0 and p.nodata_source == "geotiff" and not p.warnings


def test_pixelmask_is_per_band_and_cloud_layers_mask_pixels(tmp_path):
    pm = np.zeros((N, 40, 48), dtype=bool)
    pm[10, 20, 30] = True  # defective in B11 only
    cloud = np.zeros((40, 48), dtype=bool)
    cloud[30:36, 30:40] = True
    shadow = np.zeros((40, 48), dtype=bool)
    shadow[20:22, 40:44] = True
    folder = fx.write_l2a_product(tmp_path, pixelmask=pm, cloud=cloud, cloudshadow=shadow)
    with open_l2a(folder) as p:
        assert p.use_pixelmask and p.cloud_layers == ("CLOUD", "CLOUDSHADOW")
        p.check()
        w = p.read()
        assert w.nodata[20, 30] and not w.valid[20, 30]
        np.testing.assert_array_equal(w.cloud, cloud | shadow)
        assert not w.valid[cloud].any() and not w.nodata[cloud].any()
        data = ~w.nodata
        assert w.cloud_fraction == pytest.approx(((cloud | shadow) & data).sum() / data.sum())
        assert not p.read(bands=["B1", "B12"]).nodata[20, 30]  # B11 not read: pixel fine
    with open_l2a(folder, cloud_layers=("CLOUD",), use_pixelmask=False) as p:
        w = p.read()
        np.testing.assert_array_equal(w.cloud, cloud)
        assert w.valid[20, 30]


def test_zip_and_cog_deliveries_read_identically(tmp_path):
    ref = fx.write_l2a_product(tmp_path / "plain")
    dn = raw_dn(ref)
    zipped = fx.write_l2a_product(tmp_path / "zip", dn=dn, as_zip=True)
    cog = fx.write_l2a_product(tmp_path / "cog", dn=dn, cog=True)
    assert zipped.suffix == ".ZIP" and image_of(cog).name.endswith("-SPECTRAL_IMAGE_COG.TIF")
    with open_l2a(ref) as a, open_l2a(zipped) as b, open_l2a(cog) as c:
        assert a.name == b.name == c.name
        for other in (b, c):
            np.testing.assert_array_equal(other.read().image, a.read().image)
        assert ".ZIP!" in b.info()["image"]


def test_find_products_in_folders_zips_and_by_file(tmp_path):
    a = fx.write_l2a_product(tmp_path)
    b = fx.write_l2a_product(tmp_path, product=fx.PRODUCT_B, as_zip=True)
    assert find_l2a_products(tmp_path) == sorted([a, b])
    assert find_l2a_products(a) == [a]
    assert find_l2a_products(image_of(a)) == [a]
    odd = tmp_path / "scene.tif"
    odd.write_bytes(b"")
    with pytest.raises(DataError, match=r"scene\.tif: unexpected file name"):
        find_l2a_products(odd)


# -- bad input: one clear error naming the file --------------------------------------------------
def test_xml_missing_band_field(tmp_path):
    folder = fx.write_l2a_product(tmp_path, drop=(17, "GainOfBand"))
    with pytest.raises(DataError) as err:
        open_l2a(folder)
    msg = str(err.value)
    assert "-METADATA.XML" in msg and "number=17" in msg and "<GainOfBand>" in msg and "\n" not in msg


def test_band_count_mismatch_between_xml_and_image(tmp_path):
    folder = fx.write_l2a_product(tmp_path, xml_bands=220)
    with pytest.raises(
        DataError, match=r"SPECTRAL_IMAGE\.TIF: the image has 224 bands but its METADATA\.XML describes 220"
    ):
        open_l2a(folder)


def test_truncated_geotiff_fails_the_check(tmp_path):
    folder = fx.write_l2a_product(tmp_path)
    img = image_of(folder)
    img.write_bytes(img.read_bytes()[: img.stat().st_size // 2])
    p = open_l2a(folder)  # the header is intact, so it opens
    with pytest.raises(DataError, match=r"SPECTRAL_IMAGE\.TIF: cannot read pixels .* truncated or corrupt"):
        p.check()
    p.close()
    img.write_bytes(img.read_bytes()[:100])  # not even a header
    with pytest.raises(DataError, match=r"SPECTRAL_IMAGE\.TIF: cannot open the spectral image"):
        open_l2a(folder)


def test_unexpected_file_names(tmp_path):
    folder = fx.write_l2a_product(tmp_path)
    image_of(folder).rename(folder / "spectral.tif")
    with pytest.raises(
        DataError, match=r"no \.\.\.-SPECTRAL_IMAGE\.TIF \(unexpected file names here: spectral\.tif\)"
    ):
        open_l2a(folder)
    l1b = fx.write_l2a_product(tmp_path, product=fx.PRODUCT.replace("L2A", "L1B"))
    with pytest.raises(DataError, match="is a L1B product"):
        open_l2a(l1b)
    mixed = tmp_path / "mixed"
    shutil.copytree(fx.write_l2a_product(tmp_path / "x"), mixed)
    for f in fx.write_l2a_product(tmp_path / "y", product=fx.PRODUCT_B).iterdir():
        shutil.copy(f, mixed / f.name)
    with pytest.raises(DataError, match="holds files of several products"):
        open_l2a(mixed)


def test_metadata_parser_tolerates_namespaces_and_rejects_non_enmap_xml():
    centers, fwhms = fx.inflight_table()
    xml = fx.l2a_metadata_xml(fx.PRODUCT, centers[:3], fwhms[:3], [1e-4] * 3, [0] * 3, vnir=[1, 2])
    ns = xml.replace(b"<level_X>", b'<level_X xmlns="urn:example:enmap">', 1)
    meta = parse_l2a_metadata(ns, "ns.xml")
    assert meta.centers_nm == tuple(centers[:3]) and meta.detectors == ("VNIR", "VNIR", "SWIR")
    assert meta.product_name == fx.PRODUCT and meta.background == -32768
    with pytest.raises(DataError, match=r"other\.xml: no specific/bandCharacterisation"):
        parse_l2a_metadata(b"<root><specific/></root>", "other.xml")
    with pytest.raises(DataError, match=r"broken\.xml: not a readable XML file"):
        parse_l2a_metadata(b"<level_X><specific>", "broken.xml")


# -- torchgeo -------------------------------------------------------------------------------
def test_torchgeo_dataset_matches_reader_and_works_with_random_sampler(tmp_path):
    import hyperkd

    cloud = np.zeros((40, 48), dtype=bool)
    cloud[4:8, 30:34] = True
    folder = fx.write_l2a_product(tmp_path, gains=GAINS, offsets=OFFSETS, cloud=cloud)
    ds = hyperkd.create("dataset", "enmap-l2a", paths=[tmp_path])
    assert ds.sensor.selection == "torchgeo-202" and len(ds.bands) == 202
    x0, y1 = fx.ORIGIN
    col, row, w, h = 20, 2, 16, 12
    sample = ds[x0 + 30 * col : x0 + 30 * (col + w) : 30.0, y1 - 30 * (row + h) : y1 - 30 * row : 30.0]
    with open_l2a(folder) as p:
        ref = p.read(Window(col, row, w, h), ds.sensor.band_names)
    np.testing.assert_array_equal(sample["image"].numpy(), ref.image)
    np.testing.assert_array_equal(sample["valid"].numpy(), ref.valid)
    assert not ref.valid[2:6, 10:14].any()  # the cloud is inside this window and masked

    from torch.utils.data import DataLoader
    from torchgeo.datasets import stack_samples
    from torchgeo.samplers import RandomGeoSampler

    dl = DataLoader(
        ds, sampler=RandomGeoSampler(ds, size=16, length=4), batch_size=2, collate_fn=stack_samples
    )
    batches = list(dl)
    assert len(batches) == 2 and batches[0]["image"].shape == (2, 202, 16, 16)
    assert batches[0]["valid"].shape == (2, 16, 16)
