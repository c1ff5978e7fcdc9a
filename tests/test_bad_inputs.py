"""Bad inputs a user can hand hyperkd: each is refused in one line naming the file and the field.

The inputs are small files in the real formats (EnMAP L2A products written by
``tests/data/enmap/data.py``, GeoTIFFs by ``tests/data/raster/data.py``, label tiles, legends,
chip lists); each case here was accepted silently, or answered with a misleading line or a
traceback, before it was checked.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from hyperkd.cli import main
from hyperkd.core.errors import DataError
from hyperkd.core.plugins import load_plugins
from hyperkd.data.prepare import prepare, store_products

from .helpers.threads import one_thread  # noqa: F401 - autouse fixture

load_plugins()

# rasterio 1.4 multiplies Affine objects with `*`, which affine 2.4+ flags as pending deprecation
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning:rasterio.*")


def _load(name: str, rel: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


fx = _load("enmap_fixtures", "data/enmap/data.py")
rx = _load("raster_fixtures", "data/raster/data.py")
N = 224
S = 16


def _refused(inputs: list[Path], out: Path, expected: str, capsys, *cli: str, **options) -> None:
    """``prepare`` (with ``options``) and ``hyperkd data prepare`` (with ``cli``) both stop with one
    line holding ``expected``, exit 1, and leave no store behind."""
    with pytest.raises(DataError) as err:
        prepare(inputs, out, size=S, progress=False, **options)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()
    capsys.readouterr()
    code = main(["data", "prepare", *map(str, inputs), "--out", str(out), "--size", str(S), *cli])
    stderr = capsys.readouterr().err
    assert code == 1 and stderr.startswith("error: ") and expected in " ".join(stderr.split())
    assert "Traceback" not in stderr
    assert not out.exists()


# -- EnMAP L2A products -----------------------------------------------------------------------------
def _table(value: float, at: int) -> list[float]:
    gains = [1e-4] * N
    gains[at] = value
    return gains


@pytest.mark.parametrize(
    ("field", "value", "kwargs"),
    [
        ("GainOfBand", "nan", {"gains": _table(float("nan"), 5)}),
        ("GainOfBand", "0.0", {"gains": _table(0.0, 5)}),
        ("OffsetOfBand", "inf", {"offsets": [0.0] * 5 + [float("inf")] + [0.0] * (N - 6)}),
    ],
)
def test_a_non_finite_or_zero_gain_or_offset_names_the_xml_the_band_and_the_field(
    tmp_path, capsys, field, value, kwargs
):
    product = fx.write_l2a_product(tmp_path / "in", **kwargs)  # band 6 (in the default selection)
    expected = f"-METADATA.XML: bandID number=6 <{field}> is {value!r}, but it must be a finite number"
    _refused([product], tmp_path / "S", expected, capsys)


def test_a_zero_fwhm_in_the_xml_names_the_xml_and_band_not_only_the_band(tmp_path, capsys):
    import re

    product = fx.write_l2a_product(tmp_path / "in")
    xml = product / f"{fx.PRODUCT}-METADATA.XML"
    text = xml.read_text()
    band6 = re.search(r'<bandID number="6">.*?</bandID>', text, re.S)
    xml.write_text(
        text.replace(band6.group(0), re.sub(r"<FWHMOfBand>[^<]*<", "<FWHMOfBand>0<", band6.group(0)))
    )
    expected = "-METADATA.XML: bandID number=6 <FWHMOfBand> is '0', but it must be a finite number above 0; "
    _refused([product], tmp_path / "S", expected, capsys)


def test_an_8_bit_spectral_image_is_refused_since_its_reflectance_would_stop_at_0_0255(tmp_path, capsys):
    dn = np.clip(fx.synthetic_dn(N, 40, 48), 0, 255).astype(np.uint8)
    product = fx.write_l2a_product(tmp_path / "in", dn=dn, nodata=None)
    expected = "-SPECTRAL_IMAGE.TIF: pixels are uint8 (with its gains, reflectance could not exceed 0.0255)"
    _refused([product], tmp_path / "S", expected, capsys)


def test_a_product_without_a_crs_is_refused_unless_allowed_then_prepared_with_a_warning(
    tmp_path, capsys, caplog
):
    product = fx.write_l2a_product(tmp_path / "in", crs=None)
    expected = "-SPECTRAL_IMAGE.TIF: has no CRS (coordinate reference system)"
    _refused([product], tmp_path / "S", expected, capsys)
    with caplog.at_level(logging.WARNING, logger="hyperkd.data.prepare"):
        store = prepare([product], tmp_path / "S", size=S, progress=False, allow_no_crs=True)
    assert "no CRS: read on its pixel grid" in caplog.text
    assert store_products(store)[fx.PRODUCT]["crs"] is None and store.chips[0]["crs"] is None
    assert main(["data", "prepare", str(product), "--out", str(tmp_path / "S2"), "--size", str(S)]) == 1
    args = [
        "data",
        "prepare",
        str(product),
        "--out",
        str(tmp_path / "S2"),
        "--size",
        str(S),
        "--allow-no-crs",
    ]
    assert main([*args, "--json"]) == 0


@pytest.mark.parametrize("cli", [(), ("--sensor", "enmap"), ("--reader", "enmap-l2a")])
def test_a_product_folder_without_its_metadata_xml_names_the_missing_file(tmp_path, capsys, cli):
    product = fx.write_l2a_product(tmp_path / "in")
    (product / f"{fx.PRODUCT}-METADATA.XML").unlink()
    expected = f"{product}: has a SPECTRAL_IMAGE but no {fx.PRODUCT}-METADATA.XML"
    # the folder of products too: not "no product found here", nor read as a loose GeoTIFF
    for given in (product, tmp_path / "in"):
        _refused([given], tmp_path / "S", expected, capsys, *cli)


def test_naming_a_reader_without_a_sensor_uses_that_reader(tmp_path, capsys):
    product = fx.write_l2a_product(tmp_path / "in")
    out = tmp_path / "S"
    args = ["data", "prepare", str(product), "--out", str(out), "--size", str(S), "--reader", "enmap-l2a"]
    assert main([*args, "--json"]) == 0  # was: "product reader 'enmap-l2a' reads enmap ... products, not '*'"
    assert json.loads(capsys.readouterr().out)["products"][fx.PRODUCT]["format"] == "enmap-l2a"


# -- GeoTIFF / ENVI band tables and scales ----------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (
            lambda p: rx.write_geotiff(
                p, rx.reflectance(6, 16, 16), fwhms=[10.0, 0.0, 10.0, 10.0, 10.0, 10.0]
            ),
            "a.tif: band 2 has FWHM 0.0; every 'fwhm' value must be a positive number",
        ),
        (
            lambda p: rx.write_geotiff(
                p, (rx.reflectance(6, 16, 16) * 1e4).astype("int16"), scale=float("nan")
            ),
            "a.tif: band 1 has GDAL scale nan, offset 0; a scale must be a finite non-zero number",
        ),
    ],
)
def test_a_raster_band_table_or_scale_that_cannot_be_right_names_the_file_and_band(
    tmp_path, capsys, make: Callable[[Path], Path], expected
):
    make(tmp_path / "a.tif")
    _refused([tmp_path / "a.tif"], tmp_path / "S", expected, capsys)


def test_a_raster_whose_bands_share_a_centre_wavelength_is_said_once(tmp_path, caplog):
    centers = [450.0, 550.0, 550.0, 750.0, 850.0, 950.0]
    rx.write_geotiff(tmp_path / "a.tif", rx.reflectance(6, 16, 16), centers=centers)
    with caplog.at_level(logging.WARNING, logger="hyperkd.data.prepare"):
        prepare([tmp_path / "a.tif"], tmp_path / "S", size=S // 2, progress=False)
    said = [r.getMessage() for r in caplog.records if "share a centre wavelength" in r.getMessage()]
    assert said == ["a: bands share a centre wavelength (550 nm): is the band table right?"]


def test_a_reflectance_scale_factor_of_zero_is_one_line_not_a_zero_division(tmp_path, capsys):
    path = rx.write_geotiff(tmp_path / "a.tif", rx.reflectance(6, 16, 16))
    expected = "a.tif: the given reflectance_scale_factor is 0; it must be a positive number"
    options = {"reader_options": {"reflectance_scale_factor": 0.0}}
    _refused([path], tmp_path / "S", expected, capsys, "--reflectance-scale-factor", "0", **options)


# -- labels, legends and chip lists ---------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained on label codes 1..3 (0 = no label) and a test store beside its training store."""
    from hyperkd.evaluation.finetune import finetune

    from .test_labels import _scene, _store, _tiles

    tmp_path = tmp_path_factory.mktemp("trained")
    scene = _scene((16, 16), seed=1)
    folder = _tiles(tmp_path / "labels", scene, tile=8)
    train = _store(tmp_path / "train", [(c, r) for r in (0, 4) for c in (0, 4, 8, 12)])
    test = _store(tmp_path / "test", [(8, 12), (12, 12)], seed=2)
    finetune(
        student="raw",
        task="segmentation",
        store=train,
        labels=folder,
        label_nodata=0,
        protocol="linear",
        epochs=1,
        batch_size=4,
        out=tmp_path / "run",
        figures=False,
    )
    return tmp_path / "run", train, test, scene


def test_evaluate_with_labels_whose_codes_the_model_never_saw_names_them_and_fails(trained, tmp_path, capsys):
    from hyperkd.evaluation.finetune import evaluate, finetune

    from .test_labels import _tiles

    run, train, test, scene = trained
    other = _tiles(tmp_path / "other", np.where(scene > 0, scene + 6, 0).astype(np.float32), tile=8)
    expected = f"labels {other} hold codes [7, 8, 9] over the chips of {test.root}, none of which the model "
    with pytest.raises(DataError, match=r"\(its codes: \[1, 2, 3\]\)") as err:
        evaluate(run, test, labels=other)
    assert expected in str(err.value)
    capsys.readouterr()
    code = main(["evaluate", "--model", str(run), "--data", str(test.root), "--labels", str(other)])
    captured = capsys.readouterr()
    assert code == 1 and expected in " ".join(captured.err.split()) and "pixels 0" not in captured.out
    # fine-tuning validates on such labels neither: refused before training
    with pytest.raises(DataError, match=r"hold codes \[7, 8, 9\] .* \(its codes: \[1, 2, 3\]\)"):
        finetune(
            student="raw",
            task="segmentation",
            store=train,
            labels=run.parent / "labels",
            label_nodata=0,
            val_store=test,
            val_labels=other,
            protocol="linear",
            epochs=1,
            out=tmp_path / "run2",
            figures=False,
        )
    assert not (tmp_path / "run2" / "model").exists()


def test_evaluate_with_some_unknown_codes_scores_the_known_ones_and_says_which_are_not(
    trained, tmp_path, caplog
):
    from hyperkd.evaluation.finetune import evaluate

    from .test_labels import _tiles

    run, _, test, scene = trained
    mixed = np.where(scene == 3, 9, scene).astype(np.float32)
    other = _tiles(tmp_path / "mixed", mixed, tile=8)
    with caplog.at_level(logging.WARNING, logger="hyperkd.evaluation.labels"):
        res = evaluate(run, test, labels=other)
    assert f"labels {other}: " in caplog.text and "hold codes [9] the model was not trained on" in caplog.text
    assert res.metrics["pixels"] == int(np.isin(mixed[12:16, 8:16], [1, 2]).sum())


def test_evaluate_with_labels_beside_the_chips_fails_instead_of_scoring_no_pixel(trained, tmp_path, capsys):
    from .test_labels import _tif

    run, _, test, scene = trained
    beside = _tif(tmp_path / "beside.tif", scene, col=100, row=100)  # same grid, 3 km away
    capsys.readouterr()
    code = main(["evaluate", "--model", str(run), "--data", str(test.root), "--labels", str(beside)])
    captured = capsys.readouterr()
    expected = f"labels {beside} have no labelled pixel over the chips of {test.root}"
    assert code == 1 and expected in " ".join(captured.err.split()) and "pixels 0" not in captured.out


def _no_training(monkeypatch) -> None:
    """Make any training fail loudly: a refusal these tests expect must come before it."""

    def trainer(*args, **kwargs):
        raise AssertionError("training started before the bad input was refused")

    monkeypatch.setattr("hyperkd.training.runner.make_trainer", trainer)


def test_finetune_refuses_evaluation_label_codes_the_training_labels_lack_before_training(
    trained, tmp_path, capsys, monkeypatch
):
    from .test_labels import _tif

    run, train, test, scene = trained
    mixed = _tif(tmp_path / "mixed.tif", np.where(scene == 3, 9, scene).astype(np.float32))
    _no_training(monkeypatch)
    capsys.readouterr()
    args = ["--task", "segmentation", "--student", "raw", "--data", str(train.root), "--protocol", "linear"]
    args += ["--labels", str(run.parent / "labels"), "--label-nodata", "0", "--eval-data", str(test.root)]
    code = main(["finetune", *args, "--eval-labels", str(mixed), "--out", str(tmp_path / "ft")])
    err = capsys.readouterr().err
    expected = (
        f"evaluation labels {mixed} hold codes [9] over the chips of {test.root} that the training labels "
        "do not have (their codes: [1, 2, 3]); pass --legend CSV listing every class, or make those pixels "
        "the raster's nodata value (or --label-nodata CODE) if they mean 'no label'"
    )
    assert code == 1 and err.startswith("error: ") and expected in " ".join(err.split())
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "ft").exists()  # nothing blocks a rerun


def test_finetune_still_scores_evaluation_labels_whose_extra_code_is_their_nodata(trained, tmp_path):
    from hyperkd.evaluation.finetune import finetune

    from .test_labels import _tif

    run, train, test, scene = trained
    mixed = np.where(scene == 3, 9, scene).astype(np.float32)
    res = finetune(
        student="raw",
        task="segmentation",
        store=train,
        labels=run.parent / "labels",
        label_nodata=0,
        eval_store=test,
        eval_labels=_tif(tmp_path / "nodata9.tif", mixed, nodata=9),  # 9 means "no label" here
        protocol="linear",
        epochs=1,
        out=tmp_path / "ft",
        figures=False,
    )
    assert res.metrics["pixels"] == int(np.isin(mixed[12:16, 8:16], [1, 2]).sum())
    assert "pixels_unknown_class" not in res.metrics


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory):
    """A model trained on a store's label layer, and a store whose layer has no labelled pixel."""
    from hyperkd.data.store import ChipStoreWriter, LabelSpec
    from hyperkd.evaluation.finetune import finetune

    from .helpers.toy import toy_store

    tmp = tmp_path_factory.mktemp("unlabelled")
    train = toy_store(tmp / "train", chips=8)
    spec = train.labels["lc"]
    w = ChipStoreWriter(
        tmp / "empty", train.sensor, train.chip_size, labels={"lc": LabelSpec("class", spec.classes)}
    )
    for i in range(2):
        no_label = np.full((train.chip_size,) * 2, spec.ignore_index)
        w.add(np.asarray(train[i]["image"]), labels={"lc": no_label}, source=f"e{i}")
    kw = {"student": "raw", "task": "segmentation", "label": "lc", "protocol": "linear", "figures": False}
    finetune(store=train, epochs=1, batch_size=4, out=tmp / "run", **kw)
    return tmp / "run", train, w.close(), kw


def test_evaluate_on_chips_without_a_labelled_pixel_says_so_instead_of_empty_metrics(unlabelled, capsys):
    from hyperkd.evaluation.finetune import evaluate

    run, _, empty, _ = unlabelled
    expected = (
        f"the 2 chip(s) scored (all chips) of {empty.root} have no labelled pixel in label layer 'lc' of "
        "the store (every pixel is the no-label value or has no image data)"
    )
    with pytest.raises(DataError) as err:
        evaluate(run, empty, figures=False)
    assert expected in str(err.value) and "\n" not in str(err.value)
    capsys.readouterr()
    code = main(["evaluate", "--model", str(run), "--data", str(empty.root), "--json"])
    captured = capsys.readouterr()
    assert code == 1 and expected in " ".join(captured.err.split()) and "pixels" not in captured.out


def test_finetune_refuses_test_chips_without_a_labelled_pixel_before_training(
    unlabelled, tmp_path, monkeypatch
):
    from hyperkd.evaluation.finetune import finetune

    _, train, empty, kw = unlabelled
    _no_training(monkeypatch)
    with pytest.raises(
        DataError, match=rf"^the 2 test chip\(s\) of {empty.root} have no labelled pixel in label"
    ):
        finetune(store=train, eval_store=empty, epochs=1, out=tmp_path / "ft", **kw)
    assert not (tmp_path / "ft").exists()


def test_a_truncated_label_raster_says_so_rather_than_that_it_has_no_crs(tmp_path):
    from hyperkd.evaluation.labels import bind_labels
    from hyperkd.evaluation.tasks import get_task

    from .test_labels import _scene, _store, _tif

    store = _store(tmp_path / "s", [(0, 0)])
    good = _tif(tmp_path / "good.tif", _scene((8, 8)))
    bad = tmp_path / "bad.tif"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(
        DataError, match=rf"cannot read label raster {bad} \(.*\); the file is truncated or corrupt"
    ):
        bind_labels(get_task("segmentation"), store, bad)


def test_a_multi_band_label_raster_is_refused_instead_of_reading_band_1(tmp_path):
    import rasterio
    from affine import Affine

    from hyperkd.evaluation.labels import bind_labels
    from hyperkd.evaluation.tasks import get_task

    from .test_labels import X0, Y0, _scene, _store

    store = _store(tmp_path / "s", [(0, 0)])
    rgb = np.stack([_scene((8, 8), seed=k) for k in range(3)]).astype(np.uint8)
    path = tmp_path / "rendered.tif"
    profile = {"driver": "GTiff", "width": 8, "height": 8, "count": 3, "dtype": "uint8", "photometric": "RGB"}
    with rasterio.open(
        path, "w", crs="EPSG:32633", transform=Affine(30, 0, X0, 0, -30, Y0), **profile
    ) as dst:
        dst.write(rgb)
    with pytest.raises(
        DataError, match=rf"label raster {path} has 3 bands \(red, green, blue\); labels are one band"
    ):
        bind_labels(get_task("segmentation"), store, path)


def test_a_legend_or_chip_list_that_is_not_utf8_text_is_one_line(tmp_path):
    from hyperkd.data.labels import read_legend
    from hyperkd.data.splits import read_list

    legend = tmp_path / "legend.csv"
    legend.write_bytes("1,Gewässer\n2,Wald\n".encode("cp1252"))  # saved by a spreadsheet on Windows
    with pytest.raises(
        DataError, match=rf"legend {legend} is not UTF-8 text \(invalid .* at byte 5\); save it"
    ):
        read_legend(legend)
    chips = tmp_path / "train.csv"
    chips.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(DataError, match=rf"chip list {chips}: not UTF-8 text"):
        read_list(chips)


# -- chip stores ----------------------------------------------------------------------------------
def test_pretraining_on_a_webdataset_export_says_what_the_folder_is_and_what_reads_it(tmp_path, capsys):
    pytest.importorskip("webdataset", reason="needs the stream extra: pip install 'hyperkd[stream]'")
    from hyperkd.data.streaming import export_webdataset

    from .helpers.toy import toy_store

    store = toy_store(tmp_path / "store", chips=4, size=16)
    export_webdataset(store, tmp_path / "export", shards=1)
    capsys.readouterr()
    args = ["--data", str(tmp_path / "export"), "--out", str(tmp_path / "run")]
    code = main(["pretrain", "--student", "enmap", *args, "--set", "trainer.max_steps=1"])
    err = " ".join(capsys.readouterr().err.split())
    expected = (
        f"{tmp_path / 'export'} is a WebDataset export (`hyperkd data export`), not a chip store: give "
        f"hyperkd commands the store it was exported from ({store.root}); the export is read from Python "
        "by hyperkd.data.streaming.StreamingChipDataModule"
    )
    assert code == 1 and expected in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
