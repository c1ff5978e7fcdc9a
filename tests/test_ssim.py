"""The ``ssim`` loss term: the cheap default (a rotating band subset, projected in patch space)
against the full per-band SSIM it stands for."""

from __future__ import annotations

import pytest
import torch

from hyperkd import create, get_sensor
from hyperkd.components.losses import band_groups, band_subset
from hyperkd.core.errors import HyperKDError
from hyperkd.core.plugins import load_plugins
from hyperkd.models.mae import MAEOutput


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_student(norm_pix_loss: bool = False):
    load_plugins()
    return create(
        "student",
        "mae-tiny",
        sensor=get_sensor("enmap"),
        img_size=16,
        patch_size=4,
        embed_dim=32,
        depth=1,
        num_heads=2,
        decoder_embed_dim=16,
        decoder_depth=1,
        decoder_num_heads=2,
        norm_pix_loss=norm_pix_loss,
    )


def scenes(n: int = 4, seed: int = 0) -> torch.Tensor:
    """Reflectance chips with realistic spectral correlation: three smooth spectra mixed by
    smooth spatial abundances, plus a little noise."""
    gen = torch.Generator().manual_seed(seed)
    wl = torch.as_tensor(get_sensor("enmap").centers_nm, dtype=torch.float32)
    spectra = torch.stack(
        [
            0.05 + 0.45 * torch.sigmoid((wl - 720) / 15),
            0.15 + 0.2 * (wl - 400) / 2100,
            0.08 * torch.exp(-(wl - 400) / 300),
        ]
    )
    ab = torch.nn.functional.avg_pool2d(torch.rand(n, 3, 22, 22, generator=gen), 7, stride=1)
    ab = ab / ab.sum(1, keepdim=True)
    x = torch.einsum("nkhw,kc->nchw", ab, spectra)
    return (x + 0.005 * torch.randn(x.shape, generator=gen)).clamp_min(0.0)


def output(student, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> MAEOutput:
    target = student.patchify(student.standardize(x))
    weight = mask[..., None].float().expand_as(target)
    return MAEOutput(pred=pred, target=target, mask=mask, weight=weight, features=[], ids_keep=None)


def half_mask(b: int) -> torch.Tensor:
    mask = torch.zeros(b, 16, dtype=torch.bool)
    mask[:, 2:10] = True
    return mask


def value_and_grad(term, student, x, pred, mask) -> tuple[float, torch.Tensor]:
    p = pred.detach().clone().requires_grad_()
    v = term(output(student, x, p, mask), {"batch": {"image": x}, "student": student})
    v.backward()
    return float(v.detach()), p.grad


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_patch_space_projection_equals_the_full_reconstruction(norm_pix_loss):
    """Every band through the projection path = the original term, value and gradient."""
    student = tiny_student(norm_pix_loss)
    x = scenes(2)
    pred = torch.randn(2, 16, 16 * 202)
    full = create("loss", "ssim", bands="all")
    every = create("loss", "ssim", bands="subset", band_stride=1)
    v_full, g_full = value_and_grad(full, student, x, pred, half_mask(2))
    v_every, g_every = value_and_grad(every, student, x, pred, half_mask(2))
    assert v_every == pytest.approx(v_full, rel=1e-5)
    torch.testing.assert_close(g_every, g_full, rtol=1e-3, atol=1e-7)


def test_cheap_term_tracks_the_full_ssim_over_reconstructions_of_varying_quality():
    student = tiny_student()
    x = scenes(4)
    target = student.patchify(student.standardize(x))
    gen = torch.Generator().manual_seed(1)
    full, cheap = create("loss", "ssim", bands="all"), create("loss", "ssim", rotate=False)
    fulls, cheaps = [], []
    for sigma in (0.02, 0.05, 0.1, 0.2, 0.5, 1.0):
        for i in range(4):
            pred = target[i : i + 1] + sigma * torch.randn(target[i : i + 1].shape, generator=gen)
            fulls.append(value_and_grad(full, student, x[i : i + 1], pred, half_mask(1))[0])
            cheaps.append(value_and_grad(cheap, student, x[i : i + 1], pred, half_mask(1))[0])
    r = torch.corrcoef(torch.tensor([fulls, cheaps]))[0, 1]
    assert r > 0.99, (fulls, cheaps)
    assert max(abs(a - b) for a, b in zip(fulls, cheaps, strict=True)) < 0.05


def test_rotating_subset_averages_to_the_full_term_and_scores_every_band():
    student = tiny_student()
    x = scenes(2)
    pred = student.patchify(student.standardize(x)) + 0.3 * torch.randn(2, 16, 16 * 202)
    full = create("loss", "ssim", bands="all")
    term = create("loss", "ssim")  # the default: every 8th band, start rotating per training call
    assert term.bands == "subset" and term.band_stride == 8
    v_full, g_full = value_and_grad(full, student, x, pred, half_mask(2))
    vals, grads = zip(*(value_and_grad(term, student, x, pred, half_mask(2)) for _ in range(8)), strict=True)
    assert term.calls == 8
    assert sum(vals) / 8 == pytest.approx(v_full, rel=0.01)
    total = torch.stack(grads).sum(0).view(2, 16, 16, 202)
    scored = total.abs().sum((0, 1, 2)) > 0
    assert bool(scored.all())  # over 8 steps every band got a gradient
    assert torch.nn.functional.cosine_similarity(total.flatten() / 8, g_full.flatten(), dim=0) > 0.95
    # evaluation (no gradient) always scores the first subset: validation values are comparable
    with torch.no_grad():
        ctx = {"batch": {"image": x}, "student": student}
        a = term(output(student, x, pred, half_mask(2)), ctx)
        b = term(output(student, x, pred, half_mask(2)), ctx)
    assert float(a) == float(b) and term.calls == 8


@pytest.mark.parametrize("kw", [{"bands": "all"}, {}, {"bands": "groups", "groups": 8}])
def test_identical_inputs_score_zero_and_gradients_reach_only_masked_patches(kw):
    student = tiny_student()
    x = scenes(2)
    target = student.patchify(student.standardize(x))
    term = create("loss", "ssim", **kw)
    v, _ = value_and_grad(term, student, x, target, half_mask(2))
    assert v == pytest.approx(0.0, abs=1e-5)  # SSIM of identical images is 1
    v, g = value_and_grad(term, student, x, target + 0.5 * torch.randn_like(target), half_mask(2))
    assert v > 0.05
    masked = half_mask(2)
    assert float(g[masked].abs().sum()) > 0 and float(g[~masked].abs().sum()) == 0.0


def test_band_matrices_and_bad_options():
    wl = [500.0, 400.0, 600.0, 450.0]
    sel = band_subset(4, 2, 0, wl)  # wavelength order: bands 1, 3, 0, 2 -> every 2nd from the first: 1, 0
    assert sel.argmax(0).tolist() == [1, 0] and sel.sum().item() == 2
    grp = band_groups(4, 2, wl)
    assert grp[:, 0].nonzero().flatten().tolist() == [1, 3] and torch.allclose(grp.sum(0), torch.ones(2))
    for bad in ({"bands": "some"}, {"band_stride": 0}, {"groups": 0}):
        with pytest.raises(HyperKDError, match="loss ssim"):
            create("loss", "ssim", **bad)
