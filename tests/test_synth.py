"""Synthetic scenes: determinism, cross-sensor consistency, physical plausibility, labels,
arbitrary sensors, the ``data synth`` / ``data info`` CLI, resumable stores, and the
distillation presets (spatial-context crops, teacher-only variety, ``kd_stores``)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from hyperkd.cli.app import main
from hyperkd.core.errors import DataError
from hyperkd.core.sensors import Band, Sensor, get_sensor
from hyperkd.data.store import ChipStore
from hyperkd.synth import (
    KD_STUDENT_ABSENT,
    LANDCOVER_CLASSES,
    PRESETS,
    Instrument,
    SceneConfig,
    generate_scene,
    kd_stores,
    render,
    spectral_response,
    synthesize,
)
from hyperkd.synth.separability import crop_config, features, pair_scores
from hyperkd.synth.spectral_library import earthlib_library, water_reflectance

CFG = SceneConfig()
LC = {name: i for i, name in enumerate(LANDCOVER_CLASSES)}


@pytest.fixture(scope="module")
def scenes():
    """A dozen 48 px scenes rendered for EnMAP (all 224 bands) and HLS."""
    enmap, hls = get_sensor("enmap", "all"), get_sensor("hls")
    out = []
    for i in range(12):
        sc = generate_scene(CFG, 48, seed=1, index=i)
        out.append((sc, render(sc, enmap), render(sc, hls)))
    return out


def _stack(scenes, what):
    if what == "enmap":
        return np.stack([e for _, e, _ in scenes])
    if what == "hls":
        return np.stack([h for _, _, h in scenes])
    if what == "pure":
        return np.stack([sc.unit_fraction[0] == 1.0 for sc, _, _ in scenes])
    return np.stack([sc.labels[what] for sc, _, _ in scenes])


# -- determinism ---------------------------------------------------------------------------------


def test_same_seed_same_scene_and_rendering():
    hls = get_sensor("hls")
    a, b = generate_scene(CFG, 32, seed=7, index=3), generate_scene(CFG, 32, seed=7, index=3)
    for k in a.labels:
        np.testing.assert_array_equal(a.labels[k], b.labels[k])
    np.testing.assert_array_equal(a.slot_weight, b.slot_weight)
    np.testing.assert_array_equal(render(a, hls), render(b, hls))


def test_different_seeds_and_chips_differ():
    a = generate_scene(CFG, 32, seed=7, index=3)
    b = generate_scene(CFG, 32, seed=8, index=3)
    c = generate_scene(CFG, 32, seed=7, index=4)
    hls = get_sensor("hls")
    ra, rb, rc = render(a, hls), render(b, hls), render(c, hls)
    assert np.abs(ra - rb).mean() > 0.01 and np.abs(ra - rc).mean() > 0.01
    assert not np.array_equal(a.labels["landcover"], b.labels["landcover"]) or not np.array_equal(
        a.labels["soc"], b.labels["soc"], equal_nan=True
    )


def test_band_selection_keeps_values_of_kept_bands():
    sc = generate_scene(CFG, 24, seed=2, index=0)
    full, default = get_sensor("enmap", "all"), get_sensor("enmap")
    rf, rd = render(sc, full), render(sc, default)
    idx = [full.band_index(n) for n in default.band_names]
    assert rd.shape[0] == default.num_bands < full.num_bands
    np.testing.assert_array_equal(rf[idx], rd)


def test_a_band_rendered_alone_equals_that_band_among_all():
    """A band's values do not depend on which other bands are rendered with it (no shape-
    dependent BLAS rounding): each band alone matches the full 224-band rendering bit for bit."""
    sc = generate_scene(CFG, 24, seed=5, index=3)
    full = get_sensor("enmap", "all")
    rf = render(sc, full)
    for name in full.band_names[::11]:
        np.testing.assert_array_equal(
            render(sc, full.select([name]))[0], rf[full.band_index(name)], err_msg=name
        )


# -- physics and cross-sensor consistency -------------------------------------------------------


def test_rendering_is_the_srf_convolution_of_the_high_resolution_cube():
    """Mixing pre-convolved endmembers equals convolving the 10 nm cube (exactly, up to float)."""
    sc = generate_scene(CFG, 24, seed=3, index=1)
    quiet = Instrument(noise=False, psf_sigma_px=0.0)
    for sensor in (get_sensor("enmap"), get_sensor("hls")):
        cube = sc.spectra()  # (L, S, S)
        resp = spectral_response(sensor, sc.wavelengths_nm)
        expected = np.tensordot(resp, cube, axes=(1, 0))
        np.testing.assert_allclose(render(sc, sensor, quiet), expected, atol=2e-6)


def test_hls_bands_agree_with_enmap_bands_in_their_ranges(scenes):
    """HLS red (640-670 nm) is the mean of the EnMAP bands inside it, up to both sensors' noise."""
    enmap, hls = get_sensor("enmap", "all"), get_sensor("hls")
    E, H = _stack(scenes, "enmap"), _stack(scenes, "hls")
    centres = np.array(enmap.centers_nm)
    for b, (lo, hi) in enumerate(hls.ranges_nm):
        inside = (centres >= lo) & (centres <= hi)
        assert inside.sum() >= 3
        diff = H[:, b] - E[:, inside].mean(axis=1)
        assert abs(diff.mean()) < 1e-3, hls.bands[b].name
        assert np.sqrt((diff**2).mean()) < 4e-3, hls.bands[b].name
    # and the bands are not trivially equal: a band outside red disagrees with HLS red
    nir = (centres >= 850) & (centres <= 880)
    assert np.abs(H[:, 2] - E[:, nir].mean(axis=1)).mean() > 0.05


def test_vegetation_has_a_red_edge_and_water_is_dark_in_the_swir(scenes):
    H, lc, crop, pure = (_stack(scenes, k) for k in ("hls", "landcover", "croptype", "pure"))
    red, nir, swir1 = H[:, 2], H[:, 3], H[:, 4]
    ratio = nir / np.maximum(red, 1e-3)
    fallow = CFG.crop_classes.index("fallow")
    dense = pure & (((lc == LC["cropland"]) & (crop != fallow)) | (lc == LC["forest"]))
    assert dense.sum() > 500
    assert np.median(ratio[dense]) > 5.0
    for cls in ("barren", "developed", "water"):
        m = pure & (lc == LC[cls])
        assert m.sum() > 50, cls
        assert np.median(ratio[m]) < 2.0, cls
    water = pure & (lc == LC["water"])
    land = pure & (lc != LC["water"])
    assert np.median(swir1[water]) < 0.02 < np.median(swir1[land])
    # the modelled water spectrum itself: blue/green brighter than NIR/SWIR, never negative
    wl = earthlib_library().wavelengths_nm
    w = water_reflectance(wl, chl=5, tsm=10, cdom_440=0.2)
    assert (w >= 0).all() and w[(wl > 500) & (wl < 600)].mean() > 3 * w[wl > 1500].mean()


def test_soc_falls_with_soil_albedo(scenes):
    """Darker soils carry more carbon: per unit (the rule) and per bare-soil pixel (observable)."""
    units = [u for sc, _, _ in scenes for u in sc.units if "soil_albedo" in u]
    a = np.array([u["soil_albedo"] for u in units])
    soc = np.array([u["soc_gkg"] for u in units])
    assert len(units) > 50
    assert np.corrcoef(a, np.log(soc))[0, 1] < -0.6
    H, lc, soc_px, pure = (_stack(scenes, k) for k in ("hls", "landcover", "soc", "pure"))
    bare = pure & (lc == LC["barren"])
    assert bare.sum() > 200
    assert np.corrcoef(H.mean(axis=1)[bare], np.log(soc_px[bare]))[0, 1] < -0.4


def test_labels_shapes_classes_and_consistency(scenes):
    lc, crop, soc, pure = (_stack(scenes, k) for k in ("landcover", "croptype", "soc", "pure"))
    assert lc.shape == crop.shape == soc.shape == (12, 48, 48)
    assert lc.dtype == np.int16 and crop.dtype == np.int16 and soc.dtype == np.float32
    assert set(np.unique(lc)) == set(range(len(LANDCOVER_CLASSES)))
    assert set(np.unique(crop)) == set(range(len(CFG.crop_classes)))
    assert (lc[crop > 0] == LC["cropland"]).all()
    assert (crop[lc != LC["cropland"]] == 0).all()
    soil = np.isin(lc, [LC[c] for c in ("cropland", "grassland", "forest", "barren")])
    assert np.isfinite(soc[pure & soil]).all()
    assert np.isnan(soc[pure & ~soil]).all()
    lo, hi = CFG.soc.clip
    assert np.nanmin(soc) >= lo and np.nanmax(soc) <= hi


def test_noise_grows_with_signal_and_in_absorption_bands():
    sc = generate_scene(CFG, 32, seed=5, index=2)
    enmap = get_sensor("enmap", "all")
    clean = render(sc, enmap, Instrument(noise=False))
    noisy = render(sc, enmap)
    resid = noisy - clean
    centres = np.array(enmap.centers_nm)
    window = np.abs(resid[(centres > 1340) & (centres < 1440)]).mean()
    clear = np.abs(resid[(centres > 1550) & (centres < 1700)]).mean()
    assert window > 5 * clear
    band = int(np.argmin(np.abs(centres - 860)))
    x, r = clean[band].ravel(), np.abs(resid[band]).ravel()
    assert r[x > np.quantile(x, 0.8)].mean() > 1.2 * r[x < np.quantile(x, 0.2)].mean()


# -- arbitrary sensors --------------------------------------------------------------------------


def test_any_band_count_works(tmp_path):
    rng = np.random.default_rng(0)
    centres = np.sort(rng.uniform(420, 2400, 37))
    sensor = Sensor(
        name="adhoc-37",
        gsd_m=30.0,
        bands=tuple(Band(f"c{i}", float(c), float(rng.uniform(4, 40))) for i, c in enumerate(centres)),
    )
    store = synthesize(sensor, tmp_path / "adhoc", chips=2, size=16, seed=1, progress=False)
    item = store[1]
    assert item["image"].shape == (37, 16, 16) and np.isfinite(item["image"]).all()
    assert store.sensor.band_names == sensor.band_names and store.synthetic
    bad = Sensor(name="thermal", gsd_m=30.0, bands=(Band("t1", 10900.0, 500.0),))
    with pytest.raises(DataError, match=r"t1.*outside"):
        synthesize(bad, tmp_path / "bad", chips=1, size=16, progress=False)
    assert not (tmp_path / "bad").exists()


# -- stores, CLI, resume ------------------------------------------------------------------------


def test_cli_synth_round_trip_and_stats_match_numpy(tmp_path, capsys):
    a, b = tmp_path / "enmap", tmp_path / "hls"
    rc = main(
        [
            "data",
            "synth",
            "--out",
            str(a),
            "--chips",
            "3",
            "--size",
            "16",
            "--seed",
            "4",
            "--also",
            f"hls={b}",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    store, teacher = ChipStore(a), ChipStore(b)
    assert len(store) == len(teacher) == 3 and store.synthetic and teacher.synthetic
    assert store.sensor.name == "enmap" and store.sensor.num_bands == get_sensor("enmap").num_bands
    assert teacher.sensor.num_bands == 6
    assert (
        store.manifest["attrs"]["synth"]["seed"] == 4 and "SYNTHETIC" in store.manifest["attrs"]["synthetic"]
    )
    assert store.manifest["attrs"]["command"].startswith("hyperkd data synth --sensor enmap --out")
    # same scenes in both stores, and the same as generating them directly
    direct = generate_scene(CFG, 16, seed=4, index=2)
    for k in ("landcover", "croptype", "soc"):
        np.testing.assert_array_equal(store[2][k], teacher[2][k])
        np.testing.assert_array_equal(store[2][k], direct.labels[k])
    np.testing.assert_allclose(
        store[2]["image"], render(direct, get_sensor("enmap")).astype(np.float16).astype(np.float32)
    )
    # manifest statistics = numpy over every stored pixel
    pix = np.concatenate([store[i]["image"].reshape(store.sensor.num_bands, -1) for i in range(3)], axis=1)
    np.testing.assert_allclose(store.stats["mean"], pix.mean(axis=1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(store.stats["std"], pix.std(axis=1, ddof=1), rtol=1e-4, atol=1e-7)
    assert store.stats["count"] == 3 * 16 * 16

    capsys.readouterr()
    assert main(["data", "info", str(a), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    lc = np.stack([store[i]["landcover"] for i in range(3)])
    counts = np.bincount(lc.ravel(), minlength=len(LANDCOVER_CLASSES))
    assert info["labels"]["landcover"]["classes"] == dict(
        zip(LANDCOVER_CLASSES, counts.tolist(), strict=True)
    )
    soc = np.stack([store[i]["soc"] for i in range(3)])
    assert info["labels"]["soc"]["nan_fraction"] == pytest.approx(np.isnan(soc).mean())
    assert info["labels"]["soc"]["mean"] == pytest.approx(np.nanmean(soc.astype(np.float64)))
    assert info["synthetic"] and info["chips"] == 3 and info["sensor"]["num_bands"] == 202
    assert info["provenance"]["paired_stores"] == {str(b): "hls:all"}
    assert main(["data", "info", str(a)]) == 0
    assert "SYNTHETIC DATA" in capsys.readouterr().out


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--chips", "0"]) == 1
    assert "--chips must be >= 1" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--also", "hls"]) == 1
    assert "SENSOR[:SELECTION]=STORE" in capsys.readouterr().err
    cfg = tmp_path / "scene.yaml"
    cfg.write_text("crops:\n  - name: maize\n    lai: [3, 7]\n    chl: [40, 60]\n    colour: green\n")
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--config", str(cfg)]) == 1
    assert "unknown field 'colour'" in capsys.readouterr().err


def test_chip_does_not_depend_on_count_shards_or_interruption(tmp_path):
    hls = get_sensor("hls")
    full = synthesize(hls, tmp_path / "full", chips=5, size=16, seed=9, shard_size=2, progress=False)

    def stop_after_three(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synthesize(
            hls, tmp_path / "resumed", chips=5, size=16, seed=9, shard_size=2, progress=stop_after_three
        )
    with pytest.raises(DataError, match="--resume"):
        synthesize(hls, tmp_path / "resumed", chips=5, size=16, seed=9, shard_size=2, progress=False)
    with pytest.raises(DataError, match="other synth settings"):
        synthesize(
            hls, tmp_path / "resumed", chips=5, size=16, seed=10, shard_size=2, progress=False, resume=True
        )
    resumed = synthesize(
        hls, tmp_path / "resumed", chips=5, size=16, seed=9, shard_size=2, progress=False, resume=True
    )
    short = synthesize(hls, tmp_path / "short", chips=2, size=16, seed=9, progress=False)
    assert len(resumed) == 5
    for i in range(5):
        np.testing.assert_array_equal(full[i]["image"], resumed[i]["image"])
        np.testing.assert_array_equal(full[i]["soc"], resumed[i]["soc"])
    np.testing.assert_array_equal(full[1]["image"], short[1]["image"])


# -- configuration ------------------------------------------------------------------------------


def test_scene_config_round_trip_partial_files_and_weights(tmp_path):
    assert SceneConfig.from_dict(CFG.to_dict()) == CFG
    assert SceneConfig.from_dict(json.loads(json.dumps(CFG.to_dict()))).digest() == CFG.digest()
    path = tmp_path / "c.yaml"
    path.write_text("name: wet\np_water: 1.0\nwater:\n  lake: 1.0\nsoc:\n  slope: 4.0\n")
    cfg = SceneConfig.from_file(path)
    assert cfg.p_water == 1.0 and cfg.water.lake == 1.0 and cfg.soc.slope == 4.0
    assert cfg.crops == CFG.crops and cfg.digest() != CFG.digest()
    assert all(generate_scene(cfg, 16, seed=0, index=i).meta["water"] for i in range(3))

    with pytest.raises(DataError, match="unknown crop 'rice'"):
        CFG.with_weights(crops={"rice": 1.0})
    with pytest.raises(DataError, match="range"):
        SceneConfig.from_dict({"parcel_px": [20, 6]})
    # a partial dict completes nested specs from the base (here a preset), not from the defaults
    student = SceneConfig.preset("kd-student")
    over = SceneConfig.from_dict({"urban": {"green_lots": 0.5}, "roads": [1, 3]}, base=student)
    assert over.crops == student.crops and over.urban.roofs == student.urban.roofs
    assert (over.urban.green_lots, over.roads) == (0.5, (1, 3))
    ins = Instrument(snr_scale=0.25, snr=((400.0, 100.0), (2500.0, 50.0)))
    assert Instrument.from_dict(json.loads(json.dumps(ins.to_dict()))) == ins
    # a student set without cotton keeps the class list, so ids agree with the teacher set
    student = CFG.with_weights(crops={"cotton": 0.0}, covers={"cropland": 1.0, "forest": 0.0})
    assert student.crop_classes == CFG.crop_classes
    cotton = CFG.crop_classes.index("cotton")
    for i in range(6):
        sc = generate_scene(student, 32, seed=0, index=i)
        assert not (sc.labels["croptype"] == cotton).any()
        assert not (sc.labels["landcover"] == LC["forest"]).any()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"p_water": "lots"}, "scene config.p_water: expected a number, got 'lots'"),
        ({"p_water": True}, "scene config.p_water: expected a number, got True"),
        ({"supersample": 2.5}, "scene config.supersample: expected an integer, got 2.5"),
        ({"roads": [0.5, 2]}, "scene config.roads[0]: expected an integer, got 0.5"),
        ({"roads": [2, 1]}, "scene config: roads must be (min, max)"),
        ({"urban": {"colour": 1}}, "scene config.urban: unknown field 'colour'; known fields: roofs,"),
        ({"urban": {"roofs": "metal"}}, "scene config.urban.roofs: expected a list, got str"),
        ({"water": [1, 2]}, "scene config.water: expected a mapping, got list"),
        (
            {"water": {"river_px": [4, 1]}},
            "scene config.water.river_px: range [4.0, 1.0] must be (low, high)",
        ),
        ({"crops": [3]}, "scene config.crops[0]: expected a mapping, got int"),
        ({"crops": [{"name": "rice", "chl": [1, 2]}]}, "scene config.crops[0]: missing field 'lai'"),
        (
            {"crops": [{"name": "rice", "lai": [1, 2, 3], "chl": [1, 2]}]},
            "scene config.crops[0].lai: expected a list of 2 numbers, got [1, 2, 3]",
        ),
        ({"grassland": {"lai": [3, 1]}}, "scene config.grassland.lai: range [3.0, 1.0]"),
        ({"soc": {"clip": [150, 1]}}, "scene config.soc.clip: range [150.0, 1.0]"),
        (
            {"soc": {"cover_factor": {"forest": "x"}}},
            "scene config.soc.cover_factor.forest: expected a number",
        ),
        ({"cover_weights": 3}, "scene config.cover_weights: expected a mapping of name: number, got int"),
        (
            {"regions": [{"name": "x", "soil_boxes": [[1, 2, 3]]}]},
            "scene config.regions[0].soil_boxes[0]: expected a list of 4 numbers, got [1, 2, 3]",
        ),
    ],
)
def test_a_bad_scene_config_gets_one_line_naming_the_field(bad, message):
    with pytest.raises(DataError) as err:
        SceneConfig.from_dict(bad)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"noise": "yes"}, "instrument.noise: expected true/false, got 'yes'"),
        ({"snr": [[400, 100], [500]]}, "instrument.snr[1]: expected a list of 2 numbers, got [500]"),
        ({"max_snr": "x"}, "instrument.max_snr: expected a number, got 'x'"),
        ({"srf": "box"}, "instrument: srf must be auto, gaussian or range, got 'box'"),
        ({"psf_sigma_px": -1}, "instrument: psf_sigma_px must be >= 0"),
    ],
)
def test_a_bad_instrument_gets_one_line_naming_the_field(bad, message):
    with pytest.raises(DataError) as err:
        Instrument.from_dict(bad)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_an_unusable_second_output_leaves_the_first_untouched(tmp_path):
    hls = get_sensor("hls")
    synthesize(hls, tmp_path / "done", chips=1, size=16, progress=False)
    with pytest.raises(DataError, match="already holds a complete chip store"):
        synthesize(hls, tmp_path / "new", chips=1, size=16, also=[(hls, tmp_path / "done")], progress=False)
    assert not (tmp_path / "new").exists()
    with pytest.raises(DataError, match="own output folder"):
        synthesize(hls, tmp_path / "a", chips=1, size=16, also={"enmap": tmp_path / "a"}, progress=False)


def test_info_summarises_any_store_over_valid_pixels(tmp_path):
    from hyperkd.data.info import store_info
    from hyperkd.data.store import ChipStoreWriter, LabelSpec

    sensor = Sensor(
        name="toy", gsd_m=10.0, bands=tuple(Band(f"b{i}", 500.0 + 100 * i, 20.0) for i in range(3))
    )
    labels = {"lc": LabelSpec("class", classes=("a", "b")), "y": LabelSpec("continuous", unit="m")}
    w = ChipStoreWriter(tmp_path / "s", sensor, 4, labels=labels, shard_size=2)
    rng = np.random.default_rng(0)
    valids, lcs, ys = [], [], []
    for _ in range(3):
        valid = rng.random((4, 4)) > 0.3
        lc = rng.integers(-1, 2, (4, 4))  # -1: unlabelled
        y = np.where(rng.random((4, 4)) > 0.2, rng.normal(size=(4, 4)), np.nan)
        w.add(rng.random((3, 4, 4)).astype(np.float32), valid, {"lc": lc, "y": y})
        valids.append(valid), lcs.append(lc), ys.append(y)
    info = store_info(w.close())
    v, lc, y = np.stack(valids), np.stack(lcs), np.stack(ys).astype(np.float32)
    assert not info["synthetic"] and info["chips"] == 3 and info["shards"] == 2
    assert info["valid_fraction"] == pytest.approx(v.mean())
    assert info["labels"]["lc"]["classes"] == {"a": int((lc[v] == 0).sum()), "b": int((lc[v] == 1).sum())}
    assert info["labels"]["lc"]["unlabelled"] == int((lc[v] == -1).sum())
    assert info["labels"]["y"]["nan_fraction"] == pytest.approx(np.isnan(y[v]).mean())
    assert info["labels"]["y"]["max"] == pytest.approx(np.nanmax(y[v]))
    assert info["sensor"]["num_bands"] == 3 and info["provenance"] == {}


# -- distillation presets -----------------------------------------------------------------------


def test_patchy_twin_crops_need_spatial_context_to_be_told_apart():
    """even-stand vs patchy-stand: a per-pixel classifier is near chance, one given 5x5 window
    mean/std separates them; a spectrally different pair (maize vs wheat) is easy per pixel,
    so the per-pixel classifier is not simply broken. Train on 32 scenes, test on 32 others,
    pixels whose whole 5x5 window lies inside one parcel. Small parcels, so each split holds
    many of them: the parcel, not the pixel, is the independent sample (with few parcels the
    per-pixel score scatters around chance by +-0.1 from the draw of parcel levels alone).
    Across seeds 1-6 and 11 this measured per-pixel 0.43-0.51, context 0.93-0.98."""
    cfg = crop_config(["even-stand", "patchy-stand", "maize", "wheat"])
    chips = features(
        cfg,
        get_sensor("hls"),
        seed=11,
        n=64,
        size=32,
        instrument=Instrument(),
        radius=2,
        with_std=True,
        interior=True,
    )

    def scores(a: str, b: str) -> tuple[float, float]:
        res = pair_scores(chips, cfg.crop_classes, a, b, lam=1e-2)
        assert min(min(split) for split in res.counts) > 300, (a, b)
        return res.pixel, res.context

    twin_pixel, twin_context = scores("even-stand", "patchy-stand")
    assert twin_pixel < 0.6, twin_pixel
    assert twin_context > 0.85, twin_context
    assert twin_context - twin_pixel > 0.3
    control_pixel, _ = scores("maize", "wheat")
    assert control_pixel > 0.9, control_pixel


def test_patchiness_changes_only_cover_not_layout_or_other_scenes():
    """Patchiness draws from its own random stream: geometry, labels and every non-patchy
    unit are the same with or without it, and the default config never uses it."""
    kd = SceneConfig.preset("kd-teacher")
    flat = dataclasses.replace(kd, crops=tuple(dataclasses.replace(c, patchiness=0.0) for c in kd.crops))
    patchy_id = kd.crop_classes.index("patchy-stand")
    seen = False
    for i in range(6):
        a, b = generate_scene(kd, 32, seed=4, index=i), generate_scene(flat, 32, seed=4, index=i)
        for k in a.labels:
            np.testing.assert_array_equal(a.labels[k], b.labels[k])
        np.testing.assert_array_equal(a.slot_index, b.slot_index)
        differs = (a.slot_weight != b.slot_weight).any(axis=0)
        patchy = a.labels["croptype"] == patchy_id
        pure = a.unit_fraction[0] == 1.0
        assert not (differs & pure & ~patchy).any()
        if patchy.any():
            seen = True
            assert differs[patchy & pure].mean() > 0.9
    assert seen
    assert all(c.patchiness == 0 for c in SceneConfig().crops)


def test_presets_share_class_ids_and_the_student_set_lacks_teacher_variety():
    assert PRESETS == ("default", "kd-teacher", "kd-student", "kd-eval")
    assert SceneConfig.preset("default") == SceneConfig()
    cfgs = {n: SceneConfig.preset(n) for n in PRESETS[1:]}
    classes = {c.crop_classes for c in cfgs.values()}
    assert len(classes) == 1 and {"even-stand", "patchy-stand"} <= set(next(iter(classes)))
    assert {n: c.name for n, c in cfgs.items()} == {n: n for n in cfgs}
    assert SceneConfig.from_dict(cfgs["kd-student"].to_dict()) == cfgs["kd-student"]
    with pytest.raises(DataError, match=r"unknown scene preset 'kd-nope'.*kd-teacher"):
        SceneConfig.preset("kd-nope")
    with pytest.raises(DataError, match="'maize' patchiness must be within"):
        SceneConfig.from_dict(
            {
                "crops": [
                    dict(c, patchiness=1.5) if c["name"] == "maize" else c
                    for c in SceneConfig().to_dict()["crops"]
                ]
            }
        )

    absent_crops = [cfgs["kd-student"].crop_classes.index(c) for c in KD_STUDENT_ABSENT["crops"]]

    def census(cfg: SceneConfig) -> tuple[set[str], set[int]]:
        regions, crops = set(), set()
        for i in range(24):
            sc = generate_scene(cfg, 24, seed=3, index=i)
            regions.add(sc.meta["region"])
            crops |= set(np.unique(sc.labels["croptype"]).tolist())
        return regions, crops

    t_regions, t_crops = census(cfgs["kd-teacher"])
    s_regions, s_crops = census(cfgs["kd-student"])
    assert set(KD_STUDENT_ABSENT["regions"]) <= t_regions and set(absent_crops) <= t_crops
    assert not set(KD_STUDENT_ABSENT["regions"]) & s_regions and not set(absent_crops) & s_crops
    assert len(s_crops) >= 6  # the student set still has most crops, the other twin included
    assert cfgs["kd-student"].crop_classes.index("even-stand") in s_crops


def test_cli_preset_with_config_override_and_snr_scale(tmp_path, capsys):
    over = tmp_path / "dry.yaml"
    over.write_text("p_water: 0.0\n")
    out = tmp_path / "student"
    rc = main(
        [
            "data",
            "synth",
            "--out",
            str(out),
            "--chips",
            "2",
            "--size",
            "16",
            "--preset",
            "kd-student",
            "--config",
            str(over),
            "--snr-scale",
            "0.25",
            "--also",
            f"hls={tmp_path / 'hls'}",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    store = ChipStore(out)
    attrs = store.manifest["attrs"]
    assert attrs["preset"] == "kd-student" and attrs["scene_config"]["name"] == "kd-student"
    assert attrs["scene_config"]["p_water"] == 0.0
    expected = SceneConfig.from_dict({"p_water": 0.0}, base=SceneConfig.preset("kd-student"))
    assert attrs["synth"]["config_digest"] == expected.digest()
    assert store.labels["croptype"].classes == SceneConfig.preset("kd-eval").crop_classes
    assert attrs["instrument"]["snr_scale"] == 0.25
    assert "--preset kd-student" in attrs["command"] and "--snr-scale 0.25" in attrs["command"]
    np.testing.assert_array_equal(
        store[1]["croptype"], generate_scene(expected, 16, seed=0, index=1).labels["croptype"]
    )
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--preset", "nope"]) == 1
    err = capsys.readouterr().err
    assert "unknown scene preset 'nope'" in err and "kd-eval" in err
    assert not (tmp_path / "x").exists()


def test_kd_stores_write_the_three_sets_with_their_presets(tmp_path):
    stores = kd_stores(tmp_path / "kd", teacher_chips=4, student_chips=2, eval_chips=3, size=16, seed=5)
    assert set(stores) == {"teacher", "student", "eval", "eval_hls"}
    want = {
        "teacher": ("hls", "kd-teacher", 15, 4, 1.0),
        "student": ("enmap", "kd-student", 16, 2, 0.25),
        "eval": ("enmap", "kd-eval", 17, 3, 0.25),
        "eval_hls": ("hls", "kd-eval", 17, 3, 1.0),
    }
    for role, (sensor, preset, seed, n, snr) in want.items():
        s = stores[role]
        a = s.manifest["attrs"]
        assert (s.sensor.name, a["preset"], a["synth"]["seed"], len(s), a["instrument"]["snr_scale"]) == (
            sensor,
            preset,
            seed,
            n,
            snr,
        ), role
        assert s.synthetic and s.chip_size == 16
        assert s.labels["croptype"].classes == SceneConfig.preset("kd-eval").crop_classes
    for i in range(3):  # the eval scenes in both sensors
        for k in ("landcover", "croptype", "soc"):
            np.testing.assert_array_equal(stores["eval"][i][k], stores["eval_hls"][i][k])
    assert stores["eval"].manifest["attrs"]["paired_stores"] == {str(tmp_path / "kd" / "eval-hls"): "hls:all"}
    with pytest.raises(DataError, match="already holds a chip store"):
        kd_stores(tmp_path / "kd", teacher_chips=1, student_chips=1, eval_chips=1, size=16)
