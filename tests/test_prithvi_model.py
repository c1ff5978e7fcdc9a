"""The Prithvi-EO re-implementation: official names and shapes, sizes, position tables, inputs."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hyperkd_prithvi.model import (
    PrithviConfig,
    build_mae,
    count_parameters,
    pos_embed_for_grid,
    sincos_3d,
)
from hyperkd_prithvi.teacher import VARIANTS, parameter_counts
from hyperkd_prithvi.testing import tiny_overrides
from hyperkd_prithvi.weights import load_state_dict_into

import hyperkd

REF = json.loads(resources.files("hyperkd_prithvi").joinpath("data/prithvi.json").read_text())

BLOCK_PARAMS = (
    "norm1.weight",
    "norm1.bias",
    "attn.qkv.weight",
    "attn.qkv.bias",
    "attn.proj.weight",
    "attn.proj.bias",
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
)


def official_v1_flat_shapes(frames: int = 3) -> dict[str, tuple[int, ...]]:
    """The legacy Prithvi_100M.pt key set, written out from the architecture (independently)."""
    d, dd, n = 768, 512, frames * 14 * 14

    def block(prefix: str, dim: int) -> dict[str, tuple[int, ...]]:
        shapes = {
            "norm1.weight": (dim,),
            "norm1.bias": (dim,),
            "attn.qkv.weight": (3 * dim, dim),
            "attn.qkv.bias": (3 * dim,),
            "attn.proj.weight": (dim, dim),
            "attn.proj.bias": (dim,),
            "norm2.weight": (dim,),
            "norm2.bias": (dim,),
            "mlp.fc1.weight": (4 * dim, dim),
            "mlp.fc1.bias": (4 * dim,),
            "mlp.fc2.weight": (dim, 4 * dim),
            "mlp.fc2.bias": (dim,),
        }
        return {f"{prefix}.{k}": v for k, v in shapes.items()}

    out: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, d),
        "pos_embed": (1, 1 + n, d),
        "patch_embed.proj.weight": (d, 6, 1, 16, 16),
        "patch_embed.proj.bias": (d,),
        "norm.weight": (d,),
        "norm.bias": (d,),
        "decoder_embed.weight": (dd, d),
        "decoder_embed.bias": (dd,),
        "mask_token": (1, 1, dd),
        "decoder_pos_embed": (1, 1 + n, dd),
        "decoder_norm.weight": (dd,),
        "decoder_norm.bias": (dd,),
        "decoder_pred.weight": (16 * 16 * 6, dd),
        "decoder_pred.bias": (16 * 16 * 6,),
    }
    for i in range(12):
        out.update(block(f"blocks.{i}", d))
    for i in range(8):
        out.update(block(f"decoder_blocks.{i}", dd))
    return out


def prefixed(flat: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    return {
        ("decoder." if k.startswith("decoder") or k == "mask_token" else "encoder.") + k: v
        for k, v in flat.items()
    }


# -- names, shapes, strict load (full size, on the meta device) -------------------------------------


def test_v1_full_size_key_set_has_the_official_names_and_shapes():
    mae = build_mae(VARIANTS["prithvi-eo-1.0-100m"].config, device="meta")
    got = {k: tuple(v.shape) for k, v in mae.state_dict().items()}
    assert all(v.is_meta for v in mae.state_dict().values())
    assert got == prefixed(official_v1_flat_shapes())
    # ...and every shape the reference file lists (flat names) is reproduced exactly.
    listed = REF["v1"]["state_dict_shapes_T3"]
    assert len(listed) >= 19
    for key, shape in listed.items():
        assert got[prefixed({key: ()}).popitem()[0]] == tuple(shape), key


@pytest.mark.parametrize("layout", ["flat", "prefixed"])
def test_v1_full_size_official_key_set_loads_strictly_on_meta(layout):
    flat = official_v1_flat_shapes()
    shapes = flat if layout == "flat" else prefixed(flat)
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    mae = build_mae(VARIANTS["prithvi-eo-1.0-100m"].config, device="meta")
    assert load_state_dict_into(mae, state, variant="prithvi-eo-1.0-100m") == layout
    # assign=True adopted the given tensors (an ordinary load into meta would be a no-op).
    assert mae.encoder.blocks[11].mlp.fc2.weight is not None
    assert mae.encoder.blocks[11].mlp.fc2.weight.shape == (768, 3072)


def test_v1_checkpoint_key_set_also_loads_into_a_one_frame_model():
    """HyperKD runs T=1: stored 3-frame position tables must not block the load."""
    state = {k: torch.empty(s, device="meta") for k, s in official_v1_flat_shapes(frames=3).items()}
    cfg = VARIANTS["prithvi-eo-1.0-100m"].config.replace(num_frames=1)
    mae = build_mae(cfg, device="meta")
    load_state_dict_into(mae, state)
    assert tuple(mae.encoder.pos_embed.shape) == (1, 197, 768)


def test_tl_variants_add_scaled_time_and_location_encoders():
    mae = build_mae(VARIANTS["prithvi-eo-2.0-300m-tl"].config, device="meta")
    keys = set(mae.state_dict())
    for k in (
        "encoder.temporal_embed_enc.scale",
        "encoder.location_embed_enc.scale",
        "decoder.temporal_embed_dec.scale",
        "decoder.location_embed_dec.scale",
    ):
        assert k in keys
    plain = set(build_mae(VARIANTS["prithvi-eo-2.0-300m"].config, device="meta").state_dict())
    assert keys - plain == {
        "encoder.temporal_embed_enc.scale",
        "encoder.location_embed_enc.scale",
        "decoder.temporal_embed_dec.scale",
        "decoder.location_embed_dec.scale",
    }
    small = build_mae(
        VARIANTS["prithvi-eo-2.0-300m-tl"].config.replace(
            **{
                k: v
                for k, v in tiny_overrides().items()
                if k not in ("coords_encoding", "coords_scale_learn")
            }
        )
    )
    assert small.encoder.temporal_embed_enc.scale.item() == pytest.approx(0.1)  # learned, init 0.1
    assert isinstance(small.encoder.temporal_embed_enc.scale, torch.nn.Parameter)


# -- parameter counts -----------------------------------------------------------------------------


def vit_params(dim: int, depth: int) -> int:
    """Parameters of ``depth`` pre-norm transformer blocks with qkv bias and MLP ratio 4."""
    return depth * (12 * dim * dim + 13 * dim)


def expected_counts(embed: int, depth: int, patch: int, coords: bool) -> tuple[int, int]:
    enc = embed * 6 * patch * patch + embed + embed + vit_params(embed, depth) + 2 * embed
    dec = embed * 512 + 512 + 512 + vit_params(512, 8) + 2 * 512 + 512 * patch * patch * 6 + patch * patch * 6
    return enc + (2 if coords else 0), dec + (2 if coords else 0)


@pytest.mark.parametrize(
    ("name", "embed", "depth", "patch", "coords", "nominal"),
    [
        ("prithvi-eo-1.0-100m", 768, 12, 16, False, 100e6),
        ("prithvi-eo-2.0-300m", 1024, 24, 16, False, 300e6),
        ("prithvi-eo-2.0-300m-tl", 1024, 24, 16, True, 300e6),
        ("prithvi-eo-2.0-600m", 1280, 32, 14, False, 600e6),
        ("prithvi-eo-2.0-600m-tl", 1280, 32, 14, True, 600e6),
    ],
)
def test_parameter_counts_of_the_full_size_configs(name, embed, depth, patch, coords, nominal):
    counts = parameter_counts(name)
    enc, dec = expected_counts(embed, depth, patch, coords)
    assert (counts["encoder"], counts["decoder"]) == (enc, dec)
    # The model cards name the models by size: 100M / 300M / 600M. The 100M name counts the
    # whole MAE (86.2M encoder + 26.4M decoder = 112.6M); 300M/600M name the encoders
    # (303.9M = ViT-L/16, 631.2M = ViT-H/14).
    measured = counts["total"] if nominal == 100e6 else counts["encoder"]
    assert abs(measured - nominal) / nominal < 0.13


def test_published_vit_sizes():
    """Encoders match the standard ViT sizes they are built on."""
    assert parameter_counts("prithvi-eo-1.0-100m")["encoder"] == 86_237_184  # ViT-B/16 (6 bands)
    assert parameter_counts("prithvi-eo-2.0-300m")["encoder"] == 303_886_336  # ViT-L/16
    assert parameter_counts("prithvi-eo-2.0-600m")["encoder"] == 631_188_480  # ViT-H/14


# -- position embeddings ----------------------------------------------------------------------------


def reference_sincos(dim: int, t: int, h: int, w: int) -> np.ndarray:
    """An independent numpy version of the published 3-D sin-cos construction (with cls row)."""

    def one_d(d: int, n: int) -> np.ndarray:
        k = np.arange(d // 2, dtype=np.float64)
        omega = 1.0 / 10000 ** (k / (d / 2.0))
        ang = np.arange(n, dtype=np.float64)[:, None] * omega[None, :]
        return np.concatenate([np.sin(ang), np.cos(ang)], axis=1)

    dw, dh, dt = dim // 16 * 6, dim // 16 * 6, dim - 2 * (dim // 16 * 6)
    rows = []
    for ti in range(t):
        for hi in range(h):
            for wi in range(w):
                rows.append(np.concatenate([one_d(dw, w)[wi], one_d(dh, h)[hi], one_d(dt, t)[ti]]))
    return np.concatenate([np.zeros((1, dim)), np.stack(rows)], axis=0)[None]


@pytest.mark.parametrize("frames", [1, 3])
def test_position_tables_match_the_reference_construction(frames):
    cfg = VARIANTS["prithvi-eo-1.0-100m"].config.replace(num_frames=frames)
    mae = build_mae(
        cfg.replace(
            **{k: v for k, v in tiny_overrides().items() if k.startswith("decoder")},
            embed_dim=768,
            depth=1,
            num_heads=12,
        )
    )
    want = reference_sincos(768, frames, 14, 14)
    assert mae.encoder.pos_embed.shape == (1, 1 + frames * 196, 768)
    np.testing.assert_allclose(mae.encoder.pos_embed.numpy(), want, atol=1e-6)
    np.testing.assert_allclose(
        sincos_3d(512, (frames, 14, 14)).numpy(), reference_sincos(512, frames, 14, 14), atol=1e-6
    )


def test_other_frame_counts_recompute_the_table():
    # A 3-frame model fed one frame uses the exact T=1 table, i.e. the first frame's rows.
    got = pos_embed_for_grid(768, (3, 14, 14), (1, 14, 14))
    np.testing.assert_allclose(got.numpy(), reference_sincos(768, 1, 14, 14), atol=1e-6)
    np.testing.assert_allclose(got[0, 1:].numpy(), sincos_3d(768, (3, 14, 14))[0, 1:197].numpy(), atol=1e-6)


def test_other_image_sizes_interpolate_like_the_reference_or_recompute():
    base = torch.from_numpy(reference_sincos(64, 1, 14, 14)).float()
    grid = base[:, 1:].reshape(1, 14, 14, 64).permute(0, 3, 1, 2)
    want = (
        F.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=True)
        .permute(0, 2, 3, 1)
        .reshape(1, 36, 64)
    )
    got = pos_embed_for_grid(64, (1, 14, 14), (1, 6, 6), mode="interpolate")
    torch.testing.assert_close(got[:, 1:], want, atol=1e-5, rtol=0)
    assert torch.all(got[:, 0] == 0)
    exact = pos_embed_for_grid(64, (1, 14, 14), (1, 6, 6), mode="recompute")
    np.testing.assert_allclose(exact.numpy(), reference_sincos(64, 1, 6, 6), atol=1e-6)
    # A recomputed table is the top-left crop of the big one: a 96 px chip is a crop at 30 m.
    big = base[0, 1:].reshape(14, 14, 64)[:6, :6].reshape(36, 64)
    torch.testing.assert_close(exact[0, 1:], big, atol=1e-6, rtol=0)


# -- running the encoder -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny224():
    """Tiny Prithvi-architecture teacher pretrained-grid 224 (so 96 px needs interpolation)."""
    return hyperkd.create("teacher", "prithvi-eo-tiny", weights=None, img_size=224)


@pytest.mark.parametrize("size", [96, 224])
def test_96_and_224_inputs(tiny224, size):
    torch.manual_seed(0)
    x = torch.rand(2, 6, size, size) * 0.4
    (f,) = tiny224.forward_features(x)
    n = (size // 16) ** 2
    assert f.shape == (2, n, 64) and torch.isfinite(f).all()
    (c,) = tiny224.forward_features(x, with_cls=True)
    assert c.shape == (2, n + 1, 64)
    torch.testing.assert_close(c[:, 1:], f)
    # (B, C, H, W) is T = 1: the same as an explicit one-frame 5-D input.
    (f5,) = tiny224.forward_features(x.unsqueeze(2))
    torch.testing.assert_close(f5, f)


def test_sizes_not_divisible_by_the_patch_are_refused(tiny224):
    with pytest.raises(ValueError, match="multiple of the patch size"):
        tiny224.forward_features(torch.rand(1, 6, 100, 96))
    with pytest.raises(ValueError, match="6, H, W"):
        tiny224.forward_features(torch.rand(1, 5, 96, 96))


def test_layers_selection_and_final_norm(tiny224):
    x = torch.rand(1, 6, 64, 64)
    first, last = tiny224.forward_features(x, layers=[0, -1])
    (default,) = tiny224.forward_features(x)
    torch.testing.assert_close(last, default)
    # The last block's output went through the final LayerNorm (weight 1, bias 0 at init):
    # zero mean, unit variance per token; the first block's raw residual stream did not.
    assert last.mean(-1).abs().max() < 1e-4
    torch.testing.assert_close(last.var(-1, unbiased=False), torch.ones(last.shape[:2]), atol=1e-3, rtol=0)
    assert first.mean(-1).abs().max() > 1e-3
    with pytest.raises(ValueError, match="out of range"):
        tiny224.forward_features(x, layers=[2])


def test_blocks_are_timm_blocks_with_qkv_bias_eps_1e5_and_sdpa(monkeypatch, tiny224):
    norms = [m for m in tiny224.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(m.eps == 1e-5 for m in norms)
    for blk in tiny224.encoder.blocks:
        assert type(blk).__module__.startswith("timm.")
        assert blk.attn.qkv.bias is not None and blk.attn.fused_attn
    calls = []
    real = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    tiny224.forward_features(torch.rand(1, 6, 32, 32))
    assert len(calls) == tiny224.depth


def test_teacher_is_frozen_and_normalises_reflectance(tiny224):
    assert not tiny224.training
    assert all(not p.requires_grad for p in tiny224.parameters())
    tiny224.train()  # e.g. Lightning switching the whole module to train mode
    assert not tiny224.training and not tiny224.encoder.blocks[0].training
    x = torch.rand(1, 6, 32, 32) * 0.3
    mean = torch.tensor(REF["v1"]["mean"]).view(1, 6, 1, 1, 1)
    std = torch.tensor(REF["v1"]["std"]).view(1, 6, 1, 1, 1)
    manual = tiny224.encoder.forward_features((x.unsqueeze(2) * 10000 - mean) / std)[0][:, 1:]
    torch.testing.assert_close(tiny224.forward_features(x)[0], manual)
    assert tiny224.input_unit == "reflectance" and tiny224.sensor.band_names == REF["bands"]
    # Gradients still flow to the *input* (a learned aligner in front of the teacher trains).
    xg = x.clone().requires_grad_(True)
    tiny224.forward_features(xg)[0][..., 0].sum().backward()  # (a sum over all channels of a
    # LayerNorm output is constant, so take one channel)
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_v2_teachers_use_v2_statistics():
    t = hyperkd.create("teacher", "prithvi-eo-2.0-300m", weights=None, **tiny_overrides())
    assert t.mean_dn.flatten().tolist() == REF["v2"]["mean"]
    assert t.sensor.bands[0].mean == pytest.approx(REF["v2"]["mean"][0] / 10000)
    assert hyperkd.create("teacher", "prithvi", weights=None, **tiny_overrides()).variant.name == (
        "prithvi-eo-1.0-100m"
    )


def test_tl_teacher_uses_time_and_location_when_given():
    over = {k: v for k, v in tiny_overrides().items() if k not in ("coords_encoding", "coords_scale_learn")}
    t = hyperkd.create("teacher", "prithvi-eo-2.0-300m-tl", weights=None, **over)
    x = torch.rand(2, 6, 32, 32) * 0.3
    (plain,) = t.forward_features(x)
    (timed,) = t.forward_features(x, temporal_coords=torch.tensor([[[2020.0, 100.0]], [[2021.0, 200.0]]]))
    (placed,) = t.forward_features(x, location_coords=torch.tensor([[40.0, -105.0], [38.5, -98.0]]))
    assert not torch.allclose(plain, timed) and not torch.allclose(plain, placed)


def test_mae_reconstruction_pass_and_patchify_round_trip():
    cfg = PrithviConfig(**{**tiny_overrides(), "num_frames": 2})
    mae = build_mae(cfg)
    x = torch.randn(2, 6, 2, 32, 32)
    loss, pred, mask = mae(x, mask_ratio=0.5)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert pred.shape == (2, 8, 16 * 16 * 6) and mask.shape == (2, 8)
    assert mask.sum(dim=1).tolist() == [4.0, 4.0]
    torch.testing.assert_close(mae.unpatchify(mae.patchify(x), (2, 2, 2)), x)
    assert count_parameters(mae) == count_parameters(mae.encoder) + count_parameters(mae.decoder)
