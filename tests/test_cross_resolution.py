"""Teacher and student at different GSD: footprint resampling, synthetic scenes at each sensor's own
GSD, teacher tokens matched to student tokens by ground position, and a 60 m student distilled
from a 30 m teacher (issue 16 item 4)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hyperkd import create, get_sensor
from hyperkd.components.aligners import GroundMatch, ground_match_for
from hyperkd.core.errors import DataError, HyperKDError
from hyperkd.core.ground import footprint_weights, pixels_on, resample_footprints
from hyperkd.core.plugins import load_plugins
from hyperkd.core.sensors import Band, Sensor
from hyperkd.data.store import ChipStore
from hyperkd.synth import Instrument, generate_scene, render, synthesize
from hyperkd.synth.render import labels_at

from .helpers.threads import one_thread  # noqa: F401 - autouse: one torch thread here
from .helpers.toy import TINY_STUDENT, logged

# EMIT-like: 285 bands over 381-2493 nm with ~8.5 nm FWHM at 60 m (not the official band table)
EMIT_LIKE = Sensor(
    name="emit-like",
    bands=tuple(Band(f"B{i:03d}", float(c), 8.5) for i, c in enumerate(np.linspace(381.0, 2493.0, 285))),
    gsd_m=60.0,
)
CLEAN = Instrument(noise=False, psf_sigma_px=0.0)

# the known feature: a bright square on the ground, y 600-840 m, x 1200-1440 m of a 1920 m scene
FEATURE_Y, FEATURE_X = (600.0, 840.0), (1200.0, 1440.0)


def _with_feature(size: int = 64, gsd: float = 30.0):
    """A synthetic scene of ``size`` px at ``gsd`` m with the known feature painted in: every
    pixel inside it is the library's brightest endmember, alone."""
    scene = generate_scene(None, size, seed=3, index=0, gsd_m=gsd)
    k = int(scene.endmembers.mean(1).argmax())
    y0, y1 = (int(v / gsd) for v in FEATURE_Y)
    x0, x1 = (int(v / gsd) for v in FEATURE_X)
    scene.slot_index[:, y0:y1, x0:x1] = k
    scene.slot_weight[:, y0:y1, x0:x1] = 0.0
    scene.slot_weight[0, y0:y1, x0:x1] = 1.0
    return scene


def _cells(span: tuple[float, float], cell_m: float) -> list[int]:
    return list(range(int(span[0] // cell_m), int(-(-span[1] // cell_m))))


# -- footprints ------------------------------------------------------------------------------------
def test_footprint_weights_are_area_weights_over_the_same_ground():
    # 3 px of 30 m -> 2 px of 45 m: the middle 30 m pixel is split by area between both
    np.testing.assert_allclose(footprint_weights(3, 30.0, 2, 45.0), [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])
    # 60 m -> 30 m: each fine pixel takes the coarse pixel it lies in, nothing is invented
    np.testing.assert_allclose(footprint_weights(2, 60.0, 4, 30.0), [[1, 0], [1, 0], [0, 1], [0, 1]])
    img = np.arange(36, dtype=np.float64).reshape(6, 6)
    w = footprint_weights(6, 30.0, 3, 60.0)
    np.testing.assert_allclose(resample_footprints(img, w, w), img.reshape(3, 2, 3, 2).mean((1, 3)))
    assert pixels_on(32, 60.0, 30.0) == 64
    with pytest.raises(HyperKDError, match=r"49\.5 px at 30 m, not a whole number"):
        pixels_on(33, 45.0, 30.0)
    with pytest.raises(HyperKDError, match="do not cover the same ground"):
        footprint_weights(4, 30.0, 3, 30.0)


# -- synthetic scenes at each sensor's own GSD ------------------------------------------------------
def test_a_scene_is_rendered_at_each_sensors_gsd_with_the_feature_at_its_ground_position():
    load_plugins()
    scene = _with_feature()
    emit = render(scene, EMIT_LIKE, CLEAN)
    assert emit.shape == (285, 32, 32) and render(scene, get_sensor("hls"), CLEAN).shape == (6, 64, 64)
    # the 60 m image is the area-weighted mean of the same sensor's bands at the scene's 30 m pixels
    at_30 = render(scene, Sensor(name=EMIT_LIKE.name, bands=EMIT_LIKE.bands, gsd_m=30.0), CLEAN)
    np.testing.assert_allclose(emit, at_30.reshape(285, 32, 2, 32, 2).mean((2, 4)), rtol=1e-5, atol=1e-6)
    # the feature fills exactly the 60 m pixels of its ground (y 10-13, x 20-23) and no other
    inside = np.zeros((32, 32), dtype=bool)
    inside[np.ix_(_cells(FEATURE_Y, 60.0), _cells(FEATURE_X, 60.0))] = True
    spectrum = emit[:, 10, 20]
    same = np.abs(emit - spectrum[:, None, None]).max(0) < 1e-5
    assert (same == inside).all()
    # labels follow on the coarser grid: area-weighted majority / mean
    lab = labels_at(scene, EMIT_LIKE, {"soc": "continuous"})
    assert lab["landcover"].shape == (32, 32) and lab["soc"].shape == (32, 32)
    # a 45 m sensor on a 64 px scene of 30 m (1920 m = 42.67 px) cannot cover the same ground
    with pytest.raises(DataError, match="not a whole number"):
        render(scene, Sensor(name="s45", bands=EMIT_LIKE.bands[:3], gsd_m=45.0), CLEAN)
    with pytest.raises(DataError, match="finer than the scene"):
        render(scene, Sensor(name="s10", bands=EMIT_LIKE.bands[:3], gsd_m=10.0), CLEAN)


def test_synthesize_pairs_stores_of_different_gsd_over_the_same_ground(tmp_path):
    load_plugins()
    synthesize(
        EMIT_LIKE,
        tmp_path / "emit",
        chips=2,
        size=16,
        also=[("hls", tmp_path / "hls")],
        instrument=CLEAN,
        progress=False,
    )
    emit, hls = ChipStore(tmp_path / "emit"), ChipStore(tmp_path / "hls")
    assert emit.chip_size == 16 and hls.chip_size == 32  # 960 m each
    assert emit.manifest["attrs"]["synth"]["scene_gsd_m"] == 30.0
    # the HLS chip averaged over each 60 m footprint is HLS seen through EMIT's bands (srf aligner)
    align = create("aligner", "srf", source=EMIT_LIKE, target=get_sensor("hls"))
    for i in range(2):
        e = align(torch.as_tensor(emit[i]["image"])[None])[0].detach().numpy()
        h = hls[i]["image"].reshape(6, 16, 2, 16, 2).mean((2, 4))
        assert np.abs(e - h).max() < 0.02, np.abs(e - h).max()
        assert emit[i]["landcover"].shape == (16, 16) and hls[i]["landcover"].shape == (32, 32)
    with pytest.raises(DataError, match=r"8\.5 px at 60 m, not a whole number"):  # 17 px of 30 m = 510 m
        synthesize(
            "hls", tmp_path / "h2", chips=1, size=17, also=[(EMIT_LIKE, tmp_path / "e2")], progress=False
        )
    assert not (tmp_path / "h2").exists()  # refused before anything was written


# -- token grids matched by ground position ---------------------------------------------------------
def test_teacher_tokens_are_pooled_onto_student_tokens_by_ground_area():
    # 2880 m of ground: student 48 px at 60 m with 8 px patches (480 m tokens, 6x6), teacher 96 px
    # at 30 m with 12 px patches (360 m tokens, 8x8): a non-integer ratio of 4/3
    match = GroundMatch(48, 60.0, 8, 30.0, 12)
    assert (match.teacher_size, match.teacher_grid, match.student_grid) == (96, 8, 6)
    tokens = torch.zeros(1, 64, 1)
    tokens[0, 4 * 8 + 2] = 1.0  # one teacher token lit: ground y 1440-1800 m, x 720-1080 m
    pooled = match.tokens(tokens, torch.arange(36)[None]).view(6, 6)
    # student row 3 (1440-1920 m) holds 360/480 of it; col 1 (480-960 m) 240/480, col 2 (960-1440 m) 120/480
    expect = torch.zeros(6, 6)
    expect[3, 1], expect[3, 2] = 0.75 * 0.5, 0.75 * 0.25
    torch.testing.assert_close(pooled, expect)
    assert int(pooled.argmax()) == 3 * 6 + 1  # the student token covering most of that ground
    with pytest.raises(HyperKDError, match="not a multiple of the teacher's 16 px patch"):
        GroundMatch(12, 60.0, 4, 30.0, 16)
    with pytest.raises(HyperKDError, match="ground_match=off"):
        GroundMatch(33, 45.0, 3, 30.0, 1)
    load_plugins()
    assert ground_match_for(get_sensor("enmap"), 32, 4, get_sensor("hls"), 16) is None  # both 30 m
    assert ground_match_for(EMIT_LIKE, 32, 4, get_sensor("hls"), 16, mode="off") is None


def test_the_known_feature_reaches_the_student_token_covering_its_ground():
    """Scene -> 60 m student chip -> aligner + ground resampling -> teacher input at 30 m -> teacher
    tokens (240 m) -> pooled onto the student's 480 m tokens: the feature's token is the one over
    its ground, and a teacher that averages its patches gives exactly the student's patch means."""
    load_plugins()
    hls = get_sensor("hls")
    chip = torch.as_tensor(render(_with_feature(), EMIT_LIKE, CLEAN))[None]  # (1, 285, 32, 32)
    aligned = create("aligner", "srf", source=EMIT_LIKE, target=hls)(chip)
    match = GroundMatch(32, 60.0, 8, 30.0, 8)
    seen = match.pixels(aligned)  # what the teacher sees: (1, 6, 64, 64) at 30 m
    assert seen.shape == (1, 6, 64, 64)
    # where the teacher sees the feature's spectrum: exactly its ground, y 600-840 m, x 1200-1440 m
    feature = (seen[0] - seen[0, :, 20, 40, None, None]).abs().amax(0) < 1e-5
    expect = torch.zeros(64, 64, dtype=torch.bool)
    expect[20:28, 40:48] = True
    assert torch.equal(feature, expect)

    # a linear stand-in teacher: each token is its 8x8 patch's mean (240 m tokens, 8x8 grid)
    def patch_means(x: torch.Tensor) -> torch.Tensor:
        return x.unfold(2, 8, 8).unfold(3, 8, 8).mean((-1, -2)).flatten(2).transpose(1, 2)

    everyone = torch.arange(16)[None]
    matched = match.tokens(patch_means(seen), everyone)  # (1, 16, 6) on the 4x4 student grid of 480 m
    torch.testing.assert_close(matched, patch_means(aligned))
    # the feature's share of each teacher token, matched: it lands on student token (1, 2), the one
    # over 480-960 m x 960-1440 m, covering a quarter of it, and on no other
    share = match.tokens(patch_means(feature[None, None].float()), everyone).view(4, 4)
    lands = torch.zeros(4, 4)
    lands[1, 2] = 0.25
    torch.testing.assert_close(share, lands)


# -- a 60 m student distilled from a 30 m teacher -----------------------------------------------------
def test_a_60m_student_distils_from_a_30m_teacher_with_ground_matched_tokens(tmp_path):
    load_plugins()
    from hyperkd_prithvi.testing import write_tiny_checkpoint

    from hyperkd.training.distill import distill

    teacher = write_tiny_checkpoint(tmp_path / "prithvi_tiny.pt", seed=1)
    synthesize(EMIT_LIKE, tmp_path / "emit", chips=16, size=16, seed=2, progress=False)
    run = tmp_path / "run"
    distill(
        "hyperkd",
        run,
        teacher="prithvi-eo-tiny",
        teacher_weights=str(teacher),
        student="mae-tiny",
        data=str(tmp_path / "emit"),
        overrides=[*TINY_STUDENT, "trainer.max_epochs=6", "aligner.name=srf"],
    )
    info = json.loads((run / "distill.json").read_text())
    ground = info["ground"]
    assert ground["matched"] and ground["ground_m"] == 960.0
    assert ground["student"] == {"gsd_m": 60.0, "chip_px": 16, "token_m": 240.0}
    assert ground["teacher"] == {"gsd_m": 30.0, "input_px": 32, "token_m": 480.0}
    kld, mse = logged(run, "val/loss_kld"), logged(run, "val/loss_mse")
    assert len(kld) == len(mse) == 6
    assert kld[-1] < 0.7 * kld[0], kld  # about 0.47 x here
    assert mse[-1] < mse[0], mse
