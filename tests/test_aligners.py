"""Channel aligners against hand-computed band weights for HLS from EnMAP."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hyperkd import create, get_sensor
from hyperkd.core.errors import HyperKDError
from hyperkd.core.plugins import load_plugins

# EnMAP (default 202-band selection) bands whose centres lie inside each HLS range (checked
# against the in-flight band table in docs: Blue B8-19, Green B24-35, Red B44-48, NIR
# B74-77, SWIR1 B146-152, SWIR2 B183-203).
HAND = {
    "B02": [f"B{i}" for i in range(8, 20)],
    "B03": [f"B{i}" for i in range(24, 36)],
    "B04": [f"B{i}" for i in range(44, 49)],
    "B05": [f"B{i}" for i in range(74, 78)],
    "B06": [f"B{i}" for i in range(146, 153)],
    "B07": [f"B{i}" for i in range(183, 204)],
}


@pytest.fixture(scope="module")
def sensors():
    load_plugins()
    return get_sensor("enmap"), get_sensor("hls")


def test_spectral_range_is_the_mean_of_the_bands_inside_each_range(sensors):
    enmap, hls = sensors
    al = create("aligner", "spectral-range", source=enmap, target=hls)
    w = al.weight.numpy()
    assert w.shape == (6, 202)
    for t, band in enumerate(hls.band_names):
        expect = np.zeros(202)
        idx = [enmap.band_index(n) for n in HAND[band]]
        expect[idx] = 1.0 / len(idx)
        np.testing.assert_allclose(w[t], expect, rtol=0, atol=1e-7, err_msg=band)
    # red = (B44 + B45 + B46 + B47 + B48) / 5 on a real cube
    x = torch.rand(2, 202, 4, 4)
    red = x[:, [enmap.band_index(f"B{i}") for i in range(44, 49)]].mean(1)
    torch.testing.assert_close(al(x)[:, 2], red)
    assert al(x).shape == (2, 6, 4, 4)


def test_srf_weights_match_gaussian_response_by_hand(sensors):
    enmap, hls = sensors
    al = create("aligner", "srf", source=enmap, target=hls)
    w = al.weight.numpy()
    k = 1 / (2 * math.sqrt(2 * math.log(2)))  # FWHM -> sigma
    for t in range(6):
        ct, st = hls.centers_nm[t], hls.fwhms_nm[t] * k
        raw = []
        for cs, fs in zip(enmap.centers_nm, enmap.fwhms_nm, strict=True):
            var = st**2 + (fs * k) ** 2
            d2 = (cs - ct) ** 2
            raw.append(math.exp(-d2 / (2 * var)) if d2 <= 9 * var else 0.0)
        expect = np.array(raw) / sum(raw)
        np.testing.assert_allclose(w[t], expect, rtol=1e-5, atol=1e-7)
    # red (655 nm, FWHM 30) is centred on the band nearest 655 nm and reaches no NIR band
    red = w[2]
    assert enmap.centers_nm[int(red.argmax())] == pytest.approx(653.6, abs=1.0)
    assert red[enmap.band_index("B74")] == 0.0
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
    # a flat spectrum stays flat
    x = torch.full((1, 202, 2, 2), 0.3)
    torch.testing.assert_close(al(x), torch.full((1, 6, 2, 2), 0.3))


def test_learned_aligner_starts_at_spectral_range_and_trains(sensors):
    enmap, hls = sensors
    fixed = create("aligner", "spectral-range", source=enmap, target=hls)
    learned = create("aligner", "learned", source=enmap, target=hls)
    x = torch.rand(2, 202, 4, 4)
    torch.testing.assert_close(learned(x), fixed(x), rtol=1e-5, atol=1e-6)
    params = [p for p in learned.parameters() if p.requires_grad]
    assert params and not list(fixed.parameters())
    learned(x).sum().backward()
    assert learned.proj.weight.grad is not None and learned.proj.weight.grad.abs().sum() > 0


def test_teacher_band_without_student_bands_is_an_error_naming_it(sensors):
    enmap, hls = sensors
    vnir = enmap.select([n for n, c in zip(enmap.band_names, enmap.centers_nm, strict=True) if c < 1000])
    with pytest.raises(HyperKDError, match=r"hls band B06 \(1570-1650 nm\)"):
        create("aligner", "spectral-range", source=vnir, target=hls)
    with pytest.raises(HyperKDError, match="srf: hls band B06"):
        create("aligner", "srf", source=vnir, target=hls, cutoff=1.0)
    with pytest.raises(HyperKDError, match="expects"):
        create("aligner", "spectral-range", source=enmap, target=hls)(torch.rand(1, 6, 2, 2))


@pytest.fixture(scope="module")
def vnir_and_teacher_hls(sensors):
    """A DESIS-like student (EnMAP bands below 1000 nm) and a teacher HLS band table carrying
    Prithvi's means (reflectance), as hyperkd teachers' sensors do."""
    from dataclasses import replace

    enmap, hls = sensors
    vnir = enmap.select([n for n, c in zip(enmap.band_names, enmap.centers_nm, strict=True) if c < 1000])
    means = [0.05, 0.07, 0.08, 0.25, 0.2, 0.13]
    teacher = replace(
        hls, bands=tuple(replace(b, mean=m, std=0.1) for b, m in zip(hls.bands, means, strict=True))
    )
    return vnir, teacher, means


@pytest.mark.parametrize("name", ["spectral-range", "srf", "learned"])
def test_an_uncovered_teacher_band_is_refused_by_default_and_never_invented(vnir_and_teacher_hls, name):
    vnir, teacher, _ = vnir_and_teacher_hls
    with pytest.raises(
        HyperKDError, match=r"hls band B06 \(1570-1650 nm\) contains no enmap band.*missing=drop"
    ):
        create("aligner", name, source=vnir, target=teacher)
    if name == "srf":  # a wide cutoff used to renormalise tiny weights: 1000 nm fed to the teacher as SWIR
        with pytest.raises(HyperKDError, match="B06"):
            create("aligner", "srf", source=vnir, target=teacher, cutoff=50.0)
    with pytest.raises(HyperKDError, match="not a policy"):
        create("aligner", name, source=vnir, target=teacher, missing="guess")


@pytest.mark.parametrize("name", ["spectral-range", "srf", "learned"])
@pytest.mark.parametrize("policy", ["drop", "fill"])
def test_drop_and_fill_give_the_teacher_its_own_mean_in_uncovered_bands(
    vnir_and_teacher_hls, name, policy, caplog
):
    vnir, teacher, means = vnir_and_teacher_hls
    kw = {"cutoff": 50.0} if name == "srf" else {}
    with caplog.at_level("WARNING", logger="hyperkd.components.aligners"):
        al = create(
            "aligner",
            name,
            source=vnir,
            target=teacher,
            missing=policy,
            **kw,
        )
    assert al.band_report() == {"missing": policy, "missing_bands": ["B06", "B07"]}
    assert "B06, B07" in caplog.text and f"missing={policy}" in caplog.text
    x = torch.rand(2, vnir.num_bands, 3, 3)
    y = al(x)
    # uncovered bands: the teacher's mean whatever the input (0 after its normalisation) ...
    for t in (4, 5):
        torch.testing.assert_close(y[:, t], torch.full((2, 3, 3), means[t]))
        torch.testing.assert_close(al(2 * x)[:, t], y[:, t])
    # ... covered ones as without a policy
    ref = create(
        "aligner", name, source=vnir, target=get_sensor("hls").select(["B02", "B03", "B04", "B05"]), **kw
    )
    torch.testing.assert_close(y[:, :4], ref(x))
    if name == "learned":  # the fill is fixed: training cannot learn the band from other wavelengths
        al(x).sum().backward()
        assert al.proj.weight.grad[4:].abs().sum() == 0 and al.proj.weight.grad[:4].abs().sum() > 0


def test_drop_and_fill_need_the_teacher_means(sensors):
    enmap, hls = sensors
    vnir = enmap.select([n for n, c in zip(enmap.band_names, enmap.centers_nm, strict=True) if c < 1000])
    from dataclasses import replace

    bare = replace(hls, bands=tuple(replace(b, mean=None) for b in hls.bands))
    with pytest.raises(HyperKDError, match="needs the teacher sensor's per-band means"):
        create("aligner", "spectral-range", source=vnir, target=bare, missing="drop")
